"""Sweeps: plan (grid -> run configs), submit (submitit: SLURM arrays or local), status. docs/sweep.md."""
