"""Assemble the report of one study: tables, figures, report.md/html, provenance.json."""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from ..provenance import git_state
from . import figures as F
from .load import Study, load_study, read_config
from .references import REFERENCES
from .render import H, Img, P, Pre, Table, Ul, to_html, to_md
from .tables import (ACCURACY, baseline_level, ci_cell, headline, init_baseline, paper_table, relative_drop,
                     summarize, to_csv, to_latex, to_markdown)

FORMATS = ("md", "html", "tex")
MAX_CURVE_CELLS = 36  # training-curve figure: cells drawn at most (the report says when more exist)
PACKAGES = ("bsstudy", "torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "seaborn", "submitit",
            "hydra-core", "omegaconf")


def parse_formats(text: str) -> tuple[str, ...]:
    """'md,html' -> ('md', 'html'); UserError naming an unknown format."""
    fmts = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise UserError(f"--format: unknown format {', '.join(bad) or repr(text)} (choose from {','.join(FORMATS)})")
    return fmts


def provenance(study: Study) -> dict:
    """Who/what/where made this report: git, versions, hardware, date, and each run's config hash."""
    commit, dirty = git_state()
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    versions.setdefault("bsstudy", __version__)
    runs = study.runs
    return {
        "study": study.name, "study_dir": str(study.root), "sweep_hash": study.plan_hash,
        "git_commit": commit, "git_dirty": dirty, "versions": versions, "python": platform.python_version(),
        "hardware": {"machine": platform.machine(), "processor": platform.processor(), "system": platform.system(),
                     "cpus": os.cpu_count(),
                     "run_devices": sorted({str(d) for d in runs.get("device", pd.Series(dtype=str)).dropna()})},
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "runs": {r: (h if isinstance(h, str) else None)
                 for r, h in zip(runs["run_id"], runs.get("config_hash", pd.Series([None] * len(runs))))},
    }


def _pct(x: float) -> str:
    return f"{x:.1f}%"


# plan.csv columns written by `bsstudy plan` that the setup section reads (config key in brackets)
_SETUP = (("dataset", "dataset", ("dataset", "name")), ("backbone", "backbone", ("model", "name")),
          ("batch sizes", "batch_size", ("batch_size",)), ("epochs", "epochs", ("epochs",)),
          ("seeds", "seed", ("seed",)))
_STANDARD = {"run_id", "study", "method", "batch_size", "epochs", "seed", "lr", "base_lr", "lr_scaling", "dataset",
             "backbone", "optim", "config_hash", "gpu_hours"}


def _sorted_vals(values) -> str:
    out = {v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    out = {int(v) if isinstance(v, float) and v.is_integer() else v for v in out}
    return ", ".join(str(v) for v in sorted(out, key=lambda v: (isinstance(v, str), v))) or "?"


def _setup(study: Study) -> list[str]:
    """Bullet lines describing the sweep: from plan.csv (the planner writes each cell's resolved dataset,
    backbone, optimizer and LR rule there); from the runs' config.yaml where plan.csv lacks a column."""
    plan, runs = study.plan, study.runs
    fallback: dict = {}

    def configs() -> list[dict]:  # whole configs, read only when plan.csv lacks a column
        if not fallback:
            ids = [r for r in plan["run_id"] if (study.root / "runs" / r / "config.yaml").is_file()]
            fallback["cfgs"] = [read_config(study.root / "runs" / r / "config.yaml") for r in ids]
        return fallback["cfgs"]

    def from_cfg(path) -> list:
        out = []
        for c in configs():
            for p in path:
                c = c.get(p) if isinstance(c, dict) else None
            out.append(c)
        return out

    lines = []
    for label, col, path in _SETUP:
        vals = plan[col].tolist() if col in plan.columns else from_cfg(path)
        lines.append(f"{label}: {_sorted_vals(vals)}")
    labels = set(runs["method_label"])
    planned = {str(m) for m in plan["method"]} if "method" in plan.columns else set()
    labels |= {m for m in planned if not any(lb == m or lb.startswith(m + "[") for lb in labels)}
    lines.insert(2, f"methods: {', '.join(sorted(labels))}")
    if {"method", "base_lr", "lr_scaling", "optim"} <= set(plan.columns):
        rules = plan[["method", "base_lr", "lr_scaling", "optim"]].drop_duplicates().itertuples(index=False)
    else:
        rules = {(c["method"]["name"], c["method"].get("base_lr"), c["method"].get("lr_scaling"),
                  (c.get("optim") or {}).get("name")) for c in configs() if isinstance(c.get("method"), dict)}
    by_method: dict = {}
    for m, base, scaling, optim in rules:
        by_method.setdefault(str(m), set()).add(f"base lr {base} at B=256, {scaling} scaling, optimizer {optim}")
    lines.append("learning-rate rule: " + "; ".join(f"{k}: {' / '.join(sorted(v))}" for k, v in sorted(by_method.items())))
    other = [c for c in plan.columns if c not in _STANDARD]
    if other:
        lines.append("also swept: " + "; ".join(f"{c} = {_sorted_vals(plan[c].tolist())}" for c in other))
    lines.append(f"cells planned: {len(plan)}; with result.json: {len(runs)}"
                 + (f" ({int((~runs['in_plan']).sum())} not in plan.csv, reported anyway)" if (~runs["in_plan"]).any() else ""))
    lines.append(f"devices: {', '.join(sorted({str(d) for d in runs.get('device', pd.Series(dtype=str)).dropna()})) or '?'}")
    return lines


def _init_sentences(o: pd.DataFrame, s: pd.DataFrame, col: str, metric: str, base: pd.DataFrame) -> list[str]:
    """Compare each method's best cell with the untrained network under the same probe (eval.at_init)."""
    level = baseline_level(base, metric)
    if level is None:
        return []
    mean, ci = level
    parts = [f"The untrained network (random init, same probe) reaches {100 * mean:.1f}%"
             + (f" ± {100 * ci:.1f}" if np.isfinite(ci) else "") + "."]
    weak = []
    for _, r in o.iterrows():
        cells = s[s["method_label"] == r["method"]].set_index("batch_size")[f"{col}_ci95"]
        cell_ci = float(cells.get(r["best_batch_size"], np.nan))
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
    """One honest paragraph computed from the numbers (largest epoch budget, linear probe if available)."""
    ours = head[head["source"] == "ours"]
    metric = "linear" if (ours["metric"] == "linear").any() else "kNN"
    ours = ours[ours["metric"] == metric]
    parts = []
    if ours.empty:
        parts.append("No run finished with an accuracy, so there is nothing to compare yet.")
    else:
        e = int(ours["epochs"].max())
        o = ours[ours["epochs"] == e].sort_values(["max_rel_drop_pct", "method"])
        col = "linear_top1" if metric == "linear" else "knn_top1"
        s = summary[summary["epochs"] == e]
        worst, least = o.iloc[-1], o.iloc[0]
        if s[np.isfinite(s[f"{col}_mean"])]["batch_size"].nunique() < 2:
            parts.append(f"At {e} epochs only one batch size has finished runs, so no batch-size dependence can "
                         "be read yet.")
        parts.append(
            f"At {e} epochs ({metric} probe, batch sizes {worst['batch_sizes']}), {worst['method']} drops most from "
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
        if "vicreg" in by and any(m.startswith("vicreg_unbiased") for m in by):
            for m in sorted(x for x in by if x.startswith("vicreg_unbiased")):
                du, dv = by[m]["max_rel_drop_pct"], by["vicreg"]["max_rel_drop_pct"]
                # noise scale of each drop: the 95% CI half-widths of its best and worst cells, combined
                # in quadrature, relative to the best; the two drops' scales combine the same way
                scales = []
                for meth in (m, "vicreg"):
                    r = by[meth]
                    cells = s[s["method_label"] == meth].set_index("batch_size")[f"{col}_ci95"]
                    cis = [cells.get(r["best_batch_size"], np.nan), cells.get(r["worst_batch_size"], np.nan)]
                    scales.append(100 * 100 * math.hypot(*cis) / r["best_top1_pct"])
                tol = math.hypot(*scales)
                if np.isfinite(tol) and abs(du - dv) <= tol:
                    verdict = f"a difference within the seeds' 95% CI (about {tol:.1f}% relative), so not resolved"
                elif not np.isfinite(tol):
                    verdict = "with too few seeds for a CI, so not resolved"
                else:
                    verdict = "smaller: less batch-size dependence" if du < dv else "larger: more batch-size dependence"
                parts.append(f"{m}'s largest drop is {_pct(du)} against VICReg's {_pct(dv)}, {verdict}.")
        parts += _init_sentences(o, s, col, metric, base)
        nmin = int(s[f"{col}_n"].min()) if len(s) else 0
        if nmin < 3:
            parts.append(f"Some cells have only {nmin} finished seed(s), so their CIs are wide or undefined.")
    refs = head[head["source"] == "reference"]
    if len(refs):
        parts.append("For scale only (ImageNet, 100 epochs; another dataset and scale): the published "
                     "curves drop " + ", ".join(f"{r['method'].split(' (')[0]} {_pct(r['max_rel_drop_pct'])}"
                                                for _, r in refs.iterrows()) + " from their best batch size.")
    nd, nf = int((runs["status"] == "diverged").sum()), int((runs["status"] == "failed").sum())
    if nd or nf or n_missing:
        parts.append(f"{nd} diverged and {nf} failed run(s) are excluded from every mean (listed below); "
                     f"{n_missing} planned cell(s) have no result yet.")
    return " ".join(parts)


def build_report(study_dir: Path | str, out: Path | str | None = None, formats=FORMATS,
                 max_curve_cells: int = MAX_CURVE_CELLS, log=print) -> Path:
    """Write the report of ``results/<study>`` into ``out`` (default reports/<study>); return ``out``."""
    study = load_study(study_dir)
    out = Path(out) if out is not None else Path("reports") / study.name
    figdir, tabdir = out / "figures", out / "tables"
    tabdir.mkdir(parents=True, exist_ok=True)
    runs = study.runs
    st = runs["status"].value_counts()
    log(f"report: {study.name}: {len(runs)} runs ({st.get('done', 0)} done, {st.get('diverged', 0)} diverged, "
        f"{st.get('failed', 0)} failed), {len(study.missing)} missing of {len(study.plan)} planned")

    # ---- tables
    summary = summarize(runs)
    drop = relative_drop(summary)
    head = headline(drop)
    atomic_write_text(out / "runs.csv", to_csv(runs))
    atomic_write_text(out / "summary.csv", to_csv(summary))
    atomic_write_text(out / "relative_drop.csv", to_csv(drop))
    atomic_write_text(out / "headline.csv", to_csv(head))
    paper = {}
    for e in sorted(summary["epochs"].unique()):
        for metric, name in ACCURACY.items():
            if not np.isfinite(summary.loc[summary["epochs"] == e, f"{metric}_mean"]).any():
                continue
            t = paper_table(summary, metric, int(e))
            stem = f"top1_{name.lower()}_e{int(e)}"
            paper[stem] = (t, f"{name} top-1 (%), {int(e)} epochs, mean ± 95% CI over seeds ({study.name})")
            atomic_write_text(tabdir / f"{stem}.csv", to_csv(t))
            if "md" in formats:
                atomic_write_text(tabdir / f"{stem}.md", to_markdown(t))
            if "tex" in formats:
                atomic_write_text(tabdir / f"{stem}.tex", to_latex(t, paper[stem][1], f"tab:{study.name}:{stem}"))
    if "md" in formats:
        atomic_write_text(tabdir / "headline.md", to_markdown(head))
    if "tex" in formats:
        atomic_write_text(tabdir / "headline.tex", to_latex(head, f"Largest relative drop from the best batch size "
                                                            f"({study.name}; references: ImageNet)", f"tab:{study.name}:headline"))

    # ---- figures (rendered in parallel where there are cores: they are most of the time at 1,000 runs)
    figs: list[tuple[str, str]] = []
    jobs: list[tuple] = []
    base = init_baseline(runs)
    for metric, name in ACCURACY.items():
        if np.isfinite(summary[f"{metric}_mean"]).any():
            jobs.append((f"accuracy_{name.lower()}", "fig_accuracy", (summary, metric, True, base)))
            figs.append((f"accuracy_{name.lower()}", f"{name} top-1 vs batch size (mean and 95% CI band over seeds), "
                         "one panel per epoch budget" + ("; dotted: the untrained network with the same probe"
                                                         if baseline_level(base, name) else "")
                         + "; last panel: published ImageNet curves (another scale)"))
    hm = "linear_top1" if np.isfinite(summary["linear_top1_mean"]).any() else "knn_top1"
    jobs.append(("relative_drop", "fig_relative_drop", (drop, hm)))
    figs.append(("relative_drop", f"relative drop of {ACCURACY[hm]} top-1 from each method's best batch size: "
                 "ours (solid, largest epoch budget) vs published linear top-1 (dashed)"))
    jobs.append(("heatmap", "fig_heatmap", (summary, hm)))
    figs.append(("heatmap", f"mean {ACCURACY[hm]} top-1 (%) over batch size x epochs, per method"))
    jobs.append(("collapse", "fig_collapse", (summary,)))
    figs.append(("collapse", "collapse diagnostics vs batch size: effective rank and mean |off-diagonal corr|"))
    jobs.append(("training_curves", "fig_curves", (runs[["run_id", "status", "method_label", "batch_size", "epochs"]],
                                                   study.curves, max_curve_cells)))
    if study.bias is not None:
        jobs.append(("gradient_bias", "fig_bias", (study.bias,)))
    rendering = F.start_render(jobs, figdir)  # drawn by workers while this process writes the rest
    try:
        return _write_documents(study, out, formats, summary, head, paper, figs, rendering, max_curve_cells, log,
                                base)
    except BaseException:
        rendering.abort()  # never leave workers behind
        raise


def _write_documents(study: Study, out: Path, formats, summary: pd.DataFrame, head: pd.DataFrame, paper: dict,
                     figs: list, rendering: "F.Rendering", max_curve_cells: int, log,
                     base: pd.DataFrame) -> Path:
    """report.md, report.html and provenance.json (waits for the figures before embedding them)."""
    runs = study.runs
    if len(base):
        atomic_write_text(out / "init_baseline.csv", to_csv(base))
    figcount = rendering.count
    shown, total = F.fig_curves_counts(runs, study.curves, max_curve_cells)
    figs.append(("training_curves", f"training loss vs epoch, one line per cell (mean over finished seeds); "
                 f"{shown} of {total} cells drawn"))
    bias_dropped = F.bias_dropped(study.bias) if study.bias is not None else 0

    # ---- document
    prov = provenance(study)
    commit = prov["git_commit"] or "unknown"
    year = prov["date"][:4]
    doc: list = [H(1, f"bsstudy report: {study.name}"),
                 H(2, "Question"),
                 P("How does the quality of self-supervised representations (linear-probe and kNN top-1) depend on "
                   "the batch size, and on the epoch budget, for SimCLR, VICReg and unbiased VICReg? Does the "
                   "unbiased objective remove VICReg's batch-size dependence? The headline number is each "
                   "method's relative drop from its best batch size."),
                 H(2, "Setup"), Ul(_setup(study)),
                 P(f"Sweep hash (sha256 of plan.csv): `{study.plan_hash}`; bsstudy {__version__}, commit `{commit}`"
                   + (" (with uncommitted changes)" if prov["git_dirty"] else "") + "."),
                 H(2, "Headline: relative drop from the best batch size"), Table(head),
                 H(2, "Reading"), P(reading(summary, head, runs, len(study.missing), base)),
                 H(2, "Tables")]
    doc.append(P("Cells: mean ± 95% Student-t CI half-width over seeds, in percent; only runs with status done are "
                 "averaged (a cell with no finished run shows why). CSV, Markdown and LaTeX (booktabs) copies are in "
                 "`tables/`; every run is in `runs.csv`, per-cell statistics (also collapse metrics) in `summary.csv`."))
    for stem, (t, cap) in paper.items():
        doc += [H(3, cap), Table(t)]
    if len(base):
        btab = base.assign(top1=[ci_cell(m, c, n) for m, c, n in zip(base["mean"], base["ci95"], base["n_seeds"])])
        btab = btab[["backbone", "metric", "top1", "n_seeds"]]
        doc += [H(3, "Baseline: the untrained network"),
                P("The same probe on the network each run starts from (`eval.at_init`), before any pretraining: "
                  "the level a method has to beat for its representation to be worth anything. It depends on "
                  "the seed and the model only, so each seed counts once; top-1 (%), mean ± 95% CI."),
                Table(btab)]
    doc.append(H(3, "Published references (another dataset and scale)"))
    ref_rows = []
    for r in REFERENCES:
        ref_rows.append({"method": r.label, **{str(b): f"{a:.1f}" for b, a in zip(r.batch_sizes, r.top1)}})
    ref_b = sorted({b for r in REFERENCES for b in r.batch_sizes})
    doc.append(Table(pd.DataFrame(ref_rows, columns=["method"] + [str(b) for b in ref_b]).fillna("")))
    doc.append(Ul([f"{r.label}: {r.source}" + (f"; note: {r.note}" if r.note else "") for r in REFERENCES]))
    doc.append(H(2, "Figures"))
    for name, cap in figs:
        doc.append(Img(f"figures/{name}.png", cap))
    if total > shown:
        doc.append(P(f"The training-curve figure draws {shown} of {total} cells (at most {max_curve_cells}, "
                     "the smallest epoch budgets and batch sizes of each method first) to keep the report fast; "
                     "every run's metrics.jsonl is in its run directory."))
    if study.bias is not None:
        val, lo, hi = F.bias_columns(study.bias)
        b = study.bias.assign(series=F.bias_label(study.bias))
        tab = b.pivot_table(index="series", columns="batch_size", values=val, aggfunc="first").sort_index()
        tab = tab.map(lambda v: f"{v:.3g}" if np.isfinite(v) else "—").reset_index()
        tab.columns = [str(c) for c in tab.columns]
        doc += [H(2, "Gradient bias (bsstudy bias)"),
                P("Relative bias of the minibatch gradient against the full-pool gradient, per objective and "
                  "variance scheme, from `bias/bias.csv`."), Table(tab),
                Img("figures/gradient_bias.png", "relative gradient bias vs batch size (log-log), CI bands")]
        if bias_dropped:
            doc.append(P(f"{bias_dropped} non-positive bias estimate(s) (bias below the noise floor) cannot be "
                         "drawn on the log axis and are left off the figure; they are in the table."))
    bad = runs[runs["status"] != "done"]
    doc.append(H(2, "Failed and diverged runs"))
    if len(bad):
        doc.append(P(f"{len(bad)} run(s) did not finish normally. They are counted in summary.csv (n_diverged, "
                     "n_failed) and excluded from all means and CIs."))
        cols = [c for c in ("run_id", "status", "method_label", "batch_size", "epochs", "seed", "diverged_at_epoch",
                            "error_line") if c in bad.columns]
        shown_bad = bad[cols].astype(object).where(bad[cols].notna(), "")
        doc.append(Table(shown_bad.rename(columns={"method_label": "method", "error_line": "error"})))
    else:
        doc.append(P("None."))
    doc.append(H(2, "Missing cells"))
    if len(study.missing):
        cols = [c for c in ("run_id", "method", "batch_size", "epochs", "seed") if c in study.missing.columns]
        doc += [P(f"{len(study.missing)} planned cell(s) have no result.json yet (pending, running or lost; "
                  f"see `bsstudy status`)."), Table(study.missing[cols])]
    else:
        doc.append(P("None: every planned cell has a result."))
    doc += [H(2, "How to cite"),
            P("Cite the toolkit (see CITATION.cff) and this report's identity (study, sweep hash, commit):"),
            Pre(f"@software{{bsstudy,\n  title   = {{bsstudy: batch-size studies of self-supervised learning}},\n"
                f"  author  = {{{{bsstudy developers}}}},\n  version = {{{__version__}}},\n  year    = {{{year}}},\n"
                f"  note    = {{git commit {commit}}}\n}}\n\n"
                f"@misc{{bsstudy_report_{study.name},\n  title  = {{bsstudy report: {study.name}}},\n"
                f"  author = {{{{bsstudy developers}}}},\n  year   = {{{year}}},\n"
                f"  note   = {{study {study.name}, sweep hash {study.plan_hash[:16]}, bsstudy {__version__} "
                f"commit {commit[:12]}}}\n}}"),
            P("Provenance (versions, hardware, date, each run's config hash) is in provenance.json.")]

    atomic_write_json(out / "provenance.json", prov)
    if "md" in formats:
        atomic_write_text(out / "report.md", to_md(doc))
    rendering.wait()
    log(f"report: wrote tables and {figcount} figures")
    if "html" in formats:
        atomic_write_text(out / "report.html", to_html(doc, f"bsstudy report: {study.name}", out))
    log(f"report: wrote {out}/" + ", ".join(f"report.{f}" for f in formats if f != "tex") + ", provenance.json")
    return out
