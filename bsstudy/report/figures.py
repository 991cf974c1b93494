"""Figures (matplotlib, Agg). Each ``fig_*`` returns a Figure whose Axes carry one labelled series per
method (tests check them on the objects); :func:`save` writes PNG and PDF with dates stripped so the same
data gives the same files. Plain matplotlib (seaborn's colorblind palette, hard-coded) keeps a 1,000-run
report fast: importing seaborn alone costs about a second.

:func:`report_figures` is the one list of the report's figures (:class:`FigureSpec`: file name, drawing
function and arguments, caption, cost); :func:`start_render` draws such a list in worker processes."""
from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import matplotlib.backends.backend_pdf  # noqa: E402,F401  (fontTools, ~0.1 s: imported once before the workers fork)
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..registry import METHODS, split_label  # noqa: E402
from ..registry import PALETTE as REGISTRY_PALETTE  # noqa: E402
from .references import REFERENCES  # noqa: E402
from .tables import ACCURACY, baseline_level, epochs_text  # noqa: E402

PALETTE = list(REGISTRY_PALETTE)  # seaborn "colorblind", owned per method by the registry (MethodSpec.color)
DPI = 100
# published reference curves: dark, dashed, own markers (never confused with our methods' colours)
REF_STYLE = [("#222222", "s"), ("#8c564b", "^"), ("#7f7f7f", "D"), ("#555555", "v")]


def ref_style(label: str) -> tuple[str, str]:
    """(colour, marker) of the reference curve with legend label ``label``: one map for every figure,
    by the reference's place in REFERENCES."""
    i = next(i for i, r in enumerate(REFERENCES) if r.label == label)
    return REF_STYLE[i % len(REF_STYLE)]


LINESTYLES = ("-", "--", "-.", ":")


def _lighter(color: str, f: float) -> str:
    """``color`` (#rrggbb) blended a fraction ``f`` towards white."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * f):02x}" for c in rgb)


def _variant_index(name: str, variant_text: str) -> int:
    """A variant's place among its method's registered choices (mixed radix over ``variant_params``, in
    the order of each parameter's ``choices``; a value outside them counts as the last choice): 0 for the
    plain method and the first choices. Fixed by the registry, so the same variant gets the same style in
    every study."""
    spec = METHODS.get(name)
    if spec is None or not variant_text:
        return 0
    i = 0
    for p, v in zip(spec.variant_params, variant_text.split(",")):
        ch = tuple(spec.choices.get(p, ())) or (v,)
        i = i * len(ch) + (ch.index(v) if v in ch else len(ch) - 1)
    return i


def method_style(label: str) -> tuple[str, str]:
    """(colour, line style) of method label ``label`` in every figure of every study: the registry's
    ``MethodSpec.color``; a variant (``name[v1,v2]``) keeps its method's colour with its own line style,
    lighter after every four variants (vicreg_unbiased's 10 registered variants: 10 distinct styles).
    Unregistered methods: (None, "-"); :func:`colors` gives them one."""
    name, var = split_label(label)
    spec = METHODS.get(name)
    if spec is None:
        return None, "-"
    i = _variant_index(name, var)
    shade = min(0.6, 0.3 * (i // len(LINESTYLES)))
    return (_lighter(spec.color, shade) if shade else spec.color), LINESTYLES[i % len(LINESTYLES)]


def colors(methods) -> dict:
    """{method label: colour}: each registered method's fixed colour (:func:`method_style`), whatever
    other methods the study has; labels the registry does not know get palette colours in sorted order
    (stable only within a study)."""
    out = {m: method_style(m)[0] for m in methods}
    unknown = sorted(m for m, c in out.items() if c is None)
    free = [c for c in PALETTE if c not in out.values()] or PALETTE  # not a colour a registered one shows here
    out.update({m: free[i % len(free)] for i, m in enumerate(unknown)})
    return out


def linestyles(methods) -> dict:
    """{method label: line style}: "-" for a plain method, its own style for each variant (:func:`method_style`)."""
    return {m: method_style(m)[1] for m in methods}


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.pdf (no creation dates, no software string) and close the figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return [png, pdf]


def _layout(fig: Figure, hspace: float = 0.3) -> None:
    """Fixed margins instead of tight_layout, which draws the whole figure once more (slow at 1,000 runs)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.7 / w, right=1 - 0.2 / w, bottom=0.75 / h, top=1 - 0.4 / h, wspace=0.35,
                        hspace=hspace)


def _title(ax, text: str, **kw) -> None:
    """``ax.set_title`` at a fixed height: with ``y`` given matplotlib skips re-measuring every tick label
    to lift the title above top-side ticks (none here), a third of each axes' drawing time."""
    ax.set_title(text, y=1.0, **kw)


def _log2_axis(ax, batch_sizes) -> None:
    ax.set_xscale("log", base=2)
    bs = []
    for b in sorted(set(int(b) for b in batch_sizes)):
        if bs and b <= 1.05 * bs[-1]:  # 4092 (as printed on the SimCLR-vs-VICReg slide) and 4096: one tick,
            bs[-1] = b                  # labelled by the larger (the nominal 4096 of the reference table)
        else:
            bs.append(b)
    ax.set_xticks(bs)
    ax.set_xticklabels([str(b) for b in bs], rotation=45 if len(bs) > 5 else 0)
    ax.minorticks_off()


def _lines_with_bands(ax, s: pd.DataFrame, column: str, col: dict, scale: float = 1.0) -> None:
    """One line per method of summary rows ``s`` (``column``'s mean vs batch size, times ``scale``) with its
    95% CI band where the CI is defined."""
    for method, g in s.groupby("method_label", sort=True):
        g = g.sort_values("batch_size")
        x = g["batch_size"].to_numpy()
        y, ci = scale * g[f"{column}_mean"].to_numpy(), scale * g[f"{column}_ci95"].to_numpy()
        ax.plot(x, y, marker="o", color=col[method], linestyle=method_style(method)[1], label=method)
        ok = np.isfinite(ci)
        if ok.any():
            ax.fill_between(x[ok], (y - ci)[ok], (y + ci)[ok], color=col[method], alpha=0.2, linewidth=0)


def _seed_lines(ax, seeds: pd.DataFrame, fits: pd.DataFrame, col: dict) -> None:
    """Each seed of each method as a thin line (``stats.long_table`` rows of one epoch budget and metric:
    the paired structure is visible) and the within-seed fit ``stats.sensitivity`` (thick, labelled with
    its slope): level = the mean over seeds of the seed's fitted intercept."""
    for method, g in seeds.groupby("method", sort=True):
        g = g.sort_values(["seed", "batch_size"])
        xy = np.column_stack([g["batch_size"].to_numpy(dtype=float), g["y"].to_numpy(dtype=float)])
        cut = np.flatnonzero(np.diff(g["seed"].to_numpy())) + 1  # rows are seed-sorted: split at each new seed
        segs = np.split(xy, cut)  # (a pandas groupby per seed cost ~0.1 s per 1,000-run figure)
        # one collection per method, not a Line2D per seed: a 1,000-run study has hundreds of seed lines
        ax.add_collection(LineCollection(segs, colors=col[method], linewidths=0.7, alpha=0.45,
                                         label=f"_seeds {method}"))
        bs = np.array(sorted(set(g["batch_size"])), dtype=float)
        r = fits[fits["method"] == method]
        slope = float(r["slope_pts_per_doubling"].iloc[0]) if len(r) else math.nan
        if np.isfinite(slope):
            level = float((g["y"] - slope * np.log2(g["batch_size"])).mean())
            ax.plot(bs, level + slope * np.log2(bs), color=col[method], linestyle=method_style(method)[1],
                    linewidth=2.2,
                    label=f"{method} ({slope:+.2f} pts/doubling)")
        else:
            means = g.groupby("batch_size")["y"].mean()
            ax.plot(means.index, means.to_numpy(), color=col[method], linestyle=method_style(method)[1], linewidth=2.2,
                    marker="o", label=method)


def fig_accuracy(summary: pd.DataFrame, column: str = "linear_top1", references: bool = True,
                 baseline: pd.DataFrame | None = None, seeds: pd.DataFrame | None = None,
                 fits: pd.DataFrame | None = None) -> Figure:
    """Top-1 (%) of metric column ``column`` vs batch size: one panel per epoch budget (one line + 95% CI
    band per method), then the published reference curves in their own panel (ImageNet: another dataset
    and scale). ``baseline`` (``tables.init_baseline``) adds the untrained network's probe as a dotted
    line with its CI band. With ``seeds`` (``stats.long_table``) and ``fits`` (``stats.sensitivity``)
    each seed is a thin line and each method's fitted within-seed slope a thick one, instead of the
    unpaired bands."""
    level = baseline_level(baseline, ACCURACY[column])
    base = None if level is None else (100 * level[0], 100 * level[1])
    epochs = sorted(summary["epochs"].unique())
    n = len(epochs) + (1 if references else 0)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    col = colors(summary["method_label"].unique())
    for ax, e in zip(axes[0], epochs):
        s = summary[summary["epochs"] == e]
        if seeds is not None and fits is not None:
            _seed_lines(ax, seeds[(seeds["epochs"] == e) & (seeds["metric"] == column)],
                        fits[(fits["epochs"] == e) & (fits["metric"] == column)], col)
        else:
            _lines_with_bands(ax, s, column, col, scale=100)
        if base is not None:
            ax.axhline(base[0], color="0.35", linestyle=":", label="untrained network")
            if np.isfinite(base[1]):
                ax.axhspan(base[0] - base[1], base[0] + base[1], color="0.5", alpha=0.12, linewidth=0)
        _log2_axis(ax, s["batch_size"])
        _title(ax, f"ours, {epochs_text(e)}")
        ax.set_xlabel("batch size")
        ax.set_ylabel(f"{ACCURACY[column]} top-1 (%)")
        ax.grid(alpha=0.3)
        if ax is axes[0][0]:  # same colours in every panel: one legend (legends are costly to draw)
            ax.legend(fontsize=8, loc="lower center")
    if references:
        ax = axes[0][-1]
        for ref in REFERENCES:
            c, mk = ref_style(ref.label)
            ax.plot(ref.batch_sizes, ref.top1, marker=mk, linestyle="--", color=c, label=ref.label)
        _log2_axis(ax, [b for r in REFERENCES for b in r.batch_sizes])
        lo, hi = min(min(r.top1) for r in REFERENCES), max(max(r.top1) for r in REFERENCES)
        ax.set_ylim(lo - 0.5 * (hi - lo), hi + 0.05 * (hi - lo))  # room for the legend below every point
        _title(ax, "published: ImageNet, 100 ep (other scale)", fontsize=10)
        ax.set_xlabel("batch size")
        ax.set_ylabel("linear top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower center")
    _layout(fig)
    return fig


def _forest(ax, labels: list[str], est, lo, hi, colours: list[str], xlabel: str) -> None:
    """One row per estimate (top to bottom), its CI as a horizontal bar, a vertical line at 0."""
    y = np.arange(len(labels))[::-1]
    est, lo, hi = (np.asarray(v, dtype=float) for v in (est, lo, hi))
    ok = np.isfinite(lo) & np.isfinite(hi)
    for yi, e, a, b, c, k in zip(y, est, lo, hi, colours, ok):
        if k:
            ax.plot([a, b], [yi, yi], color=c, linewidth=2)
        ax.plot([e], [yi], marker="o" if k else "x", color=c, linestyle="none")
    ax.axvline(0, color="0.3", linewidth=0.8, linestyle=":")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")


def fig_forest(fits: pd.DataFrame, pairs: pd.DataFrame, column: str = "linear_top1") -> Figure:
    """Forest plot of metric column ``column``: each method x epochs' slope per doubling of B with its 95% CI
    (``stats.sensitivity``), and, in a second panel when there are any, each method pair's slope difference
    a - b (``stats.method_contrasts``). A cross marks an estimate without a CI."""
    f = fits[(fits["metric"] == column) & np.isfinite(fits["slope_pts_per_doubling"])]
    f = f.sort_values(["epochs", "method"])
    d = pairs[(pairs["metric"] == column) & (pairs["contrast"] == "slope_difference")] if len(pairs) else pairs
    n = 2 if len(d) else 1
    rows = max(len(f), len(d) if n == 2 else 0, 1)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 1.2 + 0.32 * rows), squeeze=False)
    col = colors(fits["method"].unique())
    _forest(axes[0][0], [f"{m}, {e} ep" for m, e in zip(f["method"], f["epochs"])], f["slope_pts_per_doubling"],
            f["ci_low"], f["ci_high"], [col[m] for m in f["method"]], "slope (top-1 points per doubling of B)")
    _title(axes[0][0], f"{ACCURACY[column]} top-1: batch-size sensitivity, 95% CI", fontsize=9)
    if n == 2:
        d = d.sort_values(["epochs", "method_a", "method_b"])
        _forest(axes[0][1], [f"{a} − {b}, {e} ep" for a, b, e in zip(d["method_a"], d["method_b"], d["epochs"])],
                d["estimate"], d["ci_low"], d["ci_high"], [col.get(a, "0.2") for a in d["method_a"]],
                "slope difference a − b (points per doubling)")
        _title(axes[0][1], "method pairs, paired by seed, 95% CI", fontsize=9)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=2.1 / w, right=1 - 0.2 / w, bottom=0.75 / h, top=1 - 0.35 / h,
                        wspace=0.9 if n == 2 else 0.2)
    return fig


def fig_relative_drop(drop: pd.DataFrame, column: str = "linear_top1") -> Figure:
    """Relative drop (%) of metric column ``column`` from each method's best batch size: ours at the
    largest epoch budget (solid) and the published curves (dashed), on one axis; this is how ours and the
    references are compared."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ours = drop[(drop["source"] == "ours") & (drop["metric"] == column)]
    if len(ours):
        e = ours["epochs"].max()
        ours = ours[ours["epochs"] == e]
        col = colors(ours["method"].unique())
        for method, g in ours.groupby("method", sort=True):
            ax.plot(g["batch_size"], g["rel_drop_pct"], marker="o", color=col[method],
                    linestyle=method_style(method)[1],
                    label=f"{method} (ours, {e} ep)")
    refs = drop[drop["source"] == "reference"]
    for method, g in refs.groupby("method", sort=True):
        c, mk = ref_style(method)
        ax.plot(g["batch_size"], g["rel_drop_pct"], marker=mk, linestyle="--", color=c, label=method)
    _log2_axis(ax, drop["batch_size"])
    ax.set_xlabel("batch size")
    ax.set_ylabel("relative drop from best B (%)")
    _title(ax, f"{ACCURACY[column]} top-1: drop from each method's best batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    _layout(fig)
    return fig


def fig_heatmap(summary: pd.DataFrame, column: str = "linear_top1") -> Figure:
    """Mean top-1 (%) of metric column ``column`` over batch size x epochs, one panel per method (shared
    colour scale)."""
    methods = sorted(summary["method_label"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 0.8, 3.2), squeeze=False)
    vals = 100 * summary[f"{column}_mean"]
    vmin, vmax = (np.nanmin(vals), np.nanmax(vals)) if np.isfinite(vals).any() else (0, 100)
    bs, es = sorted(summary["batch_size"].unique()), sorted(summary["epochs"].unique())
    im = None
    for ax, method in zip(axes[0], methods):
        g = summary[summary["method_label"] == method].pivot(index="epochs", columns="batch_size",
                                                              values=f"{column}_mean").reindex(index=es, columns=bs)
        m = 100 * g.to_numpy(dtype=float)
        im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto", origin="lower")
        if m.size <= 120:  # annotate small grids only (readability and speed)
            for (i, j), v in np.ndenumerate(m):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if v < (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(bs)), [str(b) for b in bs], rotation=45 if len(bs) > 5 else 0)
        ax.set_yticks(range(len(es)), [str(e) for e in es])
        ax.set_xlabel("batch size")
        if ax is axes[0][0]:
            ax.set_ylabel("epochs")
        _title(ax, method, fontsize=9)
        ax.set_label(method)
    fig.subplots_adjust(left=0.6 / fig.get_size_inches()[0], bottom=0.25, top=0.88, wspace=0.25)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label=f"{ACCURACY[column]} top-1 (%)")
    return fig


def fig_collapse(summary: pd.DataFrame) -> Figure:
    """Collapse diagnostics vs batch size: effective rank (top row) and mean |corr| (bottom row), one column
    per epoch budget, one line (with 95% CI band) per method."""
    epochs = sorted(summary["epochs"].unique())
    columns = [("collapse.effective_rank", "effective rank"), ("collapse.avg_abs_corr", "mean |corr|")]
    fig, axes = plt.subplots(2, len(epochs), figsize=(4.2 * len(epochs), 6), squeeze=False)
    col = colors(summary["method_label"].unique())
    for j, e in enumerate(epochs):
        s = summary[summary["epochs"] == e]
        for i, (column, name) in enumerate(columns):
            ax = axes[i][j]
            _lines_with_bands(ax, s, column, col)
            _log2_axis(ax, s["batch_size"])
            ax.set_ylabel(name)
            ax.set_xlabel("batch size")
            _title(ax, f"{name}, {epochs_text(e)}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="lower right")
    _layout(fig, hspace=0.45)
    return fig


def bias_columns(bias: pd.DataFrame) -> tuple[str, str | None, str | None]:
    """(value, ci_low, ci_high) column names of bias.csv (``rel_bias_ci_low`` or plain ``ci_low``)."""
    lo = next((c for c in ("rel_bias_ci_low", "ci_low") if c in bias.columns), None)
    hi = next((c for c in ("rel_bias_ci_high", "ci_high") if c in bias.columns), None)
    return "rel_bias", lo, hi


def bias_label(bias: pd.DataFrame) -> pd.Series:
    """Series label per row: ``label`` if present, else objective[/scheme]."""
    if "label" in bias.columns:
        return bias["label"].astype(str)
    obj = bias["objective"].astype(str) if "objective" in bias.columns else pd.Series("objective", index=bias.index)
    if "scheme" in bias.columns:
        sch = bias["scheme"].fillna("").astype(str)
        return obj.where(sch == "", obj + "/" + sch)
    return obj


def bias_dropped(bias: pd.DataFrame) -> int:
    """How many bias estimates :func:`fig_bias` cannot draw on its log axis (non-positive or missing)."""
    y = pd.to_numeric(bias[bias_columns(bias)[0]], errors="coerce").to_numpy(dtype=float)
    return int((~(np.isfinite(y) & (y > 0))).sum())


def fig_bias(bias: pd.DataFrame) -> tuple[Figure, int]:
    """The bias figure of ``bsstudy bias`` (:func:`bsstudy.bias.outputs.draw_bias_figure`, one panel per
    gradient space, the resolved rule of docs/bias.md) drawn from the study's bias.csv, whose label and CI
    columns are read as :func:`bias_label` / :func:`bias_columns` do. Returns (figure, number of points
    with neither a value nor a bound)."""
    from ..bias.outputs import draw_bias_figure

    _, lo, hi = bias_columns(bias)
    table = bias.assign(label=bias_label(bias)).rename(
        columns={c: name for c, name in ((lo, "rel_bias_ci_low"), (hi, "rel_bias_ci_high")) if c})
    return draw_bias_figure(table, title="gradient bias vs batch size (bsstudy bias)")


def _curve_cells(runs: pd.DataFrame, curves: pd.DataFrame, max_cells: int):
    """(per-epoch table of finished runs, cells drawn, all cells) of the training-curve figure."""
    done = runs[runs["status"] == "done"][["run_id", "method_label", "batch_size", "epochs"]]
    c = curves.merge(done, on="run_id") if len(curves) and "loss" in curves.columns else pd.DataFrame()
    methods = sorted(runs["method_label"].unique())
    cells = sorted({(m, int(b), int(e)) for m, b, e in c[["method_label", "batch_size", "epochs"]]
                    .drop_duplicates().itertuples(index=False)}) if len(c) else []
    per_method = max(1, math.ceil(max_cells / max(1, len(methods))))
    keep = []
    for m in methods:
        mine = sorted([x for x in cells if x[0] == m], key=lambda x: (x[2], x[1]))
        keep += mine[:per_method]
    return c, set(keep[:max_cells]), cells


def fig_curves_counts(runs: pd.DataFrame, curves: pd.DataFrame, max_cells: int = 36) -> tuple[int, int]:
    """(cells drawn, cells in total) of :func:`fig_curves`, without drawing."""
    _, keep, cells = _curve_cells(runs, curves, max_cells)
    return len(keep), len(cells)


def fig_curves(runs: pd.DataFrame, curves: pd.DataFrame, max_cells: int = 36) -> tuple[Figure, int, int]:
    """Training loss vs epoch per cell (method x B x epochs; mean over seeds of runs that are done), one
    panel per method, one line per cell. At most ``max_cells`` cells are drawn (smallest epochs/B first):
    returns (figure, cells drawn, cells in total)."""
    c, keep, cells = _curve_cells(runs, curves, max_cells)
    methods = sorted(runs["method_label"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), squeeze=False)
    lines = {}  # cell -> its mean curve, one groupby for all cells (not a boolean mask per cell)
    if len(c):
        mean = c.groupby(["method_label", "batch_size", "epochs", "epoch"], sort=True)["loss"].mean().reset_index()
        for (m, b, e), g in mean.groupby(["method_label", "batch_size", "epochs"], sort=False):
            if (m, int(b), int(e)) in keep:
                lines[(m, int(b), int(e))] = g
    cmap = plt.get_cmap("viridis")
    for ax, m in zip(axes[0], methods):
        mine = sorted(k for k in keep if k[0] == m)
        bs = sorted({k[1] for k in mine})
        for _, b, e in mine:
            g = lines[(m, b, e)]
            shade = cmap(bs.index(b) / max(1, len(bs) - 1))
            ax.plot(g["epoch"], g["loss"], color=shade, label=f"B={b}, {e} ep", linewidth=1)
        _title(ax, m, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        if 0 < len(mine) <= 12:
            ax.legend(fontsize=6, loc="upper right")
    _layout(fig)
    return fig, len(keep), len(cells)


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report. ``draw(*args)`` returns a Figure, or a tuple (Figure, extra values...);
    it must be a module-level function (worker processes receive it pickled). ``cost``: relative drawing
    time at 1,000 runs (the costliest are started first so the two workers finish together).
    ``section``: where the report shows it ("figures", or "bias" for the gradient-bias section); ``note``:
    a paragraph the report adds after that section's figures (what this one leaves out), if any."""

    name: str                   # figures/<name>.png and .pdf
    draw: Callable
    args: tuple
    caption: str
    cost: int = 0
    section: str = "figures"
    note: str = ""


CURVE_COLUMNS = ["run_id", "status", "method_label", "batch_size", "epochs"]  # what fig_curves reads of runs


def report_figures(summary: pd.DataFrame, drop: pd.DataFrame, base: pd.DataFrame, runs: pd.DataFrame,
                   curves: pd.DataFrame, bias: pd.DataFrame | None, max_curve_cells: int,
                   analysis=None) -> list[FigureSpec]:
    """The report's figures, in the order it shows them: accuracy per probe that has values, the
    sensitivity forest plot (with ``analysis``, an ``analysis.Analysis``), relative drop, heatmap,
    collapse, training curves, and the gradient bias when the study has bias.csv. With ``analysis`` the
    accuracy figures draw each seed and the fitted within-seed slope instead of unpaired CI bands."""
    from .stats import long_table

    specs = []
    seeds = None if analysis is None else analysis.long if analysis.long is not None else long_table(runs)
    fits = analysis.sensitivity if analysis is not None else None
    for column, label in ACCURACY.items():
        if np.isfinite(summary[f"{column}_mean"]).any():
            what = ("each seed a thin line, thick: the fitted within-seed slope per doubling of B"
                    if analysis is not None else "mean and 95% CI band over seeds")
            specs.append(FigureSpec(
                f"accuracy_{label.lower()}", fig_accuracy, (summary, column, True, base, seeds, fits),
                f"{label} top-1 vs batch size ({what}), one panel per epoch budget"
                + ("; dotted: the untrained network with the same probe" if baseline_level(base, label) else "")
                + "; last panel: published ImageNet curves (another scale)", cost=2))
    hm = "linear_top1" if np.isfinite(summary["linear_top1_mean"]).any() else "knn_top1"
    if analysis is not None and len(analysis.sensitivity):
        specs.append(FigureSpec("sensitivity_forest", fig_forest, (analysis.sensitivity, analysis.method_contrasts, hm),
                                f"{ACCURACY[hm]} top-1: slope per doubling of B per method and epoch budget, and "
                                "the method-pair slope differences, each with its 95% CI (seed-blocked)"))
    specs.append(FigureSpec("relative_drop", fig_relative_drop, (drop, hm),
                            f"relative drop of {ACCURACY[hm]} top-1 from each method's best batch size: "
                            "ours (solid, largest epoch budget) vs published linear top-1 (dashed)"))
    specs.append(FigureSpec("heatmap", fig_heatmap, (summary, hm),
                            f"mean {ACCURACY[hm]} top-1 (%) over batch size x epochs, per method"))
    specs.append(FigureSpec("collapse", fig_collapse, (summary,),
                            "collapse diagnostics vs batch size: effective rank and mean |off-diagonal corr|", cost=3))
    cells = runs[CURVE_COLUMNS]
    shown, total = fig_curves_counts(cells, curves, max_curve_cells)
    specs.append(FigureSpec("training_curves", fig_curves, (cells, curves, max_curve_cells),
                            "training loss vs epoch, one line per cell (mean over finished seeds); "
                            f"{shown} of {total} cells drawn", cost=1,
                            note="" if total <= shown else
                            f"The training-curve figure draws {shown} of {total} cells (at most {max_curve_cells}, "
                            "the smallest epoch budgets and batch sizes of each method first) to keep the report "
                            "fast; every run's metrics.jsonl is in its run directory."))
    if bias is not None:
        dropped = bias_dropped(bias)
        specs.append(FigureSpec("gradient_bias", fig_bias, (bias,),
                                "relative gradient bias vs batch size (log-log), CI bands", section="bias",
                                note="" if not dropped else
                                f"{dropped} non-positive bias estimate(s) (bias below the noise floor) cannot be "
                                "drawn on the log axis and are left off the figure; they are in the table."))
    return specs


def _render(job: tuple[FigureSpec, Path]) -> tuple[str, tuple]:
    spec, figdir = job
    res = spec.draw(*spec.args)
    fig, extra = (res[0], tuple(res[1:])) if isinstance(res, tuple) else (res, ())
    save(fig, figdir, spec.name)
    return spec.name, extra


class Rendering:
    """Figures being drawn: :meth:`wait` returns {name: extra return values of the figure function}."""

    def __init__(self, work: list[tuple], pool=None, pending=None) -> None:
        self._work, self._pool, self._pending, self._done = work, pool, pending, None

    @property
    def count(self) -> int:
        """Number of figures (each written as PNG and PDF)."""
        return len(self._work)

    def wait(self) -> dict:
        """Block until every figure file is written (idempotent)."""
        if self._done is None:
            if self._pool is None:
                self._done = dict(_render(w) for w in self._work)
            else:
                try:
                    self._done = dict(self._pending.get())
                finally:
                    self._pool.close()
                    self._pool.join()
        return self._done

    def abort(self) -> None:
        """Stop the workers (an error elsewhere: the report is not written)."""
        if self._pool is not None and self._done is None:
            self._pool.terminate()
            self._pool.join()


def start_render(specs: list[FigureSpec], figdir: Path) -> Rendering:
    """Start drawing and saving each figure of ``specs`` into ``figdir``; the caller goes on with its own
    work (tables, document) and calls ``.wait()`` before it needs the files.

    Uses up to 2 forked worker processes (matplotlib is single-threaded; the figures are most of a
    1,000-run report's time); ``BSSTUDY_REPORT_JOBS=1`` or a platform without fork renders serially in
    ``wait``. The files are the same either way."""
    work = [(spec, figdir) for spec in specs]
    env = os.environ.get("BSSTUDY_REPORT_JOBS", "")
    n = int(env) if env.isdigit() else min(2, os.cpu_count() or 1)
    if n > 1 and len(work) > 1 and "fork" in multiprocessing.get_all_start_methods():
        work.sort(key=lambda w: -w[0].cost)  # the costliest first, so the two workers finish together
        pool = multiprocessing.get_context("fork").Pool(min(n, len(work)))
        return Rendering(work, pool, pool.map_async(_render, work, chunksize=1))
    return Rendering(work)
