"""Read one study directory (the only inputs of the report): plan.csv, runs/*/{config.yaml, result.json,
metrics.jsonl} and optional bias/bias.csv. Everything is returned as pandas tables, sorted."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .analysis import SETTING_KEYS
from ..errors import UserError
from ..layout import (RESULT_FILE, RESULT_STATUSES, Status, StudyPaths, read_config_block, read_result,
                      result_error_line, yaml_load, yaml_load_file)
from ..registry import method_label, variant

NO_ERROR = "(no error message recorded)"  # error_line of a failed run whose result records none
# result.json fields without which a run cannot be placed in a cell
REQUIRED = ("status", "method", "batch_size", "epochs", "seed")
# The sweep file's `report:` block (kept in results/<study>/sweep.yaml by `bsstudy plan`): who authored the
# study and what it is called, for its BibTeX entry. Each value is text; author may be a list of names.
REPORT_META_KEYS = ("author", "title", "year")
# the statistics' settings of the same block (read and checked by bsstudy.report.analysis)
REPORT_ANALYSIS_KEYS = SETTING_KEYS
# The config.yaml blocks the report reads from every run (variants, and the Setup section: everything a
# reader needs to reproduce a cell); each is parsed once per distinct text (read_config_block).
SETUP_BLOCKS = ("method", "dataset", "model", "optim", "eval")
SKIPPED_RUN = "run not included"
NO_CURVE = "training curve left out"


@dataclass(frozen=True)
class Unreadable:
    """A file of a run the report could not use: the run is left out (or only its training curve)."""

    run_id: str
    file: str       # path of the file
    problem: str    # one line: what is wrong with it
    effect: str     # SKIPPED_RUN or NO_CURVE

    def line(self) -> str:
        """The warning printed for it (one line)."""
        return f"report: warning: {self.file}: {self.problem}; {self.effect}"


def _stderr(item: Unreadable) -> None:
    print(item.line(), file=sys.stderr, flush=True)


@dataclass
class Study:
    """Everything the report needs from ``results/<study>/``."""

    name: str
    root: Path
    plan: pd.DataFrame          # plan.csv as written by `bsstudy plan`
    plan_hash: str              # sha256 of plan.csv bytes: the sweep hash
    runs: pd.DataFrame          # one row per result.json, fields flattened (collapse.effective_rank, ...)
    curves: pd.DataFrame        # run_id, epoch, loss (+ other numeric metrics.jsonl fields)
    configs: dict               # run_id -> {block: ...} for the SETUP_BLOCKS of its config.yaml
    missing: pd.DataFrame       # plan rows without result.json (nor an unreadable one)
    bias: pd.DataFrame | None   # bias/bias.csv when present
    unreadable: list[Unreadable] = field(default_factory=list)  # files left out, with why
    meta: dict = field(default_factory=dict)  # the sweep's `report:` block (REPORT_META_KEYS), {} when absent


def read_report_meta(sweep_yaml: Path) -> dict:
    """The ``report:`` block of a study's sweep.yaml as {key: text} ({} without a file or block);
    UserError naming the key when it is not a mapping of REPORT_META_KEYS to text."""
    if not sweep_yaml.is_file():
        return {}
    data = yaml_load_file(sweep_yaml)
    block = data.get("report") if isinstance(data, dict) else None
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise UserError(f"{sweep_yaml}: report: expected a mapping with keys {', '.join(REPORT_META_KEYS)}")
    out = {}
    for k, v in block.items():
        if k in REPORT_ANALYSIS_KEYS:
            continue
        if k not in REPORT_META_KEYS:
            raise UserError(f"{sweep_yaml}: report.{k}: unknown key (choose from "
                            f"{', '.join(REPORT_META_KEYS + REPORT_ANALYSIS_KEYS)})")
        if k == "author" and isinstance(v, list) and v and all(isinstance(a, str) and a.strip() for a in v):
            v = " and ".join(a.strip() for a in v)
        if isinstance(v, int) and not isinstance(v, bool) and k == "year":
            v = str(v)
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"{sweep_yaml}: report.{k}: expected text"
                            + (" or a list of names" if k == "author" else ""))
        out[k] = v.strip()
    return out


def read_config(path: Path) -> dict:
    """A run's whole config.yaml as a dict."""
    return yaml_load(Path(path).read_text())


def _variant(cfg: dict) -> str:
    """The part of a method's config that makes it a different estimator (``registry.variant``)."""
    m = cfg.get("method") or {}
    return variant(m.get("name"), m.get("loss"))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _field_problem(res: dict) -> str | None:
    """Why a result record cannot be placed in a cell (missing or mistyped REQUIRED fields), else None."""
    missing = [k for k in REQUIRED if res.get(k) is None]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if res["status"] not in {str(s) for s in RESULT_STATUSES}:
        return f"status {res['status']!r} is not one of {', '.join(str(s) for s in RESULT_STATUSES)}"
    for k in ("batch_size", "epochs", "seed"):
        if isinstance(res[k], bool) or not isinstance(res[k], (int, float)) or res[k] != res[k]:
            return f"{k} {res[k]!r} is not a number"
    if not isinstance(res["method"], str):
        return f"method {res['method']!r} is not a name"
    return None


def load_study(path: Path | str, warn: Callable[[Unreadable], None] = _stderr) -> Study:
    """Read ``results/<study>``; UserError when it is not a study or no run has a readable result.

    A run whose result.json or config.yaml cannot be read or lacks a REQUIRED field is left out, and one
    whose metrics.jsonl cannot be read loses only its training curve: each is passed to ``warn`` (one
    line on stderr by default) and listed in ``Study.unreadable``; the other runs still count."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such study directory (expected results/<study> written by `bsstudy plan`)")
    paths = StudyPaths(root)
    plan_path = paths.plan
    if not plan_path.is_file():
        raise UserError(f"{root}: no plan.csv (is this a study directory written by `bsstudy plan`?)")
    try:
        raw = plan_path.read_bytes()
        plan = pd.read_csv(plan_path)
        run_dirs = paths.run_dirs()
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{plan_path if not isinstance(exc, OSError) else exc.filename or root}: cannot read "
                        f"({_one_line(exc)})") from None
    if "run_id" not in plan.columns:
        raise UserError(f"{plan_path}: no run_id column")
    plan = plan.sort_values("run_id", kind="stable").reset_index(drop=True)

    results, configs, curve_rows, blocks, unreadable = [], {}, [], {}, []

    def skip(rid: str, file: Path, problem: str, effect: str = SKIPPED_RUN) -> None:
        item = Unreadable(rid, str(file), problem, effect)
        unreadable.append(item)
        warn(item)

    for run in run_dirs:
        rid = run.run_id
        try:
            res = read_result(run.result, strict=True)
        except UserError as exc:  # unreadable (permissions, bytes, JSON) or not a JSON object
            skip(rid, run.result, str(exc).split(": ", 1)[-1])
            continue
        if res is None:
            continue
        problem = _field_problem(res)
        if problem:
            skip(rid, run.result, problem)
            continue
        try:
            cfg = {}
            if run.config.is_file():
                for key in SETUP_BLOCKS:
                    cfg.update(read_config_block(run.config, key, blocks))
        except Exception as exc:  # noqa: BLE001 - any broken config leaves out its run, never the report
            skip(rid, run.config, f"cannot read ({_one_line(exc)})")
            continue
        configs[rid] = cfg
        res.setdefault("run_id", rid)
        res["variant"] = _variant(cfg)
        res["error_line"] = "" if res.get("status") == Status.DONE else (result_error_line(res) or NO_ERROR)
        results.append(res)
        mpath = run.metrics
        try:
            lines = mpath.read_text().splitlines() if mpath.is_file() else []
        except (OSError, UnicodeDecodeError) as exc:
            skip(rid, mpath, f"cannot read ({_one_line(exc)})", NO_CURVE)
            lines = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line of a killed run
            if isinstance(row, dict) and "epoch" in row:
                row["run_id"] = rid
                curve_rows.append(row)

    if not results and unreadable:
        raise UserError(f"{root}: no readable {RESULT_FILE} ({len(unreadable)} unreadable, named in the warnings "
                        "above)")
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
    left_out = {u.run_id for u in unreadable if u.effect == SKIPPED_RUN}
    missing = plan[~plan["run_id"].isin(set(runs["run_id"]) | left_out)]
    order = [c for c in ("method", "batch_size", "epochs", "seed", "run_id") if c in missing.columns]
    missing = missing.sort_values(order, kind="stable").reset_index(drop=True)

    bias = None
    bias_path = paths.bias_csv
    if bias_path.is_file():
        try:
            bias = pd.read_csv(bias_path)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise UserError(f"{bias_path}: cannot read ({_one_line(exc)})") from None
        if not {"batch_size"} <= set(bias.columns) or not ({"rel_bias"} & set(bias.columns)):
            raise UserError(f"{bias_path}: expected columns batch_size and rel_bias")
    return Study(root.resolve().name, root, plan, hashlib.sha256(raw).hexdigest(), runs, curves, configs,
                 missing, bias, unreadable, read_report_meta(paths.sweep))


def _method_labels(runs: pd.DataFrame) -> pd.Series:
    """Method name, plus the variant (``registry.method_label``) when one method was run with several
    variants in this study."""
    variants = runs.groupby("method")["variant"].nunique()
    many = set(variants[variants > 1].index)
    return runs.apply(lambda r: method_label(r["method"], r["variant"] if r["method"] in many else ""), axis=1)
