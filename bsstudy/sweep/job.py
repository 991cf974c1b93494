"""The submitit job of one cell. Lives in an importable module: submitit pickles it by reference."""
from __future__ import annotations

import os

import submitit


class CellJob(submitit.helpers.Checkpointable):
    """Train one cell: ``bsstudy.train.run_cell(run_dir)``, which resumes from ``run_dir/checkpoints``.

    On preemption or timeout submitit calls :meth:`checkpoint` (signal USR2) and requeues what it returns:
    this same job, which resumes from the trainer's last checkpoint. Weights are never pickled.
    """

    def __init__(self, run_dir: str, threads: int | None = None) -> None:
        self.run_dir = str(run_dir)
        self.threads = threads

    def __call__(self) -> dict:
        if self.threads:
            # Local runs share the machine's cores: split them between the parallel jobs.
            import torch

            os.environ["OMP_NUM_THREADS"] = str(self.threads)
            torch.set_num_threads(self.threads)
        from bsstudy.train import run_cell

        return run_cell(self.run_dir)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Requeue this job unchanged; the trainer's own checkpoints carry the state."""
        return submitit.helpers.DelayedSubmission(CellJob(self.run_dir, self.threads))

    def __repr__(self) -> str:
        return f"CellJob({self.run_dir!r})"
