"""Checkpoints: atomic save of last.pt (the previous one kept as previous.pt), load with fallback,
and capture/restore of every RNG state a run depends on."""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_torch_save

LAST, PREVIOUS = "last.pt", "previous.pt"


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """All RNG states: python, numpy, torch CPU, torch CUDA (every device) and named torch generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Restore what ``rng_state`` captured (CUDA states only when CUDA is present)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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


def load_checkpoint(ckpt_dir: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest loadable checkpoint: last.pt, else previous.pt (with a warning), else None."""
    d = Path(ckpt_dir)
    for name in (LAST, PREVIOUS):
        p = d / name
        if not p.exists():
            continue
        try:
            state = torch.load(p, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "epoch" not in state:
                raise ValueError("not a bsstudy checkpoint")
        except Exception as exc:  # corrupt / truncated file: fall back to the older one
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(f"checkpoint {p} is unreadable ({first}); falling back to the previous one",
                          RuntimeWarning, stacklevel=2)
            continue
        return state
    return None
