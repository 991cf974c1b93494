"""Advisory file locks (``fcntl.flock``): one ``bsstudy submit`` per study, one trainer per run directory.

- ``results/<study>/.submit.lock``: held by ``bsstudy submit`` for the whole call (state check, submission,
  the local dispatcher's life), so two submits can never both see a cell as ``planned`` and both start it.
- ``runs/<id>/.lock``: held by the training process for its whole life (``hold_run_lock`` around
  ``bsstudy.train.run_cell``), whatever started it (SLURM, a local submit, ``bsstudy train --run-dir``).
  Every rank of a multi-rank run holds its own (``.lock`` for rank 0, ``.lock.rank<r>`` for the others),
  so each process of a duplicate trainer stops at once instead of waiting for a peer.

The kernel drops a flock when its holder exits, however it exits (kill -9 included): no stale locks. The
lock file holds the holder's pid/host/job for messages; its content is never trusted for the decision.
On NFS, Linux emulates flock with POSIX locks (lockd): it works across nodes where lockd runs.
"""
from __future__ import annotations

import fcntl
import functools
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import UserError

SUBMIT_LOCK = ".submit.lock"
RUN_LOCK = ".lock"
# A status probe holds a shared lock for microseconds: a trainer starting at that moment retries this long.
_RUN_LOCK_RETRY_S = 3.0

F = TypeVar("F", bound=Callable[..., Any])


class LockHeld(UserError):
    """Someone else holds the lock (one-line message naming the lock file and its holder)."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f" ({text.splitlines()[0]})" if text else ""


def acquire(path: Path | str, retry_s: float = 0.0) -> int:
    """Take an exclusive flock on ``path`` (created if needed); return its fd, or raise LockHeld.

    The fd is close-on-exec (PEP 446): child processes do not inherit the lock unless passed on purpose."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    end = time.monotonic() + retry_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= end:
                os.close(fd)
                raise LockHeld(f"{path}: held by another process{_holder(path)}") from None
            time.sleep(0.05)
    set_holder(fd)
    return fd


def set_holder(fd: int, pid: int | None = None) -> None:
    """Write who holds the lock (this process, or ``pid`` it hands the lock to) for the other side's message."""
    job = os.environ.get("SLURM_JOB_ID")
    who = f"pid {pid or os.getpid()} on {socket.gethostname()}" + (f", SLURM job {job}" if job else "")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{who}\n".encode(), 0)


def release(fd: int) -> None:
    """Close a lock fd from :func:`acquire`. Not LOCK_UN: that would also unlock a child that inherited
    the fd (the detached dispatcher); the kernel drops the lock when the last copy of the fd closes."""
    os.close(fd)


def is_locked(path: Path | str) -> bool:
    """True when another open file holds a lock on ``path`` (a missing file is unlocked)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's shared lock


@contextmanager
def study_submit_lock(study_dir: Path | str, inherited_fd: int | None = None) -> Iterator[int]:
    """Hold ``<study>/.submit.lock`` for the block; a second submit gets a one-line UserError.

    ``inherited_fd``: a lock fd passed down by the parent submit (the detached local dispatcher)."""
    path = Path(study_dir) / SUBMIT_LOCK
    if inherited_fd is not None:
        fd = inherited_fd
        set_holder(fd)
    else:
        try:
            fd = acquire(path)
        except LockHeld:
            raise LockHeld(f"another bsstudy submit holds {path}{_holder(path)}; wait for it to end "
                           f"(`bsstudy status {study_dir}` shows its cells)") from None
    try:
        yield fd
    finally:
        release(fd)


def run_lock_path(run_dir: Path | str, rank: int = 0) -> Path:
    """The lock file of one rank's trainer of a run directory."""
    return Path(run_dir) / (RUN_LOCK if rank == 0 else f"{RUN_LOCK}.rank{rank}")


def _env_rank() -> int:
    """This process's rank as the launcher set it (torchrun RANK, or the SLURM task id under srun)."""
    for k in ("RANK", "SLURM_PROCID"):
        if k in os.environ:
            try:
                return int(os.environ[k])
            except ValueError:
                return 0
    return 0


@contextmanager
def run_lock(run_dir: Path | str) -> Iterator[None]:
    """Hold this rank's run lock for the block; raise a one-line LockHeld if another trainer has it."""
    path = run_lock_path(run_dir, _env_rank())
    if not path.parent.is_dir():  # the trainer's own error (missing run dir / config) comes first
        yield
        return
    try:
        fd = acquire(path, retry_s=_RUN_LOCK_RETRY_S)
    except LockHeld:
        raise LockHeld(f"{path}: another trainer is running this run directory{_holder(path)}; "
                       "not training it twice") from None
    try:
        yield
    finally:
        release(fd)


def hold_run_lock(fn: F) -> F:
    """Decorator: ``fn(run_dir, ...)`` runs while holding the run directory's lock (:func:`run_lock`)."""

    @functools.wraps(fn)
    def wrapper(run_dir, *args, **kwargs):
        with run_lock(run_dir):
            return fn(run_dir, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def run_is_training(run_dir: Path | str) -> bool:
    """A trainer holds the run directory's (rank-0) lock right now."""
    return is_locked(run_lock_path(run_dir))
