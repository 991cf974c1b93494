"""Assemble the report of one study: tables, figures, report.md/html, provenance.json.

The figures are :func:`figures.report_figures`' list, the "Reading" paragraph is :mod:`.reading`'s;
this module computes the tables, writes the files and lays out the document."""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from ..layout import PLAN_COLUMNS, PLAN_EXTRA_COLUMNS, Status, StudyPaths
from ..provenance import environment, git_state
from ..registry import split_label
from . import analysis as A
from . import figures as F
from .load import Study, load_study, read_config
from .reading import reading
from .references import REFERENCES
from .render import H, Img, P, Pre, Table, Ul, to_html, to_md
from .tables import (ACCURACY, ci_cell, headline, init_baseline, paper_table, relative_drop, summarize_cells, to_csv,
                     to_latex, to_markdown)

FORMATS = ("md", "html", "tex")
MAX_CURVE_CELLS = 36  # training-curve figure: cells drawn at most (the report says when more exist)


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
    runs = study.runs
    env = environment()  # versions, python, hardware
    env["hardware"]["run_devices"] = sorted({str(d) for d in runs.get("device", pd.Series(dtype=str)).dropna()})
    return {
        "study": study.name, "study_dir": str(study.root), "sweep_hash": study.plan_hash,
        "git_commit": commit, "git_dirty": dirty, **env,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "runs": {r: (h if isinstance(h, str) else None)
                 for r, h in zip(runs["run_id"], runs.get("config_hash", pd.Series([None] * len(runs))))},
    }


# plan.csv columns written by `bsstudy plan` that the setup section reads (config key in brackets)
_SETUP = (("dataset", "dataset", ("dataset", "name")), ("backbone", "backbone", ("model", "name")),
          ("batch sizes", "batch_size", ("batch_size",)), ("epochs", "epochs", ("epochs",)),
          ("seeds", "seed", ("seed",)))
_STANDARD = set(PLAN_COLUMNS) | set(PLAN_EXTRA_COLUMNS)  # every other plan.csv column is a swept key


def _sorted_vals(values) -> str:
    out = {v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    out = {int(v) if isinstance(v, float) and v.is_integer() else v for v in out}
    return ", ".join(str(v) for v in sorted(out, key=lambda v: (isinstance(v, str), v))) or "?"


def _setup(study: Study) -> list[str]:
    """Bullet lines describing the sweep: from plan.csv (the planner writes each cell's resolved dataset,
    backbone, optimizer and LR rule there); from the runs' config.yaml where plan.csv lacks a column."""
    plan, runs = study.plan, study.runs
    paths = StudyPaths(study.root)
    fallback: dict = {}

    def configs() -> list[dict]:  # whole configs, read only when plan.csv lacks a column
        if not fallback:
            cfg_files = [paths.run(r).config for r in plan["run_id"]]
            fallback["cfgs"] = [read_config(f) for f in cfg_files if f.is_file()]
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
    labels |= planned - {split_label(lb)[0] for lb in labels}  # planned methods without any result yet
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


def build_report(study_dir: Path | str, out: Path | str | None = None, formats=FORMATS,
                 max_curve_cells: int = MAX_CURVE_CELLS, log=print) -> Path:
    """Write the report of ``results/<study>`` into ``out`` (default reports/<study>); return ``out``."""
    study = load_study(study_dir)
    out = Path(out) if out is not None else Path("reports") / study.name
    figdir, tabdir = out / "figures", out / "tables"
    tabdir.mkdir(parents=True, exist_ok=True)
    runs = study.runs
    st = runs["status"].value_counts()
    log(f"report: {study.name}: {len(runs)} runs ({st.get(Status.DONE, 0)} done, {st.get(Status.DIVERGED, 0)} "
        f"diverged, {st.get(Status.FAILED, 0)} failed), {len(study.missing)} missing of {len(study.plan)} planned")

    # ---- tables
    summary = summarize_cells(runs)
    drop = relative_drop(summary)
    head = headline(drop)
    atomic_write_text(out / "runs.csv", to_csv(runs))
    atomic_write_text(out / "summary.csv", to_csv(summary))
    atomic_write_text(out / "relative_drop.csv", to_csv(drop))
    atomic_write_text(out / "headline.csv", to_csv(head))
    paper = {}
    for e in sorted(summary["epochs"].unique()):
        for column, label in ACCURACY.items():
            if not np.isfinite(summary.loc[summary["epochs"] == e, f"{column}_mean"]).any():
                continue
            t = paper_table(summary, column, int(e))
            stem = f"top1_{label.lower()}_e{int(e)}"
            paper[stem] = (t, f"{label} top-1 (%), {int(e)} epochs, mean ± 95% CI over seeds ({study.name})")
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

    stat = _analysis(study, out, formats)

    # ---- figures (rendered in parallel where there are cores: they are most of the time at 1,000 runs)
    base = init_baseline(runs)
    figs = F.report_figures(summary, drop, base, runs, study.curves, study.bias, max_curve_cells, stat)
    rendering = F.start_render(figs, figdir)  # drawn by workers while this process writes the rest
    try:
        return _write_documents(study, out, formats, summary, head, paper, figs, rendering, log, base, stat)
    except BaseException:
        rendering.abort()  # never leave workers behind
        raise


def _analysis(study: Study, out: Path, formats) -> "A.Analysis":
    """The seed-blocked statistics (bsstudy.report.analysis) with the sweep file's ``report:`` settings,
    written next to the other tables."""
    sweep = StudyPaths(study.root).sweep
    stat = A.compute(study.runs, A.read_settings(sweep), str(sweep))
    A.write_tables(stat, out, formats)
    return stat


def _figure_blocks(figs: list["F.FigureSpec"], section: str) -> list:
    """The figures of one report section, then their notes (what a figure leaves out)."""
    mine = [f for f in figs if f.section == section]
    return [Img(f"figures/{f.name}.png", f.caption) for f in mine] + [P(f.note) for f in mine if f.note]


def _write_documents(study: Study, out: Path, formats, summary: pd.DataFrame, head: pd.DataFrame, paper: dict,
                     figs: list["F.FigureSpec"], rendering: "F.Rendering", log, base: pd.DataFrame,
                     stat: "A.Analysis") -> Path:
    """report.md, report.html and provenance.json (waits for the figures before embedding them)."""
    runs = study.runs
    if len(base):
        atomic_write_text(out / "init_baseline.csv", to_csv(base))
    figcount = rendering.count

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
                 H(2, "Reading"), P(reading(summary, head, runs, len(study.missing), base, stat)),
                 *A.sections(stat),
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
    doc += _figure_blocks(figs, "figures")
    if study.bias is not None:
        val, lo, hi = F.bias_columns(study.bias)
        b = study.bias.assign(series=F.bias_label(study.bias))
        tab = b.pivot_table(index="series", columns="batch_size", values=val, aggfunc="first").sort_index()
        tab = tab.map(lambda v: f"{v:.3g}" if np.isfinite(v) else "—").reset_index()
        tab.columns = [str(c) for c in tab.columns]
        doc += [H(2, "Gradient bias (bsstudy bias)"),
                P("Relative bias of the minibatch gradient against the full-pool gradient, per objective and "
                  "variance scheme, from `bias/bias.csv`."), Table(tab),
                *_figure_blocks(figs, "bias")]
    bad = runs[runs["status"] != Status.DONE]
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
