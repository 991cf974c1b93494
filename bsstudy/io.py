"""Atomic file writes: a reader never sees a half-written file (temp file in the same dir + os.replace).

Files get the mode ``open()`` would give them (0o666 minus the umask), not mkstemp's 0o600, and a full
disk is reported as ``DiskFullError`` naming the file, whatever layer (torch's zip writer) hit it."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(UserError, OSError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT). An ``OSError`` (``errno``, ``filename``)
    and a ``UserError`` (the CLI prints its one line)."""

    def __str__(self) -> str:
        return f"{self.strerror} while writing {self.filename} (free some space and rerun)"


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is set-and-return)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the set-and-restore window is the best there is
    os.umask(mask)
    return mask


def _disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` behind ``exc``, if any. torch's zip writer swallows the file object's
    OSError and raises "[enforce fail at inline_container.cc] unexpected pos", with the OSError as context."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return e
        stack += [e.__cause__, e.__context__]
    return None


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            os.chmod(tmp, 0o666 & ~current_umask())  # results are shared on clusters: the umask decides, as open()'s
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        full = _disk_full(exc)
        if full is not None:
            raise DiskFullError(full.errno, _FULL_ERRNOS[full.errno], str(path)) from exc
        raise


def json_finite(x: Any) -> Any:
    """JSON has no NaN: NaN/inf → None (recursively)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_finite(v) for v in x]
    return x


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic(Path(path), lambda f: f.write(text), "w")


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic(Path(path), lambda f: f.write(data), "wb")


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically (byte-stable for the same object)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(path: Path | str, obj: Any) -> None:
    """``torch.save`` atomically (checkpoints)."""
    import torch

    _atomic(Path(path), lambda f: torch.save(obj, f), "wb")


def append_jsonl(path: Path | str, obj: Any) -> None:
    """Append one JSON line (metrics.jsonl, jobs.jsonl); one write call so lines never interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=True) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path | str) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line (a run killed mid-write) and any line that is not
    valid UTF-8 JSON (damaged bytes): one bad line must not hide the others."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_bytes().decode("utf-8", errors="replace").splitlines():
        if "\ufffd" in line:  # undecodable bytes: the line is damaged, whatever JSON it still parses to
            continue
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
