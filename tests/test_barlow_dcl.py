"""barlow_twins, barlow_twins_unbiased and dcl against independent float64 restatements of the papers' /
official code's formulas (loops), and against lightly 1.6.

Conventions stated by the tests:
- barlow_twins = facebookresearch/barlowtwins main.py: C = bn(z1)^T bn(z2) / n, bn = BatchNorm1d(d,
  affine=False) in training mode (1/n variance, eps 1e-5); loss = sum (1 - C_ii)^2 + lambda sum_{i!=j} C_ij^2.
  lightly's BarlowTwinsLoss(lambda_param) normalises with F.batch_norm (the same BN) and has the same formula,
  so no conversion is needed (its default lambda_param is 5e-3; the official code's is 0.0051, ours).
- dcl = Yeh et al. (2022) eq. 6 with both views as anchors, mean over 2n anchors; lightly's DCLLoss(temperature)
  returns 0.5 (loss(z1 -> z2) + loss(z2 -> z1)), each a mean over n anchors: the same number.
  weighting=vmf = lightly's DCLWLoss(temperature, sigma) (negative_mises_fisher_weights, detached).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from bsstudy.objectives import build_objective
from bsstudy.objectives import estimators as E

F64 = torch.float64


def _pair(n: int, d: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=dtype) / math.sqrt(d)
    z1 = 0.7 * torch.randn(n, d, generator=g, dtype=dtype) @ a + 0.3
    return z1, z1 + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------- references
def ref_barlow_official(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> dict[str, float]:
    """main.py of facebookresearch/barlowtwins restated: BatchNorm1d(affine=False), c = bn(z1).T @ bn(z2) / n,
    on = sum (diag - 1)^2, off = sum of the off-diagonal squares (by loops)."""
    n, d = z1.shape
    bn = torch.nn.BatchNorm1d(d, affine=False).double().train()
    c = (bn(z1).T @ bn(z2) / n).tolist()
    on = sum((c[i][i] - 1) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return {"loss": on + lambd * off, "on_diagonal": on, "off_diagonal": off}


def ref_dcl(z1: torch.Tensor, z2: torch.Tensor, tau: float, sigma: float | None = None) -> float:
    """DCL eq. 6 by loops: anchor i of view k, positive its other view, negatives the 2n-2 other embeddings."""
    z = [v / v.norm() for v in torch.cat([z1, z2])]
    n2 = len(z)
    n = n2 // 2
    w = [1.0] * n
    if sigma is not None:  # DCLW: w_a = 2 - n exp(s_a/sigma) / sum_b exp(s_b/sigma), s_a = <z1_a, z2_a>
        s = [math.exp(float(z[a] @ z[a + n]) / sigma) for a in range(n)]
        w = [2 - n * s[a] / sum(s) for a in range(n)]
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        neg = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k not in (i, j))
        total += -w[i % n] * float(z[i] @ z[j]) / tau + math.log(neg)
    return total / n2


def ref_barlow_unbiased(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float, jackknife: bool) -> dict:
    """Columns standardized with the 1/(n-1) variance + eps; off-diagonal: brute-force average of the kernel
    1/4 (x_p - x_q)_i (y_p - y_q)_j (x_r - x_s)_i (y_r - y_s)_j over ordered distinct 4-tuples, i != j;
    on-diagonal: (1 - r_ii)^2 or its literal delete-one jackknife (every leave-one-out batch recomputed)."""
    n, d = z1.shape

    def std(z):
        zc = z - z.mean(0)
        return zc / torch.sqrt(zc.pow(2).sum(0) / (n - 1) + eps)

    x, y = std(z1), std(z2)
    t = torch.tensor(list(itertools.permutations(range(n), 4)))
    ux, vx, uy, vy = x[t[:, 0]] - x[t[:, 1]], x[t[:, 2]] - x[t[:, 3]], y[t[:, 0]] - y[t[:, 1]], y[t[:, 2]] - y[t[:, 3]]
    off = sum((0.25 * ux[:, i] * vx[:, i] * uy[:, j] * vy[:, j]).mean().item()
              for i in range(d) for j in range(d) if i != j)

    def g(a, b):
        m = a.shape[0]
        ac, bc = a - a.mean(0), b - b.mean(0)
        r = (ac * bc).sum(0) / torch.sqrt((ac.pow(2).sum(0) + (m - 1) * eps) * (bc.pow(2).sum(0) + (m - 1) * eps))
        return (1 - r).pow(2)

    on_d = g(z1, z2)
    if jackknife:
        loo = sum(g(torch.cat([z1[:a], z1[a + 1:]]), torch.cat([z2[:a], z2[a + 1:]])) for a in range(n))
        on_d = n * on_d - (n - 1) / n * loo
    on = on_d.sum().item()
    return {"loss": on + lambd * off, "on_diagonal": on, "off_diagonal": off}


# ------------------------------------------------------------------------------ Barlow Twins
@pytest.mark.parametrize("n,d,lambd", [(2, 3, 0.0051), (8, 4, 5e-3), (6, 32, 0.1), (40, 16, 0.0051)])
def test_barlow_twins_matches_official_code(n, d, lambd):
    z1, z2 = _pair(n, d, seed=n * 10 + d)
    out = build_objective("barlow_twins", lambda_param=lambd)(z1, z2)
    ref = ref_barlow_official(z1, z2, lambd)
    assert out.loss.item() == pytest.approx(ref["loss"], rel=1e-11)
    for k in ("on_diagonal", "off_diagonal"):
        assert out.terms[k].item() == pytest.approx(ref[k], rel=1e-10, abs=1e-13), k


@pytest.mark.parametrize("n,d", [(4, 8), (32, 16), (64, 256), (256, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_barlow_twins_matches_lightly(n, d, dtype):
    from lightly.loss import BarlowTwinsLoss

    z1, z2 = _pair(n, d, seed=3, dtype=dtype)
    for lambd in (5e-3, 0.0051):
        a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        ours = build_objective("barlow_twins", lambda_param=lambd)(a, b).loss
        ours.backward()
        a2, b2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        theirs = BarlowTwinsLoss(lambda_param=lambd)(a2, b2)
        theirs.backward()
        tol = 1e-10 if dtype == F64 else 2e-5
        assert ours.item() == pytest.approx(theirs.item(), rel=tol)
        torch.testing.assert_close(a.grad, a2.grad, rtol=tol * 10, atol=tol)
        torch.testing.assert_close(b.grad, b2.grad, rtol=tol * 10, atol=tol)   # 2n < d: the Gram-form backward


def test_barlow_gram_and_cov_forms_agree():
    z1, z2 = _pair(12, 40, seed=5)
    x, y = z1 - z1.mean(0), z2 - z2.mean(0)
    for unbiased in (False, True):
        g = E.cross_offdiag_sq_centred(x, y, unbiased, form="gram")
        c = E.cross_offdiag_sq_centred(x, y, unbiased, form="cov")
        assert g.item() == pytest.approx(c.item(), rel=1e-10)


@pytest.mark.parametrize("n,d", [(4, 3), (6, 2), (7, 3)])
@pytest.mark.parametrize("on_diagonal", ["jackknife", "plugin"])
def test_barlow_twins_unbiased_matches_brute_force(n, d, on_diagonal):
    z1, z2 = _pair(n, d, seed=n + d)
    for eps in (1e-300, 1e-2):      # 1e-300: no eps in float64 (BatchNorm needs eps > 0)
        out = build_objective("barlow_twins_unbiased", lambda_param=0.3, eps=eps, on_diagonal=on_diagonal)(z1, z2)
        ref = ref_barlow_unbiased(z1, z2, 0.3, eps, jackknife=on_diagonal == "jackknife")
        for k in ("loss", "on_diagonal", "off_diagonal"):
            got = out.loss if k == "loss" else out.terms[k]
            assert got.item() == pytest.approx(ref[k], rel=1e-9, abs=1e-12), (k, eps)


def test_cross_covariance_u_statistic_matches_brute_force_and_reduces_to_u_off():
    z1, z2 = _pair(6, 3, seed=2)
    t = torch.tensor(list(itertools.permutations(range(6), 4)))
    ux, vx = z1[t[:, 0]] - z1[t[:, 1]], z1[t[:, 2]] - z1[t[:, 3]]
    uy, vy = z2[t[:, 0]] - z2[t[:, 1]], z2[t[:, 2]] - z2[t[:, 3]]
    brute = sum((0.25 * ux[:, i] * vx[:, i] * uy[:, j] * vy[:, j]).mean().item()
                for i in range(3) for j in range(3) if i != j)
    for form in ("cov", "gram"):
        assert E.cross_offdiag_sq(z1, z2, True, form=form).item() == pytest.approx(brute, rel=1e-10)
        assert E.cross_offdiag_sq(z1, z1, True, form=form).item() == pytest.approx(
            E.cov_offdiag_sq(z1, True).item(), rel=1e-10)
    c = (z1 - z1.mean(0)).T @ (z2 - z2.mean(0)) / 5
    assert E.cross_offdiag_sq(z1, z2, False).item() == pytest.approx(
        (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()).item(), rel=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        E.cross_offdiag_sq(z1, z2[:, :2], True)


def test_barlow_twins_unbiased_removes_the_plugin_noise_floor():
    """Independent views: population loss = d (rho = 0); the plug-in's off-diagonal term is ~d(d-1)/n."""
    g = torch.Generator().manual_seed(0)
    n, d = 64, 32
    z1, z2 = torch.randn(n, d, generator=g, dtype=F64), torch.randn(n, d, generator=g, dtype=F64)
    plug = build_objective("barlow_twins")(z1, z2).terms["off_diagonal"].item()
    unb = build_objective("barlow_twins_unbiased")(z1, z2).terms["off_diagonal"].item()
    assert plug == pytest.approx(d * (d - 1) / n, rel=0.2)
    assert abs(unb) < 0.1 * plug


# ------------------------------------------------------------------------------------- DCL
@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (5, 4, 0.1), (8, 16, 0.05)])
@pytest.mark.parametrize("sigma", [None, 0.5])
def test_dcl_matches_naive_loop(n, d, tau, sigma):
    z1, z2 = _pair(n, d, seed=n * 100 + d)
    params = {"temperature": tau} if sigma is None else {"temperature": tau, "weighting": "vmf", "sigma": sigma}
    out = build_objective("dcl", **params)(z1, z2)
    assert out.loss.item() == pytest.approx(ref_dcl(z1, z2, tau, sigma), rel=1e-12, abs=1e-12)
    assert set(out.terms) == {"dcl"}


@pytest.mark.parametrize("n,d,tau", [(4, 8, 0.1), (32, 16, 0.2), (64, 128, 0.07)])
def test_dcl_matches_lightly(n, d, tau):
    import warnings

    from lightly.loss import DCLLoss, DCLWLoss

    z1, z2 = _pair(n, d, seed=7, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lightly's torch.tensor(tensor) in the weight function
        for ours_p, theirs in [({}, DCLLoss(temperature=tau)),
                               ({"weighting": "vmf", "sigma": 0.5}, DCLWLoss(temperature=tau, sigma=0.5))]:
            a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
            ours = build_objective("dcl", temperature=tau, **ours_p)(a, b).loss
            ours.backward()
            a2, b2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
            ref = theirs(a2, b2)
            ref.backward()
            assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
            torch.testing.assert_close(a.grad, a2.grad, rtol=1e-4, atol=1e-6)


def test_dcl_stable_at_small_temperature_and_differs_from_simclr_by_the_positive():
    z1, z2 = _pair(16, 8, seed=1, dtype=torch.float32)
    out = build_objective("dcl", temperature=0.001)(z1, z2).loss
    assert torch.isfinite(out)
    # NT-Xent = DCL + mean log(1 + exp(pos)/sum exp(neg)) > DCL
    a, b = _pair(16, 8, seed=1)
    assert build_objective("simclr", temperature=0.2)(a, b).loss > build_objective("dcl", temperature=0.2)(a, b).loss
