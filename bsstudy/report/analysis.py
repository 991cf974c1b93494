"""The report's seed-blocked analysis: :mod:`.stats` run on a study with the sweep file's settings, written
as CSV tables and laid out as report sections (sensitivity, Δ vs B_ref, against the untrained network,
method comparison, relative drop with its bootstrap CI, power).

``build.py`` calls three functions: :func:`read_settings` (the sweep's ``report:`` keys this module
reads), :func:`compute` (every table, pure), :func:`write_tables` and :func:`sections` (the document
blocks). The Reading (:mod:`.reading`) draws its claims from the same :class:`Analysis`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..io import atomic_write_text
from ..layout import yaml_load_file
from ..registry import split_label
from . import stats as S
from .render import H, P, Table
from .tables import accuracy_columns, is_accuracy_column, metric_label, to_csv, to_markdown

SETTING_KEYS = ("reference_batch_size", "compare", "metric")  # of the sweep's `report:` block; the rest is not ours
OUTPUTS = ("sensitivity.csv", "contrasts.csv", "method_contrasts.csv", "relative_drop_ci.csv", "power.csv")


@dataclass(frozen=True)
class Settings:
    """The sweep file's analysis settings (``report: {reference_batch_size: 256, compare: [[a, b]]}``)."""

    reference_batch_size: int | None = None      # None: the largest B of each method's grid
    compare: tuple[tuple[str, str], ...] | None = None   # None: stats.default_pairs (registry's unbiased_of)
    metric: str | None = None    # the Reading's accuracy (a metric column); None: linear probe, else kNN


def read_settings(sweep_yaml: Path | str) -> Settings:
    """The analysis keys of ``results/<study>/sweep.yaml``'s ``report:`` block (defaults without a file,
    block or key); UserError naming the key when a value has the wrong shape. Other ``report:`` keys
    (author, title, ... of the citation) are left to their reader."""
    path = Path(sweep_yaml)
    if not path.is_file():
        return Settings()
    data = yaml_load_file(path)
    block = data.get("report") if isinstance(data, dict) else None
    if block is None:
        return Settings()
    if not isinstance(block, dict):
        raise UserError(f"{path}: report: expected a mapping (e.g. {{reference_batch_size: 256}})")
    ref = block.get("reference_batch_size")
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int) or ref <= 0):
        raise UserError(f"{path}: report.reference_batch_size: expected a positive integer batch size, got {ref!r}")
    cmp = block.get("compare")
    if cmp is not None:
        ok = isinstance(cmp, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(m, str) and m
                                                                                       for m in p) for p in cmp)
        if not ok:
            raise UserError(f"{path}: report.compare: expected a list of method pairs, e.g. "
                            f"[[vicreg_unbiased, vicreg]], got {cmp!r}")
        cmp = tuple((a, b) for a, b in cmp)
    metric = block.get("metric")
    if metric is not None and not (isinstance(metric, str) and is_accuracy_column(metric)):
        raise UserError(f"{path}: report.metric: expected linear_top1, knn_top1 or few_shot.<k>.top1 "
                        f"(eval.few_shot), got {metric!r}")
    return Settings(ref, cmp, metric)


@dataclass
class Analysis:
    """Every seed-blocked table of one study (see :mod:`.stats` for the columns)."""

    settings: Settings
    sensitivity: pd.DataFrame
    contrasts: pd.DataFrame
    method_contrasts: pd.DataFrame
    drop: pd.DataFrame                 # stats.relative_drop_ci
    power: pd.DataFrame                # stats.power_table; empty with ``power_note`` saying why
    power_note: str = ""
    mde: dict = field(default_factory=dict)   # metric -> minimum detectable slope (points per doubling)
    waiting: tuple = ()                # compared pairs left out: planned, but a method has no finished run yet
    display: dict = field(default_factory=dict, repr=False)   # display_tables' cache
    long: pd.DataFrame | None = field(default=None, repr=False)  # stats.long_table(runs), shared with the figures


def display_tables(a: Analysis) -> dict[str, pd.DataFrame]:
    """The report's formatted tables (name -> table), built once per analysis (sections and the
    tables/*.md copies show the same ones)."""
    if not a.display:
        a.display.update({"sensitivity": sensitivity_table(a.sensitivity),
                          "contrasts_vs_reference": reference_table(a.contrasts),
                          "contrasts_vs_untrained": untrained_table(a.contrasts),
                          "method_contrasts": pair_table(a.method_contrasts),
                          "relative_drop_ci": drop_table(a.drop), "power": power_display(a.power)})
    return a.display


def compute(runs: pd.DataFrame, settings: Settings = Settings(), where: str = "sweep.yaml",
            planned: set[str] | None = None) -> Analysis:
    """Run :mod:`.stats` on the per-run table with ``settings``; a setting that does not fit the study
    (a reference B not in the grid, a compared method that did not run) is a UserError naming ``where``.
    ``planned``: the methods of the study's plan; a compared pair with a planned method that has no
    finished run yet (a study in progress) is left out and named in the report instead."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a fit without residual df: its CI is NaN, no warning
        return _compute(runs, settings, where, planned)


def _compute(runs: pd.DataFrame, settings: Settings, where: str, planned: set[str] | None = None) -> Analysis:
    if settings.metric is not None and settings.metric not in runs.columns:
        raise UserError(f"{where}: report.metric: no run has {settings.metric!r} (is eval.few_shot set?)")
    long = S.long_table(runs, tuple(accuracy_columns(runs)))
    waiting: tuple = ()
    if settings.compare is not None and planned is not None:
        done = set(long["method"]) if len(long) else set()
        waiting = tuple(p for p in settings.compare if not set(p) <= done
                        and all(m in done or split_label(m)[0] in planned for m in p))
        settings = replace(settings, compare=tuple(p for p in settings.compare if p not in waiting))
    try:
        sens = S.sensitivity(runs, long=long)
        con = S.contrasts(runs, settings.reference_batch_size, long=long)
        mc = S.method_contrasts(runs, None if settings.compare is None else [list(p) for p in settings.compare],
                                long=long)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    drop = S.relative_drop_ci(runs, settings.reference_batch_size, long=long)
    try:
        power, note = S.power_table(runs, long=long), ""
    except UserError as exc:
        power, note = pd.DataFrame(), str(exc)
    mde = {r["metric"]: float(r["mde_pts"]) for _, r in power.iterrows() if r["quantity"] == "slope"} \
        if len(power) else {}
    return Analysis(settings, sens, con, mc, drop, power, note, mde, waiting=waiting, long=long)


def write_tables(a: Analysis, out: Path, formats=("md",)) -> None:
    """sensitivity.csv, contrasts.csv, method_contrasts.csv, relative_drop_ci.csv and power.csv (empty
    when the study cannot be sized) into the report folder ``out``; with "md" in ``formats`` also the
    report's display tables as tables/<name>.md."""
    for name, df in zip(OUTPUTS, (a.sensitivity, a.contrasts, a.method_contrasts, a.drop, a.power)):
        atomic_write_text(out / name, to_csv(df))
    if "md" in formats:
        for name, text in markdown_tables(a).items():
            atomic_write_text(out / "tables" / f"{name}.md", text)


# ------------------------------------------------------------------ formatting

def fnum(x: float, digits: int = 2, sign: bool = True) -> str:
    """A number for prose and tables ("+1.23", "—" when undefined)."""
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def est_ci(est: float, lo: float, hi: float, digits: int = 2, unit: str = "", sign: bool = True) -> str:
    """ "+1.23 [+0.40, +2.06]" (``unit`` after each number), or the estimate with "(no CI)" when the interval
    is undefined; "—" without an estimate."""
    if not np.isfinite(est):
        return "—"
    f = lambda v: fnum(v, digits, sign) + unit  # noqa: E731
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{f(est)} (no CI)"
    return f"{f(est)} [{f(lo)}, {f(hi)}]"


def fp(p: float) -> str:
    """A p-value: "<0.001", "0.034", "—"."""
    if not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _wide(df: pd.DataFrame, keys: list[str], ref_of=None) -> pd.DataFrame:
    """Rows ``keys``, one column per batch size ("B=64"), cells "estimate [CI]"; ``ref_of(row)`` names the
    reference B of a row (its cell reads "ref")."""
    if not len(df):
        return pd.DataFrame()
    bs = {int(b) for b in set(df["batch_size"]) if b > 0}
    if ref_of:
        bs |= {int(ref_of(r)) for _, r in df.iterrows()}
    bs = sorted(bs)
    has_mean = (df["batch_size"] == -1).any()
    rows = []
    for key, g in df.groupby(keys, sort=True):
        row = dict(zip(keys, key))
        row["metric"] = metric_label(row["metric"])
        cells = {int(r["batch_size"]): est_ci(r["estimate"], r["ci_low"], r["ci_high"]) for _, r in g.iterrows()}
        ref = ref_of(g.iloc[0]) if ref_of else None
        for b in bs:
            row[f"B={b}"] = "ref" if b == ref else cells.get(b, "")
        if has_mean:
            row["mean over B"] = cells.get(-1, "")
        row["n_seeds"] = int(g["n_seeds"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_table(sens: pd.DataFrame) -> pd.DataFrame:
    """The report's sensitivity table: slope per doubling with CI, p, the seedwise fallback, n_seeds."""
    rows = []
    for _, r in sens.iterrows():
        het = r["p_slope_varies_by_seed"]
        rows.append({"method": r["method"], "epochs": int(r["epochs"]), "metric": metric_label(r["metric"]),
                     "slope pts/doubling [95% CI]": est_ci(r["slope_pts_per_doubling"], r["ci_low"], r["ci_high"]),
                     "p": fp(r["p_value"]),
                     "seedwise [95% CI]": est_ci(r["seedwise_slope"], r["seedwise_ci_low"], r["seedwise_ci_high"]),
                     "seeds differ in slope (p)": fp(het), "n_seeds": int(r["n_seeds"]),
                     "batch sizes": r["batch_sizes"]})
    return pd.DataFrame(rows)


def _est(df: pd.DataFrame, col: str = "estimate_pts") -> pd.DataFrame:
    return df.rename(columns={col: "estimate"})


def reference_table(con: pd.DataFrame) -> pd.DataFrame:
    """Δ points of each B against the reference B, per method x epochs x metric (Bonferroni CIs)."""
    ref = _est(con[con["contrast"] == "vs_reference"])
    return _wide(ref, ["method", "epochs", "metric"], lambda r: int(r["reference"]))


def untrained_table(con: pd.DataFrame) -> pd.DataFrame:
    """Δ points of each B (and their mean) against the untrained network of the same seed."""
    return _wide(_est(con[con["contrast"] == "vs_untrained"]), ["method", "epochs", "metric"])


def pair_table(mc: pd.DataFrame) -> pd.DataFrame:
    """Per pair x epochs x metric: the slope difference (CI, p, seedwise CI) and the per-B differences."""
    if not len(mc):
        return pd.DataFrame()
    mc = mc.assign(pair=mc["method_a"] + " − " + mc["method_b"])
    per_b = _wide(mc[mc["contrast"] == "batch_size"], ["pair", "epochs", "metric"])
    rows = []
    for _, r in mc[mc["contrast"] == "slope_difference"].iterrows():
        rows.append({"pair": r["pair"], "epochs": int(r["epochs"]), "metric": metric_label(r["metric"]),
                     "slope difference pts/doubling [95% CI]": est_ci(r["estimate"], r["ci_low"], r["ci_high"]),
                     "p": fp(r["p_value"]),
                     "seedwise [95% CI]": est_ci(r["estimate"], r["seedwise_ci_low"], r["seedwise_ci_high"])})
    slope = pd.DataFrame(rows)
    if not len(per_b):
        return slope
    per_b = per_b.drop(columns=["n_seeds"])
    return slope.merge(per_b, on=["pair", "epochs", "metric"], how="left").fillna("")


def drop_table(drop: pd.DataFrame) -> pd.DataFrame:
    """The max relative drop from the best B and the pre-specified drop from B_ref, each with its CI."""
    rows = []
    for _, r in drop.iterrows():
        rows.append({"method": r["method"], "epochs": int(r["epochs"]), "metric": metric_label(r["metric"]),
                     "max drop from best B (%) [95% CI]": est_ci(r["max_rel_drop_pct"], r["max_ci_low"],
                                                                 r["max_ci_high"], 1, sign=False),
                     "best → worst B": f"{int(r['best_batch_size'])} → {int(r['worst_batch_size'])}",
                     "drop B_ref → B_far (%) [95% CI]": est_ci(r["ref_rel_drop_pct"], r["ref_ci_low"],
                                                               r["ref_ci_high"], 1, sign=False),
                     "B_ref → B_far": (f"{int(r['reference_batch_size'])} → {int(r['far_batch_size'])}"
                                       if r["far_batch_size"] > 0 else "—"),
                     "n_seeds": int(r["n_seeds"])})
    return pd.DataFrame(rows)


def power_display(power: pd.DataFrame) -> pd.DataFrame:
    """The power table for the report: residual SD, MDE at the study's seeds, seeds needed per effect."""
    rows = []
    for _, r in power.iterrows():
        row = {"metric": metric_label(r["metric"]), "quantity": S.QUANTITIES[r["quantity"]],
               "within-seed SD (pts)": f"{r['resid_sd_pts']:.2f}",
               f"detectable at {int(r['n_seeds'])} seeds (pts)": f"{r['mde_pts']:.2f}"}
        for c in [c for c in power.columns if c.startswith("seeds_for_")]:
            v = r[c]
            row[f"seeds for {c[len('seeds_for_'):]} pts"] = str(int(v)) if np.isfinite(v) else f">{S.MAX_SEEDS}"
        rows.append(row)
    return pd.DataFrame(rows)


def sections(a: Analysis) -> list:
    """The report's statistics sections (document blocks), in order."""
    pct = f"{100 * (1 - S.ALPHA):.0f}%"
    t = display_tables(a)
    doc: list = [H(2, "Batch-size sensitivity"),
                 P("The slope of top-1 (points) per doubling of the batch size, estimated within seed: OLS "
                   "`top1 ~ C(seed) + log2 B` (runs with the same seed share the initial network, the data order "
                   f"and the augmentation stream, so a seed is a block), {pct} CI from Student t on the within-seed "
                   "residual. `seedwise`: one slope per seed and a t-interval over seeds (valid when seeds differ "
                   "in slope; quote it when 'seeds differ in slope' is small). `sensitivity.csv` has every column.")]
    doc.append(Table(t["sensitivity"]) if len(a.sensitivity) else P("No finished runs."))
    ref = t["contrasts_vs_reference"]
    doc += [H(2, "Δ points vs B_ref"),
            P("Each batch size minus the reference batch size "
              + (f"B_ref = {a.settings.reference_batch_size} (sweep file `report.reference_batch_size`)"
                 if a.settings.reference_batch_size else "(the largest of each method's grid; set "
                 "`report: {reference_batch_size: B}` in the sweep file)")
              + f", in top-1 points, paired within seed (`top1 ~ C(seed) + C(B)`); {pct} CIs are "
              "Bonferroni-simultaneous over the batch sizes of a row. `contrasts.csv` has p and p_adj."),
            Table(ref) if len(ref) else P("No method has two batch sizes with finished runs.")]
    un = t["contrasts_vs_untrained"]
    if len(un):
        doc += [H(2, "Against the untrained network"),
                P("Each batch size minus the untrained network of the *same seed* (`eval.at_init`: the probe of "
                  "the initial weights that run started from), in top-1 points, paired within seed; per-B "
                  f"{pct} CIs Bonferroni-simultaneous over a row, 'mean over B' a single pre-specified contrast.  "
                  "Paired, this resolves what two unpaired intervals over few seeds cannot."),
                Table(un)]
    pairs = t["method_contrasts"]
    doc += [H(2, "Method comparison"),
            P("Does one method's batch-size sensitivity differ from another's (the seed papers' question)? Per "
              "pair a − b (sweep file `report.compare`; default: each unbiased estimator against its plug-in "
              "counterpart from the method registry): the difference of slopes per doubling, paired by seed "
              "(`top1 ~ C(method × seed) + method:log2 B`), then a − b at each batch size "
              f"(Bonferroni-simultaneous {pct} CIs). `method_contrasts.csv` has every column."),
            Table(pairs) if len(pairs) else P("No pair of compared methods ran on common seeds.")]
    if a.waiting:
        doc.append(P("Not compared yet (planned, but a method has no finished run): "
                     + "; ".join(f"{x} − {y}" for x, y in a.waiting) + "."))
    if len(a.drop):
        doc += [H(2, "Relative drop with its interval"),
                P("The seed papers' number: the largest relative drop from the best batch size (cell means), with "
                  f"a {pct} percentile bootstrap CI over whole seeds (needs {S.BOOT_MIN_SEEDS} seeds). It is biased "
                  "upward: the best of noisy cell means is positive even when nothing depends on B, and its "
                  "bootstrap inherits that. Next to it the pre-specified drop, from B_ref to the batch size "
                  "farthest from it, fixed before looking, which is not. `relative_drop_ci.csv`."),
                Table(t["relative_drop_ci"])]
    doc.append(H(2, "Power"))
    if len(a.power):
        doc += [P(f"From this study's within-seed residual SD: the smallest effect detected with "
                  f"{100 * S.POWER:.0f}% power (two-sided {100 * S.ALPHA:.0f}%) at its seed count and grid, and "
                  "the seeds a full grid needs for effects of the sizes shown (`bsstudy power` prints the same; "
                  "`power.csv`)."),
                Table(t["power"])]
    else:
        doc.append(P(f"Not computed: {a.power_note}."))
    return doc


def markdown_tables(a: Analysis) -> dict[str, str]:
    """Markdown copies of the display tables (tables/<name>.md)."""
    return {k: to_markdown(v) for k, v in display_tables(a).items() if len(v)}


def slope_mde_text(a: Analysis, metric: str) -> str:
    """ "±0.42" : the minimum detectable slope of ``metric`` (points per doubling), or "" when unknown."""
    v = a.mde.get(metric, math.nan)
    return f"±{v:.2f}" if np.isfinite(v) else ""
