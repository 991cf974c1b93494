"""Datasets as in-memory uint8 tensors and batched on-device two-view augmentation.

The loaders import torch; they are loaded on first use so that ``bsstudy.data.sizes`` (used by the
planner) stays light."""
from __future__ import annotations

from typing import Any

from bsstudy.data.sizes import PRETRAIN_SIZES, pretrain_size

_LAZY = ("ImageTensors", "load_dataset", "stratified_subset")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from bsstudy.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'bsstudy.data' has no attribute {name!r}")


__all__ = ["ImageTensors", "load_dataset", "stratified_subset", "PRETRAIN_SIZES", "pretrain_size"]
