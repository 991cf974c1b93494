"""Seed-blocked statistics of a batch-size study: sensitivity (slope per doubling of B), paired contrasts,
method-pair tests, relative drop with a bootstrap CI, and power / seeds needed.

Every function is a pure function of the per-run table (``runs.csv``: method_label or method, batch_size,
epochs, seed, status, linear_top1 / knn_top1 and optionally init_linear_top1 / init_knn_top1). Accuracies are
fractions there and percentage *points* here.

The design: runs with the same seed share the initial network, the data order and the augmentation
stream, so a seed is a block (randomised complete block design). Every estimate is *within seed*: an OLS
fit (statsmodels) with one fixed effect per seed, and intervals from the within-seed residual with Student
t on the model's residual degrees of freedom. docs/report.md, "Statistics", says why this model and not
seed-clustered errors, and what each table assumes.

Outputs are deterministic: inputs are sorted before fitting, rows are sorted, and the bootstrap draws from
a generator seeded by the row's key.
"""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.regression.linear_model import OLS
from scipy import optimize, special, stats

from ..errors import UserError
from ..registry import METHODS, split_label

METRICS = ("linear_top1", "knn_top1")
ALPHA = 0.05
POWER = 0.80
BOOT_REPS = 2000
BOOT_MIN_SEEDS = 3            # 2 seeds have 3 distinct resamples: no CI from those
BOOT_SEED = 20261123          # base of the per-row bootstrap generators (fixed: same input, same CI)
DEFAULT_EFFECTS = (0.5, 1.0, 2.0)
MAX_SEEDS = 1000              # seeds_needed searches 2..MAX_SEEDS
GROUP = ["method", "epochs", "metric"]
UNTRAINED = 0                 # the untrained network's level code among batch sizes (all > 0)


# ------------------------------------------------------------------ input

def long_table(runs: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """Finished runs as one row per (method, epochs, metric, seed, batch_size): ``y`` and ``init`` (the
    untrained network of that seed, NaN without ``eval.at_init``) in percentage points.

    ``method`` is ``method_label`` when present (variants apart), else ``method``. Only ``status == done``
    rows with a finite metric enter; duplicate cells (same key twice) are averaged."""
    cols = ["method", "epochs", "metric", "seed", "batch_size", "y", "init"]
    if not len(runs):
        return pd.DataFrame(columns=cols)
    df = runs
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    method = df["method_label"] if "method_label" in df.columns else df["method"]
    parts = []
    for m in metrics:
        if m not in df.columns:
            continue
        init_col = f"init_{m}"   # the untrained network's value of the same metric (eval.at_init)
        part = pd.DataFrame({
            "method": method.astype(str).to_numpy(),
            "epochs": pd.to_numeric(df["epochs"], errors="coerce").to_numpy(),
            "metric": m,
            "seed": pd.to_numeric(df["seed"], errors="coerce").to_numpy(),
            "batch_size": pd.to_numeric(df["batch_size"], errors="coerce").to_numpy(),
            "y": 100 * pd.to_numeric(df[m], errors="coerce").to_numpy(dtype=float),
            "init": (100 * pd.to_numeric(df[init_col], errors="coerce").to_numpy(dtype=float)
                     if init_col in df.columns else np.nan),
        })
        parts.append(part[np.isfinite(part["y"]) & part[["epochs", "seed", "batch_size"]].notna().all(axis=1)])
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    for c in ("epochs", "seed", "batch_size"):
        out[c] = out[c].astype(int)
    out = out.groupby(["method", "epochs", "metric", "seed", "batch_size"], sort=True, as_index=False)[
        ["y", "init"]].mean()
    return out[cols].reset_index(drop=True)


def _groups(long: pd.DataFrame, by=GROUP, cols=("seed", "batch_size", "y", "init")):
    """Each ``by`` key (default: method, epochs, metric) with its rows sorted by seed and batch size, as
    numpy arrays named ``cols``: the unit of every fit (arrays, not frames: a study of 1,000 runs, or the
    tests' hundreds of simulated studies, would spend most of its time in pandas)."""
    if not len(long):
        return
    long = long.sort_values(list(by) + ["seed", "batch_size"], kind="stable")
    keys = long[list(by)]
    starts = np.flatnonzero(keys.ne(keys.shift()).any(axis=1).to_numpy())
    ends = np.append(starts[1:], len(long))
    arrays = {c: long[c].to_numpy(dtype=float if c in ("y", "init") else int) for c in cols}
    for key, i, j in zip(keys.iloc[starts].itertuples(index=False, name=None), starts, ends):
        yield key, {c: v[i:j] for c, v in arrays.items()}


def _dummies(codes: np.ndarray) -> np.ndarray:
    """One-hot columns of integer codes 0..k-1 (the seed fixed effects)."""
    return (codes[:, None] == np.arange(codes.max() + 1)[None, :]).astype(float)


def _codes(values) -> np.ndarray:
    """Integer codes 0..k-1 of ``values`` in sorted order."""
    return np.unique(np.asarray(values), return_inverse=True)[1].ravel()


def _ols(y, X):
    """statsmodels OLS; every design here carries its constant in the block dummies (hasconst=True also
    skips statsmodels' per-fit constant detection, most of a small fit's time)."""
    return OLS(np.asarray(y, dtype=float), X, hasconst=True).fit()


def _bs_text(bs) -> str:
    return ",".join(str(int(b)) for b in sorted(set(bs)))


def _t_ci(est: float, se: float, df: float, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(ci_low, ci_high, two-sided p) of a t statistic; NaN when df < 1 or se is not positive."""
    if not (df >= 1 and se > 0 and np.isfinite(se)):
        return math.nan, math.nan, math.nan
    q = special.stdtrit(df, 1 - alpha / 2)      # = stats.t.ppf, without the distribution-object overhead
    return est - q * se, est + q * se, float(2 * special.stdtr(df, -abs(est / se)))


# ------------------------------------------------------------------ 1. sensitivity

@dataclass(frozen=True)
class SlopeFit:
    """The within-seed slope of one series (points per doubling of B)."""

    slope: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p_value: float
    n_seeds: int        # seeds with >= 2 batch sizes (the ones that inform the slope)
    resid_sd: float     # within-seed residual SD of the linear fit (points)


def fit_slope(seed, batch_size, y, alpha: float = ALPHA) -> SlopeFit:
    """OLS ``y ~ C(seed) + log2(B)`` (statsmodels): the slope per doubling of B with its model-based CI
    (Student t on the residual df, N - n_seeds - 1)."""
    return _fit_slope(*_slope_inputs(seed, batch_size, y), alpha)[0]


def _slope_inputs(seed, batch_size, y):
    return _codes(seed), np.log2(np.asarray(batch_size, dtype=float)), np.asarray(y, dtype=float)


def _fit_slope(codes, x, y, alpha: float):
    """(SlopeFit, statsmodels results or None, dummies, informative seed codes)."""
    if not len(y):
        return SlopeFit(math.nan, math.nan, 0.0, math.nan, math.nan, math.nan, 0, math.nan), None, None, []
    d = _dummies(codes)
    informative = [c for c in range(d.shape[1]) if np.ptp(x[codes == c]) > 0]
    if not informative:
        return SlopeFit(math.nan, math.nan, 0.0, math.nan, math.nan, math.nan, 0, math.nan), None, d, []
    res = _ols(y, np.column_stack([d, x]))
    est, df = float(res.params[-1]), float(res.df_resid)
    se = float(res.bse[-1]) if df >= 1 else math.nan
    lo, hi, p = _t_ci(est, se, df, alpha)
    fit = SlopeFit(est, se, df, lo, hi, p, len(informative), float(np.sqrt(res.scale)) if df >= 1 else math.nan)
    return fit, res, d, informative


def per_seed_slopes(seed, batch_size, y) -> np.ndarray:
    """The least-squares slope of y on log2 B within each seed that has >= 2 batch sizes (sorted by seed)."""
    return _per_seed(np.asarray(seed), np.log2(np.asarray(batch_size, dtype=float)), np.asarray(y, float))[1]


def _per_seed(seed: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seed ids, slopes) of the seeds with >= 2 distinct x, sorted by seed."""
    ids, codes = np.unique(seed, return_inverse=True)
    codes = codes.ravel()
    k = len(ids)
    n = np.bincount(codes, minlength=k)
    xc = x - (np.bincount(codes, x, k) / np.maximum(n, 1))[codes]
    yc = y - (np.bincount(codes, y, k) / np.maximum(n, 1))[codes]
    sxx, sxy = np.bincount(codes, xc * xc, k), np.bincount(codes, xc * yc, k)
    ok = sxx > 1e-12
    return ids[ok], sxy[ok] / np.where(ok, sxx, 1.0)[ok]


def seedwise_slopes(seed, batch_size, y, alpha: float = ALPHA) -> tuple[float, float, float, float, int]:
    """The small-sample fallback: one least-squares slope per seed, then a Student-t interval over seeds
    (df = n_seeds - 1). Valid even when seeds differ in slope. Returns (mean, ci_low, ci_high, p, n_seeds)."""
    return _mean_t(per_seed_slopes(seed, batch_size, y), alpha)


def _mean_t(v: np.ndarray, alpha: float) -> tuple[float, float, float, float, int]:
    """(mean, ci_low, ci_high, p, n) of the one-sample t-interval over the values ``v``."""
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    lo, hi, p = _t_ci(mean, float(v.std(ddof=1) / math.sqrt(n)), n - 1, alpha)
    return mean, lo, hi, p, n


def slope_heterogeneity_p(seed, batch_size, y) -> float:
    """F-test p-value of ``y ~ C(seed) + C(seed):log2 B`` against the common slope: small values say seeds
    differ in slope, and then the seedwise interval (not the model-based one) is the honest one."""
    codes, x, y = _slope_inputs(seed, batch_size, y)
    _, reduced, d, informative = _fit_slope(codes, x, y, ALPHA)
    return _heterogeneity(reduced, d, informative, x, y)


def _heterogeneity(reduced, d, informative, x, y) -> float:
    if reduced is None or len(informative) < 2:
        return math.nan
    full = _ols(y, np.column_stack([d, d[:, informative] * x[:, None]]))
    df_num, df_den = reduced.df_resid - full.df_resid, full.df_resid
    if df_den < 1 or df_num < 1:
        return math.nan
    # statsmodels' compare_f_test, without its per-call distribution objects (the test pins the equality)
    f = ((reduced.ssr - full.ssr) / df_num) / (full.ssr / df_den)
    return float(special.fdtrc(df_num, df_den, f))


SENSITIVITY_COLUMNS = ["method", "epochs", "metric", "slope_pts_per_doubling", "ci_low", "ci_high", "p_value",
                       "n_seeds", "batch_sizes", "se", "df", "n_runs", "resid_sd_pts", "seedwise_slope",
                       "seedwise_ci_low", "seedwise_ci_high", "seedwise_p_value", "p_slope_varies_by_seed"]


def sensitivity(runs: pd.DataFrame, metrics=METRICS, alpha: float = ALPHA, long: pd.DataFrame | None = None
                ) -> pd.DataFrame:
    """Per method x epochs x metric: the slope of top-1 (points) per doubling of B from the seed-blocked
    OLS (:func:`fit_slope`), its CI and p-value; next to it the seedwise fallback (:func:`seedwise_slopes`,
    the same point estimate in a balanced design) and the test of a common slope across seeds."""
    long = long_table(runs, metrics) if long is None else long
    rows = []
    for (method, epochs, metric), g in _groups(long):
        codes, x, y = _slope_inputs(g["seed"], g["batch_size"], g["y"])
        fit, res, d, informative = _fit_slope(codes, x, y, alpha)
        sw, sw_lo, sw_hi, sw_p, _ = seedwise_slopes(codes, g["batch_size"], y, alpha)
        rows.append(dict(method=method, epochs=int(epochs), metric=metric, slope_pts_per_doubling=fit.slope,
                         ci_low=fit.ci_low, ci_high=fit.ci_high, p_value=fit.p_value, n_seeds=fit.n_seeds,
                         batch_sizes=_bs_text(g["batch_size"]), se=fit.se, df=fit.df, n_runs=len(y),
                         resid_sd_pts=fit.resid_sd, seedwise_slope=sw, seedwise_ci_low=sw_lo,
                         seedwise_ci_high=sw_hi, seedwise_p_value=sw_p,
                         p_slope_varies_by_seed=_heterogeneity(res, d, informative, x, y)))
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


# ------------------------------------------------------------------ 2. paired contrasts

def _block_fit(block, level, y, ref: int):
    """OLS ``y ~ C(block) + C(level)`` with ``ref`` as the level's baseline: the coefficients after the
    block dummies are the within-block contrasts level - ref. ``level`` holds integer codes. Returns
    (statsmodels results, the non-reference levels in increasing order)."""
    level = np.asarray(level)
    others = np.array([v for v in np.unique(level) if v != ref])
    X = np.column_stack([_dummies(_codes(block)), (level[:, None] == others[None, :]).astype(float)])
    return _ols(y, X), [int(v) for v in others]


def _contrast_rows(res, names, n_coef, alpha: float, L_extra=None):
    """(estimate, se, ci_low, ci_high, p, p_adj) for the last ``n_coef`` coefficients of ``res``: CIs are
    Bonferroni-simultaneous over the family and ``p_adj`` is the matching Bonferroni p (CI excludes 0 iff
    p_adj < alpha). ``L_extra`` adds one unadjusted
    linear combination (a family of its own)."""
    df = float(res.df_resid)
    k = len(names)
    out = []
    est = np.asarray(res.params[-n_coef:], dtype=float) if n_coef else np.array([])
    se = np.asarray(res.bse[-n_coef:], dtype=float) if n_coef else np.array([])
    raw = []
    for e, s in zip(est, se):
        raw.append(_t_ci(e, s, df, alpha)[2])
    adj = _bonferroni(raw)
    for name, e, s, p, ph in zip(names, est, se, raw, adj):
        lo, hi, _ = _t_ci(e, s, df, alpha / max(k, 1))
        out.append((name, float(e), float(s), lo, hi, p, ph, df, k))
    if L_extra is not None:
        (e,), (s,) = _combos(res, L_extra[None, :])
        lo, hi, p = _t_ci(e, s, df, alpha)
        out.append(("mean", e, s, lo, hi, p, p, df, 1))
    return out


def _combos(res, L: np.ndarray) -> tuple[list[float], list[float]]:
    """Estimates and standard errors of the linear combinations ``L @ params`` (rows of L) of a fit: what
    ``res.t_test(L)`` reports, without building its result objects."""
    cov = np.asarray(res.cov_params())
    est = L @ np.asarray(res.params)
    se = np.sqrt(np.einsum("ij,jk,ik->i", L, cov, L))
    return [float(v) for v in est], [float(v) for v in se]


def _bonferroni(p) -> list[float]:
    """Bonferroni-adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p, dtype=float)
    return np.minimum(1.0, p * np.isfinite(p).sum()).tolist()


CONTRAST_COLUMNS = ["method", "epochs", "metric", "contrast", "batch_size", "reference", "estimate_pts", "se",
                    "ci_low", "ci_high", "p_value", "p_adj", "df", "family_size", "n_seeds"]


def contrasts(runs: pd.DataFrame, reference_batch_size: int | None = None, metrics=METRICS,
              alpha: float = ALPHA, long: pd.DataFrame | None = None) -> pd.DataFrame:
    """Within-seed paired contrasts per method x epochs x metric, in points.

    ``vs_reference``: each B minus the reference B (default: the largest B of that method's grid), from
    ``y ~ C(seed) + C(B)``. ``vs_untrained``: each B minus the untrained network of the same seed, and their
    mean over B (``batch_size`` = -1, an unadjusted single contrast), from the same model with the untrained
    probe as one more level (needs ``init_*`` columns). Each family's CIs are Bonferroni-simultaneous at
    1 - alpha, with the matching Bonferroni-adjusted ``p_adj`` next to the unadjusted ``p_value``.

    UserError when ``reference_batch_size`` is in no method's grid."""
    long = long_table(runs, metrics) if long is None else long
    if reference_batch_size is not None and len(long) and reference_batch_size not in set(long["batch_size"]):
        raise UserError(f"report.reference_batch_size: {reference_batch_size} is not a batch size of this study "
                        f"(it has {_bs_text(long['batch_size'])})")
    rows = []
    for (method, epochs, metric), g in _groups(long):
        base = dict(method=method, epochs=int(epochs), metric=metric)
        grid = sorted(set(g["batch_size"]))
        ref = grid[-1] if reference_batch_size is None else reference_batch_size
        if len(grid) >= 2 and ref in grid:
            res, others = _block_fit(g["seed"], g["batch_size"], g["y"], ref)
            n_seeds = len(np.unique(g["seed"]))
            for name, e, s, lo, hi, p, ph, df, k in _contrast_rows(res, others, len(others), alpha):
                rows.append(dict(base, contrast="vs_reference", batch_size=int(name), reference=str(ref),
                                 estimate_pts=e, se=s, ci_low=lo, ci_high=hi, p_value=p, p_adj=ph, df=df,
                                 family_size=k, n_seeds=n_seeds))
        init_seed, first = np.unique(g["seed"], return_index=True)    # one untrained probe per seed
        init_y = g["init"][first]
        init_seed, init_y = init_seed[np.isfinite(init_y)], init_y[np.isfinite(init_y)]
        if len(init_y):
            blocks = np.concatenate([g["seed"], init_seed])
            levels = np.concatenate([g["batch_size"], np.full(len(init_y), UNTRAINED)])
            res, others = _block_fit(blocks, levels, np.concatenate([g["y"], init_y]), UNTRAINED)
            L = np.zeros(res.params.shape[0])
            L[-len(others):] = 1.0 / len(others)
            n_seeds = len(init_seed)
            for name, e, s, lo, hi, p, ph, df, k in _contrast_rows(res, others, len(others), alpha, L):
                rows.append(dict(base, contrast="vs_untrained", batch_size=-1 if name == "mean" else int(name),
                                 reference="untrained", estimate_pts=e, se=s, ci_low=lo, ci_high=hi, p_value=p,
                                 p_adj=ph, df=df, family_size=k, n_seeds=n_seeds))
    out = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    return out.sort_values(["method", "epochs", "metric", "contrast", "batch_size"], kind="stable"
                           ).reset_index(drop=True)


# ------------------------------------------------------------------ 3. method pairs

METHOD_CONTRAST_COLUMNS = ["method_a", "method_b", "epochs", "metric", "contrast", "batch_size", "estimate",
                           "se", "ci_low", "ci_high", "p_value", "p_adj", "df", "n_seeds", "seedwise_ci_low",
                           "seedwise_ci_high", "seedwise_p_value"]


def default_pairs(methods) -> list[tuple[str, str]]:
    """(unbiased label, plug-in label) for each method variant among ``methods`` whose registry entry names
    a plug-in counterpart (``MethodSpec.unbiased_of``, e.g. vicreg_unbiased -> vicreg) that is also among
    ``methods`` (each of its variants); sorted by the unbiased label. The report's default ``compare``."""
    by_method: dict[str, list[str]] = {}
    for lb in methods:
        by_method.setdefault(split_label(lb)[0], []).append(lb)
    pairs = []
    for lb in sorted(set(methods)):
        spec = METHODS.get(split_label(lb)[0])
        if spec is not None and spec.unbiased_of:
            pairs += [(lb, p) for p in sorted(by_method.get(spec.unbiased_of, []))]
    return pairs


def method_contrasts(runs: pd.DataFrame, pairs=None, metrics=METRICS, alpha: float = ALPHA,
                     long: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each pair (a, b) per epochs x metric, on the seeds both ran:

    - ``slope_difference`` (points per doubling): slope_a - slope_b from ``y ~ C(seed x method) +
      method:log2 B`` (each method's within-seed slope, residual pooled); seedwise fallback: a t-interval
      over the per-seed differences of per-seed slopes.
    - ``batch_size`` (points): a - b at each B from ``y ~ C(seed) + C(method x B)`` (the seed block shared
      by both methods, as the untrained contrast shares it); Bonferroni CIs and p_adj over the B's.

    ``pairs``: list of [a, b] method labels (default :func:`default_pairs`); UserError names a label that
    did not run."""
    long = long_table(runs, metrics) if long is None else long
    present = sorted(set(long["method"])) if len(long) else []
    pairs = default_pairs(present) if pairs is None else [tuple(p) for p in pairs]
    for p in pairs:
        if len(p) != 2:
            raise UserError(f"report.compare: {list(p)} is not a pair [method_a, method_b]")
        missing = [m for m in p if m not in present]
        if missing:
            raise UserError(f"report.compare: {', '.join(missing)} did not run in this study "
                            f"(methods with finished runs: {', '.join(present) or 'none'})")
    rows = []
    for a, b in pairs:
        sub = long[long["method"].isin([a, b])].assign(is_a=lambda d: (d["method"] == a).astype(int))
        for (epochs, metric), g in _groups(sub, ("epochs", "metric"), ("is_a", "seed", "batch_size", "y")):
            is_a, seed, bs, y = g["is_a"], g["seed"], g["batch_size"], g["y"]
            seeds = np.intersect1d(seed[is_a == 1], seed[is_a == 0])
            if not len(seeds):
                continue
            keep = np.isin(seed, seeds)
            base = dict(method_a=a, method_b=b, epochs=int(epochs), metric=metric, n_seeds=len(seeds))
            rows += _pair_slope(is_a[keep], seed[keep], bs[keep], y[keep], alpha, base)
            rows += _pair_per_b(is_a[keep], seed[keep], bs[keep], y[keep], alpha, base)
    out = pd.DataFrame(rows, columns=METHOD_CONTRAST_COLUMNS)
    return out.sort_values(["method_a", "method_b", "epochs", "metric", "contrast", "batch_size"],
                           kind="stable").reset_index(drop=True)


def _pair_slope(is_a, seed, bs, y, alpha: float, base: dict) -> list[dict]:
    x = np.log2(bs.astype(float))
    X = np.column_stack([_dummies(_codes(2 * seed + is_a)), x * (1 - is_a), x * is_a])
    res = _ols(y, X)
    L = np.zeros((1, X.shape[1]))
    L[0, -1], L[0, -2] = 1.0, -1.0
    (est,), (se,) = _combos(res, L)
    df = float(res.df_resid)
    lo, hi, p = _t_ci(est, se, df, alpha)
    # seedwise: per-seed slope of a minus per-seed slope of b (seeds where both have >= 2 batch sizes)
    ia, sa = _per_seed(seed[is_a == 1], x[is_a == 1], y[is_a == 1])
    ib, sb = _per_seed(seed[is_a == 0], x[is_a == 0], y[is_a == 0])
    _, ja, jb = np.intersect1d(ia, ib, return_indices=True)
    sw = _mean_t(sa[ja] - sb[jb], alpha)[1:4]
    return [dict(base, contrast="slope_difference", batch_size=-1, estimate=est, se=se, ci_low=lo, ci_high=hi,
                 p_value=p, p_adj=p, df=df, seedwise_ci_low=sw[0], seedwise_ci_high=sw[1],
                 seedwise_p_value=sw[2])]


def _pair_per_b(is_a, seed, bs, y, alpha: float, base: dict) -> list[dict]:
    common = np.intersect1d(bs[is_a == 1], bs[is_a == 0])
    if not len(common):
        return []
    cells = 2 * bs + is_a                  # one level per (method, B); b's smallest common B is the baseline
    ref = int(2 * common[0])
    res, others = _block_fit(seed, cells, y, ref)
    n0 = res.params.shape[0] - len(others)
    col = {lv: n0 + i for i, lv in enumerate(others)}
    L = np.zeros((len(common), res.params.shape[0]))
    for i, b in enumerate(common):
        for lv, sign in ((2 * int(b) + 1, 1.0), (2 * int(b), -1.0)):
            if lv != ref:
                L[i, col[lv]] = sign
    df = float(res.df_resid)
    ests, ses = _combos(res, L)
    raw = [_t_ci(e, s, df, alpha)[2] for e, s in zip(ests, ses)]
    rows = []
    for b, e, s, p, ph in zip(common, ests, ses, raw, _bonferroni(raw)):
        lo, hi, _ = _t_ci(e, s, df, alpha / len(common))
        ma, mb = (bs == b) & (is_a == 1), (bs == b) & (is_a == 0)
        _, ja, jb = np.intersect1d(seed[ma], seed[mb], return_indices=True)
        sw = _mean_t(y[ma][ja] - y[mb][jb], alpha)[1:4]      # seedwise: t over the paired differences
        rows.append(dict(base, contrast="batch_size", batch_size=int(b), estimate=e, se=s, ci_low=lo,
                         ci_high=hi, p_value=p, p_adj=ph, df=df, seedwise_ci_low=sw[0], seedwise_ci_high=sw[1],
                         seedwise_p_value=sw[2]))
    return rows


# ------------------------------------------------------------------ 4. relative drop

DROP_COLUMNS = ["method", "epochs", "metric", "n_seeds", "batch_sizes", "best_batch_size", "worst_batch_size",
                "max_rel_drop_pct", "max_ci_low", "max_ci_high", "reference_batch_size", "far_batch_size",
                "ref_rel_drop_pct", "ref_ci_low", "ref_ci_high", "boot_reps"]


def _drops(means: np.ndarray, ref_i: int, far_i: int) -> tuple[np.ndarray, np.ndarray]:
    """Max relative drop from the best B (ties to the smaller B) and the drop from B_ref to B_far, in
    percent, for each row of ``means`` (reps x batch sizes)."""
    best = np.nanmax(means, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        max_drop = 100 * np.nanmax(best[:, None] - means, axis=1) / best
        ref_drop = 100 * (means[:, ref_i] - means[:, far_i]) / means[:, ref_i]
    return max_drop, ref_drop


def relative_drop_ci(runs: pd.DataFrame, reference_batch_size: int | None = None, metrics=METRICS,
                     alpha: float = ALPHA, reps: int = BOOT_REPS, long: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Per method x epochs x metric: the seed papers' max relative drop from the best batch size (cell means
    over seeds) and the pre-specified drop from the reference B to the grid's batch size farthest from it
    (log2 distance, ties to the smaller), each with a percentile bootstrap CI over seeds (whole seeds are
    resampled, so pairing is kept; ``reps`` draws from a generator seeded by the row's key).

    The max is biased upward: under no B effect it is still positive (the best of noisy means), and its
    bootstrap inherits that; the pre-specified drop is unbiased for its population value. CIs need
    ``BOOT_MIN_SEEDS`` seeds (NaN below: 2 seeds give 3 distinct resamples)."""
    long = long_table(runs, metrics) if long is None else long
    rows = []
    for (method, epochs, metric), g in _groups(long):
        seeds, si = np.unique(g["seed"], return_inverse=True)
        grid, bi = np.unique(g["batch_size"], return_inverse=True)
        if len(grid) < 2:
            continue
        Y = np.full((len(seeds), len(grid)), np.nan)               # seeds x batch sizes
        Y[si.ravel(), bi.ravel()] = g["y"]
        ref = int(grid[-1]) if reference_batch_size is None else int(reference_batch_size)
        means = np.nanmean(Y, axis=0)
        best_i = int(np.flatnonzero(means == np.nanmax(means))[0])
        worst_i = int(np.nanargmax(means[best_i] - means))
        if ref in grid:
            ref_i = int(np.flatnonzero(grid == ref)[0])
            dist = np.abs(np.log2(grid) - math.log2(ref))
            far_i = int(np.flatnonzero(dist == dist.max())[0])
        else:
            ref_i = far_i = 0
        max_d, ref_d = _drops(means[None, :], ref_i, far_i)
        rng = np.random.default_rng([BOOT_SEED, zlib.crc32(f"{method}/{epochs}/{metric}".encode())])
        S = Y.shape[0]
        boot = Y[rng.integers(0, S, size=(reps, S))]             # reps x seeds x batch sizes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a draw missing a B: that draw is NaN
            bmax, bref = _drops(np.nanmean(boot, axis=1), ref_i, far_i)
        q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
        ok = S >= BOOT_MIN_SEEDS
        mlo, mhi = np.nanpercentile(bmax, q) if ok and np.isfinite(bmax).any() else (math.nan, math.nan)
        rlo, rhi = np.nanpercentile(bref, q) if ok and np.isfinite(bref).any() else (math.nan, math.nan)
        has_ref = ref in grid
        rows.append(dict(method=method, epochs=int(epochs), metric=metric, n_seeds=S, batch_sizes=_bs_text(grid),
                         best_batch_size=int(grid[best_i]), worst_batch_size=int(grid[worst_i]),
                         max_rel_drop_pct=float(max_d[0]), max_ci_low=float(mlo), max_ci_high=float(mhi),
                         reference_batch_size=ref, far_batch_size=int(grid[far_i]) if has_ref else -1,
                         ref_rel_drop_pct=float(ref_d[0]) if has_ref else math.nan,
                         ref_ci_low=float(rlo) if has_ref else math.nan,
                         ref_ci_high=float(rhi) if has_ref else math.nan, boot_reps=reps))
    return pd.DataFrame(rows, columns=DROP_COLUMNS)


# ------------------------------------------------------------------ 5. power

def power_t(effect: float, se: float, df, alpha: float = ALPHA):
    """Power of the two-sided level-alpha t-test of an estimate with standard error ``se`` on ``df``
    degrees of freedom when the true value is ``effect`` (noncentral t, ncp = effect / se)."""
    df = np.asarray(df, dtype=float)
    q = stats.t.ppf(1 - alpha / 2, df)
    ncp = np.asarray(effect / np.asarray(se, dtype=float))
    with np.errstate(invalid="ignore"):
        # the far tail against the effect underflows to NaN at large ncp; it is ~0 there
        return stats.nct.sf(q, df, ncp) + np.nan_to_num(stats.nct.cdf(-q, df, ncp), nan=0.0)


def min_detectable(se: float, df: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true effect a two-sided level-alpha t-test detects with probability ``power``."""
    if not (df >= 1 and se > 0 and np.isfinite(se)):
        return math.nan
    hi = se
    while float(power_t(hi, se, df, alpha)) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: float(power_t(d, se, df, alpha)) - power, 0.0, hi, xtol=1e-12))


@dataclass(frozen=True)
class Design:
    """What the precision of a study depends on: its batch sizes and residual SD (seeds vary)."""

    batch_sizes: tuple[int, ...]
    sigma: float           # within-seed residual SD (points)

    def slope(self, n_seeds):
        """(se, df) of a method's slope per doubling with ``n_seeds`` complete seeds."""
        x = np.log2(np.asarray(self.batch_sizes, dtype=float))
        k, sxx = len(x), float(((x - x.mean()) ** 2).sum())
        n = np.asarray(n_seeds, dtype=float)
        return self.sigma / np.sqrt(n * sxx), n * k - n - 1

    def contrast(self, n_seeds):
        """(se, df) of one B - B_ref contrast with ``n_seeds`` complete seeds."""
        k, n = len(self.batch_sizes), np.asarray(n_seeds, dtype=float)
        return self.sigma * np.sqrt(2 / n), (n - 1) * (k - 1)

    def slope_difference(self, n_seeds):
        """(se, df) of the difference of two methods' slopes on the same ``n_seeds`` seeds."""
        se, df = self.slope(n_seeds)
        return se * math.sqrt(2), 2 * df


QUANTITIES = {"slope": "slope per doubling (pts)", "contrast": "B vs B_ref (pts, Bonferroni)",
              "slope_difference": "method-pair slope difference (pts/doubling)"}


def _alpha_for(q: str, d: Design, alpha: float) -> float:
    return alpha / (len(d.batch_sizes) - 1) if q == "contrast" else alpha


def seeds_needed(effect: float, design: Design, quantity: str = "slope", power: float = POWER,
                 alpha: float = ALPHA) -> float:
    """The fewest seeds (2..MAX_SEEDS, a full grid each) at which ``quantity`` = ``effect`` is detected
    with probability ``power``; NaN when even MAX_SEEDS do not suffice."""
    a = _alpha_for(quantity, design, alpha)

    def enough(n: int) -> bool:
        se, df = getattr(design, quantity)(n)
        return bool(power_t(abs(effect), float(se), float(df), a) >= power)

    lo, hi = 1, MAX_SEEDS              # power grows with seeds: bisect for the first n that is enough
    if not enough(hi):
        return math.nan
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return float(hi)


def residual_sd(long: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Pooled within-seed residual SD (points) of ``metric`` and its df: the residual of ``y ~ C(seed) +
    C(B)`` in each method x epochs, pooled (sum of squares over sum of df)."""
    ss, dof = 0.0, 0.0
    for (_, _, m), g in _groups(long):
        if m != metric or len(np.unique(g["batch_size"])) < 2 or len(np.unique(g["seed"])) < 2:
            continue
        res, _ = _block_fit(g["seed"], g["batch_size"], g["y"], int(g["batch_size"].max()))
        if res.df_resid >= 1:
            ss += float(res.ssr)
            dof += float(res.df_resid)
    return (math.sqrt(ss / dof), dof) if dof else (math.nan, 0.0)


def power_table(runs: pd.DataFrame, effects=DEFAULT_EFFECTS, metrics=METRICS, power: float = POWER,
                alpha: float = ALPHA, long: pd.DataFrame | None = None,
                batch_sizes: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Per metric and quantity (slope, B vs B_ref, method-pair slope difference): the within-seed residual
    SD of this study, the minimum detectable effect at ``power`` for its seed count and grid, and the seeds
    needed for each of ``effects`` (points). ``batch_sizes``: size a *planned* grid from this (pilot)
    study's residual SD instead of its own grid. UserError for fewer than 2 seeds or no finished run."""
    long = long_table(runs, metrics) if long is None else long
    if not len(long):
        raise UserError("no finished runs (status: done with an accuracy): nothing to size a study from")
    n_seeds = int(long["seed"].nunique())
    if n_seeds < 2:
        raise UserError(f"only {n_seeds} seed has finished runs: the within-seed residual needs at least 2 seeds")
    rows = []
    for metric in [m for m in metrics if m in set(long["metric"])]:
        lm = long[long["metric"] == metric]
        sigma, dof = residual_sd(long, metric)
        if not np.isfinite(sigma):
            continue
        grid = batch_sizes if batch_sizes is not None else set(int(b) for b in lm["batch_size"])
        d = Design(tuple(sorted(grid)), sigma)
        for q in QUANTITIES:
            se, df = getattr(d, q)(n_seeds)
            row = dict(metric=metric, quantity=q, resid_sd_pts=sigma, resid_df=dof, n_seeds=n_seeds,
                       batch_sizes=_bs_text(d.batch_sizes),
                       mde_pts=min_detectable(float(se), float(df), power, _alpha_for(q, d, alpha)))
            for e in effects:
                row[f"seeds_for_{e:g}"] = seeds_needed(e, d, q, power, alpha)
            rows.append(row)
    if not rows:
        raise UserError("no method has 2 seeds at 2 batch sizes: the within-seed residual is not estimable")
    return pd.DataFrame(rows)
