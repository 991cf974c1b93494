"""Fabricated study directories (plan.csv, runs/*/{config.yaml,result.json,metrics.jsonl}) in the exact
layout of shared/DESIGN.md, for the report's tests and benchmark until real runs exist.

Accuracies follow a simple, documented model (a method-specific batch-size optimum plus seeded noise), so
tests can compute the expected tables by hand from the files written here.
"""
from __future__ import annotations

import copy
import csv
import functools
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..config import config_hash, lr_record
from ..layout import Status, StudyPaths, new_result, write_result, yaml_dump, yaml_load

Cell = tuple  # (method, batch_size, epochs, seed)

# method -> (peak linear top-1, log2 of the best batch size, curvature per log2 step squared)
_MODEL = {"simclr": (0.86, 10.0, 0.004), "vicreg": (0.87, 8.0, 0.0015), "vicreg_unbiased": (0.872, 8.0, 0.0008)}


def default_accuracy(method: str, batch_size: int, epochs: int, seed: int) -> tuple[float, float]:
    """(linear_top1, knn_top1) of the synthetic model; deterministic in its arguments."""
    peak, logb, curv = _MODEL.get(method, (0.8, 8.0, 0.002))
    rng = np.random.default_rng(zlib.crc32(f"{method}/{batch_size}/{epochs}/{seed}".encode()))
    base = peak - curv * (math.log2(batch_size) - logb) ** 2 - 0.05 / math.sqrt(epochs)
    lin = float(np.clip(base + rng.normal(0, 0.004), 0, 1))
    return lin, float(np.clip(lin - 0.02 + rng.normal(0, 0.003), 0, 1))


@dataclass
class SyntheticStudy:
    """What :func:`write_study` wrote: the study directory and the cells by outcome."""

    root: Path
    run_ids: dict = field(default_factory=dict)        # cell -> run_id
    results: dict = field(default_factory=dict)        # run_id -> result dict (as written)


@functools.lru_cache(maxsize=None)
def _conf(name: str) -> dict:
    """One YAML file of bsstudy/conf (shipped defaults), parsed once."""
    from importlib.resources import files

    return yaml_load(files("bsstudy.conf").joinpath(name).read_text())


def make_config(study: str, method: str, batch_size: int, epochs: int, seed: int, **loss) -> dict:
    """A resolved run config shaped like the planner's (bsstudy/conf defaults merged, ``lr`` block added),
    so file sizes and parse costs match real studies. ``loss`` overrides keys of the method's loss block
    (e.g. ``variance="c4"``); an unknown key is a KeyError."""
    cfg = copy.deepcopy({k: v for k, v in _conf("config.yaml").items() if k != "defaults"})
    cfg.update(method=copy.deepcopy(_conf(f"method/{method}.yaml")),
               dataset=copy.deepcopy(_conf("dataset/fashion_mnist.yaml")),
               model=copy.deepcopy(_conf("model/small_cnn.yaml")), optim=copy.deepcopy(_conf("optim/lars.yaml")))
    for k, v in loss.items():
        if k not in cfg["method"]["loss"]:
            raise KeyError(f"method {method} has no loss parameter {k!r}")
        cfg["method"]["loss"][k] = v
    cfg.update(study=study, batch_size=batch_size, epochs=epochs, seed=seed, out=None)
    cfg["lr"] = lr_record(cfg["method"], batch_size)
    return cfg


def write_study(root: Path | str, methods: Iterable[str] = ("simclr", "vicreg", "vicreg_unbiased"),
                batch_sizes: Iterable[int] = (64, 256, 1024), epochs: Iterable[int] = (5,),
                seeds: Iterable[int] = (0, 1, 2), *, study: str | None = None,
                diverged: Iterable[Cell] = (), failed: Iterable[Cell] = (), missing: Iterable[Cell] = (),
                accuracy: Callable[[str, int, int, int], tuple[float, float]] = default_accuracy,
                metrics_epochs: int | None = None,
                init_accuracy: Callable[[int], tuple[float, float]] | None = None) -> SyntheticStudy:
    """Write ``root`` = results/<study>/ with one run per (method, B, E, seed) cell.

    ``diverged``/``failed`` cells get that status (no accuracies); ``missing`` cells are planned but have
    no result.json. ``metrics_epochs`` caps the lines of metrics.jsonl (default: the run's epochs).
    ``init_accuracy(seed) -> (linear, knn)`` adds the untrained network's probe (``eval.at_init``).
    """
    from ..sweep.plan import plan_row

    root = Path(root)
    paths = StudyPaths(root)
    study = study or root.name
    diverged, failed, missing = set(map(tuple, diverged)), set(map(tuple, failed)), set(map(tuple, missing))
    out = SyntheticStudy(root)
    plan_rows = []
    for m in methods:
        for b in batch_sizes:
            for e in epochs:
                for s in seeds:
                    cell = (m, b, e, s)
                    cfg = make_config(study, m, b, e, s)
                    h = config_hash(cfg)
                    rid = f"{m}-b{b}-e{e}-s{s}-{h[:8]}"
                    out.run_ids[cell] = rid
                    run = paths.run(rid)
                    run.dir.mkdir(parents=True, exist_ok=True)
                    cfg["out"] = str(run.dir)
                    run.config.write_text(yaml_dump(cfg, sort_keys=True))
                    plan_rows.append(plan_row(rid, study, cfg, h))
                    if cell in missing:
                        continue
                    status = (Status.DIVERGED if cell in diverged else Status.FAILED if cell in failed
                              else Status.DONE)
                    done = status == Status.DONE
                    lin, knn = accuracy(m, b, e, s)
                    n_ep = e if done else max(1, e // 2)
                    n_ep = min(n_ep, metrics_epochs) if metrics_epochs else n_ep
                    lines = []
                    for ep in range(n_ep):
                        loss = 10.0 / (1 + ep) + 0.01 * s
                        if status == Status.DIVERGED and ep == n_ep - 1:
                            loss = float("nan")
                        lines.append(json.dumps({"epoch": ep, "loss": loss if math.isfinite(loss) else None,
                                                 "lr": cfg["lr"]["effective"], "seconds": 1.0,
                                                 "images_per_second": 1000.0}, sort_keys=True))
                    run.metrics.write_text("\n".join(lines) + "\n")
                    collapse = ({"effective_rank": 40.0 + math.log2(b) + s, "avg_abs_corr": 0.1 + 0.01 * s,
                                 "min_std": 0.05, "mean_std": 0.2} if done else None)
                    res = new_result(
                        run_id=rid, study=study, status=str(status), method=m, batch_size=b, epochs=e, seed=s,
                        lr=cfg["lr"]["effective"], lr_base=cfg["lr"]["base"], lr_scaling=cfg["lr"]["scaling"],
                        dataset=cfg["dataset"]["name"], backbone=cfg["model"]["name"],
                        linear_top1=lin if done else None, knn_top1=knn if done else None,
                        final_loss=10.0 / e if done else None,
                        diverged_at_epoch=n_ep - 1 if status == Status.DIVERGED else None,
                        collapse=collapse, collapse_backbone=copy.deepcopy(collapse),
                        train_seconds=10.0 * e, images_per_second=1000.0, device="cpu", git_commit="0" * 40,
                        versions={"torch": "2.14.1", "bsstudy": "0.1.0"}, config_hash=h,
                        finished_at="2026-01-01T00:00:00Z")
                    if init_accuracy is not None:
                        res["init_linear_top1"], res["init_knn_top1"] = init_accuracy(s)
                    if status == Status.FAILED:
                        # as bsstudy.train writes it: first line, then the traceback's tail
                        res["error"] = (f"RuntimeError: injected failure at epoch {n_ep}\nTraceback (most recent "
                                        f"call last):\n  File \"loop.py\", line 1\nRuntimeError: injected")
                    if status == Status.DIVERGED:
                        res["error"] = f"loss is nan at epoch {n_ep - 1}"
                    write_result(run.result, res)
                    out.results[rid] = res
    root.mkdir(parents=True, exist_ok=True)
    with open(paths.plan, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(plan_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(plan_rows)
    return out
