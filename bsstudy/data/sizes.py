"""What is known about the built-in datasets without reading them: pretraining-split sizes (planning, cost
estimates), where they are looked for and which files they consist of (the loaders and the planner's data
preflight both use these tables).

Kept free of torch so that ``bsstudy plan`` stays fast; tests check them against the loaders where the real
data is present. ImageFolder has no fixed size (``None``: the planner skips its size checks)."""
from __future__ import annotations

import os
from pathlib import Path

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
STL10_FOLDER = "stl10_binary"
STL10_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt")


def cache_dir() -> Path:
    """Where downloads (when dataset.root is unset) and decoded tensors are cached (``$BSSTUDY_DATA_CACHE`` or
    ~/.cache/bsstudy)."""
    env = os.environ.get("BSSTUDY_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bsstudy"

PRETRAIN_SIZES: dict[str, int] = {
    "fashion_mnist": 60000,   # train
    "cifar10": 50000,         # data_batch_1..5
    "cifar100": 50000,        # train
    "stl10": 105000,          # unlabeled 100,000 + train 5,000
}


def pretrain_size(name: str) -> int | None:
    """Images in ``name``'s pretraining split (before ``train_subset``), or None when not fixed."""
    return PRETRAIN_SIZES.get(name)


# The evaluation's splits (probe/kNN ``train``, ``test``); eval.max_train_samples caps the first.
EVAL_SIZES: dict[str, tuple[int, int]] = {
    "fashion_mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "stl10": (5000, 8000),
}


def eval_sizes(name: str) -> tuple[int, int] | None:
    """Images in ``name``'s evaluation ``train`` and ``test`` splits, or None when not fixed."""
    return EVAL_SIZES.get(name)
