"""The result record of a run (result.json; schema: ``bsstudy.layout.RESULT_FIELDS``).

Built once, when the run ends, from what is known then: ``run_fields`` (the config and the code, known
before training starts) plus the outcome given to ``run_result``. Fields that do not apply stay None.
"""
from __future__ import annotations

import datetime as _dt
import traceback
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config import config_hash
from ..layout import Status, new_result
from ..provenance import git_state, versions
from .setup import Progress


def run_fields(cfg: DictConfig, run_id: str) -> dict[str, Any]:
    """The fields fixed before training: what ran (from the config) and with which code."""
    c = OmegaConf.to_container(cfg, resolve=True)
    commit, dirty = git_state()
    return {
        "run_id": run_id, "study": c["study"], "method": c["method"]["name"], "batch_size": c["batch_size"],
        "epochs": c["epochs"], "seed": c["seed"], "lr": c["lr"]["effective"], "lr_base": c["lr"]["base"],
        "lr_scaling": c["lr"]["scaling"], "dataset": c["dataset"]["name"], "backbone": c["model"]["name"],
        "git_commit": commit, "git_dirty": dirty, "versions": versions(), "config_hash": config_hash(cfg),
    }


def run_result(fields: dict[str, Any], status: Status, *, device: str | None = None,
               init: dict[str, Any] | None = None, progress: Progress | None = None,
               final_loss: float | None = None, diverged_at_epoch: int | None = None,
               evaluation: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    """The result record: ``fields`` (``run_fields``) + the outcome.

    ``init``: the at-init probe (``{}`` without eval.at_init; None when the run failed before it);
    ``progress``: training time and throughput (done and diverged runs); ``evaluation``: the final
    ``evaluate_model`` (done runs, rank 0); ``error``: ``error_text`` of a failed run."""
    out: dict[str, Any] = dict(fields, status=status.value, device=device,
                               finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    if init is not None:
        out.update(init_linear_top1=init.get("linear_top1"), init_knn_top1=init.get("knn_top1"))
        if init.get("few_shot") is not None:
            out["init_few_shot"] = init["few_shot"]
    if progress is not None:
        out.update(final_loss=final_loss, train_seconds=progress.train_seconds,
                   images_per_second=progress.images_per_second)
    if diverged_at_epoch is not None:
        out["diverged_at_epoch"] = diverged_at_epoch
    if evaluation is not None:
        out.update({k: evaluation[k] for k in ("linear_top1", "knn_top1", "collapse", "collapse_backbone",
                                               "probe")})
        if evaluation.get("few_shot") is not None:
            out["few_shot"] = evaluation["few_shot"]
    if error is not None:
        out["error"] = error
    return new_result(**out)


def error_text(exc: BaseException) -> str:
    """The ``error`` field: type and first line of the exception, then the traceback tail."""
    first = (str(exc).strip().splitlines() or [""])[0]
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    return f"{type(exc).__name__}: {first}\n{tail[-4000:]}"
