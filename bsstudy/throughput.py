"""Measured training throughput per (model, batch size): the table ``benchmarks/bench_train_throughput.py
--write PATH`` writes, and its reader for cost estimates. Torch-free (planning imports it).

The file is CSV, one row per (model_key, batch_size), columns ``COLUMNS``:

    model_key          backbone and input shape, ``model_key(cfg)``: e.g. resnet18-cifar@3x32x32, small_cnn-w32@1x28x28
    backbone           model.name (resnet18, resnet50, small_cnn)
    width              model.width for small_cnn, empty otherwise
    image_shape        CxHxW of the dataset's images
    dataset            dataset the images were shaped like (and the evaluation sized by)
    method             the objective and projector measured (VICReg's 3x2048 projector by default)
    batch_size         global batch (images; each image gives two views)
    images_per_second  training images per second: augmentation, two forward passes, loss, backward, optimizer
    eval_seconds       one end-of-run evaluation (train+test features, linear probe, kNN) of this model on
                       ``dataset``'s full splits; the same in every row of a model_key, empty if not measured
    eval_images        train+test images that evaluation touched (scales eval_seconds to a cell's splits);
                       empty: eval_seconds is taken as it is
    device             where it was measured (cuda:<name> or cpu:<threads>threads)
    precision          bf16 or fp32 (what precision=auto gave there)
    channels_last      true / false
    measured_at        ISO date

Extra columns are ignored, so a user may add notes. ``images_per_second(table, key, B)`` interpolates
log-log between the measured batch sizes (see there for outside the measured range); ``range_of`` says
where a batch size falls (measured, interpolated, below or above the measured range).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError

COLUMNS = ("model_key", "backbone", "width", "image_shape", "dataset", "method", "batch_size",
           "images_per_second", "eval_seconds", "eval_images", "device", "precision", "channels_last", "measured_at")
REQUIRED = ("model_key", "batch_size", "images_per_second")


def _get(cfg: Any, key: str) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key)
    return getattr(cfg, key, None)


def model_key(cfg: Any) -> str:
    """The table key of a (resolved) cell config: backbone, its variant, and the input shape.

    ``resnet18-cifar@3x32x32`` (model.name-model.stem), ``small_cnn-w32@1x28x28`` (model.width): what
    decides a step's cost; method and projector are recorded in the table but are not part of the key."""
    model, data = _get(cfg, "model"), _get(cfg, "dataset")
    name = str(_get(model, "name"))
    if _get(model, "width") is not None:
        name += f"-w{int(_get(model, 'width'))}"
    elif _get(model, "stem") is not None:
        name += f"-{_get(model, 'stem')}"
    size = int(_get(data, "image_size"))
    return f"{name}@{int(_get(data, 'channels'))}x{size}x{size}"


@dataclass(frozen=True)
class ModelThroughput:
    """One model_key's measurements: batch sizes ascending with their images/s, and the evaluation cost."""
    model_key: str
    batch_sizes: tuple[int, ...]
    images_per_second: tuple[float, ...]
    eval_seconds: float | None
    eval_images: int | None = None
    device: str = ""
    precision: str = ""
    method: str = ""


@dataclass(frozen=True)
class ThroughputTable:
    """A loaded throughput file: ``models[model_key]``, and the path it came from (for error messages)."""
    path: Path
    models: dict[str, ModelThroughput] = field(default_factory=dict)


def _number(row: dict[str, str], key: str, where: str, cast=float, optional: bool = False) -> Any:
    raw = (row.get(key) or "").strip()
    if not raw and optional:
        return None
    try:
        v = cast(raw)
    except ValueError:
        raise UserError(f"{where}: {key}: {raw!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"{where}: {key}: {raw!r} must be a positive number")
    return v


def load_throughput_table(path: Path | str) -> ThroughputTable:
    """Read a table written by ``bench_train_throughput.py --write`` (format in the module docstring).

    Bad content (missing column, non-positive number, a (model_key, batch_size) twice, eval_seconds that
    differ within a model_key) is a one-line UserError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"{path}: cannot read the throughput table ({e.strerror or e})") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (a bench_train_throughput.py --write table)")
    points: dict[str, dict[int, float]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}"
        key = (row.get("model_key") or "").strip()
        if not key:
            raise UserError(f"{where}: model_key is empty")
        b = _number(row, "batch_size", where, int)
        ips = _number(row, "images_per_second", where)
        ev = _number(row, "eval_seconds", where, optional=True)
        ev_n = _number(row, "eval_images", where, int, optional=True)
        if b in points.setdefault(key, {}):
            raise UserError(f"{where}: {key} batch_size {b} appears twice")
        points[key][b] = ips
        m = meta.setdefault(key, {"eval_seconds": ev, "eval_images": ev_n, "device": row.get("device") or "",
                                  "precision": row.get("precision") or "", "method": row.get("method") or ""})
        for col, v in (("eval_seconds", ev), ("eval_images", ev_n)):
            if v is not None and m[col] is not None and v != m[col]:
                raise UserError(f"{where}: {key}: {col} {v} differs from {m[col]} in an earlier row")
            if m[col] is None:
                m[col] = v
    models = {}
    for key, pts in points.items():
        bs = tuple(sorted(pts))
        models[key] = ModelThroughput(key, bs, tuple(pts[b] for b in bs), **meta[key])
    return ThroughputTable(path, models)


def write_throughput_table(path: Path | str, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts with ``COLUMNS`` keys; missing ones empty) as the CSV table, atomically."""
    import io

    from .io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: "" if r.get(c) is None else r[c] for c in COLUMNS})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return path


def _entry(table: ThroughputTable, key: str) -> ModelThroughput:
    try:
        return table.models[key]
    except KeyError:
        known = ", ".join(sorted(table.models)) or "none"
        raise UserError(f"{table.path}: no throughput measured for {key} (measured: {known}); run "
                        f"benchmarks/bench_train_throughput.py --write on the target hardware") from None


def images_per_second(table: ThroughputTable, key: str, batch_size: Any) -> Any:
    """Training images/s of ``key`` at ``batch_size`` (an int, or an array of them: an array back),
    interpolated log-log between measured batch sizes (a power law between neighbouring points).

    Below the smallest measured B: the first segment's log-log slope, clamped to [0, 1] (a step never
    gets faster with more images, so images/s grows at most linearly in B). Above the largest: flat
    (throughput saturates; whether that B fits in memory the table cannot say). One point: flat."""
    import numpy as np  # here, not at import: `bsstudy plan` without a table does not need it

    b = np.asarray(batch_size, dtype=float)
    if np.any(b < 1):
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    e = _entry(table, key)
    bs, ips = np.asarray(e.batch_sizes, dtype=float), np.asarray(e.images_per_second)
    if len(bs) == 1:
        out = np.full(b.shape, ips[0])
    else:
        slope = np.diff(np.log(ips)) / np.diff(np.log(bs))           # power-law exponent of each segment
        seg = np.clip(np.searchsorted(bs, b, side="right") - 1, 0, len(bs) - 2)
        k = np.where(b < bs[0], np.clip(slope[0], 0.0, 1.0), slope[seg])  # below the range: clamped slope
        out = np.where(b >= bs[-1], ips[-1], ips[seg] * (b / bs[seg]) ** k)  # above: flat
    return float(out) if out.ndim == 0 else out


RANGES = ("measured", "interpolated", "below", "above")  # range_of's labels


def range_of(table: ThroughputTable, key: str, batch_size: Any) -> Any:
    """Where ``batch_size`` (int or array) falls for ``key``: one of ``RANGES`` (an array of them for an array)."""
    import numpy as np

    b = np.asarray(batch_size)
    bs = np.asarray(_entry(table, key).batch_sizes)
    out = np.select([np.isin(b, bs), b < bs[0], b > bs[-1]], ["measured", "below", "above"], "interpolated")
    return str(out) if out.ndim == 0 else out


def eval_seconds(table: ThroughputTable, key: str, images: int | None = None) -> float | None:
    """Seconds of one end-of-run evaluation of ``key`` (None when the table has none for it); with
    ``images`` (train+test images a cell's evaluation touches) scaled linearly from the measured
    ``eval_images`` when the table has it (the kNN part grows with train x test, but was the smallest
    part where measured: 6% of a small_cnn and 2% of a resnet18_cifar evaluation on CPU)."""
    e = _entry(table, key)
    if e.eval_seconds is None or images is None or e.eval_images is None:
        return e.eval_seconds
    return e.eval_seconds * images / e.eval_images
