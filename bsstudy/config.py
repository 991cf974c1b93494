"""Compose and validate run configs (hydra compose API over ``bsstudy/conf``; struct mode stays on).

One place for: composing a cell's config from overrides, validating it with one-line errors,
LR scaling rules, and the run identity (config hash, run_id) of the contract in shared/DESIGN.md.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from .data.sizes import pretrain_size
from .errors import UserError
from .registry import METHODS as _REGISTRY
from .registry import method_names

METHODS = method_names()  # the method registry (bsstudy.registry) is the one list
# Global rows per view each objective needs (registry min_rows: U-statistics need n >= 4, ESTIMATORS.md).
MIN_BATCH = {name: spec.min_rows for name, spec in _REGISTRY.items()}
LR_SCALING = ("linear", "sqrt", "none", "table")
CONF_GROUPS = ("method", "dataset", "model", "optim")
# Keys that say where and how a run reports, not what it computes: excluded from the config hash (so adding
# the log: block left every run_id as it was).
NON_IDENTITY_KEYS = ("out", "log")


def _one_line(exc: BaseException) -> str:
    """First line of an exception message; hydra's multi-line 'not in struct' becomes 'unknown key'."""
    import re

    text = str(exc).strip()
    cause = str(exc.__cause__ or "")
    m = re.search(r"Could not override '([^']+)'", text)
    if m and "not in struct" in text + cause:
        return f"unknown key {m.group(1)!r}"
    msg = text.splitlines()
    return msg[0] if msg else type(exc).__name__


def compose(overrides: Iterable[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with hydra-style ``key=value`` overrides; unknown keys are a UserError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module(config_module="bsstudy.conf", version_base=None)
    overrides = list(overrides)
    try:
        cfg = hydra_compose(config_name="config", overrides=overrides)
    except Exception as exc:  # hydra raises several types; the user needs one line
        raise UserError(f"config: {_one_line(exc)}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def group_options(group: str) -> list[str]:
    """Names of the options of a config group (``method`` -> ['simclr', 'vicreg', ...])."""
    from importlib.resources import files

    d = files("bsstudy.conf").joinpath(group)
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def _lr_table(table: Any, source: str) -> dict[int, float]:
    """``method.lr_table`` (a plain mapping) as {batch size: LR}; keys may arrive as strings."""
    if not isinstance(table, Mapping) or not table:
        raise UserError(f"{source}: method.lr_table: lr_scaling=table needs a mapping {{batch_size: lr}}, "
                        f"got {table!r}")
    try:
        t = {int(k): float(v) for k, v in table.items()}
    except (TypeError, ValueError):
        raise UserError(f"{source}: method.lr_table: keys must be batch sizes and values LRs, got {table!r}") from None
    bad = [b for b, lr in t.items() if not (math.isfinite(lr) and lr > 0)]
    if bad:
        raise UserError(f"{source}: method.lr_table.{bad[0]}: {t[bad[0]]!r} must be a positive finite number")
    return t


def effective_lr(base_lr: float, batch_size: int, rule: str, table: Any = None, source: str = "config") -> float:
    """LR for global ``batch_size``: from the LR at batch 256 by rule linear (B/256), sqrt (sqrt(B/256)) or
    none, or looked up in ``table`` ({B: LR}, e.g. a paper's per-batch-size LRs) for rule ``table``."""
    if rule == "linear":
        return base_lr * batch_size / 256.0
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size / 256.0)
    if rule == "none":
        return float(base_lr)
    if rule == "table":
        t = _lr_table(table, source)
        if batch_size not in t:
            raise UserError(f"{source}: method.lr_table: no LR for batch_size {batch_size} "
                            f"(the table has {', '.join(map(str, sorted(t)))})")
        return t[batch_size]
    raise UserError(f"{source}: method.lr_scaling: unknown rule {rule!r} (choose from {', '.join(LR_SCALING)})")


def lr_record(method: Any, batch_size: int, source: str = "config") -> dict:
    """The derived ``lr`` block of a resolved config: base, scaling rule and effective LR (recorded apart)."""
    rule = str(method["lr_scaling"])
    return {"base": float(method["base_lr"]), "scaling": rule,
            "effective": effective_lr(float(method["base_lr"]), int(batch_size), rule,
                                      method.get("lr_table"), source)}


def check_value(key: str, value: Any, source: str = "config", interpolation: bool = True) -> None:
    """UserError if ``value`` (recursively) holds a non-finite number, or, with ``interpolation=False``, an
    OmegaConf interpolation ``${...}`` (a sweep value would be hashed unresolved and resolved in the job)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{source}: {key}: {value!r} is not a finite number")
    if isinstance(value, str) and not interpolation and "${" in value:
        raise UserError(f"{source}: {key}: interpolation {value!r} is not allowed in a sweep (it would be resolved "
                        "in each job's environment, after hashing); write the value itself")
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_value(f"{key}.{k}" if key else str(k), v, source, interpolation)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_value(f"{key}[{i}]", v, source, interpolation)


def _plain(cfg: Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return getattr(cfg, "_d", cfg)  # the planner's attribute view over a plain dict


def validate(cfg: DictConfig, source: str = "config", values: bool = True) -> None:
    """Check values that composing cannot check; raise UserError naming the key and ``source``.

    ``values=False`` skips the walk over every value for non-finite numbers (``check_value``): the
    planner checks each composed base once and each override as it is applied."""
    if values:
        check_value("", _plain(cfg), source)
    name = cfg.method.name
    if name not in METHODS:
        raise UserError(f"{source}: method.name: unknown method {name!r} (choose from {', '.join(METHODS)})")
    b = cfg.batch_size
    if not isinstance(b, int) or isinstance(b, bool) or b < MIN_BATCH[name]:
        raise UserError(
            f"{source}: batch_size: {b!r} is invalid for {name} (needs an integer >= {MIN_BATCH[name]})"
        )
    if not isinstance(cfg.epochs, int) or cfg.epochs < 1:
        raise UserError(f"{source}: epochs: {cfg.epochs!r} must be an integer >= 1")
    if not isinstance(cfg.seed, int):
        raise UserError(f"{source}: seed: {cfg.seed!r} must be an integer")
    lr = cfg.method.base_lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UserError(f"{source}: method.base_lr: {lr!r} must be a positive finite number")
    if cfg.method.lr_scaling not in LR_SCALING:
        raise UserError(
            f"{source}: method.lr_scaling: {cfg.method.lr_scaling!r} (choose from {', '.join(LR_SCALING)})"
        )
    for param, choices in _REGISTRY[name].choices.items():  # e.g. vicreg_unbiased's variance, cov_target
        value = getattr(cfg.method.loss, param)
        if value not in choices:
            raise UserError(f"{source}: method.loss.{param}: {value!r} (choose from {', '.join(choices)})")
    world = cfg.distributed.nodes * cfg.distributed.gpus_per_node
    if world < 1:
        raise UserError(f"{source}: distributed: nodes*gpus_per_node must be >= 1")
    if b % world:
        raise UserError(
            f"{source}: batch_size: {b} is not divisible by the world size {world} "
            f"(distributed.nodes*distributed.gpus_per_node)"
        )
    if world > 1 and b // world < MIN_BATCH[name]:
        raise UserError(f"{source}: batch_size: {b} gives {b // world} rows per rank; {name} needs >= {MIN_BATCH[name]}")
    _check_few_shot(cfg, source)
    log = getattr(cfg, "log", None)   # config.yaml files written before the log: block have none
    if log is not None:
        every = log.progress_every
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise UserError(f"{source}: log.progress_every: {every!r} must be null or an integer >= 1")
        if not isinstance(log.tensorboard, bool):
            raise UserError(f"{source}: log.tensorboard: {log.tensorboard!r} must be true or false")
    n = cfg.dataset.train_subset
    n = pretrain_size(cfg.dataset.name) if n is None else n
    if isinstance(n, int) and b > n:
        raise UserError(f"{source}: batch_size: {b} is larger than the dataset "
                        f"({cfg.dataset.name}: {n} training images)")


def _check_few_shot(cfg: DictConfig, source: str) -> None:
    """eval.few_shot: distinct positive integers that fit the probe's train pool (k x classes images)."""
    ks, draws = cfg.eval.few_shot, cfg.eval.few_shot_draws
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise UserError(f"{source}: eval.few_shot_draws: {draws!r} must be an integer >= 1")
    ks = list(ks) if ks is not None else []
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise UserError(f"{source}: eval.few_shot: {ks!r} must be a list of distinct integers >= 1 "
                        f"(labelled images per class)")
    cap, nc = cfg.eval.max_train_samples, cfg.dataset.num_classes
    if ks and isinstance(cap, int) and isinstance(nc, int) and max(ks) * nc > cap:
        raise UserError(f"{source}: eval.few_shot: {max(ks)} per class x {nc} classes needs more than "
                        f"eval.max_train_samples={cap} images")


def resolve(cfg: DictConfig) -> DictConfig:
    """Return a copy with derived fields added: ``lr`` (base, scaling rule, effective) — recorded separately."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out["lr"] = lr_record(out["method"], int(cfg.batch_size))
    res = OmegaConf.create(out)
    OmegaConf.set_struct(res, True)
    return res


def canonical_json(cfg: DictConfig | dict) -> str:
    """Sorted-key compact JSON of a config without its output paths (the input of the config hash)."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for k in NON_IDENTITY_KEYS:
        d.pop(k, None)
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def config_hash(cfg: DictConfig | dict) -> str:
    """sha256 hex of the canonical JSON of the resolved config (contract: run_id's hash8 is its first 8)."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()


def run_id(cfg: DictConfig | dict) -> str:
    """``{method}-b{batch_size}-e{epochs}-s{seed}-{hash8}`` (contract, shared/DESIGN.md)."""
    c = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return f"{c['method']['name']}-b{c['batch_size']}-e{c['epochs']}-s{c['seed']}-{config_hash(c)[:8]}"


def load_run_config(path: Path | str) -> DictConfig:
    """Read a run's ``config.yaml`` (written by plan or train) in struct mode."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such config file")
    try:
        cfg = OmegaConf.load(p)
    except Exception as exc:
        raise UserError(f"{p}: {_one_line(exc)}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg


_RUN_ID = re.compile(r"[A-Za-z0-9_]+-b\d+-e\d+-s-?\d+-[0-9a-f]{8}")


def load_checked_run_config(path: Path | str) -> DictConfig:
    """The trainer's read of a run's config.yaml: ``load_run_config``, then the same checks as ``bsstudy plan``
    (``validate``; the ``lr`` block agrees with the method's rule) and, for a run directory named by a
    run_id (a planned cell), that the config still hashes to that run_id. One-line UserError naming the file.

    An ad-hoc ``bsstudy train ... out=DIR`` directory has no run_id name: only validated."""
    p = Path(path)
    cfg = load_run_config(p)
    src = str(p)
    try:
        validate(cfg, src)
        if "lr" in cfg:
            want = lr_record(cfg.method, int(cfg.batch_size), src)
            got = OmegaConf.to_container(cfg.lr, resolve=True)
            if got != want:
                raise UserError(f"{src}: lr: {got} does not follow method.base_lr/lr_scaling at batch_size "
                                f"{cfg.batch_size} (expected {want})")
        rid = p.parent.name
        if _RUN_ID.fullmatch(rid) and run_id(cfg) != rid:
            raise UserError(f"{src}: the config was changed after planning (it hashes to {run_id(cfg)}, not its "
                            "run_id): re-plan the study instead of editing config.yaml")
    except UserError:
        raise
    except Exception as exc:  # a hand-edited file of the wrong shape (missing section, wrong type)
        raise UserError(f"{src}: {_one_line(exc)}") from None
    return cfg


def cell_config(overrides: Iterable[str] = (), source: str = "config") -> DictConfig:
    """Compose + validate + resolve: the exact config a cell runs with."""
    cfg = compose(overrides)
    validate(cfg, source)
    return resolve(cfg)
