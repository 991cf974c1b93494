"""What the epoch calls besides training: progress output and debug injection, as hooks.

``train_epoch`` calls, on every hook, ``epoch_start(epoch, steps)`` before the first step,
``step_end(step, loss)`` after every completed step (not after the step whose loss turned non-finite) and
``epoch_end(epoch)`` when the epoch's steps are over. A hook must not touch the run's RNG streams or
tensors: training is the same with any set of hooks. ``default_hooks`` gives the ones a config asks for;
``run_cell(run_dir, hooks=...)`` adds more (tests, instrumentation).
"""
from __future__ import annotations

import sys
import time

import torch
from omegaconf import DictConfig


class Hook:
    """A no-op hook; subclasses override what they need."""

    def epoch_start(self, epoch: int, steps: int) -> None:
        """Before the first step of ``epoch`` (1-based), which has ``steps`` steps."""

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        """After step ``step`` (0-based within the epoch); ``loss`` is its detached loss."""

    def epoch_end(self, epoch: int) -> None:
        """After the last step of ``epoch`` (or the step at which it diverged)."""


class ProgressBar(Hook):
    """A tqdm bar per epoch (interactive terminals only: ``default_hooks`` decides)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar = None

    def epoch_start(self, epoch: int, steps: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", leave=False)

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{float(loss):.4g}")

    def epoch_end(self, epoch: int) -> None:
        self.bar.close()
        self.bar = None


class DebugInjection(Hook):
    """``debug.fail_at_epoch``: raise at the start of that epoch; ``debug.sleep_per_step``: sleep after every
    step (widens the window in which tests kill a run)."""

    def __init__(self, debug: DictConfig) -> None:
        self.fail_at_epoch = None if debug.fail_at_epoch is None else int(debug.fail_at_epoch)
        self.sleep_per_step = float(debug.sleep_per_step)

    def epoch_start(self, epoch: int, steps: int) -> None:
        if epoch == self.fail_at_epoch:
            raise RuntimeError(f"debug.fail_at_epoch: injected failure at the start of epoch {epoch}")

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        if self.sleep_per_step > 0:
            time.sleep(self.sleep_per_step)


def default_hooks(cfg: DictConfig, is_main: bool) -> list[Hook]:
    """The config's debug injection, then a progress bar on rank 0 when stderr is a terminal."""
    hooks: list[Hook] = [DebugInjection(cfg.debug)]
    if is_main and sys.stderr.isatty():
        hooks.append(ProgressBar(int(cfg.epochs)))
    return hooks


def log(run_id: str, msg: str) -> None:
    """One progress line of run ``run_id`` on stderr."""
    print(f"[{run_id}] {msg}", file=sys.stderr, flush=True)
