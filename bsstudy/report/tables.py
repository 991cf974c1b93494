"""Aggregation and tables: per-run table, per-cell summary with 95% Student-t CIs over seeds, the seed
papers' layout (method x batch size, "mean ± ci" in percent), and relative drops from each method's best
batch size. Every function is deterministic (sorted rows, fixed float formats).

Two words for a measured quantity, kept apart: a *metric column* is a result field (``linear_top1``,
``collapse.min_std``; summary columns ``<column>_mean`` ...); a *metric label* is how the report names an
accuracy (``linear``, ``kNN``): ``ACCURACY`` maps columns to labels. The output tables keep their
``metric`` column as published: relative_drop.csv holds metric columns, headline.csv and
init_baseline.csv hold metric labels."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from ..layout import RESULT_STATUSES, Status
from .references import REFERENCES, relative_drops

ACCURACY = {"linear_top1": "linear", "knn_top1": "kNN"}  # metric column -> metric label
SUMMARY_METRICS = ("linear_top1", "knn_top1", "collapse.effective_rank", "collapse.avg_abs_corr",
                   "collapse.min_std", "collapse.mean_std")
KEYS = ["method_label", "batch_size", "epochs"]
FLOAT_FORMAT = "%.6g"
FEW_SHOT = re.compile(r"^few_shot\.(\d+)\.top1$")  # eval.few_shot's metric columns (result.json few_shot.<k>.top1)


def is_accuracy_column(column: str) -> bool:
    """Whether ``column`` is an accuracy metric column: ``ACCURACY``'s or a few-label probe's."""
    return column in ACCURACY or FEW_SHOT.match(column) is not None


def metric_label(column: str) -> str:
    """How the report names the accuracy in metric column ``column`` (the column itself if not one)."""
    if column in ACCURACY:
        return ACCURACY[column]
    m = FEW_SHOT.match(column)
    return f"{m.group(1)}-shot linear" if m else column


def accuracy_columns(runs: pd.DataFrame) -> dict[str, str]:
    """Metric column -> label of every accuracy of a study: ``ACCURACY`` then the few-label probes present
    in ``runs`` (``few_shot.<k>.top1`` -> "<k>-shot linear"), by k."""
    few = sorted((int(m.group(1)), c) for c in runs.columns if (m := FEW_SHOT.match(str(c))))
    return {c: metric_label(c) for c in [*ACCURACY, *(c for _, c in few)]}


def epochs_text(e) -> str:
    """"1 epoch", "5 epochs"."""
    e = int(e)
    return f"{e} epoch" + ("" if e == 1 else "s")


def to_csv(df: pd.DataFrame) -> str:
    """CSV text with a fixed float format (byte-stable for the same data)."""
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def t_half_width(std, n):
    """95% Student-t CI half-width ``t_{0.975, n-1} * std / sqrt(n)`` (elementwise); NaN where n < 2."""
    n = np.asarray(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * std / np.sqrt(np.maximum(n, 1)), np.nan)


def summarize_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method x batch size x epochs: run counts by status (``n_<status>`` for each result
    status), and mean/std/n/ci95 of each metric column over the seeds of runs with status ``done``
    (diverged and failed runs are counted, never averaged).
    CI half-width = t_{0.975, n-1} * std / sqrt(n); undefined (NaN) for n < 2."""
    st = runs["status"]
    flags = {f"n_{s}": st == s for s in RESULT_STATUSES}
    counts = runs.assign(**flags).groupby(KEYS, sort=True).agg(runs_total=("status", "size"),
                                                               **{n: (n, "sum") for n in flags})
    done = runs[st == Status.DONE]
    out = counts.astype(int)
    for m in SUMMARY_METRICS + tuple(c for c in accuracy_columns(runs) if c not in SUMMARY_METRICS):
        vals = pd.to_numeric(done[m], errors="coerce") if m in done.columns else pd.Series(np.nan, index=done.index)
        vals = vals.where(np.isfinite(vals))
        g = vals.groupby([done[k] for k in KEYS], sort=True)
        agg = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reindex(out.index)
        n = agg["n"].fillna(0).astype(int).to_numpy()
        std = np.where(n >= 2, agg["std"].to_numpy(dtype=float), np.nan)
        half = t_half_width(std, n)
        out[f"{m}_mean"] = np.where(n >= 1, agg["mean"].to_numpy(dtype=float), np.nan)
        out[f"{m}_std"] = std
        out[f"{m}_n"] = n
        out[f"{m}_ci95"] = half
    out = out.reset_index()
    out["batch_size"] = out["batch_size"].astype(int)
    out["epochs"] = out["epochs"].astype(int)
    return out.sort_values(KEYS).reset_index(drop=True)




def init_baseline(runs: pd.DataFrame) -> pd.DataFrame:
    """The untrained network's probe (``eval.at_init``) per backbone: mean and 95% t-CI over seeds.

    The initial weights depend on the seed and the model, not on the method or batch size, so each
    (backbone, seed) counts once (the mean of its runs, which agree). Empty when no run probed at init."""
    labels = {f"init_{c}": lab for c, lab in accuracy_columns(runs).items()}  # columns (eval.at_init) -> labels
    cols = [c for c in labels if c in runs.columns]
    out_cols = ["backbone", "metric", "mean", "ci95", "n_seeds"]
    if not cols:
        return pd.DataFrame(columns=out_cols)
    vals = runs[["backbone", "seed", *cols]].copy()
    vals[cols] = vals[cols].apply(pd.to_numeric, errors="coerce")
    per_seed = vals.groupby(["backbone", "seed"], sort=True)[cols].mean()
    rows = []
    for backbone, g in per_seed.groupby(level=0, sort=True):
        for c in cols:
            v = g[c].dropna().to_numpy(dtype=float)
            if len(v) == 0:
                continue
            n = len(v)
            ci = float(t_half_width(v.std(ddof=1) if n >= 2 else np.nan, n))
            rows.append({"backbone": backbone, "metric": labels[c], "mean": float(v.mean()), "ci95": ci,
                         "n_seeds": n})
    return pd.DataFrame(rows, columns=out_cols)


def baseline_level(base: pd.DataFrame | None, label: str) -> tuple[float, float] | None:
    """(mean, ci95) of the untrained network for metric label ``label`` ("linear" / "kNN") over the
    backbones of ``init_baseline``'s table (the widest CI), or None when there is none."""
    if base is None or not len(base):
        return None
    b = base[base["metric"] == label]
    if b.empty:
        return None
    return float(b["mean"].mean()), float(b["ci95"].max())


def ci_cell(mean: float, ci: float, n: int, st: dict | None = None) -> str:
    """A table cell in percent: "mean ± ci", "mean (n=1)", or why there is no value (n = 0)."""
    st = st or {}
    if n == 0:
        bad = [str(k) for k in (Status.DIVERGED, Status.FAILED) if st.get(k)]
        return " / ".join(bad) if bad else "—"
    if n == 1 or not np.isfinite(ci):
        return f"{100 * mean:.1f} (n=1)"
    return f"{100 * mean:.1f} ± {100 * ci:.1f}"


def paper_table(summary: pd.DataFrame, column: str, epochs: int) -> pd.DataFrame:
    """Seed-paper layout of metric column ``column`` (e.g. ``linear_top1``) for one epoch budget: rows =
    method, columns = batch size, "mean ± ci" (%)."""
    s = summary[summary["epochs"] == epochs]
    bs = sorted(s["batch_size"].unique())
    rows = []
    for method, g in s.groupby("method_label", sort=True):
        row = {"method": method}
        by_b = {int(r["batch_size"]): r for _, r in g.iterrows()}
        for b in bs:
            r = by_b.get(int(b))
            row[str(b)] = "" if r is None else ci_cell(r[f"{column}_mean"], r[f"{column}_ci95"],
                                                        int(r[f"{column}_n"]),
                                                        {s: r[f"n_{s}"] for s in (Status.DIVERGED, Status.FAILED)})
        rows.append(row)
    return pd.DataFrame(rows, columns=["method"] + [str(b) for b in bs])


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub pipe table (first column left-aligned, the rest right-aligned)."""
    cols = [str(c) for c in df.columns]

    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in cols) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(cols) - 1)) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_fmt(x)) for x in row) + " |")
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    if isinstance(x, (float, np.floating)):
        return "—" if not np.isfinite(x) else f"{x:.4g}"
    return str(x)


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    """Escape LaTeX specials in plain text."""
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); "±" becomes $\\pm$, "—" becomes --."""
    def cell(x) -> str:
        t = tex_escape(_fmt(x)).replace("±", r"$\pm$").replace("—", "--")
        return t

    cols = [str(c) for c in df.columns]
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(cell(x) for x in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cell(caption)}}}", rf"\label{{{label}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def relative_drop(summary: pd.DataFrame) -> pd.DataFrame:
    """Long table: for ours (per method, epochs, metric) and each reference, the mean top-1 (%) at each batch
    size, the best batch size and the relative drop from the best in percent. Ties go to the smaller B."""
    rows = []
    for column in ACCURACY:
        col = f"{column}_mean"
        for (method, epochs), g in summary.groupby(["method_label", "epochs"], sort=True):
            g = g[np.isfinite(g[col])].sort_values("batch_size")
            if g.empty:
                continue
            best_i = max(range(len(g)), key=lambda i: (g[col].iloc[i], -g["batch_size"].iloc[i]))
            best, best_b = 100 * g[col].iloc[best_i], int(g["batch_size"].iloc[best_i])
            for _, r in g.iterrows():
                acc = 100 * r[col]
                rows.append(dict(source="ours", method=method, dataset="", epochs=int(epochs), metric=column,
                                 batch_size=int(r["batch_size"]), top1_pct=acc, best_batch_size=best_b,
                                 best_top1_pct=best, rel_drop_pct=100 * (best - acc) / best,
                                 ci95_pct=100 * r[f"{column}_ci95"]))
    for ref in REFERENCES:
        best_b, best, drops = relative_drops(ref)
        for b, acc, d in zip(ref.batch_sizes, ref.top1, drops):
            rows.append(dict(source="reference", method=ref.label, dataset=ref.dataset, epochs=ref.epochs,
                             metric="linear_top1", batch_size=b, top1_pct=acc, best_batch_size=best_b,
                             best_top1_pct=best, rel_drop_pct=d, ci95_pct=math.nan))
    df = pd.DataFrame(rows)
    return df.sort_values(["source", "metric", "method", "epochs", "batch_size"], kind="stable").reset_index(drop=True)


def headline(drop: pd.DataFrame) -> pd.DataFrame:
    """Per method (ours and references), epochs and metric: best B and the largest relative drop from it,
    over the batch sizes that source covers (the study's headline number)."""
    rows = []
    for (source, column, method, epochs), g in drop.groupby(["source", "metric", "method", "epochs"], sort=True):
        worst = g.loc[g["rel_drop_pct"].idxmax()]
        bs = g["batch_size"]
        rows.append(dict(source=source, method=method, epochs=int(epochs), metric=ACCURACY.get(column, column),
                         batch_sizes=f"{int(bs.min())}–{int(bs.max())}", best_batch_size=int(worst["best_batch_size"]),
                         best_top1_pct=round(float(worst["best_top1_pct"]), 2), worst_batch_size=int(worst["batch_size"]),
                         worst_top1_pct=round(float(worst["top1_pct"]), 2),
                         max_rel_drop_pct=round(float(worst["rel_drop_pct"]), 2)))
    df = pd.DataFrame(rows)
    order = {"ours": 0, "reference": 1, "linear": 0, "kNN": 1}
    return df.sort_values(["source", "metric", "epochs", "method"],
                          key=lambda s: s.map(order) if s.name in ("source", "metric") else s,
                          kind="stable").reset_index(drop=True)
