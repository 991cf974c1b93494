"""When a run evaluates, and which rank does it: the untrained network (``eval.at_init``, kept in
init_eval.json), every ``eval.every`` epochs, and the end. Rank 0 evaluates; the other ranks wait for it.
What an evaluation computes is bsstudy/evaluate/model.py's."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, TypeVar

from omegaconf import OmegaConf

from ..evaluate.model import evaluate_at_init, evaluate_model
from ..io import atomic_write_json
from ..layout import RunPaths, read_result
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
        cache = init_cache_file(run, paths)
        # an absent or unreadable entry (None) is probed again; read_result reads any JSON-object file so
        ev = read_result(cache) if cache is not None else None
        reused = ev is not None
        if ev is None:
            log(paths.run_id, "at init: probing the untrained network")
            ev = evaluate_at_init(run.model, run.cfg, run.device, run.amp_dtype,
                                  say=lambda msg: log(paths.run_id, msg))
            if cache is not None:
                atomic_write_json(cache, ev)
        atomic_write_json(paths.init_eval, ev)
        log(paths.run_id, f"at init{' (same untrained network as an earlier run of the study)' if reused else ''}: "
                          f"linear_top1={ev['linear_top1']} knn_top1={ev['knn_top1']}")
        return ev

    return on_main(run, probe) or {}


INIT_CACHE_DIR = ".init_eval_cache"


def init_cache_file(run: Run, paths: RunPaths) -> Path | None:
    """Where the study keeps the at-init probe of this run's untrained backbone, shared by its runs; None for
    a run outside a study (results/<study>/runs/<id>).

    The probe of the untrained network depends only on the backbone's weights, the data and the
    evaluation settings (``INIT_FIELDS`` hold nothing of the projector), and every run of a seed starts
    from the same backbone whatever its method or batch size: a study of M methods x B batch sizes probes
    it once per seed, not M x B times. The key hashes the weights themselves, so a different
    initialisation can never reuse another's probe."""
    study = paths.dir.parent.parent
    if paths.dir.parent.name != "runs" or not (study / "plan.csv").is_file():
        return None
    h = hashlib.sha256()
    for name, t in run.model.backbone.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    c = OmegaConf.to_container(run.cfg, resolve=True)
    h.update(json.dumps({k: c[k] for k in ("eval", "dataset", "model", "seed")}, sort_keys=True).encode())
    return study / INIT_CACHE_DIR / f"{h.hexdigest()[:32]}.json"


def due(run: Run, epoch: int) -> bool:
    """Whether ``eval.every`` asks for an evaluation after ``epoch`` (never after the last: the final
    evaluation goes into result.json)."""
    every = int(run.cfg.eval.every)
    return every > 0 and epoch % every == 0 and epoch < int(run.cfg.epochs)
