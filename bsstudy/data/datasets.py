"""Datasets as whole uint8 tensors: ``load_dataset(dataset_cfg, split) -> ImageTensors``.

Splits: ``pretrain`` (SSL training images), ``train`` (linear-probe / kNN training set), ``test``.
Formats are the ones torchvision's dataset classes use on disk:

    fashion_mnist  <root>/FashionMNIST/raw/*-ubyte (read by torchvision.datasets.FashionMNIST); the Debian
                   package's .gz files (/usr/share/datasets/fashion-mnist) are decompressed once into the cache
    cifar10        <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (pickle batches)
    cifar100       <root>/cifar-100-python/{train,test,meta} (pickle, fine labels)
    stl10          <root>/stl10_binary/{train,test,unlabeled}_X.bin, *_y.bin, class_names.txt;
                   pretrain = unlabeled + train
    imagefolder    <root>/train/<class>/*, <root>/val/<class>/* (ImageNet layout); pretrain/train = train,
                   test = val; every image is resized once (shorter side, then centre crop) to image_size

CIFAR and STL files are parsed here rather than through torchvision's classes because those verify
md5 sums of the official archives (so they reject any other file in the same format); torchvision is
used to download them when ``download: true``. Decoded tensors are cached as ``.pt`` files under
``$BSSTUDY_DATA_CACHE`` (default ``~/.cache/bsstudy``), keyed by the source files' paths, sizes and mtimes.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from bsstudy.errors import UserError
from bsstudy.io import atomic_torch_save

SPLITS = ("pretrain", "train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_SUBSET_SEED = 0  # train_subset is a property of the dataset config, not of the run seed


@dataclass
class ImageTensors:
    """A whole split in memory: uint8 images (N,C,H,W), int64 labels (N,) with -1 = unlabeled, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _cfg(cfg: Any, key: str) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None)


def cache_dir() -> Path:
    """Where decompressed files and decoded tensors are cached (``$BSSTUDY_DATA_CACHE`` or ~/.cache/bsstudy)."""
    env = os.environ.get("BSSTUDY_DATA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bsstudy"


# ---------------------------------------------------------------- tensor cache


def _fingerprint(files: list[Path], extra: dict) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _cached(name: str, part: str, files: list[Path], extra: dict,
            build: Callable[[], ImageTensors]) -> ImageTensors:
    """Load a decoded split from the .pt cache, or build and cache it (atomically)."""
    path = cache_dir() / "tensors" / f"{name}-{part}-{_fingerprint(files, extra)}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return ImageTensors(d["images"], d["labels"], list(d["classes"]))
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            pass
    data = build()
    try:
        atomic_torch_save(path, {"images": data.images, "labels": data.labels, "classes": data.classes})
    except OSError:
        pass  # read-only home: still usable, just slower next time
    return data


def _missing(name: str, looked: list[Path], how: str) -> UserError:
    where = ", ".join(str(p) for p in looked) or "(nowhere: dataset.root is not set)"
    return UserError(f"dataset '{name}' not found (looked in {where}); {how}")


# ---------------------------------------------------------------- Fashion-MNIST


def _fmnist_raw(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def _has_fmnist(root: Path) -> bool:
    return all((_fmnist_raw(root) / f).is_file() for f in _FMNIST_FILES)


def _find_gz(d: Path) -> Path | None:
    for cand in (d, _fmnist_raw(d)):
        if all((cand / f"{f}.gz").is_file() for f in _FMNIST_FILES):
            return cand
    return None


def _decompress_fmnist(src: Path, dest_root: Path) -> None:
    """Decompress the four .gz files into ``dest_root/FashionMNIST/raw`` (each file written atomically)."""
    raw = _fmnist_raw(dest_root)
    raw.mkdir(parents=True, exist_ok=True)
    for f in _FMNIST_FILES:
        if (raw / f).is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{f}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(src / f"{f}.gz", "rb") as inp:
                shutil.copyfileobj(inp, out)
            os.replace(tmp, raw / f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _fashion_mnist_root(cfg: Any) -> Path:
    """Directory holding FashionMNIST/raw/ with the decompressed files, preparing it when needed."""
    root = _cfg(cfg, "root")
    candidates = [Path(root).expanduser()] if root else [DEBIAN_FASHION_MNIST, cache_dir()]
    for c in candidates:
        if _has_fmnist(c):
            return c
        gz = _find_gz(c)
        if gz is not None:
            dest = c if gz == _fmnist_raw(c) and os.access(gz, os.W_OK) else cache_dir()
            _decompress_fmnist(gz, dest)
            return dest
    if _cfg(cfg, "download"):
        import torchvision

        dest = candidates[0] if root else cache_dir()
        try:
            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(dest), train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise UserError(f"dataset 'fashion_mnist' download into {dest} failed: {e}") from None
        return dest
    raise _missing("fashion_mnist", candidates,
                   "install it with `apt-get install dataset-fashion-mnist`, or set dataset.root=DIR "
                   "(with FashionMNIST/raw/ or the *-ubyte.gz files), or dataset.download=true")


def _load_fashion_mnist(cfg: Any, part: str) -> ImageTensors:
    import torchvision

    root = _fashion_mnist_root(cfg)
    train = part == "train"
    files = [_fmnist_raw(root) / f for f in _FMNIST_FILES[:2] if train] + \
            [_fmnist_raw(root) / f for f in _FMNIST_FILES[2:] if not train]

    def build() -> ImageTensors:
        ds = torchvision.datasets.FashionMNIST(str(root), train=train, download=False)
        return ImageTensors(ds.data.unsqueeze(1).contiguous(), ds.targets.long(), list(ds.classes))

    return _cached("fashion_mnist", part, files, {}, build)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "label_names", "labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels", "CIFAR100"),
}


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _load_cifar(cfg: Any, name: str, part: str) -> ImageTensors:
    folder, train_files, test_files, meta, names_key, labels_key, tv_class = _CIFAR[name]
    root = _cfg(cfg, "root")
    base = Path(root).expanduser() if root else cache_dir()
    d = base / folder
    need = train_files + test_files + [meta]
    if not all((d / f).is_file() for f in need):
        if _cfg(cfg, "download"):
            import torchvision

            try:
                getattr(torchvision.datasets, tv_class)(str(base), train=True, download=True)
            except Exception as e:
                raise UserError(f"dataset '{name}' download into {base} failed: {e}") from None
        else:
            raise _missing(name, [d], f"set dataset.root=DIR containing {folder}/ (torchvision's "
                                      "python-pickle layout), or dataset.download=true")
    files = [d / f for f in (train_files if part == "train" else test_files)] + [d / meta]

    def build() -> ImageTensors:
        classes = list(_unpickle(d / meta)[names_key])
        imgs, labels = [], []
        for f in files[:-1]:
            b = _unpickle(f)
            imgs.append(np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(b[labels_key])
        return ImageTensors(torch.from_numpy(np.concatenate(imgs)).contiguous(),
                            torch.tensor(labels, dtype=torch.int64), classes)

    return _cached(name, part, files, {}, build)


# ---------------------------------------------------------------- STL-10


def _read_stl_images(path: Path) -> torch.Tensor:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise UserError(f"{path} is not an STL-10 image file (size {raw.size} is not a multiple of 3*96*96)")
    # Stored column-major per channel: (N, C, W, H) -> transpose to (N, C, H, W), as torchvision does.
    return torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())


def _load_stl10(cfg: Any, part: str) -> ImageTensors:
    root = _cfg(cfg, "root")
    base = Path(root).expanduser() if root else cache_dir()
    d = base / "stl10_binary"
    need = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt"]
    if not all((d / f).is_file() for f in need):
        if _cfg(cfg, "download"):
            import torchvision

            try:
                torchvision.datasets.STL10(str(base), split="train", download=True)
            except Exception as e:
                raise UserError(f"dataset 'stl10' download into {base} failed: {e}") from None
        else:
            raise _missing("stl10", [d], "set dataset.root=DIR containing stl10_binary/ (torchvision's layout), "
                                         "or dataset.download=true")
    names = {"pretrain": ["unlabeled", "train"], "train": ["train"], "test": ["test"]}[part]
    files = [d / "class_names.txt"] + [d / f"{n}_X.bin" for n in names] + \
            [d / f"{n}_y.bin" for n in names if n != "unlabeled"]

    def build() -> ImageTensors:
        classes = [c for c in (d / "class_names.txt").read_text().splitlines() if c.strip()]
        imgs, labels = [], []
        for n in names:
            x = _read_stl_images(d / f"{n}_X.bin")
            imgs.append(x)
            if n == "unlabeled":
                labels.append(torch.full((x.shape[0],), -1, dtype=torch.int64))
            else:
                y = torch.from_numpy(np.fromfile(d / f"{n}_y.bin", dtype=np.uint8).astype(np.int64)) - 1
                if y.shape[0] != x.shape[0]:
                    raise UserError(f"{d / f'{n}_y.bin'} has {y.shape[0]} labels for {x.shape[0]} images")
                labels.append(y)
        return ImageTensors(torch.cat(imgs), torch.cat(labels), classes)

    return _cached("stl10", part, files, {}, build)


# ---------------------------------------------------------------- ImageFolder (ImageNet layout)


def _load_imagefolder(cfg: Any, part: str) -> ImageTensors:
    import torchvision
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    root = _cfg(cfg, "root")
    if not root:
        raise UserError("dataset 'imagefolder' needs dataset.root=DIR with DIR/train/<class>/ and DIR/val/<class>/")
    sub = Path(root).expanduser() / ("val" if part == "test" else "train")
    if not sub.is_dir():
        raise _missing("imagefolder", [sub], "point dataset.root at a folder with train/<class>/ and val/<class>/")
    try:
        ds = torchvision.datasets.ImageFolder(str(sub))
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"dataset 'imagefolder': {sub}: {e}") from None
    size = int(_cfg(cfg, "image_size"))
    channels = int(_cfg(cfg, "channels") or 3)
    files = [Path(p) for p, _ in ds.samples]

    def build() -> ImageTensors:
        mode = "L" if channels == 1 else "RGB"
        out = torch.empty(len(files), channels, size, size, dtype=torch.uint8)
        for i, f in enumerate(files):  # one-time decode (PIL, as ImageFolder); the result is cached as a tensor
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
            img = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1).copy()).permute(2, 0, 1)
            img = TF.resize(img, [size], antialias=True)  # shorter side -> size
            out[i] = TF.center_crop(img, [size, size])
        labels = torch.tensor([t for _, t in ds.samples], dtype=torch.int64)
        return ImageTensors(out, labels, list(ds.classes))

    return _cached("imagefolder", part, files, {"size": size, "channels": channels}, build)


# ---------------------------------------------------------------- public API


def stratified_subset(labels: torch.Tensor, n: int, seed: int = _SUBSET_SEED) -> torch.Tensor:
    """Sorted indices of a deterministic class-stratified subset of size ``n`` (label -1 is its own stratum).

    Each class gets ``n * count / N`` samples, rounded by largest remainder; within a class the samples
    are a seeded random choice.
    """
    total = labels.shape[0]
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * n / total
    take = torch.floor(quota).long()
    rest = n - int(take.sum())
    if rest:
        order = torch.argsort(quota - take, descending=True, stable=True)
        take[order[:rest]] += 1
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in zip(classes.tolist(), take.tolist()):
        idx = (labels == c).nonzero().squeeze(1)
        picked.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    return torch.sort(torch.cat(picked)).values


_LOADERS: dict[str, Callable[[Any, str], ImageTensors]] = {
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": lambda cfg, part: _load_cifar(cfg, "cifar10", part),
    "cifar100": lambda cfg, part: _load_cifar(cfg, "cifar100", part),
    "imagefolder": _load_imagefolder,
}


def load_dataset(dataset_cfg: Any, split: str) -> ImageTensors:
    """Load ``split`` (pretrain | train | test) of the configured dataset as uint8 tensors.

    ``dataset.train_subset: N`` keeps a class-stratified deterministic subset of N images of the
    pretrain and train splits (never of test). Missing data raises a one-line UserError.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    name = _cfg(dataset_cfg, "name")
    if name == "stl10":
        data = _load_stl10(dataset_cfg, split)
    elif name in _LOADERS:
        data = _LOADERS[name](dataset_cfg, "test" if split == "test" else "train")
    else:
        raise UserError(f"unknown dataset '{name}' (expected one of {', '.join(sorted([*_LOADERS, 'stl10']))})")
    channels = _cfg(dataset_cfg, "channels")
    if channels is not None and data.images.shape[1] != int(channels):
        raise UserError(f"dataset '{name}' has {data.images.shape[1]} channels but dataset.channels={channels}")
    subset = _cfg(dataset_cfg, "train_subset")
    if subset is not None and split != "test":
        n = int(subset)
        if n <= 0 or n > len(data):
            raise UserError(f"dataset.train_subset={n} must lie in [1, {len(data)}] (size of the {split} split)")
        if n < len(data):
            idx = stratified_subset(data.labels, n)
            data = ImageTensors(data.images[idx].contiguous(), data.labels[idx], data.classes)
    return data
