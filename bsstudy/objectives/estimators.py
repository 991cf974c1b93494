"""Covariance-term estimators: plug-in (biased) and exact U-statistics (unbiased for every n >= 4).

Every estimator is ``f(z, unbiased: bool, form="auto") -> scalar`` on a batch ``z`` of i.i.d. rows:
``z`` is (n, d), or (..., n, d) for a stack of independent batches (returns shape (...)).

- ``cov_fro_sq``            estimates ||Sigma||_F^2
- ``cov_offdiag_sq``        estimates sum_{i != j} Sigma_ij^2     (VICReg's covariance term, before /d)
- ``cov_minus_identity_sq`` estimates ||Sigma - I||_F^2           (the seed's unbiased-VICReg term)
- ``cross_offdiag_sq(x, y)`` estimates sum_{i != j} Cov(x_i, y_j)^2 for paired rows of two views
  (the numerator of Barlow Twins' off-diagonal term)

``unbiased=False`` is the plug-in with the 1/(n-1) sample covariance C (what VICReg uses); its bias is
((tr Sigma)^2 + ||Sigma||_F^2)/(n-1) for Gaussian data (shared/ESTIMATORS.md). ``unbiased=True`` is the
U-statistic of shared/ESTIMATORS.md; it can be negative and is never clamped (clamping restores bias).
Its value and its gradient are unbiased, because it is a polynomial in z.

Forms: with centred rows Zc, S = Zc^T Zc (d x d) and the Gram matrix K = Zc Zc^T (n x n) share
||S||_F = ||K||_F, tr S = tr K and the row norms r = diag K. ``form="auto"`` uses the Gram form when
n < d (O(n^2 d) time, n x n memory) and the S-form otherwise (O(n d^2), d x d memory).
Off-diagonal sums are formed with the diagonal zeroed, never as (full - diagonal) when n >= d: there the
diagonal dominates and the difference loses float32 precision in proportion to n/d.
"""
from __future__ import annotations

from functools import cached_property

import torch
from torch import Tensor

FORMS = ("auto", "gram", "cov")


def _check(z: Tensor, unbiased: bool, form: str) -> None:
    if z.dim() < 2:
        raise ValueError(f"estimators need a batch z of shape (n, d) or (..., n, d), got shape {tuple(z.shape)}")
    n = z.shape[-2]
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    if unbiased and n < 4:
        raise ValueError(f"the unbiased covariance U-statistic needs n >= 4 rows, got n={n}")
    if not unbiased and n < 2:
        raise ValueError(f"the plug-in covariance needs n >= 2 rows, got n={n}")


class Moments:
    """Shared first steps of every estimator on a batch (..., n, d), each computed once, when first needed
    (the objectives share one per view between the covariance and variance terms)."""

    def __init__(self, zc: Tensor) -> None:
        self.zc = zc  # (..., n, d) centred rows

    @cached_property
    def sq(self) -> Tensor:
        """(..., n, d) zc^2."""
        return self.zc.pow(2)

    @cached_property
    def r(self) -> Tensor:
        """(..., n) squared row norms = diag K."""
        return self.sq.sum(dim=-1)

    @cached_property
    def s_ii(self) -> Tensor:
        """(..., d) diagonal of S = column sums of zc^2."""
        return self.sq.sum(dim=-2)


def moments(z: Tensor) -> Moments:
    """Centre (always: the uncentred shortcut loses everything to cancellation when |mean| >> std)."""
    return Moments(z - z.mean(dim=-2, keepdim=True))


def _use_gram(n: int, d: int, form: str) -> bool:
    return form == "gram" or (form == "auto" and n < d)


def _fro_stats(m: Moments, form: str) -> tuple[Tensor, Tensor, Tensor]:
    """(||S||_F^2, tr S, sum_a r_a^2) from the moments of a batch."""
    zc = m.zc
    n, d = zc.shape[-2], zc.shape[-1]
    if _use_gram(n, d, form):
        g = zc @ zc.transpose(-1, -2)              # K: (..., n, n)
    else:
        g = zc.transpose(-1, -2) @ zc              # S: (..., d, d)
    return g.pow(2).sum(dim=(-1, -2)), m.r.sum(dim=-1), m.r.pow(2).sum(dim=-1)


def _u_fro_coeffs(n: int) -> tuple[float, float, float, float]:
    """Coefficients (a, b, c, denominator) of U_fro = [a ||S||^2 + b (tr S)^2 - c sum r^2] / denominator.

    A separate function so the mutation test can perturb one coefficient and see the Monte-Carlo test fail.
    """
    return float((n - 1) * (n - 2)), 1.0, float(n * (n - 1)), float(n * (n - 1) * (n - 2) * (n - 3))


def _u_fro(m: Moments, form: str) -> Tensor:
    n = m.zc.shape[-2]
    s2, tr, r2 = _fro_stats(m, form)
    a, b, c, den = _u_fro_coeffs(n)
    return (a * s2 + b * tr.pow(2) - c * r2) / den


def _u_diag(m: Moments) -> Tensor:
    """U-statistic for sum_i Sigma_ii^2 (O(n d))."""
    n = m.zc.shape[-2]
    m4 = m.sq.pow(2).sum(dim=-2)                   # (..., d) sum_a zc_ai^4
    den = n * (n - 1) * (n - 2) * (n - 3)
    return ((n * n - 3 * n + 3) * m.s_ii.pow(2) - n * (n - 1) * m4).sum(dim=-1) / den


def _offdiag_mask(d: int, device: torch.device) -> Tensor:
    return ~torch.eye(d, dtype=torch.bool, device=device)


def _offdiag_sq_sum(s: Tensor) -> Tensor:
    """sum_{i != j} s_ij^2 over the last two dims, with the diagonal *zeroed*, not subtracted: subtracting
    sum_i s_ii^2 cancels catastrophically when the diagonal dominates (n >> d, nearly decorrelated data:
    float32 then returns 0 or a relative error ~ 1e-7 n/d)."""
    return s.masked_fill(~_offdiag_mask(s.shape[-1], s.device), 0.0).pow(2).sum(dim=(-1, -2))


def _plugin_offdiag(m: Moments, form: str) -> Tensor:
    zc = m.zc
    n, d = zc.shape[-2], zc.shape[-1]
    if _use_gram(n, d, form):
        # n < d: the off-diagonal sum is >= ~(d/n) x the diagonal one for any data, so subtracting is safe
        s2, _, _ = _fro_stats(m, form)
        return (s2 - m.s_ii.pow(2).sum(dim=-1)) / (n - 1) ** 2
    return _offdiag_sq_sum(zc.transpose(-1, -2) @ zc) / (n - 1) ** 2


def _u_off(m: Moments, form: str) -> Tensor:
    """U-statistic for sum_{i != j} Sigma_ij^2.

    Gram form (n < d): U_fro - U_diag. S-form: the same polynomial with the diagonal removed term by term,
        [a sum_{i!=j} S_ij^2 + b ((tr S)^2 - sum_i S_ii^2) - c sum_a (r_a^2 - sum_i zc_ai^4)] / den,
    (a, b, c, den those of U_fro), so the d-sized diagonal never enters a difference (U_fro - U_diag
    would cancel it: float32 relative error ~ 1e-7 n d / (n U_off) when n >> d)."""
    zc = m.zc
    n, d = zc.shape[-2], zc.shape[-1]
    if _use_gram(n, d, form):
        return _u_fro(m, form) - _u_diag(m)
    a, b, c, den = _u_fro_coeffs(n)
    off_s2 = _offdiag_sq_sum(zc.transpose(-1, -2) @ zc)
    off_tr2 = m.s_ii.sum(dim=-1).pow(2) - m.s_ii.pow(2).sum(dim=-1)
    off_r2 = (m.r.pow(2) - m.sq.pow(2).sum(dim=-1)).sum(dim=-1)
    return (a * off_s2 + b * off_tr2 - c * off_r2) / den


def fro_sq_from_moments(m: Moments, unbiased: bool, form: str = "auto") -> Tensor:
    """``cov_fro_sq`` from precomputed ``moments(z)``."""
    return _u_fro(m, form) if unbiased else _fro_stats(m, form)[0] / (m.zc.shape[-2] - 1) ** 2


def offdiag_sq_from_moments(m: Moments, unbiased: bool, form: str = "auto") -> Tensor:
    """``cov_offdiag_sq`` from precomputed ``moments(z)``."""
    return _u_off(m, form) if unbiased else _plugin_offdiag(m, form)


def _diag_minus_identity_sq(m: Moments, unbiased: bool) -> Tensor:
    """sum_i (Sigma_ii - 1)^2: plug-in sum_i (v_i - 1)^2, or its U-statistic
    sum_i [(v_i - 1)^2 - (M4_i - v_i^2 (n^2 - 3)/n) / ((n-2)(n-3))] with M4_i = sum_a zc_ai^4, which is
    U_diag - 2 tr C + d regrouped so that no d-sized quantity enters a difference."""
    n = m.zc.shape[-2]
    v = m.s_ii / (n - 1)
    out = (v - 1.0).pow(2)
    if unbiased:
        m4 = m.sq.pow(2).sum(dim=-2)
        out = out - (m4 - v.pow(2) * ((n * n - 3) / n)) / ((n - 2) * (n - 3))
    return out.sum(dim=-1)


def minus_identity_sq_from_moments(m: Moments, unbiased: bool, form: str = "auto") -> Tensor:
    """``cov_minus_identity_sq`` from precomputed ``moments(z)``: off-diagonal + sum_i (Sigma_ii - 1)^2.

    Not as ||C||^2 - 2 tr C + d: near Sigma = I that difference cancels d against a result near 0
    (float32 relative error ~1 at n = 65536, d = 4 on whitened data)."""
    return offdiag_sq_from_moments(m, unbiased, form) + _diag_minus_identity_sq(m, unbiased)


def cov_fro_sq(z: Tensor, unbiased: bool, form: str = "auto") -> Tensor:
    """Estimate ||Sigma||_F^2 from rows z (n, d): plug-in ||C||_F^2 or the U-statistic U_fro."""
    _check(z, unbiased, form)
    return fro_sq_from_moments(moments(z), unbiased, form)


def cov_offdiag_sq(z: Tensor, unbiased: bool, form: str = "auto") -> Tensor:
    """Estimate sum_{i != j} Sigma_ij^2 from rows z (n, d): plug-in or U_fro - U_diag."""
    _check(z, unbiased, form)
    return offdiag_sq_from_moments(moments(z), unbiased, form)


def cov_minus_identity_sq(z: Tensor, unbiased: bool, form: str = "auto") -> Tensor:
    """Estimate ||Sigma - I||_F^2 from rows z (n, d): plug-in ||C - I||_F^2 or U_fro - 2 tr C + d."""
    _check(z, unbiased, form)
    return minus_identity_sq_from_moments(moments(z), unbiased, form)


# ------------------------------------------------------------------- cross-covariance (two views)
def _check_pair(x: Tensor, y: Tensor, unbiased: bool, form: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"cross-covariance estimators need x and y of the same shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    _check(x, unbiased, form)


def cross_products(xc: Tensor, yc: Tensor, form: str = "auto") -> tuple[Tensor, Tensor]:
    """(sum_{i != j} S_ij^2, diag S) with S = xc^T yc (d x d), for rows xc, yc (..., n, d) -> (...), (..., d).

    S-form: S with its diagonal zeroed. Gram form (``auto`` when 2n < d: two n x n products cost less than
    one d x d): sum_ab Kx_ab Ky_ab - sum_i S_ii^2 with Kx = xc xc^T, Ky = yc yc^T; there the off-diagonal
    sum is >= ~(d/n) x the diagonal one, so the difference keeps its precision."""
    n, d = xc.shape[-2], xc.shape[-1]
    if form == "gram" or (form == "auto" and 2 * n < d):
        diag = (xc * yc).sum(dim=-2)
        fro = (xc @ xc.transpose(-1, -2)).mul_(yc @ yc.transpose(-1, -2)).sum(dim=(-1, -2))
        return fro - diag.pow(2).sum(dim=-1), diag
    s = xc.transpose(-1, -2) @ yc
    return _offdiag_sq_sum(s), torch.diagonal(s, dim1=-2, dim2=-1)


def cross_offdiag_sq_centred(xc: Tensor, yc: Tensor, unbiased: bool, form: str = "auto") -> Tensor:
    """``cross_offdiag_sq`` on rows that are already centred (column means exactly 0).

    With S = xc^T yc (d x d), Sx_ii = sum_a xc_ai^2, Sy_jj likewise, the U-statistic is
        [a sum_{i!=j} S_ij^2 + b sum_{i!=j} Sx_ii Sy_jj - c sum_a sum_{i!=j} xc_ai^2 yc_aj^2] / den
    with U_fro's coefficients (a, b, c, den) = ((n-1)(n-2), 1, n(n-1), n(n-1)(n-2)(n-3)): HSIC_u of
    Song et al. (2012) with linear kernels, restricted to i != j; for x = y it is U_off."""
    off_s2, _ = cross_products(xc, yc, form)
    return cross_u_offdiag(xc, yc, off_s2) if unbiased else off_s2 / (xc.shape[-2] - 1) ** 2


def cross_u_offdiag(xc: Tensor, yc: Tensor, off_s2: Tensor) -> Tensor:
    """The cross U-statistic of ``cross_offdiag_sq_centred`` given sum_{i != j} S_ij^2 (``cross_products``)."""
    n = xc.shape[-2]
    sqx, sqy = xc.pow(2), yc.pow(2)
    sx, sy = sqx.sum(dim=-2), sqy.sum(dim=-2)                          # (..., d)
    off_tr = sx.sum(dim=-1) * sy.sum(dim=-1) - (sx * sy).sum(dim=-1)
    off_r = (sqx.sum(dim=-1) * sqy.sum(dim=-1) - (sqx * sqy).sum(dim=-1)).sum(dim=-1)
    a, b, c, den = _u_fro_coeffs(n)
    return (a * off_s2 + b * off_tr - c * off_r) / den


def cross_offdiag_sq(x: Tensor, y: Tensor, unbiased: bool, form: str = "auto") -> Tensor:
    """Estimate sum_{i != j} Cov(x_i, y_j)^2 from paired rows (x_a, y_a), each (n, d) or (..., n, d).

    ``unbiased=False``: plug-in with the 1/(n-1) cross-covariance. ``unbiased=True``: the 4-tuple U-statistic
    (kernel 1/4 (x_p - x_q)_i (y_p - y_q)_j (x_r - x_s)_i (y_r - y_s)_j), unbiased for every n >= 4; may be
    negative, never clamped. Both views are centred first."""
    _check_pair(x, y, unbiased, form)
    return cross_offdiag_sq_centred(x - x.mean(dim=-2, keepdim=True), y - y.mean(dim=-2, keepdim=True),
                                    unbiased, form)
