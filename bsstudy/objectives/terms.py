"""Loss terms as module-level pure functions of embeddings, so objectives can swap single terms.

Shapes: z, z1, z2 are (n, d); per-dimension statistics are (d,). The per-view functions also take a stack
(..., n, d) of views (vicreg_unbiased evaluates both views in one call: half the kernel launches) and then
return (..., d) statistics and (...,) terms. Nothing here keeps state; the
stateful variance schemes (``jackknife_ema_gate``, ``ema``) take their EMA as an argument.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import estimators


# ----------------------------------------------------------------------------------------- SimCLR
def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR): cosine similarity / tau, each of the 2n anchors against its positive and its
    2n-2 negatives, mean over the 2n anchors. Cross-entropy on logits (log-sum-exp), stable at small tau."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)          # (2n, d)
    logits = (z @ z.T) / temperature                            # (2n, 2n)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))       # an anchor is not its own negative
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])                         # positive of row a is a's other view
    return F.cross_entropy(logits, targets)


# ----------------------------------------------------------------------------------------- VICReg
def invariance(z1: Tensor, z2: Tensor) -> Tensor:
    """Mean over n*d of (z1 - z2)^2 (VICReg code; the paper's (1/n) sum ||z - z'||^2 is d times this)."""
    return F.mse_loss(z1, z2)


def hinge(sd: Tensor, gamma: float) -> Tensor:
    """(1/d) sum_i max(0, gamma - sd_i) (over the last dimension)."""
    return F.relu(gamma - sd).mean(dim=-1)


def plugin_std(z: Tensor, eps: float) -> Tensor:
    """sqrt(Var_i + eps) with the 1/(n-1) variance: VICReg's per-dimension std. (d,)"""
    return torch.sqrt(z.var(dim=-2) + eps)


def vicreg_covariance(z: Tensor) -> Tensor:
    """VICReg's covariance term: sum_{i != j} C_ij^2 / d, C the 1/(n-1) sample covariance (plug-in)."""
    return estimators.cov_offdiag_sq(z, unbiased=False) / z.shape[1]


# ------------------------------------------------------------------------------ unbiased VICReg
def unbiased_covariance(z: Tensor, target: str, m: estimators.Moments | None = None) -> Tensor:
    """U-statistic covariance term / d: ``identity`` -> ||Sigma - I||_F^2, ``offdiag`` -> sum_{i!=j} Sigma_ij^2.

    Unbiased in value and gradient for every n >= 4; may be negative (never clamped). ``m``: precomputed
    ``estimators.moments(z)`` (shared with ``jackknife_std``)."""
    m = estimators.moments(z) if m is None else m
    d = z.shape[-1]
    if target == "identity":
        return estimators.minus_identity_sq_from_moments(m, unbiased=True) / d
    if target == "offdiag":
        return estimators.offdiag_sq_from_moments(m, unbiased=True) / d
    raise ValueError(f"cov_target must be identity or offdiag, got {target!r}")


def jackknife_std(z: Tensor, eps: float, m: estimators.Moments | None = None) -> Tensor:
    """Jackknife-corrected std per dimension (bias O(n^-2) instead of O(n^-1)); needs n >= 3. (d,)

    sd_J = n sqrt(v + eps) - (n-1)/n sum_a sqrt(v_(-a) + eps), with the leave-one-out variances in O(n d):
    v_(-a) = [(n-1) v - n/(n-1) (z_a - mean)^2] / (n-2), clamped >= 0 (rounding only; exact values are >= 0).
    ``m``: precomputed ``estimators.moments(z)``.
    """
    m = estimators.moments(z) if m is None else m
    n = z.shape[-2]
    v = m.s_ii / (n - 1)                                        # (..., d)
    # v_(-a) + eps = [v (n-1)/(n-2) + eps] - n/((n-1)(n-2)) dev2; clamping at eps == clamping v_(-a) at 0
    base = (v * ((n - 1) / (n - 2)) + eps).unsqueeze(-2)        # (..., 1, d)
    loo_sum = _SqrtSumClamped.apply(base, m.sq, n / ((n - 1) * (n - 2)), eps)
    return n * torch.sqrt(v + eps) - ((n - 1) / n) * loo_sum


class _SqrtSumClamped(torch.autograd.Function):
    """sum_a sqrt(max(base - coef * sq_a, floor)) over rows a, with a hand-written backward.

    The jackknife's only O(n d) part; fused in-place passes make it ~2x cheaper than the autograd graph of
    add/clamp/sqrt/sum (it dominated vicreg_unbiased's extra cost over vicreg at large n*d)."""

    @staticmethod
    def forward(ctx, base: Tensor, sq: Tensor, coef: float, floor: float) -> Tensor:  # type: ignore[override]
        s = torch.add(base, sq, alpha=-coef)                    # (..., n, d)
        s.clamp_min_(floor).sqrt_()
        ctx.save_for_backward(s)
        ctx.coef, ctx.floor = coef, floor
        return s.sum(dim=-2)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (s,) = ctx.saved_tensors
        g = s.reciprocal().mul_(0.5 * grad.unsqueeze(-2))  # d sqrt(x)/dx = 1/(2 sqrt x), times upstream
        thr = torch.sqrt(torch.tensor(ctx.floor, dtype=s.dtype, device=s.device))  # same rounding as forward
        g.masked_fill_(s <= thr, 0.0)                           # clamped entries carry no gradient
        return g.sum(dim=-2, keepdim=True), g.mul_(-ctx.coef), None, None


def c4(n: int) -> float:
    """c4(n) = E[s]/sigma for Gaussian samples of size n (s with 1/(n-1))."""
    return math.exp(0.5 * math.log(2.0 / (n - 1)) + math.lgamma(n / 2) - math.lgamma((n - 1) / 2))


def c4_std(z: Tensor, eps: float) -> Tensor:
    """sqrt(Var + eps) / c4(n): unbiased std for Gaussian data only. (d,)"""
    return plugin_std(z, eps) / c4(z.shape[-2])


def gated_hinge(sd: Tensor, ema_var: Tensor, gamma: float, eps: float) -> Tensor:
    """(1/d) sum_i 1[sqrt(ema_i + eps) < gamma] (gamma - sd_i): the hinge's on/off decided by an EMA of
    the variance, not by the noisy batch estimate (no spurious push on dimensions already above gamma)."""
    gate = (torch.sqrt(ema_var + eps) < gamma).to(sd.dtype)
    return (gate * (gamma - sd)).mean(dim=-1)


def ema_hinge(var: Tensor, ema_var: Tensor, gamma: float, eps: float) -> Tensor:
    """MINE-style: h(m) + h'(m) (v - m) with h(v) = max(0, gamma - sqrt(v + eps)), m the EMA (a constant).

    The gradient is h'(m) dv/dtheta: outer derivative from past batches, inner gradient from this batch
    (unbiased when m is independent of the batch and the process is stationary). The value is the first-order
    expansion of h(v) about m."""
    sd_m = torch.sqrt(ema_var + eps)
    active = (sd_m < gamma).to(var.dtype)
    h = active * (gamma - sd_m)
    dh = -active / (2.0 * sd_m)
    return (h + dh * (var - ema_var)).mean(dim=-1)
