"""Datasets as whole uint8 tensors: ``load_dataset(dataset_cfg, split) -> ImageTensors``.

Splits: ``pretrain`` (SSL training images), ``train`` (linear-probe / kNN training set), ``test``.
Formats are the ones torchvision's dataset classes use on disk:

    fashion_mnist  <root>/FashionMNIST/raw/*-ubyte[.gz] (torchvision's layout) or <root>/*-ubyte.gz (the
                   Debian package's, /usr/share/datasets/fashion-mnist); IDX files, .gz read directly
    cifar10        <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (pickle batches)
    cifar100       <root>/cifar-100-python/{train,test,meta} (pickle, fine labels)
    stl10          <root>/stl10_binary/{train,test,unlabeled}_X.bin, *_y.bin, class_names.txt;
                   pretrain = unlabeled + train
    imagefolder    <root>/train/<class>/*, <root>/val/<class>/* (ImageNet layout); pretrain/train = train,
                   test = val; every image is resized once (shorter side, then centre crop) to image_size

Every file is parsed here (torchvision only downloads, with ``download: true``): torchvision's classes
reject any file in the same format but the official ones, assert on malformed files, and unpickle CIFAR
batches unrestricted. Here a malformed file is a one-line ``UserError`` naming it, CIFAR pickles may hold
only numpy arrays and plain data, and a file named like a standard one that also holds the standard number
of items is checked against the published md5 (``_STANDARD``; ``BSSTUDY_DATA_VERIFY=0`` skips the check).
Decoded tensors are cached as ``.pt`` files under ``$BSSTUDY_DATA_CACHE`` (default ``~/.cache/bsstudy``),
keyed by the source files' paths, sizes and mtimes.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from bsstudy.data.sizes import DEBIAN_FASHION_MNIST, STL10_FILES, STL10_FOLDER, cache_dir
from bsstudy.data.sizes import FMNIST_FILES as _FMNIST_FILES
from bsstudy.errors import UserError
from bsstudy.io import atomic_torch_save

SPLITS = ("pretrain", "train", "test")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")  # torchvision.datasets.FashionMNIST.classes
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


# ---------------------------------------------------------------- integrity of the standard files

# (dataset, file name) -> (items that make it the standard file, md5 of its bytes). A file is checked when
# its name and its number of images/labels are the standard ones, so small files in the same format
# (subsets, the tests' fixtures) are not. Fashion-MNIST: md5 of the decompressed IDX bytes, computed from
# the Debian package's files, so any gzip of them passes. CIFAR / STL-10: the md5s torchvision checks
# (CIFAR10.train_list/test_list/meta, CIFAR100.*, STL10.train_list/test_list). Meta files (class names)
# are checked when the batches read with them are standard.
_STANDARD: dict[tuple[str, str], tuple[int | None, str]] = {
    ("fashion_mnist", "train-images-idx3-ubyte"): (60000, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    ("fashion_mnist", "train-labels-idx1-ubyte"): (60000, "9018921c3c673c538a1fc5bad174d6f9"),
    ("fashion_mnist", "t10k-images-idx3-ubyte"): (10000, "8181f5470baa50b63fa0f6fddb340f0a"),
    ("fashion_mnist", "t10k-labels-idx1-ubyte"): (10000, "15d484375f8d13e6eb1aabb0c3f46965"),
    ("cifar10", "data_batch_1"): (10000, "c99cafc152244af753f735de768cd75f"),
    ("cifar10", "data_batch_2"): (10000, "d4bba439e000b95fd0a9bffe97cbabec"),
    ("cifar10", "data_batch_3"): (10000, "54ebc095f3ab1f0389bbae665268c751"),
    ("cifar10", "data_batch_4"): (10000, "634d18415352ddfa80567beed471001a"),
    ("cifar10", "data_batch_5"): (10000, "482c414d41f54cd18b22e5b47cb7c3cb"),
    ("cifar10", "test_batch"): (10000, "40351d587109b95175f43aff81a1287e"),
    ("cifar10", "batches.meta"): (None, "5ff9c542aee3614f3951f8cda6e48888"),
    ("cifar100", "train"): (50000, "16019d7e3df5f24257cddd939b257f8d"),
    ("cifar100", "test"): (10000, "f0ef6b0ae62326f3e7ffdfab6717acfc"),
    ("cifar100", "meta"): (None, "7973b15100ade9c7d40fb424638fde48"),
    ("stl10", "train_X.bin"): (5000, "918c2871b30a85fa023e0c44e0bee87f"),
    ("stl10", "train_y.bin"): (5000, "5a34089d4802c674881badbb80307741"),
    ("stl10", "unlabeled_X.bin"): (100000, "5242ba1fed5e4be9e1e742405eb56ca4"),
    ("stl10", "test_X.bin"): (8000, "7f263ba9f9e0b06b93213547f721ac82"),
    ("stl10", "test_y.bin"): (8000, "36f9794fa4beb8a2c72628de14fa638e"),
}
# The upstream .gz files (torchvision.datasets.FashionMNIST.resources), in case their content differs
# from the Debian package's by more than the compression.
_FMNIST_GZ_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                  "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                  "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}


def verify_enabled() -> bool:
    """Whether standard files are checked against their md5 (``BSSTUDY_DATA_VERIFY=0`` turns it off)."""
    return os.environ.get("BSSTUDY_DATA_VERIFY", "1").strip().lower() not in ("0", "false", "no", "off")


def _check_standard(name: str, path: Path, items: int | None, content: Any, *, standard: bool | None = None,
                    alt_md5: str | None = None) -> bool:
    """Check ``content`` (the file's bytes, decompressed) against the published md5 when ``path`` is the
    standard file: its name is in ``_STANDARD`` and ``items`` is the standard count (or, for meta files,
    ``standard`` says the data read with it is standard). Returns whether it was checked; a mismatch is
    a UserError. ``alt_md5``: another accepted md5, of the file as stored (an upstream .gz)."""
    known = _STANDARD.get((name, path.name.removesuffix(".gz")))
    if known is None or not verify_enabled():
        return False
    want_items, want = known
    if not (standard if want_items is None else items == want_items):
        return False
    got = hashlib.md5(content).hexdigest()
    if got == want or (alt_md5 is not None and hashlib.md5(path.read_bytes()).hexdigest() == alt_md5):
        return True
    holds = f" and holds its {items} items" if items is not None else ""
    raise UserError(f"{path} is named like the standard {name} file{holds}, but its md5 is {got}, not the "
                    f"published {want}: the file is damaged or modified; replace it with the official one (delete it "
                    "and set dataset.download=true), or set BSSTUDY_DATA_VERIFY=0 to use it as it is")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it ends in .gz; unreadable → UserError naming it."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; EOFError: truncated gzip
        raise UserError(f"{path}: cannot read it ({_one_line(e)})") from None


# ---------------------------------------------------------------- Fashion-MNIST (IDX files)


def _fmnist_raw(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"


def _fmnist_files(d: Path) -> dict[str, Path] | None:
    """The four files under ``d``: torchvision's FashionMNIST/raw/ first, then ``d`` itself (the Debian
    layout); in each, a file is taken uncompressed or as .gz. None when a directory has not all four."""
    for cand in (_fmnist_raw(d), d):
        found = {}
        for f in _FMNIST_FILES:
            p = next((p for p in (cand / f, cand / f"{f}.gz") if p.is_file()), None)
            if p is not None:
                found[f] = p
        if len(found) == len(_FMNIST_FILES):
            return found
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of uint8 data with ``ndim`` dimensions (MNIST's format: big-endian magic 0x0000080N,
    N sizes, then the data), checked against the published md5 when it is a standard file."""
    data = _read_bytes(path)
    head = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != 0x0800 + ndim or len(data) < head:
        found = f"magic {magic:#010x}" if magic is not None else f"{len(data)} bytes"
        raise UserError(f"{path} is not an IDX file of {ndim}-d uint8 data ({found}, expected magic "
                        f"{0x0800 + ndim:#010x}): not Fashion-MNIST, or damaged")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if len(data) != head + int(np.prod(dims)):
        raise UserError(f"{path} has {len(data) - head} bytes of data, but its header says {'x'.join(map(str, dims))}"
                        f" = {int(np.prod(dims))}: truncated or damaged")
    _check_standard("fashion_mnist", path, dims[0], data, alt_md5=_FMNIST_GZ_MD5.get(path.name))
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _fashion_mnist_files(cfg: Any) -> dict[str, Path]:
    """The four Fashion-MNIST files of ``dataset.root`` (or the default places), downloading when asked."""
    root = _cfg(cfg, "root")
    candidates = [Path(root).expanduser()] if root else [DEBIAN_FASHION_MNIST, cache_dir()]
    for c in candidates:
        files = _fmnist_files(c)
        if files is not None:
            return files
    if _cfg(cfg, "download"):
        import torchvision

        dest = candidates[0] if root else cache_dir()
        try:
            for train in (True, False):
                torchvision.datasets.FashionMNIST(str(dest), train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise UserError(f"dataset 'fashion_mnist' download into {dest} failed: {e}") from None
        files = _fmnist_files(dest)
        if files is not None:
            return files
    raise _missing("fashion_mnist", candidates,
                   "install it with `apt-get install dataset-fashion-mnist`, or set dataset.root=DIR "
                   "(with FashionMNIST/raw/ or the *-ubyte.gz files), or dataset.download=true")


def _load_fashion_mnist(cfg: Any, part: str) -> ImageTensors:
    files = _fashion_mnist_files(cfg)
    prefix = "train" if part == "train" else "t10k"
    img_path, lab_path = files[f"{prefix}-images-idx3-ubyte"], files[f"{prefix}-labels-idx1-ubyte"]

    def build() -> ImageTensors:
        x, y = _read_idx(img_path, 3), _read_idx(lab_path, 1)
        if y.shape[0] != x.shape[0]:
            raise UserError(f"{lab_path} has {y.shape[0]} labels for the {x.shape[0]} images of {img_path}")
        if y.size and int(y.max()) >= len(FASHION_MNIST_CLASSES):
            raise UserError(f"{lab_path} has label {int(y.max())}; Fashion-MNIST labels are 0..9")
        return ImageTensors(torch.from_numpy(x.copy()).unsqueeze(1).contiguous(),
                            torch.from_numpy(y.astype(np.int64)), list(FASHION_MNIST_CLASSES))

    return _cached("fashion_mnist", part, [img_path, lab_path], {"verify": verify_enabled()}, build)


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "label_names", "labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels", "CIFAR100"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain data only: a CIFAR batch is a dict of arrays, lists and strings.
    Anything else (a pickled callable: a crafted batch could run code) is refused before it is called."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (f"numpy.{core}.{mod}", name) for core in ("core", "_core")
        for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise _Refused(f"{module}.{name}")
        if module.startswith("numpy.core."):  # the official batches were pickled under numpy 1.x
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


class _Refused(pickle.UnpicklingError):
    pass


def _unpickle(path: Path) -> tuple[dict, bytes]:
    """A CIFAR pickle (python-2 pickles with bytes keys, decoded as latin1, as torchvision does) and its bytes."""
    raw = _read_bytes(path)
    try:
        d = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _Refused as e:
        raise UserError(f"{path} holds Python objects, not only arrays and plain data (GLOBAL {e}); refused, "
                        "nothing in it was run") from None
    except Exception as e:  # garbage: any of pickle's many errors
        raise UserError(f"{path} is not a CIFAR python-pickle file ({type(e).__name__}: {_one_line(e)})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a CIFAR python-pickle file (holds a {type(d).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}, raw


def _entry(d: dict, key: str, path: Path) -> Any:
    if key not in d:
        raise UserError(f"{path} has no '{key}' entry (has {', '.join(map(str, sorted(d, key=str))) or 'none'}): "
                        "not a CIFAR batch of this dataset")
    return d[key]


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
        imgs, labels, standard = [], [], False
        for f in files[:-1]:
            b, raw = _unpickle(f)
            try:
                x = np.asarray(_entry(b, "data", f), dtype=np.uint8)
                y = np.asarray(_entry(b, labels_key, f), dtype=np.int64).reshape(-1)
            except (TypeError, ValueError) as e:
                raise UserError(f"{f}: 'data' / '{labels_key}' are not arrays of integers ({_one_line(e)})") from None
            if x.size % 3072 or x.size // 3072 != y.shape[0]:
                raise UserError(f"{f}: 'data' holds {x.size} bytes for {y.shape[0]} labels; a CIFAR image is "
                                "3072 bytes (3x32x32)")
            standard |= _check_standard(name, f, y.shape[0], raw)
            imgs.append(x.reshape(-1, 3, 32, 32))
            labels.append(y)
        m, raw = _unpickle(files[-1])
        _check_standard(name, files[-1], None, raw, standard=standard)
        classes = [str(c) for c in _entry(m, names_key, files[-1])]
        y = np.concatenate(labels)
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise UserError(f"{d}: labels {int(y.min())}..{int(y.max())} do not fit the {len(classes)} classes "
                            f"of {files[-1]}")
        return ImageTensors(torch.from_numpy(np.concatenate(imgs)).contiguous(), torch.from_numpy(y), classes)

    return _cached(name, part, files, {"verify": verify_enabled()}, build)


# ---------------------------------------------------------------- STL-10


_STL_IMAGE_BYTES = 3 * 96 * 96


def _read_stl_images(path: Path) -> torch.Tensor:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % _STL_IMAGE_BYTES:
        raise UserError(f"{path} is not an STL-10 image file (size {raw.size} is not a multiple of 3*96*96)")
    _check_standard("stl10", path, raw.size // _STL_IMAGE_BYTES, raw)
    # Stored column-major per channel: (N, C, W, H) -> transpose to (N, C, H, W), as torchvision does.
    return torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())


def _read_stl_labels(path: Path, n_images: int) -> torch.Tensor:
    raw = np.fromfile(path, dtype=np.uint8)
    _check_standard("stl10", path, raw.size, raw)
    if raw.size != n_images:
        raise UserError(f"{path} has {raw.size} labels for {n_images} images")
    if raw.size and (raw.min() < 1 or raw.max() > 10):
        raise UserError(f"{path} has labels {int(raw.min())}..{int(raw.max())}; STL-10 labels are 1..10 on disk")
    return torch.from_numpy(raw.astype(np.int64)) - 1


def _load_stl10(cfg: Any, part: str) -> ImageTensors:
    root = _cfg(cfg, "root")
    base = Path(root).expanduser() if root else cache_dir()
    d = base / STL10_FOLDER
    need = list(STL10_FILES)
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
        try:
            text = _read_bytes(d / "class_names.txt").decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{d / 'class_names.txt'} is not UTF-8 text ({_one_line(e)})") from None
        classes = [c for c in text.splitlines() if c.strip()]
        imgs, labels = [], []
        for n in names:
            x = _read_stl_images(d / f"{n}_X.bin")
            imgs.append(x)
            if n == "unlabeled":
                labels.append(torch.full((x.shape[0],), -1, dtype=torch.int64))
            else:
                labels.append(_read_stl_labels(d / f"{n}_y.bin", x.shape[0]))
        return ImageTensors(torch.cat(imgs), torch.cat(labels), classes)

    return _cached("stl10", part, files, {"verify": verify_enabled()}, build)


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
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert(mode), dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                # PIL's messages ("image file is truncated") do not name the file
                raise UserError(f"dataset 'imagefolder': {f} is not a readable image ({_one_line(e)})") from None
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
