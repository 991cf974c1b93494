"""``bsstudy train key=value ... out=DIR`` (compose + run one cell) and ``bsstudy train --run-dir DIR``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def top_keys() -> tuple[str, ...]:
    """The keys of ``conf/config.yaml`` besides the groups, as the help shows them: ``key`` for a value,
    ``section.key`` for a section of one key, ``section.*`` for a larger one."""
    from importlib.resources import files

    from ..layout import yaml_load

    root = yaml_load(files("bsstudy.conf").joinpath("config.yaml").read_text())
    out = []
    for k, v in root.items():
        if k == "defaults":  # the group selections, listed apart
            continue
        if isinstance(v, dict):
            out.append(f"{k}.{next(iter(v))}" if len(v) == 1 else f"{k}.*")
        else:
            out.append(k)
    return tuple(out)


def _epilog() -> str:
    from ..config import CONF_GROUPS, group_options

    groups = "\n".join(f"  {g}={{{','.join(group_options(g))}}}" for g in CONF_GROUPS)
    return (f"config groups:\n{groups}\n"
            f"top-level keys: {', '.join(top_keys())}\n"
            "any key of a group can be set too, e.g. method.loss.variance=c4 optim.warmup_epochs=2\n"
            "example: bsstudy train method=vicreg batch_size=256 epochs=5 dataset.train_subset=10000 out=runs/x")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    p = sub.add_parser("train", help="train and evaluate one run (a sweep cell)",
                       description="Train one run: compose the config from key=value overrides (run "
                                   "directory out=DIR, default results/adhoc/<run_id>), or run an existing "
                                   "planned cell with --run-dir. Re-running the same directory resumes from "
                                   "its checkpoints.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (hydra syntax)")
    p.add_argument("--run-dir", type=Path, default=None, help="run an existing cell directory (has config.yaml)")
    p.add_argument("--restart", action="store_true",
                   help="when none of the run's checkpoints is readable, move them aside as *.corrupt and "
                        "start over from epoch 0 (without it such a run stops with an error); readable "
                        "checkpoints are resumed as usual")
    p.add_argument("-m", "--multirun", action="store_true", help=argparse.SUPPRESS)  # refused with a pointer
    p.set_defaults(func=_main)


ADHOC_ROOT = Path("results") / "adhoc"  # where `bsstudy train` without out= puts the run (<run_id>/)


def check_overrides(overrides: list[str]) -> None:
    """Refuse what hydra would accept but a single closed-config run must not: ``+key``/``~key`` (adding or
    deleting keys past struct mode), an unknown config-group option, and sweep syntax (``a,b``, a list for
    a one-value key), which points to ``bsstudy plan``'s ``grid.KEY=[..]``."""
    from ..config import CONF_GROUPS, compose, group_options
    from ..sweep.spec import parse_value

    defaults = None
    for ov in overrides:
        key, eq, text = ov.partition("=")
        key = key.strip()
        if key.startswith(("+", "~")):
            raise UserError(f"train: {ov}: unknown key {key.lstrip('+~')!r} ('{key[0]}' would "
                            f"{'add' if key[0] == '+' else 'delete'} a key; bsstudy configs have a fixed set of "
                            "keys, see bsstudy train --help)")
        if not eq:
            continue  # hydra's own one-line error
        sweep_hint = (f"train runs one config; to sweep {key}, plan a sweep: "
                      f"bsstudy plan SWEEP.yaml 'grid.{key}=[{text.strip('[]')}]'")
        if key in CONF_GROUPS:
            options = group_options(key)
            if "," in text:
                raise UserError(f"train: {ov}: {sweep_hint}")
            if text not in options:
                raise UserError(f"train: {key}: unknown {key} {text!r} (choose from {', '.join(options)})")
            continue
        stripped = text.strip()
        if "," in stripped and not stripped.startswith(("[", "{", "'", '"')):
            raise UserError(f"train: {ov}: {sweep_hint}")
        if stripped.startswith("["):
            if defaults is None:
                from omegaconf import OmegaConf

                defaults = OmegaConf.to_container(compose([o for o in overrides
                                                           if o.partition("=")[0].strip() in CONF_GROUPS]))
            node: object = defaults
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, (int, float, str)) and isinstance(parse_value(text), list):
                raise UserError(f"train: {ov}: {key} takes one value; {sweep_hint}")


def prepare_run_dir(overrides: list[str]) -> Path:
    """Compose and check the config, check its data, then write OUT/config.yaml (refusing a different
    existing one). Without ``out=``, OUT is ``results/adhoc/<run_id>``. Nothing is written on an error."""
    from omegaconf import OmegaConf

    from ..config import canonical_json, cell_config, load_run_config, run_id
    from ..io import atomic_write_text
    from ..layout import RunPaths, yaml_dump
    from ..sweep.preflight import preflight_data

    check_overrides(overrides)
    cfg = cell_config(overrides, source="train")
    if cfg.out is None:
        cfg.out = str((ADHOC_ROOT / run_id(cfg)).resolve())
    out = Path(str(cfg.out))
    path = RunPaths(out).config
    if path.exists():
        old = load_run_config(path)
        if canonical_json(old) != canonical_json(cfg):
            raise UserError(f"{out} holds a run with a different config; choose another out=")
        return out
    preflight_data([OmegaConf.to_container(cfg, resolve=True)])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml_dump(OmegaConf.to_container(cfg, resolve=True)))  # = the planner's format
    return out


def _check_run_dir(run_dir: Path) -> None:
    """A planned cell about to train: its config passes plan's checks and still matches its run_id, and its
    data is readable, before the trainer writes anything (a finished run is returned as it is)."""
    from omegaconf import OmegaConf

    from ..config import load_checked_run_config
    from ..layout import TERMINAL, RunPaths, read_result
    from ..sweep.preflight import preflight_data

    paths = RunPaths(run_dir)
    previous = read_result(paths.result)
    if previous is not None and previous.get("status") in TERMINAL:
        return
    cfg = load_checked_run_config(paths.config)
    preflight_data([OmegaConf.to_container(cfg, resolve=True)])


def _one_line_warnings() -> None:
    """Show warnings as ``bsstudy train: warning: <message>``, one line, like the errors: Python's default
    adds the source file and line (two lines for e.g. "last.pt is unreadable ...; resuming from previous.pt")."""
    import warnings

    def fmt(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001 (showwarning's signature)
        return f"bsstudy train: warning: {' '.join(str(message).split())}\n"

    warnings.formatwarning = fmt


def _main(args: argparse.Namespace) -> int:
    _one_line_warnings()
    try:
        return _train(args)
    except PermissionError as exc:  # a run directory or file this user cannot read or write (chmod, owner)
        raise UserError(f"{exc.filename or args.run_dir}: {exc.strerror or 'permission denied'} "
                        "(fix its permissions, or use another run directory)") from None


def _train(args: argparse.Namespace) -> int:
    import json

    if args.multirun:
        raise UserError("-m (hydra multirun) is not supported: train runs one config; sweep with "
                        "bsstudy plan SWEEP.yaml 'grid.KEY=[..]' (e.g. 'grid.seed=[0,1,2]')")
    if args.run_dir is not None:
        if args.overrides:
            raise UserError("--run-dir takes no key=value overrides (the cell's config.yaml is used as is)")
        from ..layout import RunPaths

        run_dir = args.run_dir
        if not RunPaths(run_dir).config.exists():
            raise UserError(f"{run_dir}: no config.yaml (plan the cell first, or use key=value ... out=DIR)")
        _check_run_dir(run_dir)
    else:
        run_dir = prepare_run_dir(list(args.overrides))
        print(f"train: run directory {run_dir}", flush=True)
    from . import run_cell

    result = run_cell(run_dir, restart=args.restart)
    keys = ("run_id", "status", "linear_top1", "knn_top1", "final_loss", "diverged_at_epoch", "train_seconds")
    print(json.dumps({k: result.get(k) for k in keys}))
    return 0  # done or diverged (a valid outcome of a study); failures raise
