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


def dcl(z1: Tensor, z2: Tensor, temperature: float, sigma: float | None = None) -> Tensor:
    """Decoupled contrastive loss (Yeh et al., 2022, eq. 6): NT-Xent with the positive removed from the
    denominator, i.e. -s(a, a')/tau + log sum over the 2n-2 negatives of exp(s/tau), mean over the 2n anchors.
    ``sigma``: DCLW, the positive term weighted by w_a = 2 - n softmax_a(s(z1_a, z2_a)/sigma) (detached)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)          # (2n, d)
    logits = (z @ z.T) / temperature                            # (2n, 2n)
    idx = torch.arange(2 * n, device=z.device)
    pos_idx = (idx + n) % (2 * n)
    pos = logits[idx, pos_idx]
    mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    mask[idx, pos_idx] = True                                   # neither the anchor itself nor its positive
    neg = torch.logsumexp(logits.masked_fill(mask, float("-inf")), dim=1)
    if sigma is not None:
        with torch.no_grad():
            w = 2.0 - n * torch.softmax((z[:n] * z[n:]).sum(dim=1) / sigma, dim=0)
        pos = pos * w.repeat(2)
    return (neg - pos).mean()


# ------------------------------------------------------------------------------------ Barlow Twins
def batch_standardize(z: Tensor, eps: float, unbiased: bool = False) -> tuple[Tensor, Tensor]:
    """((z - mean) / sqrt(Var + eps), Var) per column over the rows (dim -2); Var with 1/n (BatchNorm in
    training mode, as Barlow Twins' code) or 1/(n-1) (``unbiased``). Shapes (..., n, d) -> same, (..., 1, d)."""
    # not F.batch_norm: its CPU float32 statistics are off by ~1e-3 (loss and gradient) at n = 65536;
    # not torch.var_mean: ~40x slower on CPU for column statistics (it dominated barlow_twins_unbiased at d=128)
    zc = z - z.mean(dim=-2, keepdim=True)
    var = zc.pow(2).sum(dim=-2, keepdim=True) / (z.shape[-2] - (1 if unbiased else 0))
    return zc * torch.rsqrt(var + eps), var


def one_minus_correlation(x: Tensor, y: Tensor, vx: Tensor, vy: Tensor, eps: float, rows: int) -> Tensor:
    """1 - sum_a x_a y_a / rows per column for standardized x, y with sum_a x_a^2 = rows Vx/(Vx + eps):
    as 1/2 sum (x - y)^2 / rows + 1/2 [eps/(Vx + eps) + eps/(Vy + eps)], which equals it exactly but keeps
    float32 precision when the correlation is close to 1 (1 - C_ii computed directly loses it). (..., d)"""
    return 0.5 * (x - y).pow(2).sum(dim=-2) / rows + 0.5 * (eps / (vx + eps) + eps / (vy + eps)).squeeze(-2)


def barlow_twins(z1: Tensor, z2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Barlow Twins (Zbontar et al., 2021; facebookresearch/barlowtwins): C = bn(z1)^T bn(z2) / n with bn the
    affine-free BatchNorm (1/n variance, eps). Returns (sum_i (1 - C_ii)^2, sum_{i != j} C_ij^2). (..., n, d)

    One autograd node with a hand-written backward (``_BarlowTwins``): the ~30 small autograd nodes of the
    composed form cost more than the matrix products at d ~ 128 (1.6-1.9x lightly's BarlowTwinsLoss)."""
    return _BarlowTwins.apply(z1, z2, float(eps))


def _bn_forward(z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x, r): x = (z - mean) r, r = 1/sqrt(Var + eps), 1/n variance; two passes (torch.var_mean is ~40x slower
    on CPU for column statistics, F.batch_norm's CPU float32 statistics lose ~1e-3 at n = 65536)."""
    x = z - z.mean(dim=-2, keepdim=True)
    r = torch.rsqrt(x.pow(2).mean(dim=-2, keepdim=True).add_(eps))   # (torch.linalg.vector_norm: 7x slower)
    return x.mul_(r), r


def _gram_form(n: int, d: int) -> bool:
    # two n x n products cost less than one d x d one (cross_products' rule)
    return 2 * n < d


class _BarlowTwins(torch.autograd.Function):
    """(on, off) of Barlow Twins from z1, z2 (..., n, d), forward and backward in closed form.

    Forward: x = bn(z1), y = bn(z2); 1 - C_ii = 1/(2n) sum_a (x - y)_ai^2 + eps/2 (rx_i^2 + ry_i^2)
    (``one_minus_correlation``: exact, keeps float32 precision when C_ii ~ 1); O = C with its diagonal zeroed
    (never subtracted when n >= d/2: the diagonal dominates there). Gram form when 2n < d:
    sum_{i!=j} C_ij^2 = sum_ab Kx_ab Ky_ab / n^2 - sum_i C_ii^2 (then the off-diagonal part dominates).
    Backward: with dL/dC_ii = -2 (1 - C_ii) g_on, dL/dC_ij = 2 C_ij g_off and BatchNorm's backward
    dz = r [dx - mean(dx) - x mean(dx x)], the diagonal part is -2 g_on (1 - C_ii)/n [(y - x) + x (1 - C_ii)]
    (y - x formed directly, as autograd of the (x - y)^2 form would) and the off-diagonal part
    2 g_off/n [y O^T - x rowsum(O^2)] for z1 (x O - y colsum(O^2) for z2)."""

    @staticmethod
    def forward(ctx, z1: Tensor, z2: Tensor, eps: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        n, d = z1.shape[-2], z1.shape[-1]
        x, rx = _bn_forward(z1, eps)
        y, ry = _bn_forward(z2, eps)
        dxy = y - x
        omc = dxy.pow(2).sum(dim=-2).mul_(0.5 / n)
        omc += (rx.pow(2) + ry.pow(2)).squeeze(-2).mul_(0.5 * eps)              # (..., d) 1 - C_ii
        on = omc.pow(2).sum(dim=-1)
        ctx.gram = _gram_form(n, d)
        if ctx.gram:
            kx, ky = x @ x.transpose(-1, -2), y @ y.transpose(-1, -2)
            diag = (x * y).sum(dim=-2).div_(n)                                  # C_ii
            off = (kx * ky).sum(dim=(-1, -2)).div_(n * n) - diag.pow(2).sum(dim=-1)
            ctx.save_for_backward(x, y, dxy, rx, ry, omc, kx, ky, diag)
        else:
            o = (x.transpose(-1, -2) @ y).div_(n)
            o.diagonal(dim1=-2, dim2=-1).zero_()
            off = o.pow(2).sum(dim=(-1, -2))
            ctx.save_for_backward(x, y, dxy, rx, ry, omc, o)
        return on, off

    @staticmethod
    def backward(ctx, g_on: Tensor, g_off: Tensor):  # type: ignore[override]
        # every (n, d) term is a d-vector times x, y or y - x, or a matrix product: gathered per coefficient
        # so the backward makes ~10 passes over (n, d) (the composed form's autograd made ~30)
        x, y, dxy, rx, ry, omc, *rest = ctx.saved_tensors
        n = x.shape[-2]
        om = omc.unsqueeze(-2)                                                  # (..., 1, d)
        a = om * (-2.0 / n) * g_on.unsqueeze(-1).unsqueeze(-1)
        b = (2.0 / n) * g_off.unsqueeze(-1).unsqueeze(-1)                       # (..., 1, 1)
        if ctx.gram:
            kx, ky, diag = rest
            kyx, kxy = ky @ x, kx @ y                                           # n (y O^T + y diag C), ...
            dg2 = diag.pow(2).unsqueeze(-2)
            row = (x * kyx).sum(dim=-2, keepdim=True).div_(n * n) - dg2        # rowsum(O^2)
            col = (y * kxy).sum(dim=-2, keepdim=True).div_(n * n) - dg2        # colsum(O^2)
            bd = b * diag.unsqueeze(-2)
            gx = kyx.mul_(b / n).addcmul_(y, bd, value=-1.0)                    # b y O^T
            gy = kxy.mul_(b / n).addcmul_(x, bd, value=-1.0)                    # b x O
        else:
            (o,) = rest
            bo = o * b
            gx, gy = y @ bo.transpose(-1, -2), x @ bo
            o2 = o.pow(2)
            row, col = o2.sum(dim=-1).unsqueeze(-2), o2.sum(dim=-2).unsqueeze(-2)
        # diagonal: a [(y - x) + x (1 - C_ii)] for z1, a [(x - y) + y (1 - C_ii)] for z2
        gx = gx.addcmul_(x, a * om - b * row).addcmul_(dxy, a)
        gy = gy.addcmul_(y, a * om - b * col).addcmul_(dxy, a, value=-1.0)
        # BatchNorm's mean subtraction (exactly 0 for exactly centred x, y; kept for rounding in the centring)
        gx = (gx - gx.mean(dim=-2, keepdim=True)).mul_(rx)
        gy = (gy - gy.mean(dim=-2, keepdim=True)).mul_(ry)
        return gx, gy, None


def barlow_off_diagonal_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """sum_{i != j} of the U-statistic of Cov(x_i, y_j)^2 on columns standardized to unit 1/(n-1) variance:
    an estimator of sum_{i != j} rho_ij^2 (population cross-correlations). Exactly unbiased (0) for pairs of
    independent coordinates; a ratio, so only bias-reduced (O(1/n) relative) for correlated pairs."""
    return estimators.cross_u_offdiag(x, y, estimators.cross_products(x, y)[0])


def jackknife_on_diagonal(x: Tensor, y: Tensor, vx: Tensor, vy: Tensor, eps: float) -> Tensor:
    """Delete-one jackknife of (1 - r_i)^2 per column, r the sample correlation with variances V + eps:
    n g - (n-1)/n sum_a g_(-a), bias O(n^-2) instead of O(n^-1); O(n d), leave-one-out moments in closed form.

    x, y: columns standardized with the 1/(n-1) variance (``batch_standardize(z, eps, unbiased=True)``).
    With xh = x/sqrt(n-1) (sum xh^2 = V/(V + eps)), alpha_a = n/(n-1) xh_a^2 + eps/((n-1)(Vx + eps)), beta_a
    likewise, gamma_a = n/(n-1) xh_a yh_a and q_a = sqrt((1 - alpha_a)(1 - beta_a)), removing row a gives
    r_(-a) = (r - gamma_a)/q_a. Evaluated as g + (n-1)/n sum_a (g - g_(-a)) with
    Delta_a = r - r_(-a) = [gamma_a - r (1 - q_a)]/q_a and 1 - q_a = (alpha + beta - alpha beta)/(1 + q_a):
    the literal form would cancel terms n times larger than the result. (..., d)"""
    n = x.shape[-2]
    k = n / (n - 1)
    xh, yh = x / math.sqrt(n - 1), y / math.sqrt(n - 1)
    one_minus_r = one_minus_correlation(xh, yh, vx, vy, eps, 1)
    r = (1.0 - one_minus_r).unsqueeze(-2)
    # exact floor of A'/A: the leave-one-out variance is >= 0 (only rounding crosses it)
    def removed_share(h: Tensor, v: Tensor) -> Tensor:
        # 1 - A'/A of the variance sum when row a leaves; A'/A >= (n-2) eps / A exactly (rounding only crosses)
        floor = (n - 2) / (n - 1) * eps / (v + eps) + torch.finfo(h.dtype).tiny
        return torch.minimum(k * h.pow(2) + eps / ((n - 1) * (v + eps)), 1 - floor)

    alpha, beta = removed_share(xh, vx), removed_share(yh, vy)
    q = torch.sqrt((1 - alpha) * (1 - beta))
    delta = (k * xh * yh - r * (alpha + beta - alpha * beta) / (1 + q)) / q
    g = one_minus_r.pow(2)
    return g - ((n - 1) / n) * (delta * (2 * one_minus_r.unsqueeze(-2) + delta)).sum(dim=-2)


def barlow_twins_unbiased(z1: Tensor, z2: Tensor, eps: float, on_diagonal: str = "jackknife") -> tuple[Tensor, Tensor]:
    """(on-diagonal, off-diagonal) terms of unbiased Barlow Twins, z1, z2 (..., n, d) -> (...), (...): columns
    standardized with the 1/(n-1) variance + eps; on-diagonal sum_i of the jackknife (``jackknife``) or the
    plug-in (``plugin``) of (1 - r_ii)^2; off-diagonal ``barlow_off_diagonal_unbiased``."""
    n = z1.shape[-2]
    x, vx = batch_standardize(z1, eps, unbiased=True)
    y, vy = batch_standardize(z2, eps, unbiased=True)
    if on_diagonal == "jackknife":
        on = jackknife_on_diagonal(x, y, vx, vy, eps)
    elif on_diagonal == "plugin":
        on = one_minus_correlation(x, y, vx, vy, eps, n - 1).pow(2)
    else:
        raise ValueError(f"on_diagonal must be jackknife or plugin, got {on_diagonal!r}")
    return on.sum(dim=-1), barlow_off_diagonal_unbiased(x, y)


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

    sd_J = n s - (n-1)/n sum_a s_(-a) with s = sqrt(v + eps), s_(-a) = sqrt(v_(-a) + eps) and the leave-one-out
    variances in O(n d): v_(-a) = [(n-1) v - n/(n-1) (z_a - mean)^2] / (n-2), clamped >= 0 (rounding only).
    Evaluated as s + (n-1)/n sum_a (v - v_(-a)) / (s + s_(-a)): the literal form cancels two terms n times
    larger than sd_J (float32 error 6.5e-3 at n = 65536), this one only the O(1/n) correction.
    ``m``: precomputed ``estimators.moments(z)``.
    """
    m = estimators.moments(z) if m is None else m
    return _JackknifeStd.apply(m.sq, m.s_ii.detach(), float(eps))


class _JackknifeStd(torch.autograd.Function):
    """sd_J from x = (z_a - mean)^2 (..., n, d), with a hand-written backward in cancellation-free form.

    The gradient w.r.t. x_a, with u_a = [row a not clamped] and w_b = 1/s - u_b/s_(-b)
    (= -(s - s_(-b)) / (s s_(-b)) when not clamped), is
        u_a / (2 (n-2) s_(-a)) - 1 / (2 (n-1)(n-2) s) + (n-1) / (2 n (n-2)) sum_b w_b,
    every term O(1/(n s)); the chain rule through (v, x) separately would cancel O(1/s) terms.
    It is c1 u_a / s_(-a) + c_0 with a per-column c_0, so the forward (which has s_(-a) and s - s_(-a)
    already) keeps u/s_(-a) and c_0, and the backward is one fused pass (it used to recompute the
    leave-one-out quantities: ~15 passes over (n, d), 3x the forward)."""

    @staticmethod
    def forward(ctx, sq: Tensor, s_ii: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        n = sq.shape[-2]
        v = (s_ii / (n - 1)).unsqueeze(-2)                       # (..., 1, d)
        s = torch.sqrt(v + eps)
        delta = _loo_delta(sq, v, n)                             # v - v_(-a), clamped so that v_(-a) >= 0
        s_loo = torch.sub(v + eps, delta).sqrt_()                # (..., n, d)
        q = delta / (s_loo + s)                                  # s - s_(-a)
        out = s.squeeze(-2) + ((n - 1) / n) * q.sum(dim=-2)
        if ctx.needs_input_grad[0]:
            inv = s_loo.reciprocal_()
            w = q.mul_(inv).div_(s).neg_()                       # w_b for unclamped rows
            kept = delta < v                                     # rows whose v_(-a) was not clamped at 0
            if not bool(kept.all()):                             # only degenerate columns or rounding
                w = torch.where(kept, w, 1.0 / s)
                inv = inv.masked_fill_(~kept, 0.0)
            c0 = (-1.0 / (2 * (n - 1) * (n - 2))) / s + ((n - 1) / (2 * n * (n - 2))) * w.sum(dim=-2, keepdim=True)
            ctx.save_for_backward(inv, c0)
            ctx.c1 = 1.0 / (2 * (n - 2))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        inv, c0 = ctx.saved_tensors
        g = grad.unsqueeze(-2)
        return torch.addcmul(c0 * g, inv, g, value=ctx.c1), None, None


def _loo_delta(sq: Tensor, v: Tensor, n: int) -> Tensor:
    """v - v_(-a) = [n/(n-1) x_a - v] / (n-2), capped at v (v_(-a) >= 0; exceeded by rounding only)."""
    delta = torch.sub(sq, v, alpha=(n - 1) / n).mul_(n / ((n - 1) * (n - 2)))
    return torch.minimum(delta, v)


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
