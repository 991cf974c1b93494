"""Planner: sweep cells -> resolved, validated run configs -> plan.csv + runs/<run_id>/config.yaml.

Speed: hydra compose costs ~10 ms, so it runs once per distinct config-group selection
(method/dataset/model/optim); every other key is applied to a plain-dict copy of that composed
config, with the same struct rule (a key must already exist). 10,000 cells plan in well under 2 s
(benchmarks/bench_plan.py). tests/test_plan.py checks the fast path gives byte-identical configs and
hashes to ``bsstudy.config.cell_config`` (one full compose per cell).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import config as bconfig
from ..errors import UserError
from ..io import atomic_write_text
from ..layout import PLAN_COLUMNS, PLAN_EXTRA_COLUMNS, StudyPaths, yaml_dump
from .cost import CostModel, Estimate, dataset_size, gpu_hours
from .spec import GROUPS, Sweep, expand

# Grid keys that are plan.csv columns already (PLAN_COLUMNS); any other varied key gets its own column.
_AXES = ("method", "batch_size", "epochs", "seed")
_GPU_HOURS = PLAN_EXTRA_COLUMNS[0]  # present only when the sweep gives throughput


@dataclass
class Cell:
    """One planned run: its id, resolved config (plain dict, ``out`` set) and plan.csv row."""

    run_id: str
    config: dict
    row: dict
    estimate: Estimate | None = None  # GPU-hours and their sources, when the sweep has throughput


class _View:
    """Attribute access over a plain dict so ``bsstudy.config.validate`` runs without a DictConfig."""

    __slots__ = ("_d",)

    def __init__(self, d: dict) -> None:
        self._d = d

    def __getattr__(self, k: str) -> Any:
        try:
            v = self._d[k]
        except KeyError:
            raise AttributeError(k) from None
        return _View(v) if isinstance(v, dict) else v


def _set(cfg: dict, key: str, value: Any, source: str) -> dict:
    """Copy-on-write ``cfg[key] = value`` for a dotted key; only the dicts on the path are copied."""
    parts = key.split(".")
    root = dict(cfg)
    node = root
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            raise UserError(f"{source}: unknown key {key!r}")
        if i == len(parts) - 1:
            if isinstance(node[p], dict) and not isinstance(value, dict):
                raise UserError(f"{source}: {key}: is a section; set one of its keys ({key}.<name>)")
            if isinstance(node[p], (int, float, str)) and isinstance(value, list):
                raise UserError(f"{source}: {key}: {value!r} is a list but {key} takes one value; to sweep it, "
                                f"make it a grid axis: grid.{key}=[..]")
            if isinstance(node[p], (int, float)) and isinstance(value, str) and "," in value:
                raise UserError(f"{source}: {key}: {value!r}: to sweep several values use a grid axis, "
                                f"grid.{key}=[{value}]")
            node[p] = value
        else:
            child = node[p]
            if not isinstance(child, dict):
                raise UserError(f"{source}: unknown key {key!r} ({'.'.join(parts[:i + 1])} is not a section)")
            node[p] = dict(child)
            node = node[p]
    return root


def cfg_groups(groups: dict[str, str]) -> list[str]:
    return [f"{g}={v}" for g, v in sorted(groups.items())]


class Planner:
    """Resolves cells of one sweep; caches one hydra compose per config-group selection."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._composed: dict[tuple, dict] = {}
        self.canonical = _CanonicalJSON()
        self._options = {g: bconfig.group_options(g) for g in GROUPS}

    def base_config(self, groups: dict[str, str]) -> dict:
        """Composed config (plain dict) of a group selection, composed once."""
        key = tuple(sorted(groups.items()))
        if key not in self._composed:
            from omegaconf import OmegaConf

            cfg = bconfig.compose(cfg_groups(groups))
            self._composed[key] = OmegaConf.to_container(cfg, resolve=True)
            bconfig.check_value("", self._composed[key], f"{self.source} ({', '.join(cfg_groups(groups))})")
            self.canonical.remember(self._composed[key])
        return self._composed[key]

    def resolve(self, overrides: dict[str, Any], study: str) -> dict:
        """Resolved, validated config of one cell (``out`` not yet set)."""
        src = self.source
        groups, scalars = {}, []
        for k, v in overrides.items():
            bconfig.check_value(k, v, src, interpolation=False)  # the composed base is checked once
            if k in GROUPS:
                if not isinstance(v, str):
                    raise UserError(f"{src}: {k}: must name one option of the {k} group, got {v!r}")
                if v not in self._options[k]:
                    raise UserError(f"{src}: {k}: unknown {k} {v!r} (choose from {', '.join(self._options[k])})")
                groups[k] = v
            else:
                scalars.append((k, v))
        cfg = self.base_config(groups)
        for k, v in scalars:
            cfg = _set(cfg, k, v, src)
        cfg = _set(cfg, "study", study, src)
        where = f"{src} (cell {cfg['method']['name']} batch_size={cfg.get('batch_size')!r})"
        bconfig.validate(_View(cfg), where, values=False)
        # Same derived block as bsstudy.config.resolve (tests assert equality with cell_config).
        cfg["lr"] = bconfig.lr_record(cfg["method"], int(cfg["batch_size"]), where)
        return cfg


_enc_str = json.JSONEncoder(ensure_ascii=True).encode  # how json.dumps writes keys and strings


class _CanonicalJSON:
    """``bsstudy.config.canonical_json`` with memoised sub-trees.

    Cells share the unchanged sub-dicts of their composed base (copy-on-write in ``_set``), so their
    encodings are cached by identity; the output is byte-identical to ``json.dumps(sort_keys=True,
    separators=(",", ":"))`` (tests compare hashes with bsstudy.config). Only valid while the shared
    base dicts are not mutated, which the planner never does.
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Any, str]] = {}
        self._str: dict[str, str] = {}  # keys and string values repeat in every cell

    def encode(self, v: Any, shared: bool = False) -> str:
        if isinstance(v, dict):
            hit = self._memo.get(id(v))
            if hit is not None and hit[0] is v:
                return hit[1]
            return "{" + ",".join([self.string(str(k)) + ":" + self.encode(v[k]) for k in sorted(v)]) + "}"
        t = type(v)
        if t is str:
            return self.string(v)
        if t is int:
            return int.__repr__(v)
        if t is bool:
            return "true" if v else "false"
        if v is None:
            return "null"
        if t is float and math.isfinite(v):
            return float.__repr__(v)
        if t is list:
            return "[" + ",".join([self.encode(x) for x in v]) + "]"
        return json.dumps(v)

    def string(self, v: str) -> str:
        e = self._str.get(v)
        if e is None:
            e = self._str[v] = _enc_str(v)
        return e

    def remember(self, d: dict) -> None:
        """Cache the encodings of every sub-dict of a composed base config (never mutated)."""
        for v in d.values():
            if isinstance(v, dict):
                self.remember(v)
        self._memo[id(d)] = (d, self.encode(d))

    def config_hash(self, cfg: dict) -> str:
        d = {k: v for k, v in cfg.items() if k not in bconfig.NON_IDENTITY_KEYS}
        return hashlib.sha256(self.encode(d).encode()).hexdigest()


def plan_row(run_id: str, study: str, cfg: dict, config_hash: str) -> dict[str, Any]:
    """The ``PLAN_COLUMNS`` of one cell's plan.csv row, in order, from its resolved config."""
    row = {"run_id": run_id, "study": study, "method": cfg["method"]["name"], "batch_size": cfg["batch_size"],
           "epochs": cfg["epochs"], "seed": cfg["seed"], "lr": cfg["lr"]["effective"], "base_lr": cfg["lr"]["base"],
           "lr_scaling": cfg["lr"]["scaling"], "dataset": cfg["dataset"]["name"], "backbone": cfg["model"]["name"],
           "optim": cfg["optim"]["name"], "config_hash": config_hash}
    return {c: row[c] for c in PLAN_COLUMNS}  # KeyError here = a column of layout not filled in


def plan_cells(sweep: Sweep, results: Path) -> list[Cell]:
    """Expand, resolve and validate every cell (nothing written); duplicates collapse to one run."""
    planner = Planner(sweep.source)
    cost = CostModel.from_throughput(sweep.throughput) if sweep.throughput else None  # a bad table: stop now
    runs_dir = str(StudyPaths(results / sweep.study).runs.resolve())
    varied = [k for k in sweep.grid if k not in _AXES]
    for r in sweep.include:
        varied += [k for k in r if k not in varied and k not in _AXES]
    cells: dict[str, Cell] = {}
    for ov in expand(sweep):
        cfg = planner.resolve(ov, sweep.study)
        h = planner.canonical.config_hash(cfg)
        # bsstudy.config.run_id's format with the hash computed once (tests assert equality)
        rid = f"{cfg['method']['name']}-b{cfg['batch_size']}-e{cfg['epochs']}-s{cfg['seed']}-{h[:8]}"
        if rid in cells:
            continue
        cfg["out"] = f"{runs_dir}/{rid}"
        row = plan_row(rid, sweep.study, cfg, h)
        for k in varied:
            v: Any = cfg
            for p in k.split("."):
                v = v.get(p) if isinstance(v, dict) else None  # a key of another method: blank
            row[k] = v
        cells[rid] = Cell(rid, cfg, row)
    if not cells:
        raise UserError(f"{sweep.source}: the grid is empty (every cell excluded?)")
    out = list(cells.values())
    if cost is not None:
        for c, e in zip(out, cost.estimate([c.config for c in out])):
            c.row[_GPU_HOURS] = None if e.hours is None else float(f"{e.hours:.4g}")  # 4 significant digits
            c.estimate = e
    return out


def gpu_hours_assumptions(cells: list[Cell]) -> list[str]:
    """The lines saying what the cells' GPU-hour estimates assumed ([] without throughput)."""
    est = [c.estimate for c in cells if c.estimate is not None]
    return est[0].cost.assumptions(est) if est else []


def config_text(cfg: dict) -> str:
    """config.yaml text of a resolved config (key order as composed; loads back to the same JSON)."""
    return yaml_dump(cfg)


def plan_csv_text(cells: list[Cell]) -> str:
    """plan.csv text: one row per cell; ``PLAN_COLUMNS`` first, then varied keys and gpu_hours in first-seen
    order."""
    cols: list[str] = []
    for c in cells:
        cols += [k for k in c.row if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for c in cells:
        w.writerow({k: ("" if c.row.get(k) is None else c.row.get(k)) for k in cols})
    return buf.getvalue()


def previous_run_ids(study_dir: Path) -> list[str]:
    """run_ids of the study's current plan.csv, in order ([] when never planned)."""
    p = StudyPaths(study_dir).plan
    if not p.exists():
        return []
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "run_id" not in reader.fieldnames:
                raise UserError(f"{p}: not a plan.csv (no run_id column); move it away to re-plan")
            return [r["run_id"] for r in reader if r.get("run_id")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{p}: cannot read the previous plan ({type(exc).__name__}: {exc})") from None


@dataclass
class PlanDiff:
    """A re-plan against the study's previous plan.csv: cells added, kept and dropped (run_ids)."""

    added: list[str]
    kept: list[str]
    dropped: list[str]

    @classmethod
    def between(cls, old: list[str], cells: list[Cell]) -> "PlanDiff":
        new = [c.run_id for c in cells]
        old_set, new_set = set(old), set(new)
        return cls([r for r in new if r not in old_set], [r for r in new if r in old_set],
                   [r for r in old if r not in new_set])

    def lines(self, limit: int = 20) -> list[str]:
        """The diff as ``+ run_id`` / ``- run_id`` lines (at most ``limit`` of each), then the counts."""
        out = []
        for sign, ids in (("+", self.added), ("-", self.dropped)):
            out += [f"{sign} {r}" for r in ids[:limit]]
            if len(ids) > limit:
                out.append(f"{sign} ... and {len(ids) - limit} more")
        out.append(f"{len(self.added)} added, {len(self.kept)} unchanged, {len(self.dropped)} dropped")
        return out


def check_no_shrink(diff: PlanDiff, plan_path: Path) -> None:
    """Refuse a re-plan that would drop cells of the previous plan.csv (``--replace`` accepts it)."""
    if not diff.dropped:
        return
    shown = ", ".join(diff.dropped[:3]) + (f" and {len(diff.dropped) - 3} more" if len(diff.dropped) > 3 else "")
    raise UserError(f"{plan_path}: re-planning would drop {len(diff.dropped)} of its cells ({shown}); give a grid "
                    "that contains the previous one, see the diff with --dry-run, or pass --replace to plan "
                    "only the new cells (the old run directories stay)")


def write_plan(sweep: Sweep, cells: list[Cell], results: Path) -> dict[str, int]:
    """Write each new/changed runs/<run_id>/config.yaml, then plan.csv and sweep.yaml; counts of configs.

    plan.csv and the run directories change as one unit: config.yaml files come first (a plan.csv row
    always has its config), and if writing them fails or is interrupted, the ones created by this call
    are removed again, so the study is left as it was (an unrelated run directory is never listed)."""
    paths = StudyPaths(results / sweep.study)
    written = {"configs_new": 0, "configs_unchanged": 0, "configs_rewritten": 0}
    created: list[Path] = []
    try:
        for c in cells:
            p = paths.run(c.run_id).config
            text = config_text(c.config)
            if p.exists():
                if p.read_text() == text:
                    written["configs_unchanged"] += 1
                    continue
                written["configs_rewritten"] += 1  # same identity, different `out` (results dir moved)
            else:
                written["configs_new"] += 1
                created.append(p)
            atomic_write_text(p, text)
        stored, assumed = sweep.to_dict(), gpu_hours_assumptions(cells)
        if assumed:  # submit --dry-run prints what plan.csv's gpu_hours assumed
            stored["gpu_hours_assumptions"] = assumed
        for p, text in ((paths.plan, plan_csv_text(cells)), (paths.sweep, yaml_dump(stored))):
            if not p.exists() or p.read_text() != text:
                atomic_write_text(p, text)
    except BaseException:
        for p in created:
            p.unlink(missing_ok=True)
            try:
                p.parent.rmdir()  # only when empty: nothing of a run is ever removed
            except OSError:
                pass
        raise
    return written


def _hours(h: float) -> str:
    """GPU-hours for people: 83,512 / 27.8 / 0.0786."""
    return f"{h:,.0f}" if h >= 100 else f"{h:.1f}" if h >= 1 else f"{h:.3g}"


def plan_summary_table(cells: Iterable[Cell]) -> str:
    """What ``bsstudy plan`` prints: cells per method x batch size, plus GPU-hours when estimated."""
    cells = list(cells)
    methods = sorted({c.row["method"] for c in cells})
    bss = sorted({c.row["batch_size"] for c in cells})
    count = {(m, b): 0 for m in methods for b in bss}
    for c in cells:
        count[(c.row["method"], c.row["batch_size"])] += 1
    corner = "method \\ B"
    w = max([len(corner)] + [len(m) for m in methods])
    lines = [f"{corner:<{w}} " + " ".join(f"{b:>6}" for b in bss) + f" {'total':>7}"]
    for m in methods:
        lines.append(f"{m:<{w}} " + " ".join(f"{count[(m, b)]:>6}" for b in bss)
                     + f" {sum(count[(m, b)] for b in bss):>7}")
    lines.append(f"{'total':<{w}} " + " ".join(f"{sum(count[(m, b)] for m in methods):>6}" for b in bss)
                 + f" {len(cells):>7}")
    est = [c.estimate for c in cells if c.estimate is not None]
    if est:
        known = [e for e in est if e.hours is not None]
        per = {m: sum(c.estimate.hours for c in cells if c.row["method"] == m and c.estimate is not None
                      and c.estimate.hours is not None) for m in methods}
        extra = "" if len(known) == len(cells) else f", {len(cells) - len(known)} cells without an estimate"
        lines.append(f"estimated GPU-hours: {_hours(sum(e.hours for e in known))} (evaluation "
                     f"{_hours(sum(e.eval_hours for e in known))} of it{extra}) = "
                     + ", ".join(f"{m} {_hours(per[m])}" for m in methods))
        lines += gpu_hours_assumptions(cells)
    return "\n".join(lines)


__all__ = ["Cell", "Planner", "PlanDiff", "check_no_shrink", "previous_run_ids", "plan_cells", "plan_row", "write_plan", "plan_summary_table", "config_text",
           "dataset_size", "gpu_hours", "gpu_hours_assumptions"]
