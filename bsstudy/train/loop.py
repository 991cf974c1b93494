"""One training run (one sweep cell): ``run_cell(run_dir)``.

Reads run_dir/config.yaml, trains with the method's objective (one loop for every method: methods differ
only in objective and projector), checkpoints and resumes, stops on divergence, evaluates at the end and
writes result.json (contract in shared/DESIGN.md). Layout, top to bottom: setup, resume, epoch loop,
evaluation, result.

Distributed (bsstudy/train/distributed.py): rank/world_size come from ``_dist()`` only; only rank 0 writes
files and evaluates; each rank takes its contiguous shard of every global batch (``batch_size`` is the
GLOBAL batch); the model is wrapped in DDP and objectives gather embeddings across ranks, so W ranks x B/W
train like 1 rank x B (with ``distributed.sync_bn``, BatchNorm statistics are global too).
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..config import config_hash, load_run_config
from ..errors import UserError
from ..provenance import git_state, versions
from ..runtime import tune_malloc
from ..io import append_jsonl, atomic_write_json, atomic_write_text, json_finite, read_jsonl
from . import distributed as ddp
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .optim import WarmupCosine, build_optimizer

SCHEMA = 1
TERMINAL = ("done", "diverged")   # a result.json with these is returned as is; "failed" is retried


# ───────────────────────────── setup ─────────────────────────────
@dataclass(frozen=True)
class Dist:
    """Where this process sits in a DDP job; the single place rank/world are read."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist() -> Dist:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def resolve_device(name: str, dist: Dist) -> torch.device:
    """``auto`` → cuda:local_rank when available, else cpu."""
    if name == "auto":
        return torch.device(f"cuda:{dist.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: auto = bf16 on CUDA with bf16 support, fp32 (None) elsewhere."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise UserError(f"precision: {precision!r} (choose auto, fp32 or bf16)")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy, torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch``: a pure function of (seed, epoch), so resume needs no sampler state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()}threads"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Run:
    """State of one run while it trains (kept together so the loop reads top to bottom)."""

    def __init__(self, run_dir: Path, cfg: DictConfig) -> None:
        from ..data import load_dataset
        from ..data.augment import TwoViewAugment
        from ..models import SSLModel, build_backbone, build_projector
        from ..objectives import build_objective

        self.run_dir, self.cfg = run_dir, cfg
        self.dist = _dist()
        self.device = resolve_device(str(cfg.device), self.dist)
        self.amp_dtype = resolve_precision(str(cfg.precision), self.device)
        seed_everything(int(cfg.seed), bool(cfg.deterministic))

        # Data on the device once, as uint8; augmentation happens there per batch.
        data = load_dataset(cfg.dataset, "pretrain")
        self.images = data.images.to(self.device)
        self.n = len(self.images)
        self.batch_size = int(cfg.batch_size)
        if self.batch_size % self.dist.world_size:
            raise UserError(f"batch_size: {self.batch_size} not divisible by world size {self.dist.world_size}")
        self.local_batch = self.batch_size // self.dist.world_size
        self.steps_per_epoch = self.n // self.batch_size          # drop_last
        if self.steps_per_epoch < 1:
            raise UserError(f"batch_size: {self.batch_size} exceeds the {self.n} pretraining images")
        self.augment = TwoViewAugment(cfg.dataset, self.device)
        # Augmentation stream: own CPU generator (checkpointed; device-independent params), distinct per rank.
        self.aug_gen = torch.Generator().manual_seed(int(cfg.seed) * 7919 + self.dist.rank)

        backbone = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size))
        projector = build_projector(backbone.feature_dim, cfg.method.projector)
        model = SSLModel(backbone, projector)
        if self.dist.world_size > 1 and cfg.distributed.sync_bn:
            model = ddp.convert_sync_batchnorm(model, self.device)
        self.model = model.to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        # self.model stays the plain module (state_dict, evaluation); self.forward is what trains.
        forward: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward = torch.compile(forward) if cfg.compile else forward
        self.objective = build_objective(str(cfg.method.name), **OmegaConf.to_container(cfg.method.loss))

        self.lr = float(cfg.lr.effective)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.lr)
        total = self.steps_per_epoch * int(cfg.epochs)
        self.schedule = WarmupCosine(self.optimizer, self.lr, total,
                                     int(round(float(cfg.optim.warmup_epochs) * self.steps_per_epoch)),
                                     float(cfg.optim.min_lr_ratio), str(cfg.optim.schedule))
        self.scaler = None  # bf16 needs no loss scaling; kept in checkpoints for an fp16 mode
        self.epoch = 0            # completed epochs
        self.train_seconds = 0.0
        self.images_seen = 0
        self.last_loss: float | None = None

    # ─────────────────────────── checkpoint / resume ───────────────────────────
    def state(self) -> dict[str, Any]:
        """Checkpoint state. Collective under DDP (every rank calls it): each rank's augmentation stream is kept."""
        aug_per_rank = ddp.gather_objects(self.aug_gen.get_state())
        return {"augment_per_rank": aug_per_rank, "world_size": self.dist.world_size,
            "epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
            "objective": self.objective.state_dict(), "rng": rng_state({"augment": self.aug_gen}),
            "train_seconds": self.train_seconds, "images_seen": self.images_seen, "last_loss": self.last_loss,
            "config_hash": config_hash(self.cfg),
        }

    def restore(self, st: dict[str, Any]) -> None:
        if st.get("config_hash") != config_hash(self.cfg):
            raise UserError(f"{self.run_dir}/checkpoints: checkpoint belongs to a different config; "
                            "remove the checkpoints or use another run dir")
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.schedule.load_state_dict(st["schedule"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.objective.load_state_dict(st["objective"])
        set_rng_state(st["rng"], {"augment": self.aug_gen})
        if st.get("world_size", 1) != self.dist.world_size:
            raise UserError(f"{self.run_dir}/checkpoints: written with world size {st.get('world_size', 1)}, "
                            f"resumed with {self.dist.world_size}; resume with the same world size")
        if "augment_per_rank" in st:
            self.aug_gen.set_state(st["augment_per_rank"][self.dist.rank])
        self.epoch = int(st["epoch"])
        self.train_seconds = float(st["train_seconds"])
        self.images_seen = int(st["images_seen"])
        self.last_loss = st.get("last_loss")

    # ─────────────────────────────── one epoch ───────────────────────────────
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train epoch ``epoch`` (1-based). Returns its metrics; ``diverged`` is True on a non-finite loss."""
        cfg, dist = self.cfg, self.dist
        self.model.train()
        perm = epoch_permutation(self.n, int(cfg.seed), epoch).to(self.device)
        sleep = float(cfg.debug.sleep_per_step or 0.0)
        # On CUDA check finiteness every few steps (a host sync); on CPU it is free.
        check_every = 1 if self.device.type == "cpu" else 25
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        term_sums: dict[str, torch.Tensor] = {}
        lr_sum = 0.0
        bar = None
        if dist.is_main and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
        t0 = time.perf_counter()
        z1 = None
        steps = 0
        for step in range(self.steps_per_epoch):
            lo = step * self.batch_size + dist.rank * self.local_batch
            x = self.images[perm[lo:lo + self.local_batch]]
            v1, v2 = self.augment(x, self.aug_gen)
            v1 = v1.contiguous(memory_format=self.memory_format)
            v2 = v2.contiguous(memory_format=self.memory_format)
            lr_sum += self.optimizer.param_groups[0]["lr"]
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                _, z1 = self.forward(v1)
                _, z2 = self.forward(v2)
            out = self.objective(z1.float(), z2.float())
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            self.schedule.step()
            steps += 1
            loss_sum += out.loss.detach().double()
            for k, v in out.terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + v.detach().double()
            if (step + 1) % check_every == 0 or step + 1 == self.steps_per_epoch:
                if not math.isfinite(float(loss_sum)):
                    break
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(out.loss):.4g}")
            if sleep:
                time.sleep(sleep)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        loss = float(loss_sum) / steps
        m: dict[str, Any] = {
            "epoch": epoch, "step": self.schedule.step_count, "loss": json_finite(loss),
            "lr": lr_sum / steps, "seconds": seconds,
            "images_per_second": steps * self.batch_size / seconds if seconds > 0 else None,
        }
        for k, v in term_sums.items():
            m[k] = json_finite(float(v) / steps)
        m["diverged"] = not math.isfinite(loss)
        if not m["diverged"] and z1 is not None:
            from ..evaluate import collapse_diagnostics
            d = collapse_diagnostics(z1.detach().float())
            m.update({"emb_std": d["mean_std"], "emb_min_std": d["min_std"],
                      "emb_effective_rank": d["effective_rank"], "emb_avg_abs_corr": d["avg_abs_corr"]})
        self.train_seconds += seconds
        self.images_seen += steps * self.batch_size
        return m


# ─────────────────────────────── evaluation ───────────────────────────────
def _subset(n: int, cap: int | None, seed: int) -> torch.Tensor | None:
    if cap is None or cap >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def evaluate_model(model: torch.nn.Module, cfg: DictConfig, device: torch.device,
                   amp_dtype: torch.dtype | None = None, collapse_samples: int = 8192) -> dict[str, Any]:
    """Linear probe + kNN top-1 on frozen backbone features and collapse diagnostics.

    Uses dataset splits ``train`` (probe fit; weight decay chosen on a held-out part of it) and ``test``
    (reported once). ``eval.max_train_samples`` caps the train images; collapse uses at most
    ``collapse_samples`` train images (projector embeddings and backbone features)."""
    from ..data import load_dataset
    from ..evaluate import collapse_diagnostics, extract_features, knn_top1, linear_probe

    ev = cfg.eval
    train = load_dataset(cfg.dataset, "train")
    test = load_dataset(cfg.dataset, "test")
    tr_img, tr_y = train.images, train.labels
    idx = _subset(len(tr_img), ev.max_train_samples, int(cfg.seed))
    if idx is not None:
        tr_img, tr_y = tr_img[idx], tr_y[idx]
    backbone, projector = model.backbone, model.projector
    tr_f, tr_z = extract_features(backbone, tr_img, cfg.dataset, device, autocast_dtype=amp_dtype, head=projector)
    te_f = extract_features(backbone, test.images, cfg.dataset, device, autocast_dtype=amp_dtype)
    tr_y, te_y = tr_y.to(device), test.labels.to(device)
    nc = int(cfg.dataset.num_classes) if cfg.dataset.num_classes is not None else len(train.classes)
    out: dict[str, Any] = {"linear_top1": None, "knn_top1": None, "probe": None}
    if not (torch.isfinite(tr_f).all() and torch.isfinite(te_f).all()):
        return out | {"collapse": None, "collapse_backbone": None}
    if ev.linear:
        probe = linear_probe(tr_f, tr_y, te_f, te_y, weight_decays=list(ev.probe_weight_decays),
                             val_fraction=float(ev.probe_val_fraction), max_iter=int(ev.probe_max_iter),
                             seed=int(cfg.seed), num_classes=nc)
        out["linear_top1"] = probe["top1"]
        out["probe"] = {"weight_decay": probe["weight_decay"], "train_top1": probe["train_top1"],
                        "val_top1": {str(k): v for k, v in probe["val_top1"].items()}}
    if ev.knn:
        out["knn_top1"] = knn_top1(tr_f, tr_y, te_f, te_y, k=int(ev.knn_k),
                                   temperature=float(ev.knn_temperature), num_classes=nc)
    m = min(collapse_samples, len(tr_f))
    out["collapse"] = collapse_diagnostics(tr_z[:m])
    out["collapse_backbone"] = collapse_diagnostics(tr_f[:m])
    return out


# ───────────────────────────────── result ─────────────────────────────────
def _base_result(cfg: DictConfig | None, run_dir: Path) -> dict[str, Any]:
    c = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}
    lr = c.get("lr", {})
    return {
        "schema": SCHEMA, "run_id": run_dir.name, "study": c.get("study"), "status": None,
        "method": c.get("method", {}).get("name"), "batch_size": c.get("batch_size"),
        "epochs": c.get("epochs"), "seed": c.get("seed"), "lr": lr.get("effective"),
        "lr_base": lr.get("base"), "lr_scaling": lr.get("scaling"),
        "dataset": c.get("dataset", {}).get("name"), "backbone": c.get("model", {}).get("name"),
        "linear_top1": None, "knn_top1": None, "final_loss": None, "diverged_at_epoch": None,
        "collapse": None, "collapse_backbone": None, "train_seconds": None, "images_per_second": None,
        "device": None, "git_commit": git_state()[0], "versions": versions(),
        "config_hash": config_hash(cfg) if cfg is not None else None, "finished_at": None,
    }


def _finish(run_dir: Path, result: dict[str, Any], dist: Dist) -> dict[str, Any]:
    result["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if dist.is_main:
        atomic_write_json(run_dir / "result.json", result)
    return result


def _error_text(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return f"{type(exc).__name__}: {first}\n{tail[-4000:]}"


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Drop metric lines after the resumed checkpoint's epoch (they are recomputed)."""
    rows = read_jsonl(path)
    keep = [r for r in rows if int(r.get("epoch", 0)) <= epoch]
    if len(keep) != len(rows) or (path.exists() and not path.read_text().endswith("\n")):
        import json
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))


def run_cell(run_dir: Path | str) -> dict[str, Any]:
    """Train + evaluate the cell in ``run_dir`` (resuming from its checkpoints); return result.json's dict.

    A result.json with status done/diverged is returned without training. Divergence (non-finite loss)
    never raises; any other exception writes status "failed" with the error, then re-raises."""
    run_dir = Path(run_dir)
    tune_malloc()
    res_path = run_dir / "result.json"
    if res_path.exists():
        import json
        try:
            prev = json.loads(res_path.read_text())
        except json.JSONDecodeError:
            prev = {}
        if prev.get("status") in TERMINAL:
            return prev
    cfg = load_run_config(run_dir / "config.yaml")
    created_group = ddp.init_from_env(cfg)
    dist = _dist()
    result = _base_result(cfg, run_dir)
    try:
        return _train(run_dir, cfg, result, dist)
    except Exception as exc:
        result.update(status="failed", error=_error_text(exc))
        _finish(run_dir, result, dist)
        raise
    finally:
        if created_group:
            ddp.destroy()


def _init_eval(run: "_Run", run_dir: Path, cfg: DictConfig, dist: Dist) -> dict[str, Any]:
    """``eval.at_init``: probe the untrained network once (init_eval.json, kept across resumes).

    The random-init probe is the baseline SSL has to beat: on small images random conv features are
    already strong, so a trained run's accuracy means little without it."""
    path = run_dir / "init_eval.json"
    if not cfg.eval.get("at_init", False):
        return {}
    if path.exists():
        import json
        return json.loads(path.read_text())
    if run.epoch > 0:  # resumed from a checkpoint written before at_init was asked for: init is gone
        return {}
    ev: dict[str, Any] = {}
    if dist.is_main:
        full = evaluate_model(run.model, cfg, run.device, run.amp_dtype)
        ev = {k: full[k] for k in ("linear_top1", "knn_top1", "probe", "collapse_backbone")}
        atomic_write_json(path, ev)
        _log(f"[{run_dir.name}] at init: linear_top1={ev['linear_top1']} knn_top1={ev['knn_top1']}")
    ddp.barrier()
    return ev


def _train(run_dir: Path, cfg: DictConfig, result: dict[str, Any], dist: Dist) -> dict[str, Any]:
    run = _Run(run_dir, cfg)
    result["device"] = _device_name(run.device)
    ckpt_dir = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    st = load_checkpoint(ckpt_dir, map_location=run.device)
    if st is not None:
        run.restore(st)
        _log(f"[{run_dir.name}] resumed from epoch {run.epoch}")
    if dist.is_main:
        _truncate_metrics(metrics_path, run.epoch)
        if run.epoch == 0:
            _log(f"[{run_dir.name}] {cfg.method.name} B={run.batch_size} lr={run.lr:.4g} "
                 f"({cfg.lr.scaling} from {cfg.lr.base}) steps/epoch={run.steps_per_epoch} "
                 f"device={result['device']} amp={run.amp_dtype}")
    init = _init_eval(run, run_dir, cfg, dist)
    result.update(init_linear_top1=init.get("linear_top1"), init_knn_top1=init.get("knn_top1"))
    epochs, every_ckpt = int(cfg.epochs), int(cfg.checkpoint.every)
    eval_every = int(cfg.eval.every or 0)
    for epoch in range(run.epoch + 1, epochs + 1):
        if cfg.debug.fail_at_epoch is not None and epoch == int(cfg.debug.fail_at_epoch):
            raise RuntimeError(f"debug.fail_at_epoch: injected failure at the start of epoch {epoch}")
        m = run.train_epoch(epoch)
        diverged = m.pop("diverged")
        if not diverged and eval_every and epoch % eval_every == 0 and epoch < epochs:
            if dist.is_main:
                ev = evaluate_model(run.model, cfg, run.device, run.amp_dtype)
                m.update(linear_top1=ev["linear_top1"], knn_top1=ev["knn_top1"])
            ddp.barrier()
        if dist.is_main:
            append_jsonl(metrics_path, m)
            _log(f"[{run_dir.name}] epoch {epoch}/{epochs} loss={m['loss']} lr={m['lr']:.4g} "
                 f"{m['seconds']:.1f}s {m['images_per_second'] or 0:.0f} img/s")
        if diverged:
            result.update(status="diverged", diverged_at_epoch=epoch, final_loss=None,
                          train_seconds=run.train_seconds,
                          images_per_second=run.images_seen / run.train_seconds if run.train_seconds else None)
            _log(f"[{run_dir.name}] diverged at epoch {epoch} (non-finite loss)")
            return _finish(run_dir, result, dist)
        run.epoch = epoch
        run.last_loss = m["loss"]
        if epoch % every_ckpt == 0 or epoch == epochs:
            st = run.state()  # collective under DDP
            if dist.is_main:
                save_checkpoint(ckpt_dir, st)
            ddp.barrier()

    if not dist.is_main:  # rank 0 evaluates and writes result.json; the others are done
        ddp.barrier()
        result.update(status="done", final_loss=run.last_loss)
        return result
    ev = evaluate_model(run.model, cfg, run.device, run.amp_dtype)
    result.update(status="done", final_loss=run.last_loss, linear_top1=ev["linear_top1"],
                  knn_top1=ev["knn_top1"], collapse=ev["collapse"], collapse_backbone=ev["collapse_backbone"],
                  probe=ev["probe"], train_seconds=run.train_seconds,
                  images_per_second=run.images_seen / run.train_seconds if run.train_seconds else None)
    _log(f"[{run_dir.name}] done: linear_top1={ev['linear_top1']} knn_top1={ev['knn_top1']}")
    out = _finish(run_dir, result, dist)
    ddp.barrier()
    return out
