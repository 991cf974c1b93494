"""GPU-hour estimates of planned cells (plan.csv ``gpu_hours``) and the assumptions behind them.

Per cell (docs/sweep.md, "GPU-hour estimates")::

    GPU-h = [pretraining images x epochs / ips(model_key, B / W)  +  W x evaluations x eval_s] / 3600

``ips`` is training images/s of one GPU at the per-GPU batch B / W (W = distributed.nodes x gpus_per_node),
read from the sweep's throughput table (``throughput: {table: FILE}``, bsstudy.throughput: log-log
interpolation in B) or, for cells the table does not cover, from the per-method mapping
(``throughput: {simclr: 7000, default: 6000}``, the same at every B). ``eval_s`` is one evaluation (train
+ test features, linear probe, kNN): the table's ``eval_seconds`` scaled to the cell's evaluation images,
else ``EVAL_IMAGE_COST`` training images per evaluated image. Rank 0 evaluates while the other W-1 ranks
wait, so an evaluation costs W GPUs. Torch-free (planning imports it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.sizes import eval_sizes, pretrain_size
from ..throughput import ThroughputTable, eval_seconds, images_per_second, load_throughput_table, model_key, \
    range_of
from .spec import THROUGHPUT_TABLE

# One evaluated image costs this many training images (at the table's largest measured B, or the
# mapping's images/s) where no eval_seconds is measured. An evaluated image is one un-augmented forward
# pass; a training image is two augmented views forward and backward (about 6 forwards), plus the probe's
# and kNN's share. Measured with bench_train_throughput.py --write on CPU (1 thread, a 2-core machine under
# load 5-11): 0.13 for small_cnn (B=256; 0.21 against its B=32 images/s), 0.11 and 0.22 in two runs of
# resnet18_cifar (B=64). Not measured on a GPU: there, measure eval_seconds.
EVAL_IMAGE_COST = 0.2


def dataset_size(cfg: dict) -> int | None:
    """Images used for pretraining (the cost of an epoch): dataset.train_subset, else the
    dataset's pretraining-split size; None for imagefolder, whose size is unknown until its files are read."""
    ds = cfg["dataset"]
    if ds.get("train_subset") is not None:
        return int(ds["train_subset"])
    return pretrain_size(ds["name"])


def eval_images(cfg: dict) -> int | None:
    """Train + test images one evaluation of the cell touches (train capped by dataset.train_subset and
    eval.max_train_samples, as bsstudy.evaluate does); None when the dataset's split sizes are not fixed."""
    sizes = eval_sizes(cfg["dataset"]["name"])
    if sizes is None:
        return None
    train, test = sizes
    for cap in (cfg["dataset"].get("train_subset"), cfg["eval"].get("max_train_samples")):
        if cap is not None:
            train = min(train, int(cap))
    return train + test


def evaluations(cfg: dict) -> int:
    """Evaluations of one run: the end, ``eval.at_init``, and every ``eval.every`` epochs before the last."""
    ev = cfg["eval"]
    every = int(ev.get("every") or 0)
    return 1 + bool(ev.get("at_init")) + ((int(cfg["epochs"]) - 1) // every if every > 0 else 0)


def world_size(cfg: dict) -> int:
    d = cfg.get("distributed") or {}
    return int(d.get("nodes", 1)) * int(d.get("gpus_per_node", 1))


@dataclass(frozen=True)
class Estimate:
    """One cell's estimate: GPU-hours (None: no estimate, ``note`` says why), its training and evaluation
    parts, and where the numbers came from (``train``: ``table:<range>`` with a ``throughput.RANGES``
    label, ``method`` or ``default``; ``eval``: ``table``, ``constant`` or ``none``)."""

    hours: float | None
    train_hours: float | None
    eval_hours: float | None
    model_key: str
    per_gpu_batch: int
    train: str = ""
    eval: str = ""
    note: str = ""
    cost: "CostModel | None" = field(default=None, compare=False, repr=False)  # what made it


@dataclass
class CostModel:
    """A sweep's ``throughput`` block, with its table loaded (a bad table: one-line UserError naming it)."""

    rates: dict[str, float] = field(default_factory=dict)
    table: ThroughputTable | None = None

    @classmethod
    def from_throughput(cls, throughput: dict[str, Any]) -> "CostModel":
        path = throughput.get(THROUGHPUT_TABLE)
        return cls({k: float(v) for k, v in throughput.items() if k != THROUGHPUT_TABLE},
                   load_throughput_table(path) if path else None)

    def _in_table(self, key: str) -> bool:
        return self.table is not None and key in self.table.models

    def estimate(self, cfgs: list[dict]) -> list[Estimate]:
        """Estimates of resolved cell configs, in order; the table is interpolated per model_key at once."""
        import numpy as np  # here, not at import: plan without throughput does not need it

        keys = [model_key(c) for c in cfgs]
        pgb = np.array([int(c["batch_size"]) // world_size(c) for c in cfgs], dtype=np.int64)
        ips = np.full(len(cfgs), np.nan)
        train_src = np.full(len(cfgs), "", dtype=object)
        key_of = np.array(keys, dtype=object)
        for key in sorted({k for k in keys if self._in_table(k)}):
            idx = np.flatnonzero(key_of == key)
            ips[idx] = images_per_second(self.table, key, pgb[idx])
            train_src[idx] = np.char.add("table:", range_of(self.table, key, pgb[idx]).astype(str))
        out = []
        for i, cfg in enumerate(cfgs):
            key, w, method = keys[i], world_size(cfg), cfg["method"]["name"]
            src, rate = train_src[i], ips[i]
            if not src:
                for name in (method, "default"):
                    if name in self.rates:
                        src, rate = ("method" if name == method else "default"), self.rates[name]
                        break
            n = dataset_size(cfg)
            if not src or n is None:
                note = ("pretraining set size unknown" if n is None else
                        f"{key} not in the table and no throughput.default" if self.table is not None else
                        f"no throughput.{method} or throughput.default")
                out.append(Estimate(None, None, None, key, int(pgb[i]), note=note, cost=self))
                continue
            train_s = n * int(cfg["epochs"]) / rate
            m, ev_src, ev_s = eval_images(cfg), "none", 0.0
            measured = eval_seconds(self.table, key, m) if self._in_table(key) else None
            if m is not None and measured is not None:
                ev_src, ev_s = "table", measured
            elif m is not None:
                # the eval does not depend on the training batch (features go in batches of 512): cost it
                # at the largest measured B, as EVAL_IMAGE_COST was measured
                ref = self.table.models[key].images_per_second[-1] if self._in_table(key) else rate
                ev_src, ev_s = "constant", m * EVAL_IMAGE_COST / ref
            eval_gpu_s = w * evaluations(cfg) * ev_s
            out.append(Estimate((train_s + eval_gpu_s) / 3600, train_s / 3600, eval_gpu_s / 3600, key,
                                int(pgb[i]), src, ev_src, cost=self))
        return out

    def assumptions(self, estimates: list[Estimate]) -> list[str]:
        """What the estimates assumed, in two lines: the sources, then which cells fell back (or none)."""
        src = []
        if self.table is not None:
            ms = self.table.models.values()
            how = sorted({m.device for m in ms if m.device}) + [f"measured with {m}" for m in
                                                                  sorted({m.method for m in ms if m.method})]
            src.append(f"images/s per GPU from {self.table.path}" + (f" ({'; '.join(how)})" if how else "")
                       + " at the per-GPU B, log-log interpolated, flat above the largest measured B, "
                       "first-segment slope (0..1) below the smallest")
        if self.rates:
            src.append(("else " if src else "images/s per GPU from ") + "throughput: "
                       + ", ".join(f"{k} {v:g}" for k, v in self.rates.items()) + " (the same at every B)")
        ev = sorted({e.eval for e in estimates if e.hours is not None} - {"none"})
        ev_txt = {"table": "the table's eval_seconds scaled to the cell's train+test images",
                  "constant": f"{EVAL_IMAGE_COST:g} training images per evaluated image"}
        if ev:
            src.append("evaluation: " + " or ".join(ev_txt[k] for k in ev) + ", x evaluations x GPUs")
        fell = []
        for rng, what in (("below", "below the smallest measured B"), ("above", "above the largest measured B")):
            hit = [e for e in estimates if e.train == f"table:{rng}"]
            if hit:
                fell.append(f"{len(hit)} cell(s) {what} (per-GPU B {', '.join(map(str, sorted({e.per_gpu_batch for e in hit})))})")
        for rate in ("method", "default"):
            hit = [e for e in estimates if e.train == rate]
            if hit and self.table is not None:
                fell.append(f"{len(hit)} cell(s) of {', '.join(sorted({e.model_key for e in hit}))} (not in the "
                            f"table) on throughput.{'<method>' if rate == 'method' else 'default'}")
            elif hit and rate == "default":
                fell.append(f"{len(hit)} cell(s) on throughput.default")
        n = sum(e.eval == "constant" and e.train.startswith("table:") for e in estimates)
        if n:
            fell.append(f"{n} cell(s) on the per-image evaluation constant (the table has no eval_seconds)")
        n = sum(e.eval == "none" for e in estimates if e.hours is not None)
        if n:
            fell.append(f"{n} cell(s) without evaluation time (evaluation split sizes unknown)")
        notes = sorted({e.note for e in estimates if e.hours is None})
        if notes:
            fell.append(f"{sum(e.hours is None for e in estimates)} cell(s) without an estimate ({'; '.join(notes)})")
        return ["GPU-hours assume: " + "; ".join(src), "fell back: " + ("; ".join(fell) if fell else "none")]


def gpu_hours(cfg: dict, throughput: dict[str, Any]) -> float | None:
    """Estimated GPU-hours of one resolved cell config under a sweep's ``throughput`` block."""
    return CostModel.from_throughput(throughput).estimate([cfg])[0].hours
