"""Sweep files: parse and check a sweep YAML, apply command-line overrides, expand the grid into cells.

Schema (docs/sweep.md)::

    study: demo                     # results/<study>/
    base: {dataset: fashion_mnist, model.width: 8, ...}   # every cell; group choices or any key
    grid: {method: [...], batch_size: [...], epochs: [...], seed: [...], method.loss.variance: [...]}
    exclude: [{method: vicreg_unbiased, batch_size: 32}]  # drop cells matching every key given
    include: [{method: vicreg, batch_size: 8, epochs: 2, seed: 0}]  # extra cells (base + these keys)
    per_method: {simclr: {method.projector.hidden_dim: 64, slurm: {mem_gb: 8}}}
    slurm: {partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32, timeout_min: 600, ...}
    throughput: {table: results/throughput.csv}   # GPU-hour estimates from a measured table, and/or
    throughput: {simclr: 9000, default: 8000}      #   images/s per GPU per method (same at every B)

Keys inside base/grid/include/per_method are config keys: nested mappings are flattened to dotted keys
(``model: {width: 8}`` == ``model.width: 8``); a plain string at a config-group key (``method``,
``dataset``, ``model``, ``optim``) selects that group's option.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import CONF_GROUPS
from ..errors import UserError
from ..layout import yaml_load_file

GROUPS = CONF_GROUPS  # keys whose string value selects a config-group option
TOP_KEYS = ("study", "base", "grid", "exclude", "include", "per_method", "slurm", "throughput", "report",
            "slurm_overrides", "gpu_hours_assumptions")
THROUGHPUT_TABLE = "table"  # throughput key naming a bench_train_throughput.py --write table
# Resources the planner passes to submitit (slurm_* prefixed unless generic); docs/sweep.md.
SLURM_KEYS = (
    "partition", "account", "qos", "constraint", "gpus_per_node", "cpus_per_task", "mem_gb",
    "timeout_min", "array_parallelism", "signal_delay_s", "additional_parameters",
    "setup", "python", "wckey",
)
SLURM_DEFAULTS: dict[str, Any] = {"cpus_per_task": 1, "mem_gb": 2, "timeout_min": 60,
                                  "array_parallelism": 64, "gpus_per_node": 0}


@dataclass
class Sweep:
    """A checked sweep file (after command-line overrides)."""

    source: str
    study: str
    base: dict[str, Any]
    grid: dict[str, list]
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    per_method_slurm: dict[str, dict[str, Any]] = field(default_factory=dict)
    # {"table": absolute path} and/or method (or "default") -> images/s per GPU; docs/sweep.md
    throughput: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # read by `bsstudy report` from sweep.yaml, not here
    # ``slurm.KEY=VALUE`` given on plan command lines, in order; plan keeps them for the next plan
    slurm_overrides: list[str] = field(default_factory=list)
    # what the last plan assumed for plan.csv's gpu_hours (written by plan into sweep.yaml; submit prints it)
    gpu_hours_assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain dict in the file schema (what plan stores as results/<study>/sweep.yaml, adding
        ``gpu_hours_assumptions`` from its cells)."""
        pm = {m: dict(v) for m, v in self.per_method.items()}
        for m, s in self.per_method_slurm.items():
            pm.setdefault(m, {})["slurm"] = dict(s)
        out = {"study": self.study, "base": self.base, "grid": self.grid, "exclude": self.exclude,
               "include": self.include, "per_method": pm, "slurm": self.slurm, "throughput": self.throughput}
        if self.report:
            out["report"] = self.report
        if self.slurm_overrides:
            out["slurm_overrides"] = list(self.slurm_overrides)
        return out

    def resources(self, method: str) -> dict[str, Any]:
        """SLURM resources of a cell of ``method``: defaults < sweep ``slurm`` < per-method ``slurm``."""
        r = dict(SLURM_DEFAULTS)
        r.update(self.slurm)
        r.update(self.per_method_slurm.get(method, {}))
        return r


def flatten(d: Any, prefix: str, where: str) -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; a mapping under a group key stays a nested override.

    A mapping with non-string keys (``method.lr_table: {256: 0.3}``) is a value, not a section."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: {prefix or 'value'} must be a mapping, got {type(d).__name__}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        if not isinstance(k, str) or not k:
            raise UserError(f"{where}: {prefix}{k!r}: keys must be non-empty strings")
        key = f"{prefix}{k}"
        if isinstance(v, dict) and all(isinstance(kk, str) for kk in v):
            out.update(flatten(v, key + ".", where))
        else:
            out[key] = v
    return out


def parse_value(text: str) -> Any:
    """A command-line value: YAML scalar or flow list (``[0,1,2]``, ``1e-3``, ``null``, ``true``).

    Not ``layout.yaml_load``: a value may be ``null``, and text that is not YAML stays the string given."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _load_yaml(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"{path}: no such sweep file")
    data = yaml_load_file(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a sweep file is a mapping with keys {', '.join(TOP_KEYS)}")
    _keep_time_text(path, data)
    return data


def _keep_time_text(path: Path, data: dict) -> None:
    """Put back the text of ``timeout_min: 24:00:00`` that YAML 1.1 read as a base-60 int (86400).

    PyYAML resolves unquoted ``H:MM:SS`` to an integer in seconds-like base 60, which as minutes would be
    60 days. The node tree still has the scalar's text, so the slurm blocks get it back as a string and
    ``parse_time_limit`` reads it as SLURM does."""
    blocks = []
    if isinstance(data.get("slurm"), dict):
        blocks.append((("slurm",), data["slurm"]))
    for m, ov in (data.get("per_method") or {}).items() if isinstance(data.get("per_method"), dict) else ():
        if isinstance(ov, dict) and isinstance(ov.get("slurm"), dict):
            blocks.append((("per_method", m, "slurm"), ov["slurm"]))
    blocks = [(w, b) for w, b in blocks if isinstance(b.get("timeout_min"), int)]
    if not blocks:
        return
    root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    for where, block in blocks:
        node = root
        for k in (*where, "timeout_min"):
            node = next((v for kn, v in getattr(node, "value", ()) if getattr(kn, "value", None) == k), None) \
                if isinstance(node, yaml.MappingNode) else None
        if isinstance(node, yaml.ScalarNode) and ":" in node.value:
            block["timeout_min"] = node.value


_TIME_HELP = "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, or 90m / 2h / 1h30m / 1d"
_UNITS = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?")


def parse_time_limit(value: Any, where: str) -> int:
    """A SLURM time limit as whole minutes (seconds round up), or UserError naming ``where``.

    Accepts minutes (int or digits), SLURM's own ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``, and ``90m`` / ``2h`` / ``1h30m`` / ``1d`` spellings."""
    bad = UserError(f"{where}: {value!r} is not a time limit ({_TIME_HELP})")
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value * 60
    elif isinstance(value, str):
        seconds = _time_seconds(value.strip().lower())
    else:
        seconds = None
    if seconds is None or seconds <= 0:
        raise bad
    return math.ceil(seconds / 60)


def _time_seconds(t: str) -> int | None:
    """Seconds of a lower-cased time-limit string, None when it is not one (``parse_time_limit``)."""
    if t.isdigit():
        return int(t) * 60
    m = _UNITS.fullmatch(t)
    if m and any(m.groups()):
        d, h, mi, s = (int(x or 0) for x in m.groups())
        return ((d * 24 + h) * 60 + mi) * 60 + s
    days, dash, clock = t.partition("-")
    if not dash:
        days, clock = "", t
    parts = clock.split(":")
    if (dash and not days.isdigit()) or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    nums = [int(p) for p in parts]
    if dash:                  # D-HH, D-HH:MM, D-HH:MM:SS
        h, mi, s = nums + [0] * (3 - len(nums))
    elif len(nums) == 3:      # HH:MM:SS
        h, mi, s = nums
    elif len(nums) == 2:      # MM:SS
        h, mi, s = 0, *nums
    else:
        return None
    if s > 59 or (mi > 59 and (dash or len(nums) == 3)):
        return None
    return ((int(days or 0) * 24 + h) * 60 + mi) * 60 + s


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """Apply ``section.key=value`` command-line overrides to the raw sweep mapping.

    ``grid.seed=[0,1,2]`` replaces a grid axis, ``study=x`` renames the study, ``slurm.mem_gb=8`` sets a
    resource; a bare config key (``epochs=5``, ``model.width=8``) is a base override.
    """
    for ov in overrides:
        if "=" not in ov:
            raise UserError(f"{source}: override {ov!r} is not key=value")
        key, _, text = ov.partition("=")
        key = key.strip()
        value = parse_value(text)
        head, _, rest = key.partition(".")
        if head == "slurm" and rest == "timeout_min" and isinstance(value, int) and ":" in text:
            value = text.strip()  # YAML 1.1 reads 24:00:00 as base 60 (86400): keep SLURM's spelling
        if head == "study" and not rest:
            data["study"] = value
        elif head in ("grid", "base", "slurm", "throughput", "report") and rest:
            sect = data.get(head) or {}
            if not isinstance(sect, dict):
                raise UserError(f"{source}: {head} must be a mapping")
            if head in ("grid", "base"):
                sect = flatten(sect, "", source)
            if head == "grid" and not isinstance(value, list):
                if isinstance(value, str) and "," in value:
                    raise UserError(f"{source}: {key}={text}: a grid axis is a list: '{key}=[{text}]'")
                value = [value]
            sect[rest] = value
            data[head] = sect
        elif head in ("exclude", "include", "per_method"):
            raise UserError(f"{source}: override {key!r}: edit {head} in the sweep file")
        else:  # a config key: base override, replacing a grid axis of the same key
            base = flatten(data.get("base") or {}, "", source)
            base[key] = value
            data["base"] = base
            grid = flatten(data.get("grid") or {}, "", source)
            grid.pop(key, None)
            data["grid"] = grid
    return data


def load_sweep(path: Path | str, overrides: list[str] = ()) -> Sweep:
    """Read and check a sweep file's structure (values are checked per cell by the planner)."""
    path = Path(path)
    src = str(path)
    data = _load_yaml(path)
    stored = data.pop("slurm_overrides", None) or []
    if not isinstance(stored, list) or not all(isinstance(o, str) and o.startswith("slurm.") for o in stored):
        raise UserError(f"{src}: slurm_overrides: must be a list of 'slurm.KEY=VALUE' strings")
    slurm_overrides = merge_slurm_overrides(stored, [o for o in overrides if o.strip().startswith("slurm.")])
    data = apply_overrides(data, [*stored, *overrides], src)
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise UserError(f"{src}: unknown key {unknown[0]!r} (sweep keys: {', '.join(TOP_KEYS)})")
    study = data.get("study")
    if (not isinstance(study, str) or not study or "/" in study or study.startswith(".") or len(study) > 100
            or not study.isprintable()):
        shown = repr(study) if not isinstance(study, str) or len(study) <= 40 else repr(study[:40]) + "..."
        raise UserError(f"{src}: study: needs a name usable as a directory (at most 100 printable characters, "
                        f"no '/', not starting with '.'), got {shown}")
    base = flatten(data.get("base") or {}, "base.", src)
    base = {k[len("base."):]: v for k, v in base.items()}
    grid_raw = data.get("grid") or {}
    if not isinstance(grid_raw, dict):
        raise UserError(f"{src}: grid: must be a mapping of key -> list of values")
    grid: dict[str, list] = {}
    for k, v in flatten(grid_raw, "", src).items():
        if not isinstance(v, list) or not v:
            raise UserError(f"{src}: grid.{k}: must be a non-empty list of values, got {v!r}")
        grid[k] = v
    rules = {}
    for name in ("exclude", "include"):
        lst = data.get(name) or []
        if not isinstance(lst, list):
            raise UserError(f"{src}: {name}: must be a list of mappings")
        rules[name] = [flatten(r, "", f"{src}: {name}[{i}]") for i, r in enumerate(lst)]
        for i, r in enumerate(rules[name]):
            if not r:
                raise UserError(f"{src}: {name}[{i}]: empty rule")
    for i, r in enumerate(rules["exclude"]):
        for k, v in r.items():
            if isinstance(v, list):
                raise UserError(f"{src}: exclude[{i}].{k}: give one value per rule, not a list")
    pm_raw = data.get("per_method") or {}
    if not isinstance(pm_raw, dict):
        raise UserError(f"{src}: per_method: must be a mapping method -> overrides")
    per_method, per_method_slurm = {}, {}
    for m, ov in pm_raw.items():
        if not isinstance(ov or {}, dict):
            raise UserError(f"{src}: per_method.{m}: must be a mapping")
        ov = dict(ov or {})
        if "slurm" in ov:
            per_method_slurm[m] = _check_slurm(ov.pop("slurm"), f"per_method.{m}.slurm", src)
        per_method[m] = flatten(ov, "", src)
    slurm = _check_slurm(data.get("slurm") or {}, "slurm", src)
    tp = _check_throughput(data.get("throughput") or {}, src)
    assumed = data.get("gpu_hours_assumptions") or []
    if not isinstance(assumed, list) or not all(isinstance(x, str) for x in assumed):
        raise UserError(f"{src}: gpu_hours_assumptions: must be a list of lines (plan writes it)")
    report = data.get("report") or {}
    if not isinstance(report, dict):
        raise UserError(f"{src}: report: must be a mapping (e.g. {{reference_batch_size: 256}}); "
                        "its keys are checked by `bsstudy report`")
    return Sweep(src, study, base, grid, rules["exclude"], rules["include"], per_method, slurm,
                 per_method_slurm, tp, report, slurm_overrides, assumed)


def _check_throughput(tp: Any, src: str) -> dict[str, Any]:
    """The ``throughput`` block: ``table: FILE`` (relative to the current directory, stored absolute, so the
    copy plan keeps in results/<study>/sweep.yaml still names it) and/or method -> images/s per GPU; a key
    set to null is left out."""
    if not isinstance(tp, dict):
        raise UserError(f"{src}: throughput: must be a mapping ({THROUGHPUT_TABLE}: FILE and/or method -> images/s)")
    out: dict[str, Any] = {}
    for k, v in tp.items():
        if v is None:  # `throughput.KEY=null` on the command line drops a key of the file
            continue
        if k == THROUGHPUT_TABLE:
            if not isinstance(v, str) or not v.strip():
                raise UserError(f"{src}: throughput.{k}: must be the path of a bench_train_throughput.py --write "
                                f"table, got {v!r}")
            out[k] = str(Path(v.strip()).expanduser().absolute())
        elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{src}: throughput.{k}: must be a positive number of images/s, got {v!r}")
        else:
            out[k] = float(v)
    return out


def override_key(override: str) -> str:
    """The key of a ``KEY=VALUE`` command-line override."""
    return override.partition("=")[0].strip()


def merge_slurm_overrides(old: list[str], new: list[str]) -> list[str]:
    """``slurm.*`` overrides of an earlier plan, replaced key by key by the ones given now (new last)."""
    given = {override_key(o) for o in new}
    return [o for o in old if override_key(o) not in given] + list(new)


def _check_slurm(s: Any, where: str, src: str) -> dict[str, Any]:
    """Check one slurm block; returns a copy with ``timeout_min`` as whole minutes."""
    if not isinstance(s, dict):
        raise UserError(f"{src}: {where}: must be a mapping")
    s = dict(s)
    for k, v in list(s.items()):
        if k not in SLURM_KEYS:
            raise UserError(f"{src}: {where}.{k}: unknown resource (choose from {', '.join(SLURM_KEYS)})")
        if k in ("gpus_per_node", "cpus_per_task", "array_parallelism", "signal_delay_s"):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise UserError(f"{src}: {where}.{k}: must be a non-negative integer, got {v!r}")
        if k == "array_parallelism" and v == 0:
            raise UserError(f"{src}: {where}.{k}: must be at least 1")
        if k == "timeout_min":
            s[k] = parse_time_limit(v, f"{src}: {where}.{k}")
        if k == "setup" and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise UserError(f"{src}: {where}.{k}: must be a list of shell lines, got {v!r}")
        if k == "python" and (not isinstance(v, str) or not v.strip()):
            raise UserError(f"{src}: {where}.{k}: must be the command that runs python on the nodes, got {v!r}")
        if k == "wckey" and not (v is None or v is False or isinstance(v, str)):
            raise UserError(f"{src}: {where}.{k}: must be a string, or null to drop submitit's --wckey")
        if k == "mem_gb" and (not isinstance(v, (int, float)) or v <= 0):
            raise UserError(f"{src}: {where}.{k}: must be a positive number, got {v!r}")
        if k == "additional_parameters" and (not isinstance(v, dict) or not all(isinstance(x, str) for x in v)):
            raise UserError(f"{src}: {where}.{k}: must be a mapping of sbatch option -> value")
    return s


def _matches(cell: dict[str, Any], rule: dict[str, Any]) -> bool:
    return all(cell.get(k) == v for k, v in rule.items())


MAX_CELLS = 20000  # `bsstudy plan --max-cells` default: larger sweeps are refused before anything is built


def check_cell_count(sweep: Sweep, max_cells: int = MAX_CELLS) -> int:
    """Number of cells (before de-duplication) without building them; UserError above ``max_cells``.

    A grid whose product alone exceeds 50x the cap is refused without walking it (exclude rules
    could not bring it under the cap at a cost worth paying)."""
    points = math.prod(len(v) for v in sweep.grid.values())
    n = points + len(sweep.include)
    bound = "up to " if sweep.exclude else ""
    if n > max_cells and sweep.exclude and points <= 50 * max_cells:
        bound = "more than "
        keys = list(sweep.grid)
        n = len(sweep.include)
        for values in itertools.product(*(sweep.grid[k] for k in keys)):
            full = {**sweep.base, **dict(zip(keys, values))}
            n += not any(_matches(full, r) for r in sweep.exclude)
            if n > max_cells:
                break
    if n > max_cells:
        axes = " x ".join(f"{k} {len(v)}" for k, v in sweep.grid.items())
        raise UserError(f"{sweep.source}: {bound}{n - (bound == 'more than ')} cells ({axes}) is above the cap "
                        f"of {max_cells}; shrink the grid, or raise the cap with --max-cells N")
    return n


def expand(sweep: Sweep) -> list[dict[str, Any]]:
    """The cells: each is a flat dict of overrides (base < per-method < grid/include values)."""
    keys = list(sweep.grid)
    cells: list[dict[str, Any]] = []
    for values in itertools.product(*(sweep.grid[k] for k in keys)):
        point = dict(zip(keys, values))
        full = {**sweep.base, **point}
        if any(_matches(full, r) for r in sweep.exclude):
            continue
        cells.append(point)
    for r in sweep.include:
        cells.append(dict(r))
    out = []
    for point in cells:
        method = point.get("method", sweep.base.get("method"))
        merged = dict(sweep.base)
        if isinstance(method, str):
            merged.update(sweep.per_method.get(method, {}))
        merged.update(point)
        out.append(merged)
    return out

