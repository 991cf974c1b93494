"""What the epoch calls besides training: progress output and debug injection, as hooks.

``train_epoch`` calls, on every hook, ``epoch_start(epoch, steps)`` before the first step,
``step_end(step, loss)`` after every completed step (not after the step whose loss turned non-finite) and
``epoch_end(epoch)`` when the epoch's steps are over. A hook must not touch the run's RNG streams or
tensors: training is the same with any set of hooks. ``default_hooks`` gives the ones a config asks for;
``run_cell(run_dir, hooks=...)`` adds more (tests, instrumentation).

Progress (rank 0 only): on a terminal, ``ProgressBar`` (one tqdm bar for the whole run); otherwise (SLURM
logs, pipes) ``ProgressLog``, one line every ``log.progress_every`` steps (default: every 10% of the run).
Both read the loss as a number only when they show it (on CUDA, ``float(loss)`` waits for the GPU).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

# Without log.progress_every, the non-terminal progress line comes every this fraction of the run's steps.
PROGRESS_FRACTION = 0.1


class Hook:
    """A no-op hook; subclasses override what they need."""

    def epoch_start(self, epoch: int, steps: int) -> None:
        """Before the first step of ``epoch`` (1-based), which has ``steps`` steps."""

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        """After step ``step`` (0-based within the epoch); ``loss`` is its detached loss."""

    def epoch_end(self, epoch: int) -> None:
        """After the last step of ``epoch`` (or the step at which it diverged)."""


@dataclass(frozen=True)
class RunShape:
    """What progress output needs to know about a run: its size and where it starts (a resume)."""
    run_id: str
    epochs: int
    steps_per_epoch: int
    batch_size: int            # GLOBAL batch: images per step
    start_epoch: int = 0       # epochs completed before this process started

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class _Pace(Hook):
    """Counts steps and training wall time (time outside ``epoch_start``..``epoch_end``, i.e. evaluation and
    checkpoints, is not counted), for images/s and the ETA of the remaining steps."""

    def __init__(self, shape: RunShape) -> None:
        self.shape = shape
        self.epoch = shape.start_epoch
        self.done = shape.start_epoch * shape.steps_per_epoch   # global steps of the run completed
        self.session_steps = 0                                   # ... of them by this process
        self.train_seconds = 0.0
        self._t0: float | None = None

    def epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch, self._t0 = epoch, time.perf_counter()
        self.done = (epoch - 1) * self.shape.steps_per_epoch

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        self.done = (self.epoch - 1) * self.shape.steps_per_epoch + step + 1
        self.session_steps += 1

    def epoch_end(self, epoch: int) -> None:
        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def seconds(self) -> float:
        """Training seconds of this process so far."""
        return self.train_seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def images_per_second(self) -> float | None:
        s = self.seconds()
        return self.session_steps * self.shape.batch_size / s if s > 0 else None

    def eta_seconds(self) -> float | None:
        """Seconds of training left at this process's pace (evaluation not included)."""
        s = self.seconds()
        if self.session_steps == 0 or s <= 0:
            return None
        return (self.shape.total_steps - self.done) * s / self.session_steps


def format_seconds(s: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``; ``?`` when unknown."""
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressBar(_Pace):
    """One tqdm bar for the whole run (steps; epoch, loss, images/s and tqdm's ETA), on stderr. Interactive
    terminals only: ``default_hooks`` decides."""

    REFRESH_SECONDS = 0.5   # how often the loss/speed postfix is read (a host sync on CUDA)

    def __init__(self, shape: RunShape) -> None:
        super().__init__(shape)
        self.bar: Any = None
        self._shown = 0.0

    def _open(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.shape.total_steps, initial=self.done, unit="step", file=sys.stderr,
                        dynamic_ncols=True, leave=False, desc=self._desc())

    def _desc(self) -> str:
        return f"[{self.shape.run_id}] epoch {self.epoch}/{self.shape.epochs}"

    def epoch_start(self, epoch: int, steps: int) -> None:
        super().epoch_start(epoch, steps)
        if self.bar is None:
            self._open()
        self.bar.set_description_str(self._desc(), refresh=False)

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        super().step_end(step, loss)
        now = time.perf_counter()
        if now - self._shown >= self.REFRESH_SECONDS or self.done == self.shape.total_steps:
            self._shown = now
            ips = self.images_per_second()
            self.bar.set_postfix_str(f"loss={float(loss):.4g} {ips or 0:.0f} img/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Remove the bar (the run's log lines stay)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressLog(_Pace):
    """Without a terminal: a line through ``log`` every ``every`` global steps and at the run's last step:
    epoch, step, percent, loss, images/s and the ETA of the remaining training."""

    def __init__(self, shape: RunShape, every: int) -> None:
        super().__init__(shape)
        self.every = every

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        super().step_end(step, loss)
        total = self.shape.total_steps
        if self.done % self.every == 0 or self.done == total:
            log(self.shape.run_id, f"epoch {self.epoch}/{self.shape.epochs} step {self.done}/{total} "
                f"({100 * self.done / total:.0f}%) loss={float(loss):.4g} {self.images_per_second() or 0:.0f} "
                f"img/s eta {format_seconds(self.eta_seconds())}")


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


def log_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's ``log:`` block; a config.yaml written before that block existed gets conf/config.yaml's."""
    from omegaconf import OmegaConf

    if "log" in cfg:
        return OmegaConf.to_container(cfg.log, resolve=True)
    from importlib.resources import files

    from ..layout import yaml_load

    return yaml_load(files("bsstudy.conf").joinpath("config.yaml").read_text())["log"]


def progress_every(setting: int | None, total_steps: int) -> int:
    """Steps between two non-terminal progress lines: ``log.progress_every``, or 10% of the run."""
    if setting is not None:
        return int(setting)
    return max(1, round(total_steps * PROGRESS_FRACTION))


def default_hooks(cfg: DictConfig, is_main: bool, shape: RunShape | None = None,
                  tty: bool | None = None) -> list[Hook]:
    """The config's debug injection, then on rank 0 (given the run's ``shape``) a progress bar when stderr
    is a terminal (``tty``: None = ask stderr), else a progress line every ``log.progress_every`` steps."""
    hooks: list[Hook] = [DebugInjection(cfg.debug)]
    if is_main and shape is not None:
        if sys.stderr.isatty() if tty is None else tty:
            hooks.append(ProgressBar(shape))
        else:
            every = progress_every(log_settings(cfg)["progress_every"], shape.total_steps)
            hooks.append(ProgressLog(shape, every))
    return hooks


def close_hooks(hooks: list[Hook]) -> None:
    """Close what the hooks hold open (the progress bar), so later lines are not drawn over it."""
    for h in hooks:
        close = getattr(h, "close", None)
        if callable(close):
            close()


def log(run_id: str, msg: str) -> None:
    """One progress line of run ``run_id`` on stderr (above a progress bar, when one is shown)."""
    from tqdm import tqdm

    tqdm.write(f"[{run_id}] {msg}", file=sys.stderr)
    sys.stderr.flush()
