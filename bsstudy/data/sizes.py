"""Pretraining-split sizes of the built-in datasets, known without reading them (planning, cost estimates).

Kept free of torch so that ``bsstudy plan`` stays fast; tests check them against the loaders where the real
data is present. ImageFolder has no fixed size (``None``: the planner skips its size checks)."""
from __future__ import annotations

PRETRAIN_SIZES: dict[str, int] = {
    "fashion_mnist": 60000,   # train
    "cifar10": 50000,         # data_batch_1..5
    "cifar100": 50000,        # train
    "stl10": 105000,          # unlabeled 100,000 + train 5,000
}


def pretrain_size(name: str) -> int | None:
    """Images in ``name``'s pretraining split (before ``train_subset``), or None when not fixed."""
    return PRETRAIN_SIZES.get(name)
