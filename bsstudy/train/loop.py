"""One training run (one sweep cell): ``run_cell(run_dir)``, read top to bottom.

set-up (setup.py) → resume from checkpoints (resume.py) → probe at init (evaluation.py) → the epoch loop
below (one epoch: epoch.py) → final evaluation (bsstudy/evaluate/model.py) → result.json (record.py).
Every method trains in the same loop: methods differ only in objective and projector. Divergence
(non-finite loss) is an outcome, not an error; any exception writes status "failed", then re-raises.

Distributed (bsstudy/train/distributed.py): rank/world_size come from ``setup.current_dist()`` only; only
rank 0 writes files and evaluates; each rank takes its contiguous shard of every global batch
(``batch_size`` is the GLOBAL batch); the model is wrapped in DDP and objectives gather embeddings across
ranks, so W ranks x B/W train like 1 rank x B (with ``distributed.sync_bn``, BatchNorm statistics are
global too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..config import load_checked_run_config
from ..io import append_jsonl
from ..layout import TERMINAL, RunPaths, Status, read_result, write_result
from ..locks import hold_run_lock
from ..runtime import tune_malloc
from . import distributed as ddp
from . import evaluation
from .epoch import train_epoch
from .hooks import Hook, RunShape, close_hooks, default_hooks, log, log_settings
from .record import error_text, run_fields, run_result
from .resume import resume, save
from .setup import Run, build_run, current_dist, device_name
from .tensorboard import TensorBoardLog


@hold_run_lock  # one trainer per run directory, for its whole life (bsstudy/locks.py)
def run_cell(run_dir: Path | str, hooks: Sequence[Hook] = (), restart: bool = False) -> dict[str, Any]:
    """Train + evaluate the cell in ``run_dir`` (resuming from its checkpoints); return result.json's dict.

    A result.json with status done/diverged is returned without training. ``hooks`` run after the
    config's own (bsstudy/train/hooks.py). ``restart``: when no checkpoint is readable, set them aside
    and start over from epoch 0 instead of failing (``bsstudy train --restart``)."""
    paths = RunPaths(Path(run_dir))
    tune_malloc()
    previous = read_result(paths.result)
    if previous is not None and previous.get("status") in TERMINAL:
        return previous
    cfg = load_checked_run_config(paths.config)  # plan's checks + run_id hash (bsstudy.config)
    created_group = ddp.init_from_env(cfg)
    dist = current_dist()
    fields = run_fields(cfg, paths.run_id)
    run: Run | None = None
    init: dict[str, Any] | None = None
    tb: TensorBoardLog | None = None
    try:
        run = build_run(cfg, dist)
        resume(run, paths, restart=restart)
        if dist.is_main and run.progress.epoch == 0:
            log(paths.run_id, f"{cfg.method.name} B={run.batch_size} lr={run.lr:.4g} ({cfg.lr.scaling} from "
                f"{cfg.lr.base}) steps/epoch={run.steps_per_epoch} device={device_name(run.device)} "
                f"amp={run.amp_dtype}")
        if dist.is_main and log_settings(cfg)["tensorboard"]:
            tb = TensorBoardLog(paths.tensorboard, run.schedule.step_count)
        init = evaluation.at_init(run, paths)
        if tb is not None and init and run.progress.epoch == 0:   # (re)started from scratch: step 0 was purged
            tb.evaluation(init, 0)
        shape = RunShape(paths.run_id, int(cfg.epochs), run.steps_per_epoch, run.batch_size, run.progress.epoch)
        run_hooks = [*default_hooks(cfg, dist.is_main, shape), *hooks]
        try:
            diverged_at = _train(run, paths, run_hooks, tb)
        finally:
            close_hooks(run_hooks)
        if diverged_at is not None:
            result = run_result(fields, Status.DIVERGED, device=device_name(run.device), init=init,
                                progress=run.progress, diverged_at_epoch=diverged_at)
            if dist.is_main:
                write_result(paths.result, result)
            return result
        final = evaluation.evaluate(run, paths.run_id) if dist.is_main else None
        result = run_result(fields, Status.DONE, device=device_name(run.device), init=init,
                            progress=run.progress, final_loss=run.progress.last_loss, evaluation=final)
        if tb is not None:
            tb.evaluation(final, run.schedule.step_count)
        if dist.is_main:
            write_result(paths.result, result)
            log(paths.run_id, f"done: linear_top1={_num(result['linear_top1'])} "
                f"knn_top1={_num(result['knn_top1'])}")
        ddp.barrier()  # the other ranks return once result.json is written
        return result
    except Exception as exc:
        device = device_name(run.device) if run is not None else None
        if dist.is_main:
            write_result(paths.result, run_result(fields, Status.FAILED, device=device, init=init,
                                                  error=error_text(exc)))
        raise
    finally:
        if tb is not None:
            tb.close()
        if created_group:
            ddp.destroy()


def _num(v: float | None) -> str:
    """A metric as a log shows it: 4 significant digits (``None`` for a missing one)."""
    return "None" if v is None else f"{v:.4g}"


def _train(run: Run, paths: RunPaths, hooks: Sequence[Hook], tb: TensorBoardLog | None) -> int | None:
    """Epochs ``progress.epoch + 1 .. epochs``: train, log, checkpoint. Returns the epoch whose loss was
    non-finite (training stops there), or None."""
    cfg, progress = run.cfg, run.progress
    epochs, checkpoint_every = int(cfg.epochs), int(cfg.checkpoint.every)
    for epoch in range(progress.epoch + 1, epochs + 1):
        ep = train_epoch(run, epoch, hooks)
        progress.train_seconds += ep.seconds
        progress.images_seen += ep.images
        m = ep.metrics
        if not ep.diverged and evaluation.due(run, epoch):
            ev = evaluation.on_main(run, lambda: evaluation.evaluate(run, paths.run_id))
            if ev is not None:
                m.update(linear_top1=ev["linear_top1"], knn_top1=ev["knn_top1"])
        if run.dist.is_main:
            append_jsonl(paths.metrics, m)
            if tb is not None:
                tb.epoch(m)
            log(paths.run_id, f"epoch {epoch}/{epochs} loss={_num(m['loss'])} lr={m['lr']:.4g} "
                f"{m['seconds']:.1f}s {m['images_per_second'] or 0:.0f} img/s")
        if ep.diverged:
            log(paths.run_id, f"diverged at epoch {epoch} (non-finite loss)")
            return epoch
        progress.epoch, progress.last_loss = epoch, m["loss"]
        if epoch % checkpoint_every == 0 or epoch == epochs:
            save(run, paths)
    return None
