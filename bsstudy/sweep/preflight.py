"""Data preflight: is every dataset that planned cells need present and readable? (torch-free, no writes)

``bsstudy plan`` (before writing anything), ``bsstudy train`` (before writing config.yaml) and ``submit``
(before submitting) call ``preflight_data(cfgs)``: a missing or unreadable dataset is one ``UserError``
naming the dataset, the path looked in and how to fix it, instead of a failed run per cell.

The Fashion-MNIST / STL-10 file lists and the default root come from ``bsstudy.data.sizes``, which the
loaders of ``bsstudy/data/datasets.py`` use too; the CIFAR lists restate the loaders' ``_CIFAR`` table
(tests/test_cli_inputs.py checks that they agree).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..data.sizes import DEBIAN_FASHION_MNIST, FMNIST_FILES, STL10_FILES, STL10_FOLDER, cache_dir
from ..errors import UserError

# dataset -> (folder under dataset.root, files in it)
FOLDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": ("cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
    "stl10": (STL10_FOLDER, STL10_FILES),
}


def _unreadable(files: Iterable[Path]) -> list[str]:
    """Problems with ``files`` ('missing X', 'cannot read X: ...'); [] when every one opens and reads."""
    bad = []
    for f in files:
        if not f.is_file():
            bad.append(f"missing {f.name}")
            continue
        try:
            with open(f, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            bad.append(f"cannot read {f.name}: {exc.strerror or exc}")
    return bad


def _fmnist_problem(root: Any) -> str | None:
    """None when some candidate root holds the four files (FashionMNIST/raw/*-ubyte, or *-ubyte.gz in
    the root or in FashionMNIST/raw/), else the roots looked in and what was wrong."""
    candidates = [Path(str(root)).expanduser()] if root else [DEBIAN_FASHION_MNIST, cache_dir()]
    looked = []
    for c in candidates:
        raw = c / "FashionMNIST" / "raw"
        found = [_unreadable(d / f"{f}{suffix}" for f in FMNIST_FILES)
                 for d, suffix in ((raw, ""), (c, ".gz"), (raw, ".gz"))]
        if any(not bad for bad in found):
            return None
        why = next((x for bad in found for x in bad if x.startswith("cannot")), None)
        looked.append(f"{c}" + (f": {why}" if why else ""))
    return ", ".join(looked)


def dataset_problem(ds: Mapping[str, Any]) -> str | None:
    """Why the dataset config ``ds`` (a run config's ``dataset`` block) cannot be read now, or None."""
    name, root = ds.get("name"), ds.get("root")
    if ds.get("download"):
        return None  # the loader downloads it in the run
    if name == "fashion_mnist":
        problem = _fmnist_problem(root)
        how = ("install it with `apt-get install dataset-fashion-mnist`, or set dataset.root=DIR (with "
               "FashionMNIST/raw/ or the *-ubyte.gz files), or dataset.download=true")
    elif name in FOLDERS:
        folder, files = FOLDERS[name]
        d = (Path(str(root)).expanduser() if root else cache_dir()) / folder
        bad = _unreadable(d / f for f in files) if d.is_dir() else ["no such folder"]
        problem = f"{d}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else None
        how = f"set dataset.root=DIR containing {folder}/ (torchvision's layout), or dataset.download=true"
    elif name == "imagefolder":
        if not root:
            return "dataset.root is not set; set dataset.root=DIR with DIR/train/<class>/ and DIR/val/<class>/"
        problem = None
        for sub in ("train", "val"):
            d = Path(str(root)).expanduser() / sub
            if not d.is_dir():
                problem = f"{d}: missing"
            elif not os.access(d, os.R_OK | os.X_OK):
                problem = f"{d}: not readable"
            if problem:
                break
        how = "point dataset.root at a folder with train/<class>/ and val/<class>/"
    else:
        return None  # an unknown name is the config validation's error, not the preflight's
    return None if problem is None else f"not found or unreadable (looked in {problem}); {how}"


def preflight_data(cfgs: Iterable[Mapping[str, Any]]) -> None:
    """UserError naming the first dataset that the resolved configs ``cfgs`` need and that cannot be read.

    Each distinct (name, root, download) is checked once; nothing is written."""
    seen = set()
    for cfg in cfgs:
        ds = cfg["dataset"]
        key = (ds.get("name"), str(ds.get("root")), bool(ds.get("download")))
        if key in seen:
            continue
        seen.add(key)
        problem = dataset_problem(ds)
        if problem:
            raise UserError(f"dataset '{ds.get('name')}': {problem}")


__all__ = ["preflight_data", "dataset_problem", "FOLDERS", "FMNIST_FILES", "cache_dir"]
