"""The study / run-directory contract: the one owner of its names, paths, statuses and file formats.

A study directory (written by ``bsstudy plan``)::

    results/<study>/plan.csv  sweep.yaml  jobs.jsonl  submitit/  bias/
                    runs/<run_id>/config.yaml  metrics.jsonl  result.json  init_eval.json  checkpoints/

Every stage (plan, submit, status, train, report, bias) reaches these files through ``StudyPaths`` /
``RunPaths``, reads and writes ``result.json`` through ``read_result`` / ``write_result``, names states
with ``Status`` and parses YAML with ``yaml_load`` / ``yaml_dump``. Nothing here imports torch or pandas.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import UserError


# ─────────────────────────────── statuses ───────────────────────────────
class Status(StrEnum):
    """The state of a cell. ``result.json`` holds only DONE, DIVERGED or FAILED; the others are derived
    by ``bsstudy status`` from jobs.jsonl and the scheduler."""

    PLANNED = "planned"      # never submitted
    PENDING = "pending"      # queued
    RUNNING = "running"
    PREEMPTED = "preempted"  # requeued (or pending again) after training started; resumable
    DONE = "done"
    DIVERGED = "diverged"    # non-finite loss: a valid outcome of a study
    FAILED = "failed"        # an exception, or the job ended without result.json
    UNKNOWN = "unknown"      # the scheduler could not be asked
    UNREADABLE = "unreadable"  # its run directory or a file in it cannot be read (permissions)


STATUS_ORDER: tuple[Status, ...] = tuple(Status)                       # display order (status, counts)
ACTIVE: tuple[Status, ...] = (Status.PENDING, Status.RUNNING, Status.PREEMPTED)  # a job owns the cell
RESULT_STATUSES: tuple[Status, ...] = (Status.DONE, Status.DIVERGED, Status.FAILED)  # what result.json says
TERMINAL: tuple[Status, ...] = (Status.DONE, Status.DIVERGED)        # final: the trainer returns it as is
FINISHED_BAD: tuple[Status, ...] = (Status.FAILED, Status.DIVERGED)  # what --retry-failed resubmits


# ─────────────────────────────── paths ───────────────────────────────
PLAN_FILE, SWEEP_FILE, JOBS_FILE = "plan.csv", "sweep.yaml", "jobs.jsonl"
CONFIG_FILE, RESULT_FILE, METRICS_FILE, INIT_EVAL_FILE = "config.yaml", "result.json", "metrics.jsonl", "init_eval.json"


@dataclass(frozen=True)
class RunPaths:
    """Files of one run directory (a cell, or an ad-hoc ``bsstudy train`` run)."""

    dir: Path

    @property
    def run_id(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def result(self) -> Path:
        return self.dir / RESULT_FILE

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def init_eval(self) -> Path:
        return self.dir / INIT_EVAL_FILE

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (bsstudy/train/tensorboard.py); a view of metrics.jsonl and result.json."""
        return self.dir / "tb"

    def retired(self, n: int) -> Path:
        """Where ``--retry-failed`` keeps the n-th retired result.json."""
        return self.dir / f"result.retired{n}.json"


@dataclass(frozen=True)
class StudyPaths:
    """Files of a study directory ``results/<study>``."""

    dir: Path

    @property
    def plan(self) -> Path:
        return self.dir / PLAN_FILE

    @property
    def sweep(self) -> Path:
        return self.dir / SWEEP_FILE

    @property
    def jobs(self) -> Path:
        return self.dir / JOBS_FILE

    @property
    def runs(self) -> Path:
        return self.dir / "runs"

    @property
    def submitit(self) -> Path:
        return self.dir / "submitit"

    @property
    def bias(self) -> Path:
        return self.dir / "bias"

    @property
    def bias_csv(self) -> Path:
        return self.bias / "bias.csv"

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.runs / run_id)

    def run_dirs(self) -> list[RunPaths]:
        """Every run directory present, sorted by run_id."""
        if not self.runs.is_dir():
            return []
        return [RunPaths(p) for p in sorted(self.runs.iterdir()) if p.is_dir()]

    def require_plan(self) -> "StudyPaths":
        """UserError if the study was never planned."""
        if not self.plan.exists():
            raise UserError(f"{self.dir}: no plan.csv (run `bsstudy plan SWEEP.yaml` first)")
        return self


def study_paths(study_dir: Path | str) -> StudyPaths:
    """The paths of a planned study; UserError if it was never planned."""
    return StudyPaths(Path(study_dir)).require_plan()


# ─────────────────────────────── plan.csv ───────────────────────────────
# The columns every plan.csv has, in order; varied sweep keys (e.g. method.loss.variance) and gpu_hours
# follow them.
PLAN_COLUMNS: tuple[str, ...] = ("run_id", "study", "method", "batch_size", "epochs", "seed", "lr", "base_lr",
                                 "lr_scaling", "dataset", "backbone", "optim", "config_hash")
PLAN_EXTRA_COLUMNS: tuple[str, ...] = ("gpu_hours",)


# ─────────────────────────────── YAML ───────────────────────────────
try:  # libyaml when present: ~10x faster on thousands of config.yaml files
    import yaml as _yaml

    _Loader = getattr(_yaml, "CSafeLoader", _yaml.SafeLoader)
    _Dumper = getattr(_yaml, "CSafeDumper", _yaml.SafeDumper)
except ImportError:  # pragma: no cover - pyyaml is a dependency
    _yaml = None


def yaml_load(text: str) -> Any:
    """Parse YAML text (safe loader; libyaml when available). Empty text is ``{}``."""
    out = _yaml.load(text, Loader=_Loader)
    return {} if out is None else out


def yaml_error(path: Path | str, exc: Exception) -> UserError:
    """The one-line UserError of malformed YAML: file, position and problem."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return UserError(f"{path}: invalid YAML{where}: {problem}")


def yaml_load_file(path: Path | str) -> Any:
    """Parse a YAML file; UserError naming the file when it is missing or malformed."""
    p = Path(path)
    try:
        return yaml_load(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: missing") from None
    except _yaml.YAMLError as exc:
        raise yaml_error(p, exc) from None


def read_config_block(path: Path | str, key: str, cache: dict[str, Any]) -> dict[str, Any]:
    """``{key: ...}`` of a run's config.yaml, parsing only that top-level block when it can.

    Speed path for readers of thousands of runs (the report reads ``method`` of every run): the planner
    writes config.yaml with ``yaml_dump`` (block style, top-level keys at column 0), so the block from
    ``key:`` to the next column-0 key is valid YAML on its own, and it is the same text for every cell of
    a method variant: it is parsed once per distinct text (``cache``, shared across calls). A whole
    config costs ~1-2 ms to parse (1-2 s per 1,000 runs); the block ~0.07 ms. Anything unexpected
    (no such block, a flow-style or scalar value) falls back to parsing the whole file. Malformed YAML
    raises the parser's error."""
    text = Path(path).read_text()
    lines = text.splitlines()
    head = f"{key}:"
    start = next((i for i, ln in enumerate(lines) if ln.startswith(head)), None)
    if start is not None and lines[start].rstrip() == head:
        end = next((j for j in range(start + 1, len(lines)) if lines[j] and not lines[j][0].isspace()
                    and not lines[j].startswith("#")), len(lines))
        block = "\n".join(lines[start:end])
        if block not in cache:
            cache[block] = yaml_load(block)
        if isinstance(cache[block].get(key), dict):
            return cache[block]
    return {key: yaml_load(text).get(key) or {}}


def yaml_dump(obj: Any, sort_keys: bool = False) -> str:
    """Block-style YAML text (key order kept unless ``sort_keys``); loads back with ``yaml_load``."""
    return _yaml.dump(obj, Dumper=_Dumper, sort_keys=sort_keys, default_flow_style=False, width=1000)


# ─────────────────────────────── result.json ───────────────────────────────
RESULT_SCHEMA = 1
# result.json fields (shared/DESIGN.md contract + docs/architecture.md extensions), with their types.
# Every result.json has every key of RESULT_FIELDS (None when not applicable).
RESULT_FIELDS: dict[str, str] = {
    "schema": "int", "run_id": "str", "study": "str|None", "status": "done|diverged|failed",
    "method": "str", "batch_size": "int", "epochs": "int", "seed": "int",
    "lr": "float (effective)", "lr_base": "float", "lr_scaling": "str",
    "dataset": "str", "backbone": "str",
    "linear_top1": "float|None", "knn_top1": "float|None", "final_loss": "float|None",
    "diverged_at_epoch": "int|None", "collapse": "dict|None", "collapse_backbone": "dict|None",
    "train_seconds": "float|None", "images_per_second": "float|None", "device": "str|None",
    "git_commit": "str|None", "git_dirty": "bool|None (uncommitted changes to tracked files)", "versions": "dict",
    "config_hash": "str|None", "finished_at": "str|None",
}
# Optional fields: probe (chosen weight decay, validation scores), error (failed runs: first line of the
# exception, then the traceback tail), init_linear_top1 / init_knn_top1 (eval.at_init), few_shot /
# init_few_shot (eval.few_shot: {"<k>": {"top1", "sd", "draws"}}, the trained and the untrained network).
RESULT_OPTIONAL: tuple[str, ...] = ("probe", "error", "init_linear_top1", "init_knn_top1", "few_shot",
                                    "init_few_shot")
# Where an error line may be found, first present wins (older or hand-written result files use the others).
ERROR_KEYS: tuple[str, ...] = ("error", "error_message", "message", "exception", "traceback")


def new_result(**fields: Any) -> dict[str, Any]:
    """A result record with every contract field (None unless given) and the schema version."""
    unknown = set(fields) - set(RESULT_FIELDS) - set(RESULT_OPTIONAL)
    if unknown:
        raise KeyError(f"not result.json fields: {', '.join(sorted(unknown))}")
    rec: dict[str, Any] = {k: None for k in RESULT_FIELDS}
    rec["schema"] = RESULT_SCHEMA
    rec.update(fields)
    return rec


def write_result(path: Path | str, result: dict[str, Any]) -> None:
    """Write result.json atomically; NaN/inf become null so the write never fails on a float."""
    from .io import atomic_write_json, json_finite

    atomic_write_json(path, json_finite(result))


def read_result(path: Path | str, strict: bool = False) -> dict[str, Any] | None:
    """result.json as a dict; None when absent. Unreadable or not a JSON object: None, or with ``strict``
    a UserError naming the file."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if strict:
            raise UserError(f"{p}: unreadable result ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        return None
    if not isinstance(obj, dict):
        if strict:
            raise UserError(f"{p}: not a result record (a JSON object expected, got {type(obj).__name__})")
        return None
    return obj


def result_error_line(result: dict[str, Any] | None) -> str | None:
    """The one-line error of a failed/diverged result (None if it records none)."""
    if not result:
        return None
    for k in ERROR_KEYS:
        v = result.get(k)
        if isinstance(v, str) and v.strip():
            lines = [ln for ln in v.strip().splitlines() if ln.strip()]
            return lines[-1].strip() if k == "traceback" else lines[0].strip()
    if result.get("status") == Status.DIVERGED:
        return f"diverged at epoch {result.get('diverged_at_epoch')}"
    return None


__all__ = ["Status", "STATUS_ORDER", "ACTIVE", "RESULT_STATUSES", "TERMINAL", "FINISHED_BAD", "RunPaths",
           "StudyPaths", "study_paths", "PLAN_COLUMNS", "PLAN_EXTRA_COLUMNS", "yaml_load", "yaml_load_file",
           "yaml_error", "read_config_block", "yaml_dump", "RESULT_SCHEMA", "RESULT_FIELDS", "RESULT_OPTIONAL",
           "ERROR_KEYS", "new_result", "write_result", "read_result", "result_error_line", "CONFIG_FILE",
           "RESULT_FILE", "METRICS_FILE", "INIT_EVAL_FILE", "PLAN_FILE", "SWEEP_FILE", "JOBS_FILE"]
