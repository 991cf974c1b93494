"""Read one study directory (the only inputs of the report): plan.csv, runs/*/{config.yaml, result.json,
metrics.jsonl} and optional bias/bias.csv. Everything is returned as pandas tables, sorted."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError

# Fields a failed/diverged result.json may carry its error line in (the first one present wins).
ERROR_KEYS = ("error", "error_message", "message", "exception", "traceback")


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


def _yaml_load(text: str) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on 1,000 configs
    return yaml.load(text, Loader=loader) or {}


def read_config(path: Path) -> dict:
    """A run's whole config.yaml as a dict."""
    return _yaml_load(Path(path).read_text())


def _method_block(path: Path, cache: dict) -> dict:
    """``{"method": ...}`` of a config.yaml. The planner writes block-style YAML with top-level keys at
    column 0, so the ``method:`` block is cut out and parsed alone, once per distinct text (``cache``):
    it is the same for every cell of a method variant, and a whole 120-line config costs ~1 ms to parse
    (1 s per 1,000 runs). Anything unexpected falls back to parsing the whole file."""
    text = path.read_text()
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("method:")), None)
    if start is not None and lines[start].rstrip() == "method:":
        end = next((j for j in range(start + 1, len(lines)) if lines[j] and not lines[j][0].isspace()
                    and not lines[j].startswith("#")), len(lines))
        key = "\n".join(lines[start:end])
        if key not in cache:
            cache[key] = _yaml_load(key)
        if isinstance(cache[key].get("method"), dict):
            return cache[key]
    return {"method": _yaml_load(text).get("method") or {}}


def _variant(cfg: dict) -> str:
    """The part of a method's config that makes it a different estimator (unbiased VICReg's schemes)."""
    m = cfg.get("method") or {}
    loss = m.get("loss") or {}
    if m.get("name") == "vicreg_unbiased":
        return f"{loss.get('variance', '?')},{loss.get('cov_target', '?')}"
    return ""


def _error_line(res: dict) -> str:
    for k in ERROR_KEYS:
        v = res.get(k)
        if v:
            lines = [ln for ln in str(v).strip().splitlines() if ln.strip()]
            return lines[-1] if k == "traceback" else lines[0]
    if res.get("status") == "diverged":
        return f"diverged at epoch {res.get('diverged_at_epoch')}"
    return "(no error message recorded)"


def load_study(path: Path | str) -> Study:
    """Read ``results/<study>``; UserError when it is not a study or no run has finished yet."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such study directory (expected results/<study> written by `bsstudy plan`)")
    plan_path = root / "plan.csv"
    if not plan_path.is_file():
        raise UserError(f"{root}: no plan.csv (is this a study directory written by `bsstudy plan`?)")
    raw = plan_path.read_bytes()
    plan = pd.read_csv(plan_path)
    if "run_id" not in plan.columns:
        raise UserError(f"{plan_path}: no run_id column")
    plan = plan.sort_values("run_id", kind="stable").reset_index(drop=True)

    run_dirs = sorted(p for p in (root / "runs").glob("*") if p.is_dir()) if (root / "runs").is_dir() else []
    results, configs, curve_rows, blocks = [], {}, [], {}
    for d in run_dirs:
        rid = d.name
        cfg_path, res_path = d / "config.yaml", d / "result.json"
        if cfg_path.is_file():
            try:
                configs[rid] = _method_block(cfg_path, blocks)
            except Exception as exc:  # a broken config must not hide the other runs
                raise UserError(f"{cfg_path}: cannot read ({str(exc).splitlines()[0]})") from None
        if not res_path.is_file():
            continue
        try:
            res = json.loads(res_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{res_path}: invalid JSON ({exc})") from None
        res.setdefault("run_id", rid)
        res["variant"] = _variant(configs.get(rid, {}))
        res["error_line"] = "" if res.get("status") == "done" else _error_line(res)
        results.append(res)
        mpath = d / "metrics.jsonl"
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
        raise UserError(f"{root}: no runs have finished yet (0 of {len(plan)} planned cells have a result.json; "
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
    bias_path = root / "bias" / "bias.csv"
    if bias_path.is_file():
        bias = pd.read_csv(bias_path)
        if not {"batch_size"} <= set(bias.columns) or not ({"rel_bias"} & set(bias.columns)):
            raise UserError(f"{bias_path}: expected columns batch_size and rel_bias")
    return Study(root.resolve().name, root, plan, hashlib.sha256(raw).hexdigest(), runs, curves, configs,
                 missing, bias)


def _method_labels(runs: pd.DataFrame) -> pd.Series:
    """Method name, plus the variant when one method was run with several variants in this study."""
    variants = runs.groupby("method")["variant"].nunique()
    many = set(variants[variants > 1].index)
    return runs.apply(lambda r: f"{r['method']}[{r['variant']}]" if r["method"] in many else r["method"], axis=1)
