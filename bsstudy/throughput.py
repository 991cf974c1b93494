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
    device             where it was measured (cuda:<name> or cpu:<threads>threads)
    precision          bf16 or fp32 (what precision=auto gave there)
    channels_last      true / false
    measured_at        ISO date

Extra columns are ignored, so a user may add notes. ``images_per_second(table, key, B)`` interpolates
log-log between the measured batch sizes (see there for outside the measured range).
"""
from __future__ import annotations

import csv
import math
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError

COLUMNS = ("model_key", "backbone", "width", "image_shape", "dataset", "method", "batch_size",
           "images_per_second", "eval_seconds", "device", "precision", "channels_last", "measured_at")
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
        if b in points.setdefault(key, {}):
            raise UserError(f"{where}: {key} batch_size {b} appears twice")
        points[key][b] = ips
        m = meta.setdefault(key, {"eval_seconds": ev, "device": row.get("device") or "",
                                  "precision": row.get("precision") or "", "method": row.get("method") or ""})
        if ev is not None and m["eval_seconds"] is not None and ev != m["eval_seconds"]:
            raise UserError(f"{where}: {key}: eval_seconds {ev} differs from {m['eval_seconds']} in an earlier row")
        if m["eval_seconds"] is None:
            m["eval_seconds"] = ev
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


def images_per_second(table: ThroughputTable, key: str, batch_size: int) -> float:
    """Training images/s of ``key`` at ``batch_size``, interpolated log-log between measured batch sizes.

    Below the smallest measured B: the first segment's log-log slope, clamped to [0, 1] (a step never
    gets faster with more images, so images/s grows at most linearly in B). Above the largest: flat
    (throughput saturates; whether that B fits in memory the table cannot say). One point: flat."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    e = _entry(table, key)
    bs, ips = e.batch_sizes, e.images_per_second
    i = bisect_left(bs, batch_size)
    if i < len(bs) and bs[i] == batch_size:
        return ips[i]
    if i == len(bs) or len(bs) == 1:
        return ips[-1]
    lo = max(i - 1, 0)
    slope = (math.log(ips[lo + 1]) - math.log(ips[lo])) / (math.log(bs[lo + 1]) - math.log(bs[lo]))
    if i == 0:
        slope = min(max(slope, 0.0), 1.0)
    return math.exp(math.log(ips[lo]) + slope * (math.log(batch_size) - math.log(bs[lo])))


def eval_seconds(table: ThroughputTable, key: str) -> float | None:
    """Seconds of one end-of-run evaluation of ``key`` (None when the table has none for it)."""
    return _entry(table, key).eval_seconds
