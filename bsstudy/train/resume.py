"""A run's checkpoint: what it holds (``checkpoint_state``), saving it, and resuming from it.

Files and RNG capture are bsstudy/train/checkpoint.py's; this module decides what of a ``Run`` goes in.
Checkpoints of older versions load too: ``world_size``, ``augment_per_rank``, ``last_loss`` and ``target``
may be absent, and a ``scaler`` entry (always None) is ignored. Method state lives in two entries, both
plain tensors/dicts/ints: ``target`` (the momentum target network's parameters and buffers, or None) and
``objective`` (the objective's ``state_dict()``: the MoCo queue and its pointer, SogCLR's per-sample u).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import config_hash
from ..errors import UserError
from ..io import atomic_write_text, read_jsonl
from ..layout import RunPaths
from . import distributed as ddp
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .hooks import log
from .setup import Run


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything a resume needs. Collective under DDP (every rank calls it): each rank's augmentation
    stream is kept."""
    p = run.progress
    return {
        "augment_per_rank": ddp.gather_objects(run.aug_gen.get_state()), "world_size": run.dist.world_size,
        "epoch": p.epoch, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(), "objective": run.objective.state_dict(),
        "target": None if run.target is None else run.target.state(),
        "rng": rng_state({"augment": run.aug_gen}),
        "train_seconds": p.train_seconds, "images_seen": p.images_seen, "last_loss": p.last_loss,
        "config_hash": config_hash(run.cfg),
    }


def restore(run: Run, st: dict[str, Any], where: Path) -> None:
    """Load ``st`` (a ``checkpoint_state``) into ``run``; UserError if it belongs to another config or world size."""
    if st.get("config_hash") != config_hash(run.cfg):
        raise UserError(f"{where}: checkpoint belongs to a different config; "
                        "remove the checkpoints or use another run dir")
    run.model.load_state_dict(st["model"])
    run.optimizer.load_state_dict(st["optimizer"])
    run.schedule.load_state_dict(st["schedule"])
    run.objective.load_state_dict(st["objective"])
    if (st.get("target") is None) != (run.target is None):
        raise UserError(f"{where}: checkpoint {'lacks' if run.target is not None else 'has'} a momentum "
                        "target network; remove the checkpoints or use another run dir")
    if run.target is not None:
        run.target.load_state(st["target"])
    set_rng_state(st["rng"], {"augment": run.aug_gen})
    world = st.get("world_size", 1)   # absent in checkpoints written before DDP
    if world != run.dist.world_size:
        raise UserError(f"{where}: written with world size {world}, "
                        f"resumed with {run.dist.world_size}; resume with the same world size")
    if "augment_per_rank" in st:
        run.aug_gen.set_state(st["augment_per_rank"][run.dist.rank])
    run.progress.epoch = int(st["epoch"])
    run.progress.train_seconds = float(st["train_seconds"])
    run.progress.images_seen = int(st["images_seen"])
    run.progress.last_loss = st.get("last_loss")


def resume(run: Run, paths: RunPaths, restart: bool = False) -> None:
    """Continue from the newest loadable checkpoint, if any; metric lines of later epochs (written before a
    kill) are dropped, to be recomputed. ``restart``: see ``checkpoint.load_checkpoint``."""
    st = load_checkpoint(paths.checkpoints, map_location=run.device, restart=restart)
    if st is not None:
        restore(run, st, paths.checkpoints)
        log(paths.run_id, f"resumed from epoch {run.progress.epoch}")
    if run.dist.is_main:
        _truncate_metrics(paths.metrics, run.progress.epoch)


def save(run: Run, paths: RunPaths) -> None:
    """Checkpoint ``run`` (rank 0 writes; every rank takes part and waits)."""
    st = checkpoint_state(run)  # collective under DDP
    if run.dist.is_main:
        save_checkpoint(paths.checkpoints, st)
    ddp.barrier()


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Keep the metric lines of epochs <= ``epoch`` (and end the file with a newline)."""
    rows = read_jsonl(path)
    keep = [r for r in rows if int(r.get("epoch", 0)) <= epoch]
    if len(keep) != len(rows) or (path.exists() and not path.read_text().endswith("\n")):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
