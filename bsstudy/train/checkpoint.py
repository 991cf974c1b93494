"""Checkpoints: atomic save of last.pt (the previous one kept as previous.pt), safe load with fallback,
and capture/restore of every RNG state a run depends on.

Checkpoints hold only tensors and plain Python data (RNG states included), so they are read with
``torch.load(weights_only=True)``: a file that needs anything else (a pickled callable: a crafted
checkpoint could run code) is refused with a ``UserError`` and nothing in it is executed."""
from __future__ import annotations

import os
import pickletools
import random
import shlex
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_torch_save

LAST, PREVIOUS = "last.pt", "previous.pt"
CORRUPT_SUFFIX = ".corrupt"

# Checkpoints written before RNG states were stored as tensors hold numpy's MT19937 state as a uint32
# ndarray. These are exactly the globals such a file needs (an ndarray rebuilt from bytes: no code runs).
_reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
_LEGACY_NUMPY_GLOBALS: list[Any] = [
    _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"),  # the name under numpy 1.x
    np.ndarray, np.dtype, type(np.dtype(np.uint32)),
]
# Pickle opcodes that import or call Python objects
_CALL_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _numpy_state() -> dict[str, Any]:
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(s: Any) -> None:
    if isinstance(s, dict):
        s = (s["kind"], s["key"].cpu().numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached_gaussian"])
    np.random.set_state(s)  # a tuple: checkpoints written before the tensor form


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """All RNG states: python, numpy, torch CPU, torch CUDA (every device) and named torch generators.

    Only tensors and plain types (numpy's key as an int64 tensor), so ``weights_only`` loading accepts it."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore what ``rng_state`` captured (CUDA states only when CUDA is present)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for k, g in generators.items():
        g.set_state(state["generators"][k].cpu())


def save_checkpoint(ckpt_dir: Path | str, state: dict[str, Any]) -> Path:
    """Write ``state`` as last.pt; the old last.pt becomes previous.pt first (both renames are atomic,
    so a kill at any point leaves at least one complete checkpoint)."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    last = d / LAST
    if last.exists():
        os.replace(last, d / PREVIOUS)
    atomic_torch_save(last, state)
    return last


def _first_line(exc: BaseException) -> str:
    """The informative line of a load error: torch's weights_only errors open with advice to load the
    file unsafely; what went wrong follows "WeightsUnpickler error:"."""
    msg = str(exc)
    if "WeightsUnpickler error:" in msg:
        msg = msg.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return lines[0].split(". ")[0] if lines else type(exc).__name__  # torch appends paragraphs of advice


def _unsafe_content(path: Path) -> str | None:
    """What in ``path`` would import or call Python objects that weights_only does not allow, found by
    reading the pickle's opcodes without unpickling it; None when there is nothing (the file is damaged).

    A zip is torch.save's format (its data.pkl is checked by torch's own scanner); anything else is
    read as a bare pickle, torch.load's legacy format."""
    try:
        if zipfile.is_zipfile(path):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            return f"GLOBAL {', '.join(unsafe)}" if unsafe else None
        strings: list[str] = []
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                if op.name == "STACK_GLOBAL" and len(strings) == 2:  # module and name were pushed before it
                    return f"GLOBAL {strings[0]}.{strings[1]}"
                if op.name in _CALL_OPCODES:
                    return f"{op.name} {arg.replace(' ', '.')}" if isinstance(arg, str) else op.name
    except Exception:  # not readable as a pickle: damage, not a payload
        return None
    return None


def read_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` that never runs code from the file (``weights_only=True``).

    A file that holds Python objects other than tensors and plain data raises a one-line ``UserError``
    naming it, without executing anything. A damaged file raises the loader's own exception."""
    p = Path(path)
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS), warnings.catch_warnings():
            # a bare pickle (not torch.save's zip) makes torch warn about its protocol, in two lines
            # before our one-line refusal; the file is judged below, the warning adds nothing
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(p, map_location=map_location, weights_only=True)
    except Exception:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            detail = _unsafe_content(p)
        if detail is not None:
            raise UserError(f"checkpoint {p} holds Python objects, not only tensors and plain data ({detail}); "
                            "refused, nothing in it was run: delete it and rerun") from None
        raise


def clean_stale_temps(ckpt_dir: Path | str) -> list[Path]:
    """Remove the temporary files of checkpoint saves that were killed (``.last.pt.*.tmp``, as big as a
    checkpoint). Called at the start of a run; only one process trains a run directory at a time."""
    d = Path(ckpt_dir)
    removed = []
    for t in d.glob(f".{LAST}.*.tmp") if d.is_dir() else ():
        try:
            t.unlink()
            removed.append(t)
        except FileNotFoundError:
            pass
    return removed


def _set_aside(p: Path) -> Path:
    dest = p.with_name(p.name + CORRUPT_SUFFIX)
    os.replace(p, dest)  # an older .corrupt of the same name is replaced: keep one, not one per incident
    return dest


def load_checkpoint(ckpt_dir: Path | str, map_location: str | torch.device = "cpu",
                    restart: bool = False) -> dict[str, Any] | None:
    """The newest loadable checkpoint of ``ckpt_dir`` (a run's ``checkpoints/``), or None when there is
    none (a fresh run).

    Removes the temp files of killed saves first. An unreadable last.pt is moved aside as
    ``last.pt.corrupt`` (so the next save cannot rotate it over the good previous.pt) and previous.pt is
    loaded, with a ``RuntimeWarning``. When checkpoints exist but none is readable, ``UserError`` (the
    files stay where they are) unless ``restart``: then they are moved aside as ``*.corrupt`` and None
    is returned (start over from epoch 0). A checkpoint holding Python objects is refused (UserError)."""
    d = Path(ckpt_dir)
    clean_stale_temps(d)
    problems: dict[str, str] = {}
    for name in (LAST, PREVIOUS):
        p = d / name
        if not p.exists():
            continue
        try:
            state = read_checkpoint(p, map_location)
            if not isinstance(state, dict) or "epoch" not in state:
                raise ValueError("not a bsstudy checkpoint")
        except UserError:
            raise
        except Exception as exc:  # damaged / truncated / foreign file
            problems[name] = _first_line(exc) if zipfile.is_zipfile(p) else "not a zip archive, as torch.save writes"
            continue
        if problems:
            moved = _set_aside(d / LAST)
            warnings.warn(f"checkpoint {d / LAST} is unreadable ({problems[LAST]}); moved to {moved.name}, "
                          f"resuming from {name} (epoch {state['epoch']})", RuntimeWarning, stacklevel=2)
        return state
    if not problems:
        return None
    what = "; ".join(f"{n}: {e}" for n, e in problems.items())
    which = f"both checkpoints in {d} are" if len(problems) == 2 else \
        f"the only checkpoint in {d} ({next(iter(problems))}) is"
    if not restart:
        # the command is spelled out: this line is also the `error` of the failed result.json that
        # `bsstudy status` shows for a cell a submit started
        raise UserError(f"{which} unreadable ({what}); to move {'them' if len(problems) == 2 else 'it'} "
                        f"aside as *{CORRUPT_SUFFIX} and start over from epoch 0, rerun with --restart: "
                        f"bsstudy train --run-dir {shlex.quote(str(d.parent))} --restart")
    moved = [_set_aside(d / n).name for n in problems]
    warnings.warn(f"{which} unreadable ({what}); moved to {', '.join(moved)}; starting over from epoch 0 "
                  "(restart)", RuntimeWarning, stacklevel=2)
    return None
