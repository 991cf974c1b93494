"""Assemble the report of one study: tables, figures, report.md/html, provenance.json.

The figures are :func:`figures.report_figures`' list, the "Reading" paragraph is :mod:`.reading`'s;
this module computes the tables, writes the files and lays out the document."""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import shutil
import tempfile
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
from .load import SKIPPED_RUN, Study, load_study
from .reading import question, reading
from .references import BIBTEX, REFERENCES
from .render import H, Img, P, Pre, Table, Ul, embed_images, html_parts, to_md
from .tables import (ACCURACY, ci_cell, epochs_text, headline, init_baseline, paper_table, relative_drop, summarize_cells, to_csv,
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


def run_code(runs: pd.DataFrame) -> dict:
    """Which code the runs were produced with, from their result.json: {"commits": {commit: runs},
    "unknown": runs recording no commit, "dirty": runs made from a tree with uncommitted changes (None
    when no result.json records it)}."""
    commits = runs["git_commit"] if "git_commit" in runs.columns else pd.Series([None] * len(runs), dtype=object)
    known = commits[commits.map(lambda c: isinstance(c, str) and c.strip() != "")]
    dirty = None
    if "git_dirty" in runs.columns:
        dirty = int(runs["git_dirty"].map(lambda d: d is True or d == 1).sum())
    return {"commits": {str(c): int(n) for c, n in sorted(known.value_counts().items())},
            "unknown": int(len(runs) - len(known)), "dirty": dirty}


def run_code_sentence(code: dict) -> str:
    """What the Setup says about the code behind the runs (several commits, a dirty tree, none recorded)."""
    commits, parts = code["commits"], []
    if len(commits) == 1:
        (c, n), = commits.items()
        parts.append(f"All {n} runs with a result were produced with bsstudy commit `{c[:12]}`"
                     + (" (the others record none)." if code["unknown"] else "."))
    elif commits:
        parts.append(f"The runs span {len(commits)} commits: "
                     + ", ".join(f"`{c[:12]}` ({n} run{'s' if n != 1 else ''})" for c, n in commits.items())
                     + "; results of different code may not be comparable.")
    if code["unknown"]:
        parts.append(f"{code['unknown']} run(s) record no commit (made outside a git checkout).")
    if code["dirty"]:
        parts.append(f"{code['dirty']} run(s) were made from a tree with uncommitted changes: their commit does not "
                     "fully identify their code.")
    elif code["dirty"] is None and commits:
        parts.append("result.json does not record whether the tree had uncommitted changes.")
    return " ".join(parts)


_BIB_KEY = re.compile(r"[^A-Za-z0-9_:.-]")


def study_bibtex(study: Study, code: dict, year: str) -> str:
    """The study's own BibTeX entry: author and title from the sweep's ``report:`` block (a placeholder
    that says where to set them otherwise), the sweep hash and the commits the runs were produced with."""
    meta = study.meta
    author = meta.get("author", "AUTHOR (set report.author in the sweep file)")
    title = meta.get("title", f"TITLE (set report.title in the sweep file; study {study.name})")
    commits = ", ".join(c[:12] for c in code["commits"]) or "unknown"
    key = "bsstudy_report_" + _BIB_KEY.sub("_", study.name)
    s = "s" if len(code["commits"]) > 1 else ""
    return (f"@misc{{{key},\n  title  = {{{title}}},\n  author = {{{author}}},\n"
            f"  year   = {{{meta.get('year', year)}}},\n"
            f"  note   = {{bsstudy study {study.name}, sweep hash {study.plan_hash[:16]}, runs made with bsstudy "
            f"commit{s} {commits}}}\n}}")


def provenance(study: Study, reproducible: bool = False) -> dict:
    """Who/what/where made this report: git state of the checkout that rendered it (``git_commit``,
    ``git_dirty``), the commits the runs were produced with (``run_code``), versions, hardware, date, and
    each run's config hash.

    ``reproducible``: a pure function of the runs (and the library versions): the date is the last run's
    ``finished_at``, and the rendering checkout's git state and machine are left out (None), so the same
    committed runs give the same bytes on any commit and machine (``bsstudy report --reproducible``)."""
    commit, dirty = (None, None) if reproducible else git_state()
    runs = study.runs
    env = environment()  # versions, python, hardware
    if reproducible:
        env["hardware"] = {}
    env["hardware"]["run_devices"] = sorted({str(d) for d in runs.get("device", pd.Series(dtype=str)).dropna()})
    finished = runs.get("finished_at", pd.Series(dtype=object)).dropna().astype(str)
    date = (max(finished) if reproducible and len(finished) else
            _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    return {
        "study": study.name, "study_dir": str(study.root), "sweep_hash": study.plan_hash,
        "git_commit": commit, "git_dirty": dirty, "run_code": run_code(runs), **env,
        "date": date,
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


# how each method.lr_scaling rule (bsstudy.config.effective_lr) derives the LR at global batch size B
_LR_RULE = {"linear": "lr = base x B/256", "sqrt": "lr = base x sqrt(B/256)", "none": "the same lr at every B",
            "table": "lr per B from method.lr_table"}


def _get(cfg: dict, path: tuple[str, ...]):
    for p in path:
        cfg = cfg.get(p) if isinstance(cfg, dict) else None
    return cfg


def _val(v) -> str:
    """A config value as the Setup prints it: mappings as ``k=v, ...``, lists as ``[a, b]``."""
    if isinstance(v, dict):
        return ", ".join(f"{k}={_val(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6:
        return str(int(v)) if v != 0 else "0"
    return "null" if v is None else str(v)


def _distinct(cfgs: list[dict], path: tuple[str, ...], fmt=_val) -> str:
    """The distinct values of config key ``path`` over ``cfgs``, " | "-separated (one when all agree)."""
    vals = list(dict.fromkeys(fmt(_get(c, path)) for c in cfgs))
    return " | ".join(sorted(vals)) if vals else "?"


def _augment(block) -> str:
    """The two views' augmentation settings (said once when they are the same)."""
    if not isinstance(block, dict):
        return _val(block)
    v1, v2 = block.get("view1"), block.get("view2")
    if v1 is not None and v1 == v2 and set(block) == {"view1", "view2"}:
        return f"both views: {_val(v1)}"
    return "; ".join(f"{k}: {_val(x)}" for k, x in block.items())


def _model(block) -> str:
    if not isinstance(block, dict):
        return _val(block)
    rest = {k: v for k, v in block.items() if k != "name"}
    return f"{block.get('name')}" + (f" ({_val(rest)})" if rest else "")


def _setup(study: Study) -> list[str]:
    """Bullet lines describing the sweep: everything a reader needs to reproduce a cell. The swept keys
    come from plan.csv (the planner writes each cell's resolved dataset, backbone, optimizer and LR rule
    there), the fixed settings from the runs' config.yaml blocks (``load.SETUP_BLOCKS``), per method
    where a method may differ (projector, loss, learning-rate rule)."""
    plan, runs = study.plan, study.runs
    cfgs = [study.configs[r] for r in runs["run_id"] if r in study.configs]
    by_label: dict[str, list[dict]] = {}
    for r, lb in zip(runs["run_id"], runs["method_label"]):
        if r in study.configs:
            by_label.setdefault(lb, []).append(study.configs[r])

    def per_method(path, fmt=_val) -> str:
        return "; ".join(f"{lb}: {_distinct(c, path, fmt)}" for lb, c in sorted(by_label.items())) or "?"

    lines = []
    for label, col, path in _SETUP:
        vals = plan[col].tolist() if col in plan.columns else [_get(c, path) for c in cfgs]
        lines.append(f"{label}: {_sorted_vals(vals)}")
    labels = set(runs["method_label"])
    planned = {str(m) for m in plan["method"]} if "method" in plan.columns else set()
    labels |= planned - {split_label(lb)[0] for lb in labels}  # planned methods without any result yet
    lines.insert(2, f"methods: {', '.join(sorted(labels))}")
    lines.insert(2, "pretraining images (dataset.train_subset): "
                 + _distinct(cfgs, ("dataset", "train_subset"), lambda v: "all" if v is None else _val(v))
                 + f"; image size {_distinct(cfgs, ('dataset', 'image_size'))}")
    lines.insert(4, f"model: {_distinct(cfgs, ('model',), _model)}")
    lines.append(f"projector (method.projector): {per_method(('method', 'projector'))}")
    lines.append(f"loss (method.loss): {per_method(('method', 'loss'))}")
    if {"method", "base_lr", "lr_scaling", "optim"} <= set(plan.columns):
        rules = plan[["method", "base_lr", "lr_scaling", "optim"]].drop_duplicates().itertuples(index=False)
    else:
        rules = {(c["method"].get("name"), c["method"].get("base_lr"), c["method"].get("lr_scaling"),
                  (c.get("optim") or {}).get("name")) for c in cfgs if isinstance(c.get("method"), dict)}
    by_method: dict = {}
    for m, base, scaling, optim in rules:
        by_method.setdefault(str(m), set()).add(f"base lr {_val(base)} at B=256, {scaling} scaling "
                                                f"({_LR_RULE.get(str(scaling), '?')}), optimizer {optim}")
    lines.append("learning-rate rule: "
                 + "; ".join(f"{k}: {' / '.join(sorted(v))}" for k, v in sorted(by_method.items())))
    lines.append(f"optimizer (optim): {_distinct(cfgs, ('optim',), _model)}")
    lines.append(f"augmentation (dataset.augment): {_distinct(cfgs, ('dataset', 'augment'), _augment)}")
    lines.append(f"probe and kNN (eval): {_distinct(cfgs, ('eval',))}")
    other = [c for c in plan.columns if c not in _STANDARD]
    if other:
        lines.append("also swept: " + "; ".join(f"{c} = {_sorted_vals(plan[c].tolist())}" for c in other))
    lines.append(f"cells planned: {len(plan)}; with result.json: {len(runs)}"
                 + (f" ({int((~runs['in_plan']).sum())} not in plan.csv, reported anyway)" if (~runs["in_plan"]).any() else ""))
    lines.append(f"devices: {', '.join(sorted({str(d) for d in runs.get('device', pd.Series(dtype=str)).dropna()})) or '?'}")
    if len(cfgs) < len(runs):
        lines.append(f"{len(runs) - len(cfgs)} run(s) have no config.yaml: the settings above are those of the others")
    return lines


def build_report(study_dir: Path | str, out: Path | str | None = None, formats=FORMATS,
                 max_curve_cells: int = MAX_CURVE_CELLS, log=print, reproducible: bool = False) -> Path:
    """Write the report of ``results/<study>`` into ``out`` (default reports/<study>); return ``out``.
    ``reproducible``: the output depends only on the runs (see :func:`provenance`).

    The report is written as one unit: into a temporary folder next to ``out``, which replaces ``out``
    only once every file is complete. A failure part-way (a full disk, a bad figure) leaves the previous
    report as it was and no temporary folder behind."""
    study = load_study(study_dir)
    out = Path(out) if out is not None else Path("reports") / study.name
    dest = out.resolve()  # `--out .` names the folder by its real name
    _check_out(out, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        _build_into(study, tmp, formats, max_curve_cells, log, reproducible)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"report: wrote {out}/" + ", ".join(f"report.{f}" for f in formats if f != "tex") + ", provenance.json")
    return out


# A folder holding any of these is an earlier report, which a new one may replace as a whole.
_REPORT_MARKERS = ("provenance.json", "report.md", "report.html", "summary.csv", "runs.csv")


def _check_out(out: Path, dest: Path) -> None:
    """UserError unless ``dest`` (``out`` resolved) is absent, an empty folder or an earlier report: the
    report replaces the whole folder, so it must never be one holding anything else (``--out .``, ~)."""
    if dest == dest.parent:
        raise UserError(f"--out {out}: give the report a folder of its own (e.g. reports/<study>)")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if any(dest.iterdir()) and not any((dest / m).exists() for m in _REPORT_MARKERS):
        raise UserError(f"--out {out}: folder exists and is not a bsstudy report (the report replaces the whole "
                        "folder); choose an empty or new folder")


def _replace_dir(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out``: the old ``out`` is moved aside first and deleted only after the
    rename succeeded (restored if it failed), so ``out`` is always one whole report."""
    os.chmod(new, 0o777 & ~_umask())  # mkdtemp makes 0700; a report folder is shared like any other
    if not out.exists():
        os.rename(new, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rmdir(old)  # only its unique name is wanted
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _build_into(study: Study, out: Path, formats, max_curve_cells: int, log, reproducible: bool = False) -> None:
    """Every file of the report, written into the (empty, temporary) folder ``out``."""
    figdir, tabdir = out / "figures", out / "tables"
    tabdir.mkdir(parents=True, exist_ok=True)
    runs = study.runs
    st = runs["status"].value_counts()
    n_out = sum(u.effect == SKIPPED_RUN for u in study.unreadable)
    log(f"report: {study.name}: {len(runs)} runs ({st.get(Status.DONE, 0)} done, {st.get(Status.DIVERGED, 0)} "
        f"diverged, {st.get(Status.FAILED, 0)} failed), {len(study.missing)} missing of {len(study.plan)} planned"
        + (f", {n_out} unreadable (left out)" if n_out else ""))

    # ---- what the figures need first, so that the workers start before this process writes anything
    summary = summarize_cells(runs)
    drop = relative_drop(summary)
    stat = _analysis(study)
    base = init_baseline(runs)
    figs = F.report_figures(summary, drop, base, runs, study.curves, study.bias, max_curve_cells, stat)
    rendering = F.start_render(figs, figdir)  # drawn by workers while this process writes the rest
    try:
        head = headline(drop)
        paper = _write_tables(study, out, formats, summary, drop, head, stat)
        _write_documents(study, out, formats, summary, head, figs, rendering, log, base, stat, paper, reproducible)
    except BaseException:
        rendering.abort()  # never leave workers behind
        raise


def _write_tables(study: Study, out: Path, formats, summary: pd.DataFrame, drop: pd.DataFrame, head: pd.DataFrame,
                  stat: "A.Analysis") -> dict:
    """runs.csv, summary.csv, the relative drops, the paper-layout tables and the seed-blocked tables;
    returns the paper tables ({stem: (table, caption)}) for the document."""
    runs, tabdir = study.runs, out / "tables"
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
            paper[stem] = (t, f"{label} top-1 (%), {epochs_text(e)}, mean ± 95% CI over seeds ({study.name})")
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
    A.write_tables(stat, out, formats)
    return paper


def _analysis(study: Study) -> "A.Analysis":
    """The seed-blocked statistics (bsstudy.report.analysis) with the sweep file's ``report:`` settings."""
    sweep = StudyPaths(study.root).sweep
    return A.compute(study.runs, A.read_settings(sweep), str(sweep), planned=set(study.plan["method"].astype(str)))


def _figure_blocks(figs: list["F.FigureSpec"], section: str) -> list:
    """The figures of one report section, then their notes (what a figure leaves out)."""
    mine = [f for f in figs if f.section == section]
    return [Img(f"figures/{f.name}.png", f.caption) for f in mine] + [P(f.note) for f in mine if f.note]


def _write_documents(study: Study, out: Path, formats, summary: pd.DataFrame, head: pd.DataFrame,
                     figs: list["F.FigureSpec"], rendering: "F.Rendering", log, base: pd.DataFrame,
                     stat: "A.Analysis", paper: dict, reproducible: bool = False) -> None:
    """report.md, report.html and provenance.json (waits for the figures before embedding them)."""
    runs = study.runs
    if len(base):
        atomic_write_text(out / "init_baseline.csv", to_csv(base))
    figcount = rendering.count

    # ---- document
    prov = provenance(study, reproducible)
    code = prov["run_code"]
    year = prov["date"][:4]
    doc: list = [H(1, f"bsstudy report: {study.name}"),
                 H(2, "Question"),
                 P(question(runs["method_label"].unique())),
                 H(2, "Setup"), Ul(_setup(study)),
                 P(f"Sweep hash (sha256 of plan.csv): `{study.plan_hash}`. " + run_code_sentence(code)),
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
    for r in REFERENCES:  # by nominal batch size: the slide's misprinted 4092 goes in the 4096 column (note below)
        ref_rows.append({"method": r.label, **{str(b): f"{a:.1f}" for b, a in zip(r.columns, r.top1)}})
    ref_b = sorted({b for r in REFERENCES for b in r.columns})
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
    doc.append(H(2, "Runs not included (unreadable files)"))
    if study.unreadable:
        n_out = sum(u.effect == SKIPPED_RUN for u in study.unreadable)
        doc.append(P(f"{n_out} run(s) are left out of every table and figure because a file could not be read or "
                     "lacks a required field; a run whose metrics.jsonl is unreadable counts, without its "
                     "training curve. Fix or remove the file and report again."))
        doc.append(Table(pd.DataFrame([{"run_id": u.run_id, "file": Path(u.file).name, "problem": u.problem,
                                        "effect": u.effect} for u in study.unreadable])))
    else:
        doc.append(P("None: every result.json, config.yaml and metrics.jsonl was read."))
    doc.append(H(2, "Missing cells"))
    if len(study.missing):
        cols = [c for c in ("run_id", "method", "batch_size", "epochs", "seed") if c in study.missing.columns]
        doc += [P(f"{len(study.missing)} planned cell(s) have no result.json yet (pending, running or lost; "
                  f"see `bsstudy status`)."), Table(study.missing[cols])]
    else:
        doc.append(P("None: every planned cell has a result."))
    toolkit = (f"@software{{bsstudy,\n  title   = {{bsstudy: batch-size studies of self-supervised learning}},\n"
               f"  author  = {{{{bsstudy developers}}}},\n  version = {{{__version__}}},\n  year    = {{{year}}}\n}}")
    doc += [H(2, "How to cite"),
            P("Cite this study (its author and title come from the sweep file's `report: {author: ..., title: ...}`"
              + (")" if {"author", "title"} <= set(study.meta) else "; set them there and report again)")
              + ", the toolkit (see CITATION.cff), and the methods and sources the report compares with:"),
            Pre(study_bibtex(study, code, year) + "\n\n" + toolkit + "\n\n" + "\n\n".join(BIBTEX.values())),
            P("Provenance (versions, hardware, date, each run's config hash and commit) is in provenance.json.")]

    atomic_write_json(out / "provenance.json", prov)
    if "md" in formats:
        atomic_write_text(out / "report.md", to_md(doc))
    parts = html_parts(doc, f"bsstudy report: {study.name}") if "html" in formats else None  # before the wait
    rendering.wait()
    log(f"report: wrote tables and {figcount} figures")
    if parts is not None:
        atomic_write_text(out / "report.html", embed_images(parts, out))
