"""Read one study directory (the only inputs of the report): plan.csv, runs/*/{config.yaml, result.json,
metrics.jsonl} and optional bias/bias.csv. Everything is returned as pandas tables, sorted."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..layout import (RESULT_FILE, Status, StudyPaths, read_config_block, read_result, result_error_line,
                      yaml_load)
from ..registry import method_label, variant

NO_ERROR = "(no error message recorded)"  # error_line of a failed run whose result records none


@dataclass
class Study:
    """Everything the report needs from ``results/<study>/``."""

    name: str
    root: Path
    plan: pd.DataFrame          # plan.csv as written by `bsstudy plan`
    plan_hash: str              # sha256 of plan.csv bytes: the sweep hash
    runs: pd.DataFrame          # one row per result.json, fields flattened (collapse.effective_rank, ...)
    curves: pd.DataFrame        # run_id, epoch, loss (+ other numeric metrics.jsonl fields)
    configs: dict               # run_id -> {"method": method block of config.yaml} (what the report needs)
    missing: pd.DataFrame       # plan rows without result.json
    bias: pd.DataFrame | None   # bias/bias.csv when present


def read_config(path: Path) -> dict:
    """A run's whole config.yaml as a dict."""
    return yaml_load(Path(path).read_text())


def _variant(cfg: dict) -> str:
    """The part of a method's config that makes it a different estimator (``registry.variant``)."""
    m = cfg.get("method") or {}
    return variant(m.get("name"), m.get("loss"))


def load_study(path: Path | str) -> Study:
    """Read ``results/<study>``; UserError when it is not a study or no run has finished yet."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such study directory (expected results/<study> written by `bsstudy plan`)")
    paths = StudyPaths(root)
    plan_path = paths.plan
    if not plan_path.is_file():
        raise UserError(f"{root}: no plan.csv (is this a study directory written by `bsstudy plan`?)")
    raw = plan_path.read_bytes()
    plan = pd.read_csv(plan_path)
    if "run_id" not in plan.columns:
        raise UserError(f"{plan_path}: no run_id column")
    plan = plan.sort_values("run_id", kind="stable").reset_index(drop=True)

    results, configs, curve_rows, blocks = [], {}, [], {}
    for run in paths.run_dirs():
        rid = run.run_id
        if run.config.is_file():
            try:
                configs[rid] = read_config_block(run.config, "method", blocks)
            except Exception as exc:  # a broken config must not hide the other runs
                raise UserError(f"{run.config}: cannot read ({str(exc).splitlines()[0]})") from None
        res = read_result(run.result, strict=True)  # a torn or hand-broken result: one-line error
        if res is None:
            continue
        res.setdefault("run_id", rid)
        res["variant"] = _variant(configs.get(rid, {}))
        res["error_line"] = "" if res.get("status") == Status.DONE else (result_error_line(res) or NO_ERROR)
        results.append(res)
        mpath = run.metrics
        if mpath.is_file():
            for line in mpath.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line of a killed run
                if isinstance(row, dict) and "epoch" in row:
                    row["run_id"] = rid
                    curve_rows.append(row)

    if not results:
        raise UserError(f"{root}: no runs have finished yet (0 of {len(plan)} planned cells have a {RESULT_FILE}; "
                        f"see `bsstudy status {root}`)")
    runs = pd.json_normalize(results, sep=".")
    # a dict field that is null in some runs (collapse of a failed run) leaves a bare all-null column
    # next to its flattened ones: drop it, the flattened columns carry the values
    runs = runs.drop(columns=[c for c in runs.columns if runs[c].isna().all()
                              and any(o.startswith(c + ".") for o in runs.columns)])
    for c in ("linear_top1", "knn_top1", "batch_size", "epochs", "seed"):
        if c in runs.columns:
            runs[c] = pd.to_numeric(runs[c], errors="coerce")
    runs["in_plan"] = runs["run_id"].isin(set(plan["run_id"]))
    runs["method_label"] = _method_labels(runs)
    runs = runs.sort_values(["method_label", "batch_size", "epochs", "seed", "run_id"], kind="stable")
    runs = runs.reset_index(drop=True)
    lead = ["run_id", "method_label", "method", "variant", "status", "batch_size", "epochs", "seed"]
    runs = runs[[c for c in lead if c in runs.columns] + sorted(c for c in runs.columns if c not in lead)]

    curves = pd.DataFrame(curve_rows)
    if len(curves):
        keep = ["run_id", "epoch"] + sorted(c for c in curves.columns if c not in ("run_id", "epoch")
                                           and pd.api.types.is_numeric_dtype(curves[c]))
        curves = curves[keep].sort_values(["run_id", "epoch"]).reset_index(drop=True)
    missing = plan[~plan["run_id"].isin(set(runs["run_id"]))]
    order = [c for c in ("method", "batch_size", "epochs", "seed", "run_id") if c in missing.columns]
    missing = missing.sort_values(order, kind="stable").reset_index(drop=True)

    bias = None
    bias_path = paths.bias_csv
    if bias_path.is_file():
        bias = pd.read_csv(bias_path)
        if not {"batch_size"} <= set(bias.columns) or not ({"rel_bias"} & set(bias.columns)):
            raise UserError(f"{bias_path}: expected columns batch_size and rel_bias")
    return Study(root.resolve().name, root, plan, hashlib.sha256(raw).hexdigest(), runs, curves, configs,
                 missing, bias)


def _method_labels(runs: pd.DataFrame) -> pd.Series:
    """Method name, plus the variant (``registry.method_label``) when one method was run with several
    variants in this study."""
    variants = runs.groupby("method")["variant"].nunique()
    many = set(variants[variants > 1].index)
    return runs.apply(lambda r: method_label(r["method"], r["variant"] if r["method"] in many else ""), axis=1)
