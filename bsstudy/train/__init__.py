"""Single-run trainer: ``run_cell(run_dir)`` (set-up, resume, epoch loop, evaluation, result record;
LARS/SGD/AdamW, warmup+cosine, checkpoint/resume, divergence guard). See docs/train.md."""
from __future__ import annotations

from typing import Any, Sequence


def run_cell(run_dir: Any, hooks: Sequence[Any] = (), restart: bool = False) -> dict:
    """Train and evaluate the cell in ``run_dir``; see :func:`bsstudy.train.loop.run_cell`."""
    from .loop import run_cell as _run_cell

    return _run_cell(run_dir, hooks, restart=restart)


__all__ = ["run_cell"]
