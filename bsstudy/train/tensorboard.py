"""TensorBoard event files of a run (``<run dir>/tb/``), so a study can be watched with
``tensorboard --logdir results/<study>``. A view only: metrics.jsonl, init_eval.json and result.json stay the
source of truth, and everything written here is also there.

Scalars, against the optimizer step (``step`` of metrics.jsonl): per epoch ``train/loss``, ``train/<term>``,
``train/lr``, ``train/images_per_second``, ``collapse/emb_*`` (online diagnostics of the last batch);
``eval/linear_top1`` and ``eval/knn_top1`` at step 0 (``eval.at_init``), every ``eval.every`` epochs and at
the end; the final evaluation's ``eval_collapse/{embeddings,backbone}_<diagnostic>``.

A resumed run opens a new event file with ``purge_step`` = the checkpoint's step + 1: TensorBoard hides what
the interrupted process logged after the checkpoint (those epochs are trained again), as resume drops their
metrics.jsonl lines. A start from scratch purges from step 0.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# metrics.jsonl keys that are not scalars to plot (``step`` is the x axis, ``epoch``/``seconds`` bookkeeping).
_NOT_PLOTTED = ("epoch", "step", "seconds", "linear_top1", "knn_top1")
_EVAL_KEYS = ("linear_top1", "knn_top1")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TensorBoardLog:
    """Writes a run's scalars into ``tb_dir`` (rank 0 only; ``run_cell`` makes one when ``log.tensorboard``)."""

    def __init__(self, tb_dir: Path, resumed_step: int) -> None:
        """``resumed_step``: optimizer steps of the checkpoint the run resumed from (0: a fresh start)."""
        from torch.utils.tensorboard import SummaryWriter

        tb_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=resumed_step + 1 if resumed_step else 0)

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if _finite(value):   # a diverged epoch's null loss is no point
            self.writer.add_scalar(tag, float(value), step)

    def epoch(self, metrics: dict[str, Any]) -> None:
        """One metrics.jsonl line (with the accuracies of an ``eval.every`` evaluation, if any)."""
        step = int(metrics["step"])
        for k, v in metrics.items():
            if k in _NOT_PLOTTED:
                continue
            self._scalar(f"collapse/{k}" if k.startswith("emb_") else f"train/{k}", v, step)
        self.evaluation(metrics, step)
        self.writer.flush()   # a SLURM job may be killed at any moment: what is logged is on disk

    def evaluation(self, ev: dict[str, Any], step: int) -> None:
        """Accuracies of an evaluation (at init: step 0) and, for the final one, its collapse diagnostics."""
        for k in _EVAL_KEYS:
            self._scalar(f"eval/{k}", ev.get(k), step)
        for name, key in (("embeddings", "collapse"), ("backbone", "collapse_backbone")):
            for k, v in (ev.get(key) or {}).items():
                self._scalar(f"eval_collapse/{name}_{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
