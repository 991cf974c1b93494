"""Dataset loaders on small files written in the real on-disk formats, plus Fashion-MNIST from Debian's files."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bsstudy.data import load_dataset, stratified_subset
from bsstudy.data.datasets import DEBIAN_FASHION_MNIST
from bsstudy.errors import UserError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BSSTUDY_DATA_CACHE", str(tmp_path / "cache"))


def _cfg(name: str, root, channels: int = 3, image_size: int = 32, **kw) -> dict:
    return {"name": name, "root": str(root) if root else None, "download": False, "train_subset": None,
            "channels": channels, "image_size": image_size, **kw}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- CIFAR


def _write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_pickle_batches(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    rng = _rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        batches[name] = (data, labels)
        # The official files are python-2 pickles with bytes keys; torchvision decodes them with latin1.
        _write_pickle(d / name, {b"batch_label": b"x", b"data": data, b"labels": labels})
    names = [f"c{i}" for i in range(10)]
    _write_pickle(d / "batches.meta", {b"label_names": names})

    train = load_dataset(_cfg("cifar10", tmp_path), "train")
    pre = load_dataset(_cfg("cifar10", tmp_path), "pretrain")
    test = load_dataset(_cfg("cifar10", tmp_path), "test")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.classes == names
    assert torch.equal(pre.images, train.images)
    want = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(train.images.numpy(), want)
    # Row-major CHW: pixel (c=1, y=2, x=3) of image 0 is byte 1*1024 + 2*32 + 3.
    assert train.images[0, 1, 2, 3] == batches["data_batch_1"][0][0, 1024 + 64 + 3]
    assert train.labels.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert test.images.shape == (4, 3, 32, 32) and test.labels.tolist() == batches["test_batch"][1]


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    rng = _rng(2)
    for name, n in (("train", 6), ("test", 3)):
        _write_pickle(d / name, {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                                 "fine_labels": list(range(n)), "coarse_labels": [0] * n})
    _write_pickle(d / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []})
    tr = load_dataset(_cfg("cifar100", tmp_path), "train")
    te = load_dataset(_cfg("cifar100", tmp_path), "test")
    assert tr.images.shape == (6, 3, 32, 32) and tr.labels.tolist() == list(range(6))
    assert te.images.shape == (3, 3, 32, 32) and len(te.classes) == 100


# ---------------------------------------------------------------- STL-10


def test_stl10_binary_and_pretrain_split(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = _rng(3)
    # Images as (N, C, H, W); the binary format stores each channel column-major, i.e. (N, C, W, H).
    imgs = {n: rng.integers(0, 256, size=(k, 3, 96, 96), dtype=np.uint8)
            for n, k in (("train", 3), ("test", 2), ("unlabeled", 4))}
    for n, x in imgs.items():
        x.transpose(0, 1, 3, 2).tofile(d / f"{n}_X.bin")
    np.array([1, 10, 5], dtype=np.uint8).tofile(d / "train_y.bin")  # labels are 1-based on disk
    np.array([2, 3], dtype=np.uint8).tofile(d / "test_y.bin")
    (d / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")
    cfg = _cfg("stl10", tmp_path, image_size=96)

    pre = load_dataset(cfg, "pretrain")
    assert pre.images.shape == (7, 3, 96, 96)
    assert np.array_equal(pre.images[:4].numpy(), imgs["unlabeled"])
    assert np.array_equal(pre.images[4:].numpy(), imgs["train"])
    assert pre.labels.tolist() == [-1, -1, -1, -1, 0, 9, 4]
    tr = load_dataset(cfg, "train")
    assert tr.labels.tolist() == [0, 9, 4] and np.array_equal(tr.images.numpy(), imgs["train"])
    te = load_dataset(cfg, "test")
    assert te.labels.tolist() == [1, 2] and te.classes[0] == "k0"


# ---------------------------------------------------------------- ImageFolder


@pytest.mark.slow  # first torchvision import dominates
def test_imagefolder_png_and_jpeg_resized_once(tmp_path):
    rng = _rng(4)
    for split, per in (("train", 3), ("val", 1)):
        for ci, cls in enumerate(("ant", "bee")):
            (tmp_path / split / cls).mkdir(parents=True)
            for j in range(per):
                arr = np.full((40, 60, 3), 40 * (ci + 1) + j, dtype=np.uint8)
                arr[:, :5] = rng.integers(0, 256, size=(40, 5, 3), dtype=np.uint8)  # cropped away by centre crop
                ext = "png" if j % 2 == 0 else "jpg"
                Image.fromarray(arr).save(tmp_path / split / cls / f"{j}.{ext}")
    cfg = _cfg("imagefolder", tmp_path, image_size=16)
    tr = load_dataset(cfg, "train")
    te = load_dataset(cfg, "test")
    assert tr.images.shape == (6, 3, 16, 16) and tr.images.dtype == torch.uint8
    assert tr.classes == ["ant", "bee"] and tr.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert te.images.shape == (2, 3, 16, 16) and te.labels.tolist() == [0, 1]
    # Constant images stay constant after resize + centre crop (JPEG within a few levels).
    assert (tr.images[0].int() - 40).abs().max() <= 1
    assert (tr.images[4, :, 4:12, 4:12].int() - 81).abs().max() <= 3
    gray = load_dataset(_cfg("imagefolder", tmp_path, channels=1, image_size=16), "train")
    assert gray.images.shape == (6, 1, 16, 16)


def test_imagefolder_requires_root():
    with pytest.raises(UserError, match="dataset.root"):
        load_dataset(_cfg("imagefolder", None), "train")


# ---------------------------------------------------------------- Fashion-MNIST (Debian package files)

needs_debian = pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                                  reason="dataset-fashion-mnist (Debian package) not installed")


@needs_debian
@pytest.mark.slow
def test_fashion_mnist_from_debian_files_and_cache(tmp_path):
    cfg = _cfg("fashion_mnist", DEBIAN_FASHION_MNIST, channels=1, image_size=28)
    te = load_dataset(cfg, "test")
    assert te.images.shape == (10000, 1, 28, 28) and te.images.dtype == torch.uint8
    assert te.classes[0] == "T-shirt/top" and len(te.classes) == 10
    assert torch.equal(torch.bincount(te.labels), torch.full((10,), 1000))
    # Decompressed once into the cache (the system directory is read-only), then decoded tensors cached.
    raw = tmp_path / "cache" / "FashionMNIST" / "raw"
    assert (raw / "t10k-images-idx3-ubyte").stat().st_size == 16 + 10000 * 28 * 28
    assert len(list((tmp_path / "cache" / "tensors").glob("fashion_mnist-test-*.pt"))) == 1
    again = load_dataset(cfg, "test")
    assert torch.equal(again.images, te.images) and torch.equal(again.labels, te.labels)
    # the size the planner uses without reading the data
    from bsstudy.data import pretrain_size

    assert len(load_dataset(cfg, "pretrain")) == pretrain_size("fashion_mnist") == 60000
    # train_subset: class-stratified and deterministic, applies to pretrain/train, never to test.
    cfg["train_subset"] = 500
    a = load_dataset(cfg, "pretrain")
    b = load_dataset(cfg, "train")
    assert len(a) == 500 and torch.equal(a.images, b.images)
    assert torch.equal(torch.bincount(a.labels), torch.full((10,), 50))
    assert len(load_dataset(cfg, "test")) == 10000


def test_fashion_mnist_gz_files_under_root(tmp_path):
    """dataset.root with the *-ubyte.gz files (the Debian layout) works from a copy, too."""
    import gzip
    import struct

    src = tmp_path / "fm"
    src.mkdir()
    rng = _rng(5)
    for prefix, n in (("train", 20), ("t10k", 10)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(src / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + x.tobytes())
        with gzip.open(src / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + y.tobytes())
    tr = load_dataset(_cfg("fashion_mnist", src, channels=1, image_size=28), "pretrain")
    assert tr.images.shape == (20, 1, 28, 28) and tr.labels.tolist() == [i % 10 for i in range(20)]


# ---------------------------------------------------------------- errors and subsets


@pytest.mark.parametrize("name,hint", [("fashion_mnist", "apt-get install dataset-fashion-mnist"),
                                       ("cifar10", "dataset.download=true"),
                                       ("cifar100", "dataset.download=true"),
                                       ("stl10", "dataset.download=true"),
                                       ("imagefolder", "train/<class>/")])
def test_missing_dataset_one_line_user_error(tmp_path, name, hint):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(UserError) as e:
        load_dataset(_cfg(name, empty), "train")
    msg = str(e.value)
    assert "\n" not in msg and str(empty) in msg and hint in msg


def test_bad_split_name_subset_and_channels(tmp_path):
    with pytest.raises(UserError, match="unknown split"):
        load_dataset(_cfg("cifar10", tmp_path), "val")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset(_cfg("mnist2", tmp_path), "train")
    d = tmp_path / "cifar-100-python"
    _write_pickle(d / "train", {"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0, 1, 2, 3]})
    _write_pickle(d / "test", {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 1]})
    _write_pickle(d / "meta", {"fine_label_names": ["a", "b", "c", "d"]})
    with pytest.raises(UserError, match="train_subset"):
        load_dataset(_cfg("cifar100", tmp_path, train_subset=9), "train")
    with pytest.raises(UserError, match="channels"):
        load_dataset(_cfg("cifar100", tmp_path, channels=1), "train")


def test_stratified_subset_proportional_and_deterministic():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [-1] * 100)
    idx = stratified_subset(labels, 40)
    assert idx.numel() == 40 and torch.equal(idx, stratified_subset(labels, 40))
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == 40
    counts = {c: int((labels[idx] == c).sum()) for c in (-1, 0, 1, 2)}
    assert counts == {-1: 20, 0: 10, 1: 6, 2: 4}
    # Largest remainder: 7 of 3 equal classes -> 3/2/2, summing exactly.
    assert stratified_subset(torch.tensor([0, 0, 1, 1, 2, 2]), 5).numel() == 5
