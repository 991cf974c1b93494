"""Collapse diagnostics of an embedding matrix (seed 004): singular spectrum, effective rank,
mean |off-diagonal correlation|, per-dimension std."""
from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def singular_spectrum(z: Tensor) -> Tensor:
    """Singular values (descending) of the centred embeddings (n, d), in float64."""
    z = z.detach().double()
    return torch.linalg.svdvals(z - z.mean(0, keepdim=True))


def effective_rank(s: Tensor) -> float:
    """exp(entropy of p = s/sum(s)) (Roy & Vetterli 2007): d for a flat spectrum, 1 for rank one."""
    total = float(s.sum())
    if total <= 0 or not math.isfinite(total):
        return 0.0 if total <= 0 else float("nan")
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def collapse_diagnostics(z: Tensor) -> dict[str, float]:
    """{"effective_rank", "avg_abs_corr", "min_std", "mean_std"} of embeddings z (n, d), n >= 2.

    avg_abs_corr averages |corr_ij| over i != j; a constant dimension has correlation 0 with everything."""
    z = z.detach().double()
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"collapse_diagnostics: need (n>=2, d) embeddings, got {tuple(z.shape)}")
    d = z.shape[1]
    std = z.std(0)
    zc = z - z.mean(0, keepdim=True)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    zn = zc / safe
    corr = (zn.T @ zn) / (z.shape[0] - 1)
    corr = corr * ((std > 0)[:, None] & (std > 0)[None, :])
    off = corr - torch.diag(torch.diagonal(corr))
    avg_abs = float(off.abs().sum() / (d * (d - 1))) if d > 1 else 0.0
    return {
        "effective_rank": effective_rank(torch.linalg.svdvals(zc)),
        "avg_abs_corr": avg_abs,
        "min_std": float(std.min()),
        "mean_std": float(std.mean()),
    }
