"""bsstudy.report.stats on synthetic studies with a known truth, on the committed demo runs, and the
`bsstudy power` verb.

Truth of the synthetic studies (the issue's): top-1 in points = level of the method + seed effect
(SD 1.5, shared by every run and the untrained network of that seed) + slope x log2 B + residual (SD 0.5).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from bsstudy.cli import main
from bsstudy.errors import UserError
from bsstudy.report import stats as S
from bsstudy.report.tables import to_csv

ROOT = Path(__file__).resolve().parents[1]
GRID = (32, 64, 128, 256, 512)
SEED_SD, RESID_SD = 1.5, 0.5
LEVEL = {"vicreg": 80.0, "vicreg_unbiased": 81.0}
INIT_LEVEL = 70.0


def planted(rng: np.random.Generator, n_seeds: int, slopes: dict, study: int = 0, grid=GRID) -> pd.DataFrame:
    """One synthetic study as runs.csv rows (accuracies as fractions); ``study`` goes into ``epochs`` so
    that many studies stack into one table and fit in one call (each epochs value is its own fit)."""
    rows = []
    u = rng.normal(0, SEED_SD, n_seeds)
    init = INIT_LEVEL + u + rng.normal(0, RESID_SD, n_seeds)
    x0 = np.log2(grid[-1])
    for m, slope in slopes.items():
        e = rng.normal(0, RESID_SD, (n_seeds, len(grid)))
        for s in range(n_seeds):
            for j, b in enumerate(grid):
                y = LEVEL[m] + u[s] + slope * (np.log2(b) - x0) + e[s, j]
                rows.append(dict(method_label=m, method=m, status="done", batch_size=b, epochs=study, seed=s,
                                 linear_top1=y / 100, init_linear_top1=init[s] / 100))
    return pd.DataFrame(rows)


def many(n_studies: int, slopes: dict, seed: int, seeds=range(3, 9)) -> pd.DataFrame:
    """``n_studies`` independent studies, seed counts cycling through ``seeds`` (3..8)."""
    rng = np.random.default_rng(seed)
    seeds = list(seeds)
    return pd.concat([planted(rng, seeds[i % len(seeds)], slopes, study=i) for i in range(n_studies)],
                     ignore_index=True)


TRUE = {"vicreg": -1.0, "vicreg_unbiased": 0.0}


# ------------------------------------------------------------------ recovery and agreement

@pytest.mark.parametrize("n_seeds", range(3, 9))
def test_planted_slopes_recovered_inside_their_cis(n_seeds):
    """One fixed draw per seed count (a correct 95% CI misses 1 in 20 draws; the null-study tests check
    that rate)."""
    runs = planted(np.random.default_rng(n_seeds), n_seeds, TRUE)
    sens = S.sensitivity(runs, metrics=("linear_top1",))
    assert list(sens["method"]) == ["vicreg", "vicreg_unbiased"]
    for _, r in sens.iterrows():
        truth = TRUE[r["method"]]
        assert r["ci_low"] < truth < r["ci_high"], r.to_dict()
        assert abs(r["slope_pts_per_doubling"] - truth) < 0.3
        assert r["n_seeds"] == n_seeds and r["batch_sizes"] == "32,64,128,256,512"
        assert r["df"] == n_seeds * len(GRID) - n_seeds - 1
    # the -1 slope is resolved, the 0 slope is not
    assert sens.set_index("method").loc["vicreg", "ci_high"] < 0


def test_slope_equals_direct_statsmodels_fit_of_the_same_model():
    runs = planted(np.random.default_rng(7), 5, TRUE)
    long = S.long_table(runs, ("linear_top1",))
    sens = S.sensitivity(runs, metrics=("linear_top1",)).set_index("method")
    for m, g in long.groupby("method"):
        ref = smf.ols("y ~ C(seed) + np.log2(batch_size)", data=g).fit()
        name = "np.log2(batch_size)"
        lo, hi = ref.conf_int(0.05).loc[name]
        np.testing.assert_allclose([sens.loc[m, "slope_pts_per_doubling"], sens.loc[m, "se"], sens.loc[m, "ci_low"],
                                    sens.loc[m, "ci_high"], sens.loc[m, "p_value"], sens.loc[m, "df"]],
                                   [ref.params[name], ref.bse[name], lo, hi, ref.pvalues[name], ref.df_resid],
                                   rtol=0, atol=1e-8)


def test_mixed_model_with_seed_random_intercept_agrees_in_a_balanced_design():
    """The other candidate model (MixedLM, REML): same slope, same SE (its REML residual variance is the
    fixed-effects one when the seed variance is positive); it differs only in using z, not t."""
    runs = planted(np.random.default_rng(8), 6, TRUE)
    long = S.long_table(runs, ("linear_top1",)).assign(x=lambda d: np.log2(d["batch_size"]))
    sens = S.sensitivity(runs, metrics=("linear_top1",)).set_index("method")
    for m, g in long.groupby("method"):
        mm = smf.mixedlm("y ~ x", data=g, groups=g["seed"]).fit(reml=True)
        assert mm.params["x"] == pytest.approx(sens.loc[m, "slope_pts_per_doubling"], abs=1e-8)
        assert mm.bse["x"] == pytest.approx(sens.loc[m, "se"], rel=1e-3)


def test_seedwise_fallback_and_clustered_errors_agree_with_the_model_in_a_balanced_design():
    runs = planted(np.random.default_rng(9), 4, TRUE)
    long = S.long_table(runs, ("linear_top1",))
    sens = S.sensitivity(runs, metrics=("linear_top1",)).set_index("method")
    for m, g in long.groupby("method"):
        r = sens.loc[m]
        assert r["seedwise_slope"] == pytest.approx(r["slope_pts_per_doubling"], abs=1e-10)
        # seed-clustered SE of the same OLS (CR0 x G/(G-1); the seed dummies are nested in the clusters, so
        # they take no df) on t(G-1) reproduces the seedwise interval exactly
        fit = smf.ols("y ~ C(seed) + np.log2(batch_size)", data=g).fit(
            cov_type="cluster", cov_kwds={"groups": g["seed"].to_numpy(), "use_correction": False})
        G = g["seed"].nunique()
        se = fit.bse["np.log2(batch_size)"] * np.sqrt(G / (G - 1))
        from scipy import stats as st
        half = st.t.ppf(0.975, G - 1) * se
        assert r["seedwise_ci_high"] - r["seedwise_ci_low"] == pytest.approx(2 * half, rel=1e-10)
    # unbalanced (a missing cell): the estimates may differ, both stay defined
    unbal = runs.drop(index=runs.index[(runs["seed"] == 0) & (runs["batch_size"] == 32)])
    s2 = S.sensitivity(unbal, metrics=("linear_top1",))
    assert s2[["slope_pts_per_doubling", "ci_low", "seedwise_ci_low"]].notna().all().all()


def test_contrasts_and_pair_tests_equal_direct_statsmodels_fits():
    runs = planted(np.random.default_rng(13), 4, TRUE)
    long = S.long_table(runs, ("linear_top1",))
    c = S.contrasts(runs, metrics=("linear_top1",))
    g = long[long["method"] == "vicreg"]
    ref = smf.ols("y ~ C(seed) + C(batch_size, Treatment(512))", data=g).fit()
    got = c[(c["method"] == "vicreg") & (c["contrast"] == "vs_reference")].set_index("batch_size")
    for b in (32, 64, 128, 256):
        name = f"C(batch_size, Treatment(512))[T.{b}]"
        assert got.loc[b, "estimate_pts"] == pytest.approx(ref.params[name], abs=1e-8)
        assert got.loc[b, "p_value"] == pytest.approx(ref.pvalues[name], abs=1e-8)
        assert got.loc[b, "ci_low"] == pytest.approx(ref.conf_int(0.05 / 4).loc[name, 0], abs=1e-8)
    init = g.drop_duplicates("seed").assign(y=lambda d: d["init"], batch_size=0)
    both = pd.concat([g, init]).assign(level=lambda d: d["batch_size"].astype(str))
    fit = smf.ols("y ~ C(seed) + C(level, Treatment('0'))", data=both).fit()
    un = c[(c["method"] == "vicreg") & (c["contrast"] == "vs_untrained")].set_index("batch_size")
    assert un.loc[64, "estimate_pts"] == pytest.approx(fit.params["C(level, Treatment('0'))[T.64]"], abs=1e-8)
    names = [f"C(level, Treatment('0'))[T.{b}]" for b in GRID]
    t = fit.t_test(" + ".join(names) + " = 0")
    assert un.loc[-1, "estimate_pts"] == pytest.approx(float(t.effect[0]) / 5, abs=1e-8)
    assert un.loc[-1, "p_value"] == pytest.approx(float(t.pvalue), abs=1e-8)
    # method pair: slope difference from per-(method, seed) intercepts and per-method slopes
    mc = S.method_contrasts(runs, metrics=("linear_top1",)).set_index(["contrast", "batch_size"])
    d = long.assign(x=np.log2(long["batch_size"]), a=(long["method"] == "vicreg_unbiased").astype(float))
    pair = smf.ols("y ~ 0 + C(method):C(seed) + x + x:a", data=d).fit()
    row = mc.loc[("slope_difference", -1)]
    assert row["estimate"] == pytest.approx(pair.params["x:a"], abs=1e-8)
    assert row["p_value"] == pytest.approx(pair.pvalues["x:a"], abs=1e-8)
    d["cell"] = d["method"] + "@" + d["batch_size"].astype(str)
    cell = smf.ols("y ~ C(seed) + C(cell, Treatment('vicreg@32'))", data=d).fit()
    L = np.zeros(len(cell.params))
    L[list(cell.params.index).index("C(cell, Treatment('vicreg@32'))[T.vicreg_unbiased@64]")] = 1
    L[list(cell.params.index).index("C(cell, Treatment('vicreg@32'))[T.vicreg@64]")] = -1
    t = cell.t_test(L)
    assert mc.loc[("batch_size", 64), "estimate"] == pytest.approx(float(t.effect[0]), abs=1e-8)
    assert mc.loc[("batch_size", 64), "p_value"] == pytest.approx(float(t.pvalue), abs=1e-8)


def test_slope_heterogeneity_test_flags_seed_specific_slopes():
    rng = np.random.default_rng(10)
    runs = planted(rng, 6, {"vicreg": -1.0})
    x = np.log2(runs["batch_size"])
    runs["linear_top1"] += (runs["seed"] - 2.5) * 0.6 * (x - x.mean()) / 100   # slopes -2.5..+0.5
    p = S.sensitivity(runs, metrics=("linear_top1",))["p_slope_varies_by_seed"].iloc[0]
    p0 = S.sensitivity(planted(rng, 6, {"vicreg": -1.0}), metrics=("linear_top1",))["p_slope_varies_by_seed"].iloc[0]
    assert p < 1e-4 < p0
    g = S.long_table(runs, ("linear_top1",))
    full = smf.ols("y ~ C(seed) + C(seed):np.log2(batch_size)", data=g).fit()
    reduced = smf.ols("y ~ C(seed) + np.log2(batch_size)", data=g).fit()
    assert p == pytest.approx(full.compare_f_test(reduced)[1], rel=1e-8)


# ------------------------------------------------------------------ null studies: coverage and false positives

NULL = {"vicreg": -1.0, "vicreg_unbiased": -1.0}    # equal slopes: every method-pair difference is 0


@pytest.fixture(scope="module")
def null_studies():
    """600 null studies, 100 per seed count 3..8."""
    runs = many(600, NULL, seed=2026)
    return runs, S.long_table(runs, ("linear_top1",))


@pytest.mark.slow
def test_null_studies_slope_ci_coverage(null_studies):
    runs, long = null_studies
    sens = S.sensitivity(runs, metrics=("linear_top1",), long=long)
    assert len(sens) == 1200
    cover = ((sens["ci_low"] < -1) & (-1 < sens["ci_high"])).mean()
    cover_sw = ((sens["seedwise_ci_low"] < -1) & (-1 < sens["seedwise_ci_high"])).mean()
    assert 0.93 <= cover <= 0.97, cover
    assert 0.93 <= cover_sw <= 0.97, cover_sw
    # coverage holds at the smallest seed count too
    few = sens[sens["n_seeds"] == 3]
    assert 0.92 <= ((few["ci_low"] < -1) & (-1 < few["ci_high"])).mean() <= 0.98


@pytest.mark.slow
def test_null_studies_method_pair_false_positive_rate():
    """1,000 null studies (166-167 per seed count): a nominal-5% rate is estimated to +-0.7 points."""
    runs = many(1000, NULL, seed=2027)
    mc = S.method_contrasts(runs, metrics=("linear_top1",))
    slope = mc[mc["contrast"] == "slope_difference"]
    assert len(slope) == 1000 and (slope["method_a"] == "vicreg_unbiased").all()
    fpr = (slope["p_value"] < 0.05).mean()
    fpr_sw = (slope["seedwise_p_value"] < 0.05).mean()
    assert fpr <= 0.06 and fpr_sw <= 0.06, (fpr, fpr_sw)
    assert fpr == ((slope["ci_low"] > 0) | (slope["ci_high"] < 0)).mean()
    assert fpr > 0.02   # not vacuous: a test that never rejects would pass the line above
    # per-B differences: the levels differ by 1 point at every B; Bonferroni CIs cover it family-wise
    per_b = mc[mc["contrast"] == "batch_size"].copy()
    truth = LEVEL["vicreg_unbiased"] - LEVEL["vicreg"]
    per_b["hit"] = (per_b["ci_low"] < truth) & (truth < per_b["ci_high"])
    assert 0.94 <= per_b.groupby("epochs")["hit"].all().mean() <= 0.99


@pytest.mark.slow
def test_null_studies_contrast_coverage(null_studies):
    runs, long = null_studies
    c = S.contrasts(runs, metrics=("linear_top1",), long=long)
    x0 = np.log2(GRID[-1])
    ref = c[c["contrast"] == "vs_reference"].copy()
    ref["truth"] = -1.0 * (np.log2(ref["batch_size"]) - x0)
    ref["hit"] = (ref["ci_low"] < ref["truth"]) & (ref["truth"] < ref["ci_high"])
    simultaneous = ref.groupby(["epochs", "method"])["hit"].all().mean()   # Bonferroni: >= 95% family-wise
    assert 0.94 <= simultaneous <= 0.99, simultaneous
    un = c[c["contrast"] == "vs_untrained"].copy()
    level = un["method"].map(LEVEL) - INIT_LEVEL
    slope_part = np.where(un["batch_size"] > 0, -1.0 * (np.log2(un["batch_size"].clip(lower=1)) - x0),
                          -1.0 * (np.log2(GRID).mean() - x0))
    un["truth"] = level + slope_part
    un["hit"] = (un["ci_low"] < un["truth"]) & (un["truth"] < un["ci_high"])
    mean_rows = un[un["batch_size"] == -1]
    assert 0.93 <= mean_rows["hit"].mean() <= 0.97
    assert 0.94 <= un[un["batch_size"] > 0].groupby(["epochs", "method"])["hit"].all().mean() <= 0.99


def test_max_relative_drop_is_biased_upward_and_the_prespecified_drop_is_not():
    """Winner's curse: with no batch-size effect the max drop from the best B is always positive; the
    drop from B_ref to B_far averages ~0."""
    runs = many(200, {"vicreg": 0.0}, seed=11, seeds=(3,))
    rd = S.relative_drop_ci(runs, metrics=("linear_top1",), reps=200)
    assert (rd["max_rel_drop_pct"] > 0).all()
    assert rd["max_rel_drop_pct"].mean() > 0.3
    se = rd["ref_rel_drop_pct"].std() / np.sqrt(len(rd))
    assert abs(rd["ref_rel_drop_pct"].mean()) < 3 * se
    assert (rd["far_batch_size"] == 32).all() and (rd["reference_batch_size"] == 512).all()
    assert ((rd["ref_ci_low"] <= rd["ref_rel_drop_pct"]) & (rd["ref_rel_drop_pct"] <= rd["ref_ci_high"])).all()


# ------------------------------------------------------------------ power

def test_power_matches_statsmodels_one_sample_t_power():
    from statsmodels.stats.power import TTestPower

    for d, n in [(0.5, 10), (1.0, 5), (0.3, 40)]:
        ours = float(S.power_t(d, 1 / np.sqrt(n), n - 1))
        assert ours == pytest.approx(TTestPower().power(effect_size=d, nobs=n, alpha=0.05), abs=1e-10)


def test_min_detectable_slope_has_its_power_in_simulation():
    """At the minimum detectable slope for 3 seeds, the sensitivity test rejects ~80% of the time."""
    design = S.Design(GRID, RESID_SD)
    se, df = design.slope(3)
    mde = S.min_detectable(float(se), float(df))
    assert float(S.power_t(mde, se, df)) == pytest.approx(0.8, abs=1e-9)
    rng = np.random.default_rng(12)
    p = [S.fit_slope(r["seed"], r["batch_size"], 100 * r["linear_top1"]).p_value
         for r in (planted(rng, 3, {"vicreg": -mde}) for _ in range(400))]
    assert 0.74 <= np.mean(np.array(p) < 0.05) <= 0.86


def test_seeds_needed_is_the_first_seed_count_with_enough_power():
    design = S.Design(GRID, 1.0)
    for q in S.QUANTITIES:
        for effect in (0.5, 1.0, 2.0):
            n = int(S.seeds_needed(effect, design, q))
            a = S._alpha_for(q, design, 0.05)
            pw = lambda k: float(S.power_t(effect, *getattr(design, q)(k), alpha=a))  # noqa: E731
            assert pw(n) >= 0.8 and (n == 2 or pw(n - 1) < 0.8)
    assert np.isnan(S.seeds_needed(1e-4, design, "contrast"))


def test_power_table_errors():
    runs = planted(np.random.default_rng(1), 3, TRUE)
    with pytest.raises(UserError, match="at least 2 seeds"):
        S.power_table(runs[runs["seed"] == 0])
    with pytest.raises(UserError, match="no finished runs"):
        S.power_table(runs.assign(status="failed"))


# ------------------------------------------------------------------ the committed demo

@pytest.fixture(scope="module")
def demo():
    return pd.read_csv(ROOT / "reports" / "demo" / "runs.csv")


def test_demo_vs_untrained_contrast_resolves_with_two_seeds(demo):
    c = S.contrasts(demo)
    mean = c[(c["contrast"] == "vs_untrained") & (c["batch_size"] == -1)]
    assert len(mean) == 6 and (mean["n_seeds"] == 2).all()     # 3 methods x 2 metrics
    assert (mean["ci_low"] > 0).all(), mean


def test_demo_tables_shape_and_method_pair(demo):
    sens = S.sensitivity(demo)
    assert list(sens.columns[:9]) == ["method", "epochs", "metric", "slope_pts_per_doubling", "ci_low", "ci_high",
                                      "p_value", "n_seeds", "batch_sizes"]
    assert len(sens) == 6 and (sens["batch_sizes"] == "32,64,128,256").all()
    mc = S.method_contrasts(demo)
    assert set(mc["method_a"]) == {"vicreg_unbiased"} and set(mc["method_b"]) == {"vicreg"}
    assert set(mc["contrast"]) == {"slope_difference", "batch_size"}
    rd = S.relative_drop_ci(demo)
    assert rd[["max_ci_low", "ref_ci_high"]].isna().all().all()         # 2 seeds: no bootstrap CI
    assert (rd["max_rel_drop_pct"] > 0).all()
    pw = S.power_table(demo)
    assert set(pw["quantity"]) == set(S.QUANTITIES) and (pw["n_seeds"] == 2).all()


def test_deterministic_and_independent_of_row_order(demo):
    shuffled = demo.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for f in (S.sensitivity, S.contrasts, S.method_contrasts, S.relative_drop_ci, S.power_table):
        a, b, c = f(demo), f(demo), f(shuffled)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert to_csv(a) == to_csv(c), f.__name__


# ------------------------------------------------------------------ parameters and errors

def test_reference_batch_size_and_pairs_parameters(demo):
    c = S.contrasts(demo, reference_batch_size=64)
    ref = c[c["contrast"] == "vs_reference"]
    assert set(ref["reference"]) == {"64"} and set(ref["batch_size"]) == {32, 128, 256}
    with pytest.raises(UserError, match="reference_batch_size: 100"):
        S.contrasts(demo, reference_batch_size=100)
    mc = S.method_contrasts(demo, pairs=[["simclr", "vicreg"]])
    assert set(zip(mc["method_a"], mc["method_b"])) == {("simclr", "vicreg")}
    with pytest.raises(UserError, match="report.compare: byol did not run"):
        S.method_contrasts(demo, pairs=[["byol", "vicreg"]])
    assert S.default_pairs(["simclr", "vicreg", "vicreg_unbiased[jackknife,identity]"]) == [
        ("vicreg_unbiased[jackknife,identity]", "vicreg")]
    assert S.default_pairs(["simclr", "vicreg_unbiased"]) == []


def test_failed_and_diverged_runs_do_not_enter(demo):
    bad = demo.copy()
    bad.loc[0, "status"] = "diverged"
    bad.loc[1, "linear_top1"] = np.nan
    long = S.long_table(bad)
    assert len(long) == 2 * len(demo) - 3


def test_power_cli(tmp_path, capsys):
    from bsstudy.report.synthetic import write_study

    write_study(tmp_path / "pilot", seeds=(0, 1, 2), batch_sizes=(64, 128, 256, 512))
    assert main(["power", str(tmp_path / "pilot"), "--effect", "1.0", "--metric", "linear_top1"]) == 0
    out = capsys.readouterr().out
    assert "3 seeds, batch sizes 64,128,256,512" in out and "seeds@1" in out and "knn_top1" not in out
    assert len(out.strip().splitlines()) == 6       # heading, header, rule, 3 quantities
    write_study(tmp_path / "one", seeds=(0,))
    assert main(["power", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 2 seeds" in err and "one" in err
    assert main(["power", str(tmp_path / "pilot"), "--effect", "-1"]) == 2
    assert "--effect" in capsys.readouterr().err
    # a planned grid, sized from the pilot's residual: more batch sizes, a tighter slope, fewer seeds
    assert main(["power", str(tmp_path / "pilot"), "--effect", "0.3", "--metric", "linear_top1",
                 "--batch-sizes", "16,32,64,128,256,512,1024"]) == 0
    wide = capsys.readouterr().out
    assert "batch sizes 16,32,64,128,256,512,1024" in wide
    main(["power", str(tmp_path / "pilot"), "--effect", "0.3", "--metric", "linear_top1"])
    own = capsys.readouterr().out
    need = lambda text: int(float(text.splitlines()[3].split()[-1]))  # noqa: E731  slope row, seeds@0.3
    assert need(wide) < need(own)
    assert main(["power", str(tmp_path / "pilot"), "--batch-sizes", "64,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err


def test_seeds_needed_is_the_first_seed_count_with_80_percent_power():
    """seeds_needed against a direct scan with scipy.stats.nct (a faster noncentral-t CDF, special.nctdtr,
    returned wrong tails here and made the seeds needed non-monotone in the effect)."""
    from scipy import stats as st

    def power(effect, se, df, alpha):
        q = st.t.ppf(1 - alpha / 2, df)
        return st.nct.sf(q, df, effect / se) + np.nan_to_num(st.nct.cdf(-q, df, effect / se))  # far tail ~0

    for sigma in (0.3, 0.655, 1.5):
        d = S.Design((32, 64, 128, 256), sigma)
        for q in S.QUANTITIES:
            need = [S.seeds_needed(e, d, q) for e in (2.0, 1.0, 0.5)]
            assert need == sorted(need)
            a = S._alpha_for(q, d, S.ALPHA)
            for e, n in zip((2.0, 1.0, 0.5), need):
                se, df = getattr(d, q)(int(n))
                assert power(e, float(se), float(df), a) >= S.POWER
                if n > 2:
                    se, df = getattr(d, q)(int(n) - 1)
                    assert power(e, float(se), float(df), a) < S.POWER


def test_few_shot_metrics_enter_every_table_with_their_label(tmp_path):
    """few_shot.<k>.top1 columns (eval.few_shot) are analysed like linear/kNN, paired with init_few_shot."""
    from bsstudy.report import analysis as A
    from bsstudy.report.tables import accuracy_columns, init_baseline, summarize_cells
    rng = np.random.default_rng(5)
    runs = planted(rng, 4, TRUE)
    runs["few_shot.10.top1"] = runs["linear_top1"] - 0.1 + rng.normal(0, 0.003, len(runs))
    runs["init_few_shot.10.top1"] = runs["init_linear_top1"] - 0.12
    runs["backbone"] = "small_cnn"
    assert accuracy_columns(runs) == {"linear_top1": "linear", "knn_top1": "kNN", "few_shot.10.top1": "10-shot linear"}
    a = A.compute(runs)
    sens = a.sensitivity.set_index(["method", "metric"])
    assert sens.loc[("vicreg", "few_shot.10.top1"), "slope_pts_per_doubling"] == pytest.approx(-1.0, abs=0.3)
    c = a.contrasts
    vs_init = c[(c["metric"] == "few_shot.10.top1") & (c["contrast"] == "vs_untrained") & (c["batch_size"] == -1)]
    assert len(vs_init) and (vs_init["estimate_pts"] > 10).all()      # +12 points planted (untrained: -12)
    assert "10-shot linear" in set(A.display_tables(a)["sensitivity"]["metric"])
    assert "few_shot.10.top1_mean" in summarize_cells(runs).columns
    assert "10-shot linear" in set(init_baseline(runs)["metric"])
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("report: {metric: few_shot.10.top1}\n")
    assert A.read_settings(sweep).metric == "few_shot.10.top1"
    sweep.write_text("report: {metric: few_shot.top1}\n")
    with pytest.raises(UserError, match="report.metric"):
        A.read_settings(sweep)
    with pytest.raises(UserError, match="report.metric: no run has"):
        A.compute(runs.drop(columns=["few_shot.10.top1"]), A.Settings(metric="few_shot.10.top1"))


def test_a_compared_pair_still_running_is_named_not_an_error():
    """A study in progress: a compared method is planned but has no finished run yet."""
    from bsstudy.report import analysis as A
    runs = planted(np.random.default_rng(2), 3, {"vicreg": -1.0})
    s = A.Settings(compare=(("vicreg_unbiased", "vicreg"),))
    with pytest.raises(UserError, match="vicreg_unbiased did not run"):
        A.compute(runs, s)
    a = A.compute(runs, s, planned={"vicreg", "vicreg_unbiased"})
    assert a.waiting == (("vicreg_unbiased", "vicreg"),) and not len(a.method_contrasts)
    text = " ".join(getattr(b, "text", "") for b in A.sections(a))
    assert "Not compared yet" in text and "vicreg_unbiased − vicreg" in text
    with pytest.raises(UserError, match="swav"):                      # not in the plan: still an error
        A.compute(runs, A.Settings(compare=(("swav", "vicreg"),)), planned={"vicreg", "vicreg_unbiased"})
