"""When a run evaluates, and which rank does it: the untrained network (``eval.at_init``, kept in
init_eval.json), every ``eval.every`` epochs, and the end. Rank 0 evaluates; the other ranks wait for it.
What an evaluation computes is bsstudy/evaluate/model.py's."""
from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from ..evaluate.model import evaluate_at_init, evaluate_model
from ..io import atomic_write_json
from ..layout import RunPaths
from . import distributed as ddp
from .hooks import log
from .setup import Run

T = TypeVar("T")


def on_main(run: Run, fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 (None on the others), then every rank waits for rank 0."""
    out = fn() if run.dist.is_main else None
    ddp.barrier()
    return out


def evaluate(run: Run, run_id: str) -> dict[str, Any]:
    """``evaluate_model`` of the run's model under its config; each phase is logged as it starts."""
    return evaluate_model(run.model, run.cfg, run.device, run.amp_dtype, say=lambda msg: log(run_id, msg))


def at_init(run: Run, paths: RunPaths) -> dict[str, Any]:
    """The probe of the untrained network; ``{}`` without ``eval.at_init``. Computed once, before the first
    step, into init_eval.json; a resumed run reads the file. Ranks other than 0 get ``{}`` on the first
    start (their result is never written)."""
    if not run.cfg.eval.at_init:
        return {}
    if paths.init_eval.exists():
        return json.loads(paths.init_eval.read_text())
    if run.progress.epoch > 0:  # resumed, but the file is gone: the untrained network cannot be probed
        return {}

    def probe() -> dict[str, Any]:
        log(paths.run_id, "at init: probing the untrained network")
        ev = evaluate_at_init(run.model, run.cfg, run.device, run.amp_dtype,
                              say=lambda msg: log(paths.run_id, msg))
        atomic_write_json(paths.init_eval, ev)
        log(paths.run_id, f"at init: linear_top1={ev['linear_top1']} knn_top1={ev['knn_top1']}")
        return ev

    return on_main(run, probe) or {}


def due(run: Run, epoch: int) -> bool:
    """Whether ``eval.every`` asks for an evaluation after ``epoch`` (never after the last: the final
    evaluation goes into result.json)."""
    every = int(run.cfg.eval.every)
    return every > 0 and epoch % every == 0 and epoch < int(run.cfg.epochs)
