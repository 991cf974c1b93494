"""Bias, noise and confidence intervals from K group means of gradient errors (docs/bias.md, "Statistics").

Setting: R = K*m i.i.d. minibatch gradients ĝ_1..ĝ_R (each batch an independent simple random sample
of the pool) are split into K groups of m; D_k = (mean of group k) − g* is the k-th group error.
Everything below is a function of the K×K Gram matrix M_kl = <D_k, D_l>, the projections
c_k = <D_k, g*> and ‖g*‖², so the same code serves embedding space and parameter space.

- E‖D̄‖² = ‖b‖² + tr Cov(ĝ)/R: the raw error of the R-batch mean has a noise floor.
- U = Σ_{k≠l} M_kl / (K(K−1)) is exactly unbiased for ‖b‖² (a U-statistic over groups: E<D_k, D_l> =
  ‖b‖² for k ≠ l because group means are independent). Equivalently U = ‖D̄‖² − tr Ĉov(ḡ_group)/K.
- Its standard error: jackknife over groups (delete one group, recompute U), t-interval with K−1
  degrees of freedom. The interval is for ‖b‖² (which may be negative by chance); the interval for
  the relative bias ‖b‖/‖g*‖ maps its ends through sqrt(max(·, 0)).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps


def jackknife_u_offdiag(gram: np.ndarray) -> tuple[float, float]:
    """U = mean of the off-diagonal entries of ``gram`` and its delete-one-group jackknife standard error.

    Needs K >= 3 groups (the delete-one estimates need two groups left).
    """
    g = np.asarray(gram, dtype=np.float64)
    k = g.shape[0]
    if g.shape != (k, k) or k < 3:
        raise ValueError(f"need a square Gram matrix of >= 3 groups, got shape {g.shape}")
    off_total = g.sum() - np.trace(g)
    u = off_total / (k * (k - 1))
    row_off = g.sum(axis=1) - np.diag(g)  # Σ_{l≠j} M_jl
    # the Gram is symmetric, so deleting group j removes 2·row_off[j] from the off-diagonal total
    u_del = (off_total - 2.0 * row_off) / ((k - 1) * (k - 2))
    se = math.sqrt((k - 1) / k * float(((u_del - u_del.mean()) ** 2).sum()))
    return float(u), se


def summarize_group_errors(
    gram: np.ndarray,
    cross: np.ndarray,
    target_sq: float,
    group_size: int,
    level: float = 0.95,
) -> dict[str, Any]:
    """Bias / noise summary from group errors; see the module docstring for the estimators.

    gram: K×K Gram matrix of the group errors D_k; cross: <D_k, g*> (K,); target_sq: ‖g*‖²;
    group_size: m, batches per group. Returned ratios are relative to ‖g*‖ (NaN if g* = 0).
    """
    g = np.asarray(gram, dtype=np.float64)
    c = np.asarray(cross, dtype=np.float64)
    k = g.shape[0]
    m = int(group_size)
    tq = sps.t.ppf(0.5 + level / 2.0, df=k - 1)
    norm = math.sqrt(target_sq) if target_sq > 0 else float("nan")

    mean_err_sq = float(g.sum()) / k**2  # ‖D̄‖², D̄ = mean ĝ over all R batches − g*
    within = max((float(np.trace(g)) - k * mean_err_sq) / (k - 1), 0.0)  # tr Ĉov of a group mean
    u, se = jackknife_u_offdiag(g)
    lo, hi = u - tq * se, u + tq * se

    def rel(x: float) -> float:
        return math.sqrt(max(x, 0.0)) / norm

    c_bar = float(c.mean())
    c_se = float(c.std(ddof=1)) / math.sqrt(k)
    # cosine of the R-batch mean with g* (finite R: pulled below the cosine of E ĝ by the noise)
    raw_norm_sq = target_sq + 2.0 * c_bar + mean_err_sq
    cos_raw = (target_sq + c_bar) / (norm * math.sqrt(raw_norm_sq)) if raw_norm_sq > 0 else float("nan")
    # noise-corrected: ‖E ĝ‖² = ‖g*‖² + 2<b, g*> + ‖b‖², each term estimated unbiasedly
    corr_norm_sq = target_sq + 2.0 * c_bar + u
    cos_corr = (target_sq + c_bar) / (norm * math.sqrt(corr_norm_sq)) if corr_norm_sq > 0 else float("nan")
    return {
        "rel_bias": rel(u),  # clipped at 0 for display only; rel_bias_sq keeps the sign
        "rel_bias_ci_low": rel(lo),
        "rel_bias_ci_high": rel(hi),
        "rel_bias_sq": u / target_sq if target_sq > 0 else float("nan"),
        "rel_bias_sq_se": se / target_sq if target_sq > 0 else float("nan"),
        "rel_bias_raw": math.sqrt(mean_err_sq) / norm,
        "noise_floor": math.sqrt(within / k) / norm,  # sqrt(tr Cov(ĝ)/R)/‖g*‖
        "rel_noise": math.sqrt(within * m) / norm,  # per-batch RMS ‖ĝ − E ĝ‖/‖g*‖
        "cosine": cos_raw,
        "cosine_corrected": cos_corr,
        "bias_along": c_bar / target_sq if target_sq > 0 else float("nan"),  # <b, g*>/‖g*‖²
        "bias_along_ci_low": (c_bar - tq * c_se) / target_sq if target_sq > 0 else float("nan"),
        "bias_along_ci_high": (c_bar + tq * c_se) / target_sq if target_sq > 0 else float("nan"),
    }


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of i.i.d. ``values`` with a t confidence interval (mean, low, high)."""
    v = np.asarray(values, dtype=np.float64)
    mu = float(v.mean())
    if v.size < 2:
        return mu, float("nan"), float("nan")
    half = sps.t.ppf(0.5 + level / 2.0, df=v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mu, mu - half, mu + half
