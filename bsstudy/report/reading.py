"""The report's "Reading": one paragraph of prose computed from the tables, nothing else.

A pure function of the computed tables (``summary``, ``headline``, ``init_baseline``) and the runs'
statuses: it never reads files, so a test can check each sentence against the numbers it came from.
Which methods are compared as an unbiased estimator against its plug-in counterpart comes from the
method registry (``MethodSpec.unbiased_of``), not from the method names.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..layout import Status
from ..registry import METHODS, split_label
from .references import REFERENCES
from .tables import ACCURACY, baseline_level, epochs_text


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _title(name: str) -> str:
    """How prose names a method: its registry title, else its name."""
    spec = METHODS.get(name)
    return (spec.title if spec is not None else "") or name


def unbiased_pairs(labels) -> list[tuple[str, str]]:
    """(unbiased label, plug-in label) for each method variant among ``labels`` whose registry entry names
    a plug-in counterpart (``unbiased_of``) that is also among ``labels``; sorted by the unbiased label."""
    by_method: dict[str, list[str]] = {}
    for lb in labels:
        by_method.setdefault(split_label(lb)[0], []).append(lb)
    pairs = []
    for lb in sorted(labels):
        spec = METHODS.get(split_label(lb)[0])
        if spec is not None and spec.unbiased_of:
            pairs += [(lb, p) for p in sorted(by_method.get(spec.unbiased_of, []))]
    return pairs


def _cell_ci(s: pd.DataFrame, label: str, column: str) -> pd.Series:
    """95% CI half-widths of ``label``'s cells (by batch size) in summary rows ``s``."""
    return s[s["method_label"] == label].set_index("batch_size")[f"{column}_ci95"]


def _pair_sentence(u: str, p: str, by: dict, s: pd.DataFrame, column: str) -> str:
    """Is the unbiased method's largest drop smaller than its plug-in counterpart's, beyond the seeds' noise?"""
    du, dv = by[u]["max_rel_drop_pct"], by[p]["max_rel_drop_pct"]
    # noise scale of each drop: the 95% CI half-widths of its best and worst cells, combined in
    # quadrature, relative to the best; the two drops' scales combine the same way
    scales = []
    for label in (u, p):
        r = by[label]
        cells = _cell_ci(s, label, column)
        cis = [cells.get(r["best_batch_size"], np.nan), cells.get(r["worst_batch_size"], np.nan)]
        scales.append(100 * 100 * math.hypot(*cis) / r["best_top1_pct"])
    tol = math.hypot(*scales)
    if np.isfinite(tol) and abs(du - dv) <= tol:
        verdict = f"a difference within the seeds' 95% CI (about {tol:.1f}% relative), so not resolved"
    elif not np.isfinite(tol):
        verdict = "with too few seeds for a CI, so not resolved"
    else:
        verdict = "smaller: less batch-size dependence" if du < dv else "larger: more batch-size dependence"
    plugin_name, plugin_variant = split_label(p)
    plugin = _title(plugin_name) + (f"[{plugin_variant}]" if plugin_variant else "")
    return f"{u}'s largest drop is {_pct(du)} against {plugin}'s {_pct(dv)}, {verdict}."


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def question(labels) -> str:
    """The report's question, naming the methods of this study (method labels ``labels``) by their
    registry titles; the unbiased-vs-plug-in question only when the study has such a pair."""
    names = list(dict.fromkeys(_title(split_label(lb)[0]) for lb in sorted(labels)))
    text = ("How does the quality of self-supervised representations (linear-probe and kNN top-1) depend on the "
            f"batch size, and on the epoch budget, for {_names(names) if names else 'the methods run'}?")
    pairs = list(dict.fromkeys((split_label(u)[0], split_label(p)[0]) for u, p in unbiased_pairs(labels)))
    for u, p in pairs:
        text += f" Does {_title(u)} remove {_title(p)}'s batch-size dependence?"
    return text + " The headline number is each method's relative drop from its best batch size."


def _init_sentences(o: pd.DataFrame, s: pd.DataFrame, column: str, label: str,
                    base: pd.DataFrame | None) -> list[str]:
    """Compare each method's best cell with the untrained network under the same probe (eval.at_init)."""
    level = baseline_level(base, label)
    if level is None:
        return []
    mean, ci = level
    parts = [f"The untrained network (random init, same probe) reaches {100 * mean:.1f}%"
             + (f" ± {100 * ci:.1f}" if np.isfinite(ci) else "") + "."]
    weak = []
    for _, r in o.iterrows():
        cell_ci = float(_cell_ci(s, r["method"], column).get(r["best_batch_size"], np.nan))
        tol = 100 * math.hypot(*(x for x in (ci, cell_ci) if np.isfinite(x)))  # hypot() of nothing is 0
        if r["best_top1_pct"] - 100 * mean <= tol:
            weak.append(r["method"])
    gap = o["best_top1_pct"].max() - 100 * mean
    parts.append(f"The best cell is {abs(gap):.1f} points {'above' if gap >= 0 else 'below'} it.")
    if weak:
        parts.append(f"{', '.join(weak)} {'is' if len(weak) == 1 else 'are'} not distinguishable from the untrained "
                     "network even at the best batch size: at this scale the pretraining has not paid off.")
    return parts


def reading(summary: pd.DataFrame, head: pd.DataFrame, runs: pd.DataFrame, n_missing: int,
            base: pd.DataFrame | None = None) -> str:
    """One honest paragraph computed from the numbers (largest epoch budget, linear probe if available).

    ``summary`` is ``tables.summarize_cells``'s per-cell table, ``head`` ``tables.headline``'s, ``runs`` the
    per-run table (only its ``status`` is read), ``n_missing`` the planned cells without a result and
    ``base`` ``tables.init_baseline``'s table (the untrained network), if any."""
    ours = head[head["source"] == "ours"]
    column = "linear_top1" if (ours["metric"] == ACCURACY["linear_top1"]).any() else "knn_top1"
    label = ACCURACY[column]
    ours = ours[ours["metric"] == label]
    parts = []
    if ours.empty:
        parts.append("No run finished with an accuracy, so there is nothing to compare yet.")
    else:
        e = int(ours["epochs"].max())
        o = ours[ours["epochs"] == e].sort_values(["max_rel_drop_pct", "method"])
        s = summary[summary["epochs"] == e]
        worst, least = o.iloc[-1], o.iloc[0]
        if s[np.isfinite(s[f"{column}_mean"])]["batch_size"].nunique() < 2:
            parts.append(f"At {epochs_text(e)} only one batch size has finished runs, so no batch-size dependence can "
                         "be read yet.")
        parts.append(
            f"At {epochs_text(e)} ({label} probe, batch sizes {worst['batch_sizes']}), {worst['method']} drops most from "
            f"its best batch size: {_pct(worst['max_rel_drop_pct'])} relative, from {worst['best_top1_pct']:.1f}% "
            f"at B={worst['best_batch_size']} to {worst['worst_top1_pct']:.1f}% at B={worst['worst_batch_size']}.")
        if len(o) > 1:
            parts.append(f"{least['method']} drops least ({_pct(least['max_rel_drop_pct'])}, best at "
                         f"B={least['best_batch_size']}).")
        top = o.loc[o["best_top1_pct"].idxmax()]
        parts.append(f"The best cell is {top['method']} at B={top['best_batch_size']} with {top['best_top1_pct']:.1f}%.")
        for _, r in o.iterrows():
            gap = top["best_top1_pct"] - r["best_top1_pct"]
            if gap > 5:
                parts.append(f"{r['method']} does badly here: even at its best batch size it is {gap:.1f} points "
                             f"below {top['method']}.")
        by = {r["method"]: r for _, r in o.iterrows()}
        parts += [_pair_sentence(u, p, by, s, column) for u, p in unbiased_pairs(by)]
        parts += _init_sentences(o, s, column, label, base)
        nmin = int(s[f"{column}_n"].min()) if len(s) else 0
        if nmin < 3:
            parts.append(f"Some cells have only {nmin} finished seed(s), so their CIs are wide or undefined.")
    refs = head[head["source"] == "reference"]
    ref_method = {ref.label: ref.method for ref in REFERENCES}
    if len(refs):
        parts.append("For scale only (ImageNet, 100 epochs; another dataset and scale): the published "
                     "curves drop " + ", ".join(f"{ref_method[r['method']]} {_pct(r['max_rel_drop_pct'])}"
                                                for _, r in refs.iterrows()) + " from their best batch size.")
    nd, nf = int((runs["status"] == Status.DIVERGED).sum()), int((runs["status"] == Status.FAILED).sum())
    if nd or nf or n_missing:
        parts.append(f"{nd} diverged and {nf} failed run(s) are excluded from every mean (listed below); "
                     f"{n_missing} planned cell(s) have no result yet.")
    return " ".join(parts)
