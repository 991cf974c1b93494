"""The report's "Reading": one paragraph of prose computed from the tables, nothing else.

A pure function of the computed tables (the seed-paired :class:`analysis.Analysis`, ``summary``,
``headline``, ``init_baseline``) and the runs' statuses: it never reads files, so a test can check each
sentence against the numbers it came from. Every claim carries its interval and comes from the paired
statistics (no verdict from overlapping unpaired CIs). Which methods are compared by default as an
unbiased estimator against its plug-in counterpart comes from the method registry
(``MethodSpec.unbiased_of``, via ``stats.default_pairs``), not from the method names.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..layout import Status
from ..registry import METHODS, split_label
from .analysis import Analysis, compute, est_ci, fp, slope_mde_text
from .references import REFERENCES
from .stats import BOOT_MIN_SEEDS, default_pairs
from .tables import ACCURACY, baseline_level, epochs_text, metric_label


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _title(name: str) -> str:
    """How prose names a method: its registry title, else its name."""
    spec = METHODS.get(name)
    return (spec.title if spec is not None else "") or name


def unbiased_pairs(labels) -> list[tuple[str, str]]:
    """(unbiased label, plug-in label) pairs among ``labels`` from the method registry
    (``MethodSpec.unbiased_of``): :func:`stats.default_pairs`, the report's default comparison."""
    return default_pairs(labels)


def _join(items: list[str]) -> str:
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else ""


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


def _sensitivity_sentences(a: Analysis, e: int, column: str, methods: list[str]) -> list[str]:
    """The slope per doubling of each method with its CI, then which slopes are resolved."""
    sens = a.sensitivity
    sens = sens[(sens["epochs"] == e) & (sens["metric"] == column) & sens["method"].isin(methods)]
    sens = sens[np.isfinite(sens["slope_pts_per_doubling"])]
    if sens.empty:
        return []
    parts = [f"Per doubling of the batch size, top-1 changes by "
             + _join([f"{r['method']} {est_ci(r['slope_pts_per_doubling'], r['ci_low'], r['ci_high'])}"
                      for _, r in sens.iterrows()])
             + " points (within-seed slope, 95% CI; table 'Batch-size sensitivity')."]
    falls = [r["method"] for _, r in sens.iterrows() if r["ci_high"] < 0]
    rises = [r["method"] for _, r in sens.iterrows() if r["ci_low"] > 0]
    open_ = [r["method"] for _, r in sens.iterrows() if not (r["ci_high"] < 0 or r["ci_low"] > 0)]
    undefined = any(not np.isfinite(r["ci_low"]) for _, r in sens.iterrows() if r["method"] in open_)
    if falls:
        parts.append(f"Resolved: {_join(falls)} {'loses' if len(falls) == 1 else 'lose'} accuracy as B grows.")
    if rises:
        parts.append(f"Resolved: {_join(rises)} {'gains' if len(rises) == 1 else 'gain'} accuracy as B grows.")
    if open_:
        mde = slope_mde_text(a, column)
        parts.append(f"Not resolved for {_join(open_)}: the CI includes 0" + (" or is undefined" if undefined else "")
                     + (f"; this study detects slopes of {mde} points per doubling with 80% power" if mde else "")
                     + ".")
    het = sens[sens["p_slope_varies_by_seed"] < 0.05]
    for _, r in het.iterrows():
        parts.append(f"For {r['method']} the seeds differ in slope (p = {fp(r['p_slope_varies_by_seed'])}), so its "
                     f"seedwise interval is the one to quote: "
                     f"{est_ci(r['seedwise_slope'], r['seedwise_ci_low'], r['seedwise_ci_high'])}.")
    return parts


def _drop_sentences(a: Analysis, e: int, column: str) -> list[str]:
    """The seed papers' max relative drop and the pre-specified drop, each with its bootstrap CI."""
    d = a.drop[(a.drop["epochs"] == e) & (a.drop["metric"] == column)].sort_values(["max_rel_drop_pct", "method"])
    if d.empty:
        return []
    worst = d.iloc[-1]
    cis = "95% bootstrap CI over seeds" if np.isfinite(d["max_ci_low"]).any() else \
        f"no CI below {BOOT_MIN_SEEDS} seeds"
    txt = (f"The largest relative drop from the best batch size ({cis}) is "
           + _join([f"{r['method']} {est_ci(r['max_rel_drop_pct'], r['max_ci_low'], r['max_ci_high'], 1, '%', False)}"
                    for _, r in d.iterrows()])
           + f", largest for {worst['method']} (B={int(worst['best_batch_size'])} to B={int(worst['worst_batch_size'])})"
           + "; this maximum over noisy cells is biased upward (positive even with no batch-size effect).")
    pre = d[d["far_batch_size"] > 0]
    if len(pre):
        r0 = pre.iloc[0]
        txt += (f" The pre-specified drop from B_ref={int(r0['reference_batch_size'])} to B={int(r0['far_batch_size'])}: "
                + _join([f"{r['method']} {est_ci(r['ref_rel_drop_pct'], r['ref_ci_low'], r['ref_ci_high'], 1, '%', False)}"
                         for _, r in pre.iterrows()]) + ".")
    return [txt]


def _pair_sentences(a: Analysis, e: int, column: str) -> list[str]:
    """Per compared pair: the difference of slopes paired by seed, with CI and p."""
    mc = a.method_contrasts
    mc = mc[(mc["epochs"] == e) & (mc["metric"] == column) & (mc["contrast"] == "slope_difference")]
    parts = []
    mde = a.power[(a.power["metric"] == column) & (a.power["quantity"] == "slope_difference")]["mde_pts"] \
        if len(a.power) else pd.Series(dtype=float)
    for _, r in mc.iterrows():
        u, p = r["method_a"], r["method_b"]
        name, var = split_label(p)
        plugin = _title(name) + (f"[{var}]" if var else "")
        lo, hi = r["ci_low"], r["ci_high"]
        if lo > 0:
            verdict = f"resolved: {u}'s top-1 rises more (or falls less) per doubling than {plugin}'s"
        elif hi < 0:
            verdict = f"resolved: {u}'s top-1 falls more (or rises less) per doubling than {plugin}'s"
        else:
            verdict = "not resolved: the CI includes 0" + (" (or is undefined)" if not np.isfinite(lo) else "") \
                + (f"; this study detects differences of ±{float(mde.iloc[0]):.2f} with 80% power" if len(mde) else "")
        parts.append(f"{u} against {plugin}: the difference of their batch-size slopes is "
                     f"{est_ci(r['estimate'], lo, hi)} points per doubling (paired by seed, p = {fp(r['p_value'])}, "
                     f"{int(r['n_seeds'])} seeds), {verdict}.")
    return parts


def _init_sentences(a: Analysis, e: int, column: str, label: str, base: pd.DataFrame | None) -> list[str]:
    """The untrained network's level, then each method against the untrained network of its own seed."""
    parts = []
    level = baseline_level(base, label)
    if level is not None:
        mean, ci = level
        parts.append(f"The untrained network (random init, same probe) reaches {100 * mean:.1f}%"
                     + (f" ± {100 * ci:.1f}" if np.isfinite(ci) else "") + ".")
    c = a.contrasts
    c = c[(c["epochs"] == e) & (c["metric"] == column) & (c["contrast"] == "vs_untrained") & (c["batch_size"] == -1)]
    if c.empty:
        return parts
    parts.append("Against the untrained network of its own seed, averaged over batch sizes (paired, 95% CI): "
                 + _join([f"{r['method']} {est_ci(r['estimate_pts'], r['ci_low'], r['ci_high'])} points"
                          for _, r in c.iterrows()]) + ".")
    above = [r["method"] for _, r in c.iterrows() if r["ci_low"] > 0]
    below = [r["method"] for _, r in c.iterrows() if r["ci_high"] < 0]
    same = [r["method"] for _, r in c.iterrows() if not (r["ci_low"] > 0 or r["ci_high"] < 0)]
    if above:
        parts.append(f"{_join(above)} {'beats' if len(above) == 1 else 'beat'} it: the pretraining pays off.")
    if below:
        parts.append(f"{_join(below)} {'is' if len(below) == 1 else 'are'} below it.")
    if same:
        parts.append(f"{_join(same)} {'is' if len(same) == 1 else 'are'} not distinguishable from the untrained "
                     "network: at this scale the pretraining has not paid off.")
    return parts


def reading(summary: pd.DataFrame, head: pd.DataFrame, runs: pd.DataFrame, n_missing: int,
            base: pd.DataFrame | None = None, analysis: Analysis | None = None) -> str:
    """One honest paragraph computed from the numbers (largest epoch budget, linear probe if available).

    Every claim about batch size, methods or the untrained network comes from the seed-paired statistics
    of ``analysis`` (:func:`analysis.compute` of ``runs`` with default settings when None) and carries its
    interval; ``summary`` (``tables.summarize_cells``) gives the best cell, ``head`` (``tables.headline``)
    the published references, ``runs`` the statuses, ``n_missing`` the planned cells without a result and
    ``base`` (``tables.init_baseline``) the untrained network's level, if any."""
    a = compute(runs) if analysis is None else analysis
    sens = a.sensitivity
    column = a.settings.metric or ("linear_top1" if (sens["metric"] == "linear_top1").any()
                                   or not (sens["metric"] == "knn_top1").any() else "knn_top1")
    label = metric_label(column)
    s_col = summary[np.isfinite(summary[f"{column}_mean"])] if len(summary) else summary
    parts = []
    if s_col.empty:
        parts.append("No run finished with an accuracy, so there is nothing to compare yet.")
    else:
        e = int(s_col["epochs"].max())
        s = s_col[s_col["epochs"] == e]
        methods = sorted(s["method_label"].unique())
        n_seeds = int(s[f"{column}_n"].max())
        bs = sorted(int(b) for b in s["batch_size"].unique())
        parts.append(f"At {epochs_text(e)} ({label} probe, batch sizes {_join([str(b) for b in bs])}, up to {n_seeds} "
                     f"seed(s) per cell), every interval below is 95% and paired within seed unless it says "
                     f"otherwise.")
        if len(bs) < 2:
            parts.append("Only one batch size has finished runs, so no batch-size dependence can be read yet.")
        parts += _sensitivity_sentences(a, e, column, methods)
        parts += _drop_sentences(a, e, column)
        top = s.loc[s[f"{column}_mean"].idxmax()]
        ci = 100 * top[f"{column}_ci95"]
        parts.append(f"The best cell is {top['method_label']} at B={int(top['batch_size'])} with "
                     f"{100 * top[f'{column}_mean']:.1f}%" + (f" ± {ci:.1f} (unpaired CI over seeds)"
                                                              if np.isfinite(ci) else " (one seed)") + ".")
        parts += _pair_sentences(a, e, column)
        parts += _init_sentences(a, e, column, label, base)
        nmin = int(s[f"{column}_n"].min()) if len(s) else 0
        if nmin < 3:
            parts.append(f"Some cells have only {nmin} finished seed(s): the unpaired per-cell CIs in the tables are "
                         "wide or undefined, the paired statistics above are the ones to read.")
    refs = head[head["source"] == "reference"]
    ref_method = {ref.label: ref.method for ref in REFERENCES}
    if len(refs):
        parts.append("For scale only (ImageNet, 100 epochs; another dataset and scale, no interval published): the "
                     "published curves drop " + ", ".join(f"{ref_method[r['method']]} {_pct(r['max_rel_drop_pct'])}"
                                                          for _, r in refs.iterrows()) + " from their best batch size.")
    nd, nf = int((runs["status"] == Status.DIVERGED).sum()), int((runs["status"] == Status.FAILED).sum())
    if nd or nf or n_missing:
        parts.append(f"{nd} diverged and {nf} failed run(s) are excluded from every mean (listed below); "
                     f"{n_missing} planned cell(s) have no result yet.")
    return " ".join(parts)
