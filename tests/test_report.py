"""bsstudy report: tables equal hand-computed statistics, failures are listed, figures have one series per
method, tables are byte-stable, errors are one line. All on study directories written here."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bsstudy.cli import main
from bsstudy.errors import UserError
from bsstudy.report import figures as F
from bsstudy.report.build import build_report, parse_formats
from bsstudy.report.load import load_study
from bsstudy.report.references import REFERENCES, relative_drops
from bsstudy.report.synthetic import write_study
from bsstudy.report.tables import headline, paper_table, relative_drop, summarize_cells

METHODS = ("simclr", "vicreg", "vicreg_unbiased")
DIVERGED = ("simclr", 1024, 5, 1)
FAILED = ("vicreg", 64, 2, 0)
MISSING = ("vicreg_unbiased", 256, 5, 2)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("res") / "results" / "toy"
    syn = write_study(root, METHODS, (64, 256, 1024), (2, 5), (0, 1, 2), diverged=[DIVERGED], failed=[FAILED],
                      missing=[MISSING])
    bias = pd.DataFrame([dict(objective=o, scheme=s, label=f"{o}/{s}" if s else o, batch_size=b,
                              rel_bias=c / b, rel_bias_ci_low=0.8 * c / b, rel_bias_ci_high=1.2 * c / b, cosine=0.9,
                              extra_column=1)
                         for o, s, c in (("vicreg", "", 4.0), ("vicreg_unbiased", "jackknife", 0.5))
                         for b in (16, 64, 256)])
    (root / "bias").mkdir()
    bias.to_csv(root / "bias" / "bias.csv", index=False)
    return root, syn


@pytest.fixture(scope="module")
def report(study, tmp_path_factory):
    root, _ = study
    out = tmp_path_factory.mktemp("rep") / "toy"
    build_report(root, out, log=lambda *a: None)
    return out


def _hand(values):
    v = np.asarray(values, dtype=float)
    n = len(v)
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n)
    return v.mean(), v.std(ddof=1), n, half


@pytest.mark.slow  # its fixture writes the module's report (seconds of matplotlib)
def test_summary_equals_hand_computed_means_and_t_cis(study, report):
    root, _ = study
    results = [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/result.json"))]
    summary = pd.read_csv(report / "summary.csv")
    checked = 0
    for m in METHODS:
        for b in (64, 256, 1024):
            for e in (2, 5):
                done = [r for r in results if (r["method"], r["batch_size"], r["epochs"]) == (m, b, e)
                        and r["status"] == "done"]
                row = summary[(summary.method_label == m) & (summary.batch_size == b) & (summary.epochs == e)]
                assert len(row) == 1
                row = row.iloc[0]
                for metric in ("linear_top1", "knn_top1"):
                    mean, std, n, half = _hand([r[metric] for r in done])
                    assert row[f"{metric}_n"] == n
                    assert row[f"{metric}_mean"] == pytest.approx(mean, rel=1e-5)
                    assert row[f"{metric}_std"] == pytest.approx(std, rel=1e-5)
                    assert row[f"{metric}_ci95"] == pytest.approx(half, rel=1e-5)
                    table = pd.read_csv(report / "tables" / f"top1_{'linear' if metric == 'linear_top1' else 'knn'}_e{e}.csv")
                    cell = table.set_index("method").loc[m, str(b)]
                    assert cell == f"{100 * mean:.1f} ± {100 * half:.1f}"
                    checked += 1
                er = _hand([r["collapse"]["effective_rank"] for r in done])
                assert row["collapse.effective_rank_mean"] == pytest.approx(er[0], rel=1e-5)
    assert checked == 36
    # the diverged, failed and missing cells have 2 finished seeds, not 3
    for m, b, e, _ in (DIVERGED, FAILED, MISSING):
        row = summary[(summary.method_label == m) & (summary.batch_size == b) & (summary.epochs == e)].iloc[0]
        assert row["linear_top1_n"] == 2


def test_diverged_and_failed_runs_are_listed_not_averaged(study, report):
    _, syn = study
    md = (report / "report.md").read_text()
    section = md.split("## Failed and diverged runs")[1].split("## Missing cells")[0]
    div_id, fail_id, miss_id = syn.run_ids[DIVERGED], syn.run_ids[FAILED], syn.run_ids[MISSING]
    div_line = next(ln for ln in section.splitlines() if div_id in ln)
    fail_line = next(ln for ln in section.splitlines() if fail_id in ln)
    assert "| diverged |" in div_line and "loss is nan at epoch" in div_line
    assert "| failed |" in fail_line and "RuntimeError: injected failure" in fail_line
    assert "excluded from all means" in section
    assert miss_id in md.split("## Missing cells")[1]
    runs = pd.read_csv(report / "runs.csv")
    assert set(runs.status) == {"done", "diverged", "failed"}
    assert len(runs) == 3 * 3 * 2 * 3 - 1
    assert "collapse.effective_rank" in runs.columns and "versions.torch" in runs.columns
    summary = pd.read_csv(report / "summary.csv")
    assert summary.n_diverged.sum() == 1 and summary.n_failed.sum() == 1
    assert "1 diverged and 1 failed run(s) are excluded" in md


def test_headline_relative_drop_and_references(report):
    head = pd.read_csv(report / "headline.csv")
    drop = pd.read_csv(report / "relative_drop.csv")
    ours = drop[(drop.source == "ours") & (drop.metric == "linear_top1") & (drop.epochs == 5)]
    for m, g in ours.groupby("method"):
        best = g.top1_pct.max()
        assert g.rel_drop_pct.to_numpy() == pytest.approx(100 * (best - g.top1_pct.to_numpy()) / best, abs=1e-3)
        h = head[(head.source == "ours") & (head.method == m) & (head.epochs == 5) & (head.metric == "linear")].iloc[0]
        assert h.max_rel_drop_pct == pytest.approx(g.rel_drop_pct.max(), abs=0.006)
    simclr_ref = head[head.method.str.startswith("SimCLR (ref")].iloc[0]
    assert simclr_ref.max_rel_drop_pct == pytest.approx(100 * (64.6 - 57.5) / 64.6, abs=0.006)
    assert relative_drops(REFERENCES[2])[0] == 256  # SimSiam: 68.1 at 256 and 512, ties go to the smaller B
    md = (report / "report.md").read_text()
    assert "4092" in md and "almost certainly 4096" in md and "another dataset and scale" in md


def test_figures_have_one_series_per_method(study):
    root, _ = study
    st = load_study(root)
    summary = summarize_cells(st.runs)
    fig = F.fig_accuracy(summary, "linear_top1")
    ours = [ax for ax in fig.axes if ax.get_title().startswith("ours")]
    assert len(ours) == 2  # one facet per epoch budget
    for ax in ours:
        labels = sorted(ln.get_label() for ln in ax.get_lines())
        assert labels == sorted(METHODS)
        assert len(ax.collections) == 3  # one CI band per method
    ref_ax = fig.axes[-1]
    assert len(ref_ax.get_lines()) == len(REFERENCES)
    fig = F.fig_collapse(summary)
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert sorted(ln.get_label() for ln in ax.get_lines()) == sorted(METHODS)
    fig = F.fig_heatmap(summary)
    assert sorted(ax.get_label() for ax in fig.axes if ax.images) == sorted(METHODS)
    fig = F.fig_relative_drop(relative_drop(summary))
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert sum(lb.endswith("(ours, 5 ep)") for lb in labels) == 3 and len(labels) == 3 + len(REFERENCES)
    fig, shown, total = F.fig_curves(st.runs, st.curves, max_cells=6)
    assert (shown, total) == (6, 18)
    assert [ax.get_title() for ax in fig.axes] == sorted(METHODS)
    fig, dropped = F.fig_bias(st.bias)
    assert sorted(ln.get_label() for ln in fig.axes[0].get_lines()) == ["vicreg", "vicreg_unbiased/jackknife"]
    assert dropped == 0 and fig.axes[0].get_yscale() == "log"


@pytest.mark.slow
def test_tables_are_byte_identical_on_a_second_run(study, report, tmp_path, monkeypatch):
    root, _ = study
    again = tmp_path / "again"
    monkeypatch.setenv("BSSTUDY_REPORT_JOBS", "1")  # serial figures this time: same files as the workers'

    build_report(root, again, log=lambda *a: None)
    names = sorted(p.relative_to(report) for p in report.rglob("*") if p.suffix in (".csv", ".md", ".tex"))
    assert len(names) >= 15
    from bsstudy.report.analysis import OUTPUTS
    assert {Path(n) for n in OUTPUTS} <= set(names)  # the seed-blocked tables (bootstrap included)
    for name in names:
        if name.name == "report.md":  # carries the git state, which other commits may change meanwhile
            continue
        assert (again / name).read_bytes() == (report / name).read_bytes(), name
    for fig in ("accuracy_linear.png", "heatmap.pdf"):
        assert (again / "figures" / fig).read_bytes() == (report / "figures" / fig).read_bytes(), fig


def test_report_contents_setup_bias_citation_provenance(study, report):
    root, syn = study
    md = (report / "report.md").read_text()
    for section in ("## Question", "## Setup", "## Tables", "## Figures", "## Failed and diverged runs",
                    "## Missing cells", "## Reading", "## How to cite", "## Gradient bias"):
        assert section in md
    assert "dataset: fashion_mnist" in md and "batch sizes: 64, 256, 1024" in md and "seeds: 0, 1, 2" in md
    assert "linear scaling" in md
    for name in ("accuracy_linear", "accuracy_knn", "relative_drop", "heatmap", "collapse", "training_curves",
                 "gradient_bias"):
        assert f"(figures/{name}.png)" in md
        assert (report / "figures" / f"{name}.png").stat().st_size > 1000
        assert (report / "figures" / f"{name}.pdf").stat().st_size > 1000
    import hashlib
    sweep = hashlib.sha256((root / "plan.csv").read_bytes()).hexdigest()
    assert sweep in md and "@software{bsstudy" in md and "@misc{bsstudy_report_toy" in md
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["sweep_hash"] == sweep and "pandas" in prov["versions"] and prov["date"]
    assert prov["runs"] == {rid: r["config_hash"] for rid, r in syn.results.items()}
    tex = (report / "tables" / "top1_linear_e5.tex").read_text()
    assert r"\toprule" in tex and r"vicreg\_unbiased" in tex and r"$\pm$" in tex
    # the reading paragraph is computed from the numbers: simclr's optimum is at B=1024 in this synthetic
    # study, so its within-seed slope is positive and resolved, and its max drop the largest
    reading = md.split("## Reading")[1].split("##")[0]
    assert "Resolved: simclr gains accuracy as B grows." in reading and "largest for simclr" in reading


def test_paper_table_marks_cells_without_finished_runs(study):
    root, _ = study
    runs = load_study(root).runs.copy()
    runs.loc[(runs.method == "vicreg") & (runs.batch_size == 64) & (runs.epochs == 2), "status"] = "failed"
    t = paper_table(summarize_cells(runs), "linear_top1", 2)
    assert t.set_index("method").loc["vicreg", "64"] == "failed"
    one = runs[(runs.seed == 0) | (runs.method != "simclr")]
    t = paper_table(summarize_cells(one), "linear_top1", 5)
    assert t.set_index("method").loc["simclr", "64"].endswith("(n=1)")
    assert len(headline(relative_drop(summarize_cells(runs)))) > 0


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such study directory" in err
    root = tmp_path / "results" / "empty"
    write_study(root, ("vicreg",), (64,), (1,), (0,), missing=[("vicreg", 64, 1, 0)])
    with pytest.raises(UserError, match="no runs have finished yet"):
        build_report(root, tmp_path / "out", log=lambda *a: None)
    with pytest.raises(UserError, match="unknown format pdf"):
        parse_formats("md,pdf")
    assert main(["report", str(root), "--format", "xml"]) == 2
    (tmp_path / "noplan").mkdir()
    assert main(["report", str(tmp_path / "noplan")]) == 2
    assert "no plan.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_formats_and_default_out(tmp_path, monkeypatch):
    root = tmp_path / "results" / "toy"
    write_study(root, ("vicreg",), (64, 128), (1,), (0, 1))
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(root), "--format", "md"]) == 0
    out = tmp_path / "reports" / "toy"
    assert (out / "report.md").exists() and not (out / "report.html").exists()
    assert not list((out / "tables").glob("*.tex")) and (out / "summary.csv").exists()


def test_variants_get_their_own_label_and_reading_says_when_a_method_does_badly(tmp_path):
    from bsstudy.report.reading import reading

    def acc(method, b, e, seed):
        return (0.5 if method == "simclr" else 0.85) + 0.001 * seed, 0.8

    root = tmp_path / "results" / "var"
    syn = write_study(root, ("simclr", "vicreg", "vicreg_unbiased"), (64, 256), (1,), (0, 1), accuracy=acc)
    for (m, b, e, s), rid in syn.run_ids.items():
        if m == "vicreg_unbiased" and s == 1:  # the same cells with another variance scheme
            p = root / "runs" / rid / "config.yaml"
            p.write_text(p.read_text().replace("variance: jackknife", "variance: c4"))
    st = load_study(root)
    assert sorted(st.runs.method_label.unique()) == ["simclr", "vicreg", "vicreg_unbiased[c4,identity]",
                                                     "vicreg_unbiased[jackknife,identity]"]
    assert "collapse" not in st.runs.columns and "collapse.effective_rank" in st.runs.columns
    summary = summarize_cells(st.runs)
    text = reading(summary, headline(relative_drop(summary)), st.runs, 0)
    assert "does badly" not in text  # no verdict from unpaired cell means
    assert "vicreg_unbiased[c4,identity] against VICReg: the difference of their batch-size slopes" in text


def test_untrained_baseline_table_and_reading(tmp_path):
    """eval.at_init results: one value per seed (not per run) in the baseline, hand-computed t-CI; the
    reading names the method that does not beat the untrained network."""
    from bsstudy.report.reading import reading
    from bsstudy.report.tables import init_baseline

    def acc(method, b, e, seed):
        return (0.80 if method == "simclr" else 0.90) + 0.002 * seed, 0.8

    init = {0: (0.79, 0.75), 1: (0.81, 0.77), 2: (0.80, 0.76)}
    root = tmp_path / "results" / "init"
    write_study(root, ("simclr", "vicreg"), (64, 256), (1,), (0, 1, 2), accuracy=acc,
                init_accuracy=lambda seed: init[seed])
    st = load_study(root)
    base = init_baseline(st.runs)
    lin = base[base.metric == "linear"].iloc[0]
    mean, _, _, ci = _hand([0.79, 0.81, 0.80])      # three seeds, though 12 runs carry the values
    assert lin["n_seeds"] == 3 and lin["mean"] == pytest.approx(mean) and lin["ci95"] == pytest.approx(ci)
    summary = summarize_cells(st.runs)
    text = reading(summary, headline(relative_drop(summary)), st.runs, 0, base)
    assert "untrained network (random init, same probe) reaches 80.0% ± 2.5" in text
    assert "simclr is not distinguishable from the untrained network" in text
    fig = F.fig_accuracy(summary, "linear_top1", True, base)
    ax = next(a for a in fig.axes if a.get_title().startswith("ours"))
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "untrained network")
    assert line.get_ydata()[0] == pytest.approx(100 * mean)
    out = build_report(root, tmp_path / "rep", formats=("md",), log=lambda *_: None)
    md = (out / "report.md").read_text()
    assert "Baseline: the untrained network" in md and (out / "init_baseline.csv").exists()
    # without at_init results there is no baseline section
    write_study(tmp_path / "results" / "plain", ("vicreg",), (64,), (1,), (0, 1))
    assert init_baseline(load_study(tmp_path / "results" / "plain").runs).empty


def test_reading_pairs_each_unbiased_method_with_its_plugin_from_the_registry(study, monkeypatch):
    """Which methods the reading compares comes from MethodSpec.unbiased_of, not from their names: a new
    registry entry gets the comparison, and a method the registry does not pair gets none."""
    from bsstudy.registry import METHODS, MethodSpec
    from bsstudy.report.reading import reading, unbiased_pairs

    assert unbiased_pairs(["simclr", "vicreg", "vicreg_unbiased[jackknife,identity]", "vicreg_unbiased[c4,identity]"]) \
        == [("vicreg_unbiased[c4,identity]", "vicreg"), ("vicreg_unbiased[jackknife,identity]", "vicreg")]
    assert unbiased_pairs(["simclr", "vicreg_unbiased"]) == []  # no plug-in counterpart in the study
    root, _ = study
    st = load_study(root)
    summary = summarize_cells(st.runs)
    text = reading(summary, headline(relative_drop(summary)), st.runs, 0)
    assert "vicreg_unbiased against VICReg: the difference of their batch-size slopes is" in text
    renamed_runs = st.runs.replace({"method_label": {"vicreg_unbiased": "toy_unbiased"}})
    renamed = summary.replace({"method_label": {"vicreg_unbiased": "toy_unbiased"}})
    head = headline(relative_drop(renamed))
    assert "batch-size slopes" not in reading(renamed, head, renamed_runs, 0)  # toy_unbiased: not in the registry
    monkeypatch.setitem(METHODS, "toy_unbiased", MethodSpec("toy_unbiased", family="contrastive",
                                                            unbiased_of="simclr"))
    text = reading(renamed, head, renamed_runs, 0)
    from bsstudy.report.analysis import est_ci
    from bsstudy.report.stats import method_contrasts
    mc = method_contrasts(renamed_runs)
    r = mc[(mc.contrast == "slope_difference") & (mc.epochs == 5) & (mc.metric == "linear_top1")].iloc[0]
    assert (r.method_a, r.method_b) == ("toy_unbiased", "simclr")
    assert (f"toy_unbiased against SimCLR: the difference of their batch-size slopes is "
            f"{est_ci(r.estimate, r.ci_low, r.ci_high)} points per doubling") in text
    assert "against VICReg" not in text


def test_report_shows_exactly_the_figure_list(study, report):
    """report_figures is the one list: report.md shows its figures in its order with its captions, and the
    figures folder holds one PNG and one PDF per entry; each entry's function is a module-level figure."""
    import re

    from bsstudy.report.tables import init_baseline

    root, _ = study
    st = load_study(root)
    summary = summarize_cells(st.runs)
    from bsstudy.report.analysis import compute

    specs = F.report_figures(summary, relative_drop(summary), init_baseline(st.runs), st.runs, st.curves, st.bias, 36,
                             compute(st.runs))
    names = [s.name for s in specs]
    assert len(set(names)) == len(names) == 8 and names[-1] == "gradient_bias" and "sensitivity_forest" in names
    assert all(getattr(F, s.draw.__name__) is s.draw for s in specs)
    shown = re.findall(r"!\[([^\]]*)\]\(figures/([^)]+)\.png\)", (report / "report.md").read_text())
    assert shown == [(s.caption, s.name) for s in specs]
    assert sorted(p.name for p in (report / "figures").iterdir()) == sorted(f"{n}.{x}" for n in names
                                                                            for x in ("png", "pdf"))
    few = F.report_figures(summary, relative_drop(summary), init_baseline(st.runs), st.runs, st.curves, None, 6)
    curves = next(s for s in few if s.name == "training_curves")
    assert "6 of 18 cells drawn" in curves.caption and "draws 6 of 18 cells (at most 6," in curves.note
    assert "gradient_bias" not in [s.name for s in few] and not any(s.note for s in specs)


def test_provenance_versions_come_from_package_metadata(report):
    """provenance.json's versions and hardware are bsstudy.provenance's, read without importing torch."""
    import subprocess
    import sys

    import pandas

    from bsstudy.provenance import REPORT_PACKAGES, host, package_versions

    versions = package_versions()
    assert set(versions) <= set(REPORT_PACKAGES) and versions["pandas"] == pandas.__version__
    prov = json.loads((report / "provenance.json").read_text())
    assert prov["versions"] == versions
    assert {k: v for k, v in prov["hardware"].items() if k != "run_devices"} == host()
    code = "import sys; from bsstudy.provenance import environment; environment(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small study (2 methods x 2 batch sizes x 2 seeds) for the tests that build several reports."""
    root = tmp_path_factory.mktemp("small") / "results" / "small"
    write_study(root, ("simclr", "vicreg"), (64, 256), (1,), (0, 1))
    return root


@pytest.mark.slow
def test_report_is_written_as_one_unit_and_a_failure_keeps_the_previous_one(small, tmp_path, monkeypatch):
    from bsstudy.report import build as B

    out = tmp_path / "reports" / "small"
    build_report(small, out, log=lambda *a: None)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("report.md") in before and Path("report.html") in before

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(B, "embed_images", full_disk)  # fails after report.md and the tables were written
    with pytest.raises(OSError, match="No space left"):
        build_report(small, out, log=lambda *a: None)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the previous report, whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["small"]  # no temporary folder left
    monkeypatch.undo()
    build_report(small, out, ("md",), log=lambda *a: None)  # a new report replaces the old one as a whole
    assert (out / "report.md").exists() and not (out / "report.html").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["small"]


def test_report_never_replaces_a_folder_that_is_not_a_report(small, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a bsstudy report"):
        build_report(small, keep, log=lambda *a: None)
    assert (keep / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.slow
def test_unreadable_runs_are_skipped_with_one_named_warning_each(tmp_path, monkeypatch, capsys):
    root = tmp_path / "results" / "hurt"
    syn = write_study(root, ("simclr", "vicreg"), (64, 256), (1,), (0, 1, 2, 3))
    rid = {cell: r for cell, r in syn.run_ids.items()}
    cells = sorted(rid)
    run = {c: root / "runs" / rid[c] for c in cells}
    broken = {  # cell -> (file, what is written into it)
        cells[0]: ("result.json", b'{"status": "done", "method": "\xff\xfe"}'),
        cells[1]: ("result.json", b"[]"),
        cells[2]: ("result.json", b"null"),
        cells[3]: ("result.json", b'{"status": "done"}'),
        cells[4]: ("config.yaml", b"method:\n  name: \xff\n"),
        cells[5]: ("metrics.jsonl", b'{"epoch": 1, "loss": \xff}\n'),
    }
    for c, (name, data) in broken.items():
        (run[c] / name).write_bytes(data)
    locked = run[cells[6]]
    real_read_text = Path.read_text

    def read_text(self, *a, **k):  # tests run as root: chmod 000 would not stop them
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    out = tmp_path / "rep"
    assert main(["report", str(root), "--out", str(out), "--format", "md"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(err) == 7 and all(ln.startswith("report: warning: ") for ln in err)
    assert "Traceback" not in "\n".join(err)
    for c, (name, _) in broken.items():
        assert sum(str(run[c] / name) in ln for ln in err) == 1
    assert sum(str(locked / "result.json") in ln and "Permission" in ln for ln in err) == 1
    assert sum("training curve left out" in ln for ln in err) == 1
    assert any("missing field(s) method, batch_size, epochs, seed" in ln for ln in err)
    runs = pd.read_csv(out / "runs.csv")
    left_out = {rid[c] for c in list(broken)[:5]} | {rid[cells[6]]}
    assert set(runs["run_id"]) == set(syn.run_ids.values()) - left_out  # the other 10 still count
    summary = pd.read_csv(out / "summary.csv")
    assert summary["runs_total"].sum() == 16 - 6
    md = (out / "report.md").read_text()
    section = md.split("## Runs not included (unreadable files)")[1].split("\n## ")[0]
    assert all(r in section for r in left_out | {rid[cells[5]]})
    assert not any(r in md.split("## Missing cells")[1].split("\n## ")[0] for r in left_out)


@pytest.mark.slow
def test_citation_names_the_runs_commits_the_users_entry_and_the_methods(tmp_path):
    root = tmp_path / "results" / "cite"
    syn = write_study(root, ("simclr", "vicreg"), (64, 256), (1,), (0, 1))
    rids = sorted(syn.results)
    for i, rid in enumerate(rids):  # two commits; one run from a dirty tree
        p = root / "runs" / rid / "result.json"
        r = json.loads(p.read_text())
        r["git_commit"] = ("a" if i < 5 else "b") * 40
        r["git_dirty"] = i == 0
        p.write_text(json.dumps(r))
    sweep = root / "sweep.yaml"
    text = sweep.read_text() if sweep.exists() else "study: cite\n"
    sweep.write_text(text + "report:\n  author: [Ada Lovelace, Alan Turing]\n  title: Batch size and SSL\n")
    out = tmp_path / "rep"
    build_report(root, out, ("md", "html"), log=lambda *a: None)
    md = (out / "report.md").read_text()
    setup = md.split("## Setup")[1].split("\n## ")[0]
    assert f"The runs span 2 commits: `{'a' * 12}` (5 runs), `{'b' * 12}` (3 runs)" in setup
    assert "1 run(s) were made from a tree with uncommitted changes" in setup
    from bsstudy.provenance import git_state
    head = git_state()[0]
    assert head is None or head[:12] not in md  # the checkout rendering the report is not what made the runs
    cite = md.split("## How to cite")[1]
    assert "author = {Ada Lovelace and Alan Turing}" in cite and "title  = {Batch size and SSL}" in cite
    assert f"commits {'a' * 12}, {'b' * 12}" in cite
    for key in ("chen2020simclr", "bardes2022vicreg", "chen2021simsiam", "bezyazichniy2024unbiased"):
        assert f"{{{key}," in cite
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["run_code"] == {"commits": {"a" * 40: 5, "b" * 40: 3}, "unknown": 0, "dirty": 1}
    for f in [out / "report.md", out / "report.html", *out.rglob("*.csv"), *out.rglob("*.tex")]:
        assert "seed 0" not in f.read_text().lower(), f  # sources are named, never by the project's seed numbers


def test_study_entry_without_report_block_is_a_clear_placeholder(small):
    from bsstudy.report.build import run_code, study_bibtex

    study = load_study(small, warn=lambda u: None)
    entry = study_bibtex(study, run_code(study.runs), "2025")
    assert "AUTHOR (set report.author in the sweep file)" in entry and "TITLE (set report.title" in entry
    (small / "sweep.yaml").write_text("study: small\nreport: {author: X, colour: red}\n")
    try:
        with pytest.raises(UserError, match=r"report\.colour: unknown key"):
            load_study(small, warn=lambda u: None)
    finally:
        (small / "sweep.yaml").unlink()


def test_setup_lists_what_reproducing_a_cell_needs_from_the_configs(tmp_path):
    from bsstudy.layout import yaml_dump, yaml_load
    from bsstudy.report.build import _setup

    root = tmp_path / "results" / "setup"
    write_study(root, ("simclr", "vicreg"), (64, 256), (1,), (0,))
    for p in (root / "runs").glob("*/config.yaml"):  # the demo's settings, written as the planner would
        cfg = yaml_load(p.read_text())
        cfg["dataset"]["train_subset"] = 4096
        cfg["model"]["width"] = 8
        cfg["eval"]["max_train_samples"] = 2000
        cfg["eval"]["probe_max_iter"] = 100
        if cfg["method"]["name"] == "simclr":
            cfg["method"]["projector"]["out_dim"] = 64
        p.write_text(yaml_dump(cfg))
    lines = _setup(load_study(root, warn=lambda u: None))
    text = "\n".join(lines)
    assert "pretraining images (dataset.train_subset): 4096; image size 28" in lines
    model = next(ln for ln in lines if ln.startswith("model: "))
    assert model.startswith("model: small_cnn (") and "width=8" in model and "feature_dim=256" in model
    proj = next(ln for ln in lines if ln.startswith("projector (method.projector): "))
    simclr, vicreg = proj.split(": ", 1)[1].split("; ")
    assert simclr.startswith("simclr: ") and {"hidden_dim=2048", "out_dim=64"} <= set(simclr[8:].split(", "))
    assert vicreg.startswith("vicreg: ") and {"hidden_dim=2048", "out_dim=2048"} <= set(vicreg[8:].split(", "))
    assert "max_train_samples=2000" in text and "probe_max_iter=100" in text
    assert "probe_weight_decays=[0, 1e-05, 0.0001, 0.001, 0.01, 0.1]" in text
    aug = next(ln for ln in lines if ln.startswith("augmentation (dataset.augment): both views: "))
    assert "crop_scale=[0.3, 1]" in aug and "crop_ratio=[0.75, 1.3333]" in aug and "hflip_p=0.5" in aug
    lr = next(ln for ln in lines if ln.startswith("learning-rate rule: "))
    assert "vicreg: base lr 0.2 at B=256, linear scaling (lr = base x B/256), optimizer lars" in lr
    assert "simclr: base lr" in lr
    opt = next(ln for ln in lines if ln.startswith("optimizer (optim): lars ("))
    assert "weight_decay=1e-06" in opt and "momentum=0.9" in opt
    loss = next(ln for ln in lines if ln.startswith("loss (method.loss): "))
    assert "temperature=0.5" in loss and "inv_coeff=25" in loss and "var_coeff=25" in loss


def test_reference_curves_have_one_style_in_every_figure_and_titles_fit(study):
    root, _ = study
    summary = summarize_cells(load_study(root, warn=lambda u: None).runs)
    acc, rel = F.fig_accuracy(summary, "linear_top1"), F.fig_relative_drop(relative_drop(summary))

    def styles(fig):
        return {ln.get_label(): (ln.get_color(), ln.get_marker()) for ax in fig.axes for ln in ax.get_lines()
                if "(ref:" in ln.get_label()}

    assert styles(acc) == styles(rel) and len(styles(acc)) == len(REFERENCES)
    for fig in (acc, rel, F.fig_collapse(summary)):
        fig.canvas.draw()
        box = fig.bbox
        for ax in fig.axes:
            t = ax.title.get_window_extent()
            assert ax.get_title() and box.x0 <= t.x0 and t.x1 <= box.x1 and t.y1 <= box.y1, ax.get_title()


def test_question_names_only_the_methods_run_and_one_epoch_is_singular(small):
    from bsstudy.report.reading import question, reading

    q = question(["simclr", "vicreg"])
    assert "for SimCLR and VICReg?" in q and "unbiased" not in q
    q = question(["simclr", "vicreg", "vicreg_unbiased[c4]"])
    assert "SimCLR, VICReg and unbiased VICReg?" in q and "Does unbiased VICReg remove VICReg's" in q
    runs = load_study(small, warn=lambda u: None).runs  # 1 epoch
    summary = summarize_cells(runs)
    text = reading(summary, headline(relative_drop(summary)), runs, 0)
    assert "At 1 epoch (" in text and "1 epochs" not in text


@pytest.mark.slow
def test_reference_table_has_one_4096_column(small, tmp_path):
    out = tmp_path / "rep"
    build_report(small, out, ("md",), log=lambda *a: None)
    md = (out / "report.md").read_text()
    refs = md.split("### Published references")[1].split("\n### ")[0].split("\n## ")[0]
    header = next(ln for ln in refs.splitlines() if ln.startswith("| method"))
    assert header.split(" | ")[-1].strip(" |") == "4096" and "4092" not in header
    assert "prints batch size 4092, almost certainly 4096" in refs
    simclr = next(ln for ln in refs.splitlines() if ln.startswith("| SimCLR"))
    assert simclr.rstrip(" |").endswith("64.6")  # its 4092 value sits in the 4096 column
    assert "## Question" in md and "unbiased" not in md.split("## Question")[1].split("\n## ")[0]
    assert "1 epochs" not in md


def test_make_demo_writes_only_ignored_paths_and_demo_publish_the_committed_report():
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    if shutil.which("make") is None or shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("needs make and a git checkout")

    def dry(target: str) -> str:
        res = subprocess.run(["make", "-n", target], cwd=repo, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    demo = dry("demo")
    written = re.findall(r"--out (\S+)", demo) + re.findall(r"bsstudy submit (\S+)", demo)
    assert "reports/demo-local" in written and "results/demo" in written
    for path in written:  # every folder the demo writes is ignored by git: it never dirties the checkout
        ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", f"{path}/report.md"])
        assert ignored.returncode == 0, f"{path} is not ignored by git"
    assert re.search(r"bsstudy report results/demo --out reports/demo\n", dry("demo-publish"))
# ------------------------------------------------------------------ seed-blocked statistics in the report

ISSUE_SENSITIVITY = ["method", "epochs", "metric", "slope_pts_per_doubling", "ci_low", "ci_high", "p_value",
                     "n_seeds", "batch_sizes"]


@pytest.mark.slow
def test_report_writes_the_seed_blocked_tables_sections_and_reading_from_them(study, report):
    """sensitivity/contrasts/method_contrasts/relative_drop_ci/power.csv are stats' tables of the runs; the
    report has one section each; the reading quotes the slopes and the pair test with their intervals."""
    from bsstudy.report import stats as S
    from bsstudy.report.analysis import OUTPUTS, est_ci
    from bsstudy.report.tables import to_csv

    root, _ = study
    runs = load_study(root).runs
    expected = dict(zip(OUTPUTS, (S.sensitivity(runs), S.contrasts(runs), S.method_contrasts(runs),
                                  S.relative_drop_ci(runs), S.power_table(runs))))
    for name, df in expected.items():
        assert (report / name).read_text() == to_csv(df), name
    sens = pd.read_csv(report / "sensitivity.csv")
    assert list(sens.columns[:len(ISSUE_SENSITIVITY)]) == ISSUE_SENSITIVITY
    mc = pd.read_csv(report / "method_contrasts.csv")
    assert set(zip(mc.method_a, mc.method_b)) == {("vicreg_unbiased", "vicreg")}
    assert set(pd.read_csv(report / "contrasts.csv", dtype={"reference": str})["reference"]) == {"1024"}  # the largest B by default
    md = (report / "report.md").read_text()
    order = [md.index(h) for h in ("## Reading", "## Batch-size sensitivity", "## Δ points vs B_ref",
                                   "## Method comparison", "## Relative drop with its interval", "## Power",
                                   "## Tables")]
    assert order == sorted(order)
    assert "## Against the untrained network" not in md  # no eval.at_init results in this study
    reading = md.split("## Reading")[1].split("##")[0]
    full = expected["sensitivity.csv"]
    for _, r in full[(full.epochs == 5) & (full.metric == "linear_top1")].iterrows():
        assert f"{r.method} {est_ci(r.slope_pts_per_doubling, r.ci_low, r.ci_high)}" in reading
    pair = expected["method_contrasts.csv"]
    r = pair[(pair.contrast == "slope_difference") & (pair.epochs == 5) & (pair.metric == "linear_top1")].iloc[0]
    assert f"batch-size slopes is {est_ci(r.estimate, r.ci_low, r.ci_high)} points per doubling" in reading
    assert "within the seeds' 95% CI" not in reading  # the old hypot verdict is gone
    power = expected["power.csv"]
    mde = power[(power.metric == "linear_top1") & (power.quantity == "slope")].mde_pts.iloc[0]
    assert f"detects slopes of ±{mde:.2f} points per doubling" in reading


def _settings_study(tmp_path, block: str):
    root = tmp_path / "results" / "cfg"
    write_study(root, ("simclr", "vicreg", "vicreg_unbiased"), (64, 256), (1,), (0, 1, 2),
                init_accuracy=lambda seed: (0.70 + 0.01 * seed, 0.65))
    (root / "sweep.yaml").write_text("study: cfg\ngrid: {batch_size: [64, 256]}\n" + block)
    return root


def test_sweep_report_settings_reference_and_compare(tmp_path):
    """report: {reference_batch_size, compare} in results/<study>/sweep.yaml set B_ref and the compared
    pairs; the citation keys next to them are not this reader's; a wrong value is a one-line UserError."""
    from bsstudy.report.analysis import Settings, compute, read_settings

    root = _settings_study(tmp_path, "report:\n  author: A. Person\n  reference_batch_size: 64\n"
                                     "  compare: [[simclr, vicreg]]\n")
    settings = read_settings(root / "sweep.yaml")
    assert settings == Settings(64, (("simclr", "vicreg"),))
    a = compute(load_study(root).runs, settings)
    ref = a.contrasts[a.contrasts.contrast == "vs_reference"]
    assert set(ref.reference) == {"64"} and set(ref.batch_size) == {256}
    assert set(zip(a.method_contrasts.method_a, a.method_contrasts.method_b)) == {("simclr", "vicreg")}
    un = a.contrasts[(a.contrasts.contrast == "vs_untrained") & (a.contrasts.batch_size == -1)]
    assert len(un) == 6 and (un.ci_low > 0).all()  # 1 epoch budget x 3 methods x 2 probes, all above init
    assert read_settings(tmp_path / "nowhere.yaml") == Settings()
    for block, key in (("report: [1]\n", "report:"), ("report: {reference_batch_size: big}\n",
                                                       "report.reference_batch_size"),
                       ("report: {compare: [[simclr]]}\n", "report.compare")):
        (root / "sweep.yaml").write_text("study: cfg\n" + block)
        with pytest.raises(UserError, match=key):
            read_settings(root / "sweep.yaml")
    with pytest.raises(UserError, match=r"sweep.yaml: report.reference_batch_size: 100 is not a batch size"):
        compute(load_study(root).runs, Settings(100), str(root / "sweep.yaml"))
    with pytest.raises(UserError, match="report.compare: byol did not run"):
        compute(load_study(root).runs, Settings(None, (("byol", "vicreg"),)))


@pytest.mark.slow
def test_report_honours_the_sweep_settings_and_shows_the_untrained_contrast(tmp_path, capsys):
    root = _settings_study(tmp_path, "report: {reference_batch_size: 64}\n")
    assert main(["report", str(root), "--out", str(tmp_path / "rep"), "--format", "md"]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "B_ref = 64 (sweep file `report.reference_batch_size`)" in md
    assert "## Against the untrained network" in md and "beat it: the pretraining pays off" in md
    con = pd.read_csv(tmp_path / "rep" / "contrasts.csv", dtype={"reference": str})
    assert set(con[con.contrast == "vs_reference"].reference) == {"64"} and "untrained" in set(con.reference)
    (root / "sweep.yaml").write_text("study: cfg\nreport: {compare: [[simclr, byol]]}\n")
    assert main(["report", str(root), "--out", str(tmp_path / "rep2")]) == 2
    assert "report.compare: byol did not run" in capsys.readouterr().err
    assert not (tmp_path / "rep2" / "report.md").exists()


def test_accuracy_figure_draws_each_seed_and_the_fit_and_the_forest_plot(study):
    """With the analysis, each (method, seed) is a thin line and each method's fit a labelled line whose
    slope is sensitivity's; the forest plot has one row per method x epochs and one per pair."""
    from bsstudy.report.analysis import compute
    from bsstudy.report.stats import long_table

    root, _ = study
    st = load_study(root)
    summary = summarize_cells(st.runs)
    a = compute(st.runs)
    long = long_table(st.runs)
    fig = F.fig_accuracy(summary, "linear_top1", True, None, long, a.sensitivity)
    for ax in [ax for ax in fig.axes if ax.get_title().startswith("ours")]:
        e = int(ax.get_title().split(", ")[1].split()[0])
        cells = long[(long.epochs == e) & (long.metric == "linear_top1")]
        seeds = {c.get_label(): c for c in ax.collections}  # no unpaired bands: only the seed lines
        assert sorted(seeds) == sorted(f"_seeds {m}" for m in set(cells.method))
        for m, c in seeds.items():
            mine = cells[cells.method == m[len("_seeds "):]].sort_values(["seed", "batch_size"])
            assert len(c.get_segments()) == mine.seed.nunique()
            assert np.concatenate(c.get_segments())[:, 1] == pytest.approx(mine.y.to_numpy())
        sens = a.sensitivity[(a.sensitivity.epochs == e) & (a.sensitivity.metric == "linear_top1")]
        fits = sorted(ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_"))
        assert fits == sorted(f"{r.method} ({r.slope_pts_per_doubling:+.2f} pts/doubling)" for _, r in sens.iterrows())
        line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("simclr ("))
        x, y = np.log2(line.get_xdata()), line.get_ydata()
        slope = sens.set_index("method").loc["simclr", "slope_pts_per_doubling"]
        assert (y[-1] - y[0]) / (x[-1] - x[0]) == pytest.approx(slope)
    assert len(fig.axes[-1].get_lines()) == len(REFERENCES)  # the published curves keep their panel
    fig = F.fig_forest(a.sensitivity, a.method_contrasts, "linear_top1")
    rows = a.sensitivity[a.sensitivity.metric == "linear_top1"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == \
        [f"{m}, {e} ep" for m, e in rows.sort_values(["epochs", "method"])[["method", "epochs"]].itertuples(index=False)]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == \
        ["vicreg_unbiased − vicreg, 2 ep", "vicreg_unbiased − vicreg, 5 ep"]
    fig = F.fig_forest(a.sensitivity, a.method_contrasts.iloc[0:0], "linear_top1")
    assert len(fig.axes) == 1


def test_sweep_file_report_block_is_accepted_and_kept_for_the_report(tmp_path):
    """The sweep file's `report:` block passes `bsstudy plan`'s schema unchanged (also as a command-line
    override) into results/<study>/sweep.yaml, where the report reads its settings; a non-mapping is a
    one-line UserError naming report."""
    import yaml

    from bsstudy.layout import yaml_dump
    from bsstudy.report.analysis import Settings, read_settings
    from bsstudy.sweep.spec import load_sweep

    data = {"study": "s", "grid": {"batch_size": [64, 256]},
            "report": {"reference_batch_size": 256, "compare": [["vicreg_unbiased", "vicreg"]], "title": "T"}}
    src = tmp_path / "s.yaml"
    src.write_text(yaml.safe_dump(data))
    sweep = load_sweep(src, ["report.reference_batch_size=64"])
    kept = tmp_path / "sweep.yaml"
    kept.write_text(yaml_dump(sweep.to_dict()))  # what `bsstudy plan` stores
    assert read_settings(kept) == Settings(64, (("vicreg_unbiased", "vicreg"),))
    assert yaml.safe_load(kept.read_text())["report"]["title"] == "T"
    assert "report" not in load_sweep(write_sweep(tmp_path, {"study": "s"})).to_dict()
    with pytest.raises(UserError, match="report: must be a mapping"):
        load_sweep(write_sweep(tmp_path, {"study": "s", "report": 3}))


def write_sweep(tmp: Path, data: dict) -> Path:
    import yaml

    p = tmp / "other.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_reproducible_report_is_a_function_of_the_runs_only(small, tmp_path, monkeypatch):
    """`report --reproducible` (committed reports next to their runs): every byte the same from another
    commit and another machine; the date is the last run's, no rendering-checkout state."""
    import bsstudy.report.build as B
    root = small
    a = build_report(root, tmp_path / "a", log=lambda *x: None, reproducible=True)
    monkeypatch.setattr(B, "git_state", lambda: ("f" * 40, True))          # another checkout
    b = build_report(root, tmp_path / "b", log=lambda *x: None, reproducible=True)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 20 and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    prov = json.loads((a / "provenance.json").read_text())
    runs = pd.read_csv(a / "runs.csv")
    assert prov["git_commit"] is None and prov["date"] == runs["finished_at"].dropna().max()
    assert set(prov["hardware"]) == {"run_devices"}
    c = build_report(root, tmp_path / "c", log=lambda *x: None)                 # default: the checkout's state
    assert json.loads((c / "provenance.json").read_text())["git_commit"] == "f" * 40


def _line_styles(fig) -> dict:
    """{legend label: (colour, line style)} of the labelled lines of every panel of ``fig``."""
    from matplotlib.colors import to_hex

    return {ln.get_label(): (to_hex(ln.get_color()), ln.get_linestyle()) for ax in fig.axes for ln in ax.get_lines()
            if not ln.get_label().startswith("_")}


def test_a_method_has_the_same_colour_in_studies_with_different_method_sets(tmp_path):
    """Colours come from the registry, not from the sorted order of the methods present: vicreg_unbiased
    is 2nd of 2 in one study and 3rd of 3 in the other, and has its registry colour in both."""
    from bsstudy.registry import METHODS

    seen = {}
    for methods in (("simclr", "vicreg_unbiased"), ("dcl", "vicreg", "vicreg_unbiased")):
        root = tmp_path / "results" / "_".join(methods)
        write_study(root, methods, (64, 256), (1,), (0, 1))
        summary = summarize_cells(load_study(root).runs)
        for fig in (F.fig_accuracy(summary, "linear_top1", references=False), F.fig_collapse(summary)):
            for label, (colour, style) in _line_styles(fig).items():
                if label in methods:
                    seen.setdefault(label, set()).add((colour, style))
    assert seen["vicreg_unbiased"] == {(METHODS["vicreg_unbiased"].color, "-")}
    assert seen["simclr"] == {(METHODS["simclr"].color, "-")} and seen["dcl"] == {(METHODS["dcl"].color, "-")}


def test_every_registered_method_has_its_own_colour_and_is_named_by_its_title(tmp_path):
    """All ten registered methods in one study: ten distinct palette colours in registry order, each
    method's lines in its colour under its label, and the question names each by its MethodSpec.title."""
    from bsstudy.registry import METHODS, PALETTE
    from bsstudy.report.reading import question

    assert [s.color for s in METHODS.values()] == list(PALETTE)[:len(METHODS)] and len(METHODS) <= len(PALETTE)
    root = tmp_path / "results" / "all"
    write_study(root, tuple(METHODS), (64, 256), (1,), (0, 1))
    st = load_study(root)
    summary = summarize_cells(st.runs)
    styles = _line_styles(F.fig_accuracy(summary, "linear_top1", references=False))
    assert styles == {m: (s.color, "-") for m, s in METHODS.items()}
    drop = _line_styles(F.fig_relative_drop(relative_drop(summary)))
    assert {k.split(" (ours")[0]: v for k, v in drop.items() if "(ours" in k} == styles
    q = question(st.runs["method_label"].unique())
    for s in METHODS.values():
        assert re.search(rf"(^|[ ,(]){re.escape(s.title)}([ ,?'.]|$)", q), s.title
    assert "Does unbiased VICReg remove VICReg's batch-size dependence?" in q
    assert "Does unbiased Barlow Twins remove Barlow Twins's batch-size dependence?" in q


def test_variants_keep_their_methods_colour_with_their_own_line_style(tmp_path):
    from bsstudy.registry import METHODS

    root = tmp_path / "results" / "var"
    syn = write_study(root, ("vicreg", "vicreg_unbiased"), (64, 256), (1,), (0, 1, 2, 3))
    for (m, b, e, s), rid in syn.run_ids.items():
        if m == "vicreg_unbiased" and s >= 2:  # the same cells with another variance scheme
            p = root / "runs" / rid / "config.yaml"
            p.write_text(p.read_text().replace("variance: jackknife", "variance: c4"))
    summary = summarize_cells(load_study(root).runs)
    styles = _line_styles(F.fig_accuracy(summary, "linear_top1", references=False))
    base = METHODS["vicreg_unbiased"].color
    assert styles["vicreg"] == (METHODS["vicreg"].color, "-")
    assert styles["vicreg_unbiased[jackknife,identity]"] == (base, "-")
    # c4 is variance choice 3, identity cov_target choice 0 of 2: variant 6, the third line style, one shade lighter
    assert styles["vicreg_unbiased[c4,identity]"] == (F._lighter(base, 0.3), "-.") and F._lighter(base, 0.3) != base
    spec = METHODS["vicreg_unbiased"]
    every = {F.method_style(f"vicreg_unbiased[{v},{c}]") for v in spec.choices["variance"]
             for c in spec.choices["cov_target"]}
    assert len(every) == 10  # each registered variant its own (colour, style)
