"""Dataset loaders on small files written in the real on-disk formats, plus Fashion-MNIST from Debian's files."""
from __future__ import annotations

import os
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
    # The .gz files are read as they are (nothing decompressed into the cache); the decoded tensors are cached.
    assert not (tmp_path / "cache" / "FashionMNIST").exists()
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


# ---------------------------------------------------------------- dataset.root honoured, standard files verified


def _write_fmnist(d: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray] | None = None,
                  gz: bool = True) -> None:
    """IDX files for the given prefixes ("train", "t10k"); labels default to i % 10."""
    import gzip
    import struct

    d.mkdir(parents=True, exist_ok=True)
    opener = (lambda p: gzip.open(p.with_name(p.name + ".gz"), "wb", compresslevel=1)) if gz else \
        (lambda p: open(p, "wb"))
    for prefix, x in images.items():
        y = (labels or {}).get(prefix, (np.arange(len(x)) % 10).astype(np.uint8))
        with opener(d / f"{prefix}-images-idx3-ubyte") as f:
            f.write(struct.pack(">IIII", 2051, len(x), 28, 28) + x.tobytes())
        with opener(d / f"{prefix}-labels-idx1-ubyte") as f:
            f.write(struct.pack(">II", 2049, len(y)) + y.tobytes())


def _const(n: int, value: int) -> np.ndarray:
    return np.full((n, 28, 28), value, dtype=np.uint8)


def test_fashion_mnist_root_is_what_gets_loaded(tmp_path):
    """Two roots with .gz files and one cache: each loads its own images (they were once decompressed
    into one shared cache directory, and the first root's files served every later root)."""
    a, b = tmp_path / "fm_a", tmp_path / "fm_b"
    _write_fmnist(a, {"train": _const(20, 100), "t10k": _const(10, 100)})
    _write_fmnist(b, {"train": _const(20, 0), "t10k": _const(10, 0)})  # all black
    assert int(load_dataset(_cfg("fashion_mnist", a, channels=1, image_size=28), "test").images.max()) == 100
    got = load_dataset(_cfg("fashion_mnist", b, channels=1, image_size=28), "test")
    assert int(got.images.max()) == 0
    # rewriting a root's files in place is seen too (the cache is keyed on path, size and mtime)
    _write_fmnist(a, {"train": _const(20, 7), "t10k": _const(10, 7)})
    for f in a.iterdir():
        os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
    assert int(load_dataset(_cfg("fashion_mnist", a, channels=1, image_size=28), "test").images.max()) == 7


@needs_debian
@pytest.mark.slow
def test_fashion_mnist_all_black_root_after_the_stock_files(tmp_path):
    """The reported case: stock Fashion-MNIST loaded first, then dataset.root with all-black images."""
    stock = load_dataset(_cfg("fashion_mnist", None, channels=1, image_size=28), "test")
    assert int(stock.images.max()) == 255
    black = tmp_path / "fmv"
    _write_fmnist(black, {"train": _const(30, 0), "t10k": _const(10, 0)})
    got = load_dataset(_cfg("fashion_mnist", black, channels=1, image_size=28), "test")
    assert len(got) == 10 and int(got.images.max()) == 0


def test_standard_fashion_mnist_file_with_wrong_md5_is_refused(tmp_path, monkeypatch):
    """Named like t10k-images-idx3-ubyte and holding its 10,000 images, but not the published bytes."""
    root = tmp_path / "fm"
    _write_fmnist(root, {"train": _const(20, 0), "t10k": _const(10000, 0)})
    cfg = _cfg("fashion_mnist", root, channels=1, image_size=28)
    with pytest.raises(UserError) as e:
        load_dataset(cfg, "test")
    msg = str(e.value)
    assert str(root / "t10k-images-idx3-ubyte.gz") in msg and "md5" in msg and "\n" not in msg
    assert "BSSTUDY_DATA_VERIFY=0" in msg
    load_dataset(cfg, "pretrain")  # 20 images: not the standard file, not checked
    monkeypatch.setenv("BSSTUDY_DATA_VERIFY", "0")
    assert len(load_dataset(cfg, "test")) == 10000


@needs_debian
def test_one_changed_label_in_a_copy_of_the_stock_files_is_caught(tmp_path):
    import gzip

    root = tmp_path / "copy" / "FashionMNIST" / "raw"
    root.mkdir(parents=True)
    for f in DEBIAN_FASHION_MNIST.glob("*.gz"):
        (root / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(f.read_bytes()))
    labels = bytearray((root / "t10k-labels-idx1-ubyte").read_bytes())
    labels[8 + 123] = (labels[8 + 123] + 1) % 10
    (root / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    cfg = _cfg("fashion_mnist", tmp_path / "copy", channels=1, image_size=28)
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte is named like the standard fashion_mnist file "
                                        r"and holds its 10000 items, but its md5"):
        load_dataset(cfg, "test")


def test_md5_table_matches_torchvision():
    from torchvision import datasets as tv

    from bsstudy.data.datasets import _FMNIST_GZ_MD5, _STANDARD

    lists = {"cifar10": tv.CIFAR10, "cifar100": tv.CIFAR100, "stl10": tv.STL10}
    for name, cls in lists.items():
        for fname, md5 in cls.train_list + cls.test_list:
            assert _STANDARD[(name, fname)][1] == md5, (name, fname)
        if hasattr(cls, "meta"):
            assert _STANDARD[(name, cls.meta["filename"])][1] == cls.meta["md5"]
    assert _FMNIST_GZ_MD5 == dict(tv.FashionMNIST.resources)


def test_standard_cifar_batch_and_stl_labels_with_wrong_md5_are_refused(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        _write_pickle(d / name, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    _write_pickle(d / "test_batch", {b"data": np.zeros((10000, 3072), np.uint8), b"labels": [0] * 10000})
    _write_pickle(d / "batches.meta", {b"label_names": [f"c{i}" for i in range(10)]})
    assert len(load_dataset(_cfg("cifar10", tmp_path), "train")) == 10  # small batches: not checked
    with pytest.raises(UserError, match=r"test_batch is named like the standard cifar10 file .* md5"):
        load_dataset(_cfg("cifar10", tmp_path), "test")

    s = tmp_path / "stl10_binary"
    s.mkdir()
    for n, k in (("train", 2), ("test", 8000), ("unlabeled", 1)):
        np.zeros((min(k, 3), 3, 96, 96), np.uint8).tofile(s / f"{n}_X.bin")
    np.ones(2, np.uint8).tofile(s / "train_y.bin")
    np.ones(8000, np.uint8).tofile(s / "test_y.bin")  # the standard number of test labels
    (s / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    with pytest.raises(UserError, match=r"test_y\.bin is named like the standard stl10 file and holds its 8000 "
                                        r"items, but its md5"):
        load_dataset(_cfg("stl10", tmp_path, image_size=96), "test")


# ---------------------------------------------------------------- every bad file is one line naming it


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_cifar_batch_with_a_pickled_callable_is_refused_and_nothing_runs(tmp_path):
    d = tmp_path / "cifar-100-python"
    marker = tmp_path / "pwned"
    _write_pickle(d / "train", {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 1],
                                "extra": _Payload(marker)})
    _write_pickle(d / "test", {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]})
    _write_pickle(d / "meta", {"fine_label_names": ["a", "b"]})
    with pytest.raises(UserError) as e:
        load_dataset(_cfg("cifar100", tmp_path), "train")
    assert not marker.exists(), "the payload ran"
    assert str(d / "train") in str(e.value) and "refused" in str(e.value) and "\n" not in str(e.value)


def _idx_images(n: int, h: int = 28) -> bytes:
    import struct

    return struct.pack(">IIII", 2051, n, h, h) + bytes(n * h * h)


@pytest.mark.parametrize("bad,content", [
    ("t10k-images-idx3-ubyte", b"this is not an IDX file at all"),
    ("t10k-images-idx3-ubyte", _idx_images(10)[:-100]),                    # truncated
    ("t10k-labels-idx1-ubyte", _idx_images(10)),                           # images where labels belong
    ("t10k-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00\x00\x00\x0a" + bytes([0] * 9 + [12])),  # label 12
    ("t10k-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00\x00\x00\x04" + bytes(4)),  # 4 labels for 10 images
])
def test_garbage_raw_fashion_mnist_is_one_line_naming_the_file(tmp_path, bad, content):
    raw = tmp_path / "FashionMNIST" / "raw"
    _write_fmnist(raw, {"train": _const(10, 1), "t10k": _const(10, 1)}, gz=False)
    (raw / bad).write_bytes(content)
    with pytest.raises(UserError) as e:
        load_dataset(_cfg("fashion_mnist", tmp_path, channels=1, image_size=28), "test")
    assert str(raw / bad) in str(e.value) and "\n" not in str(e.value)


def test_damaged_gz_and_cifar_and_stl_files_are_one_line_naming_the_file(tmp_path):
    fm = tmp_path / "fm"
    _write_fmnist(fm, {"train": _const(10, 1), "t10k": _const(10, 1)})
    gz = fm / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])  # a cut-off download
    with pytest.raises(UserError, match=f"^{gz}: cannot read it"):
        load_dataset(_cfg("fashion_mnist", fm, channels=1, image_size=28), "test")

    d = tmp_path / "cifar-100-python"
    _write_pickle(d / "train", {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 1]})
    (d / "test").write_bytes(b"\x80\x04garbage")
    _write_pickle(d / "meta", {"fine_label_names": ["a", "b"]})
    with pytest.raises(UserError, match=f"^{d / 'test'} is not a CIFAR python-pickle file"):
        load_dataset(_cfg("cifar100", tmp_path), "test")
    _write_pickle(d / "test", {"pixels": np.zeros((1, 3072), np.uint8)})
    with pytest.raises(UserError, match=f"^{d / 'test'} has no 'data' entry"):
        load_dataset(_cfg("cifar100", tmp_path), "test")

    s = tmp_path / "stl10_binary"
    s.mkdir()
    for n in ("train", "test", "unlabeled"):
        np.zeros((1, 3, 96, 96), np.uint8).tofile(s / f"{n}_X.bin")
    np.array([0], np.uint8).tofile(s / "train_y.bin")  # 0 is no STL-10 label; it would become -1, "unlabeled"
    np.array([1], np.uint8).tofile(s / "test_y.bin")
    (s / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    with pytest.raises(UserError, match=r"train_y\.bin has labels 0\.\.0; STL-10 labels are 1\.\.10"):
        load_dataset(_cfg("stl10", tmp_path, image_size=96), "train")


@pytest.mark.slow  # first torchvision import dominates
def test_corrupt_jpeg_in_imagefolder_is_one_line_naming_the_file(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "ant").mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / split / "ant" / "ok.png")
    good = tmp_path / "good.jpg"
    Image.fromarray(_rng(6).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "train" / "ant" / "cut.jpg"
    bad.write_bytes(good.read_bytes()[:600])  # a truncated transfer: PIL says "image file is truncated"
    with pytest.raises(UserError) as e:
        load_dataset(_cfg("imagefolder", tmp_path, image_size=16), "train")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert len(load_dataset(_cfg("imagefolder", tmp_path, image_size=16), "test")) == 1
