"""Monte Carlo of barlow_twins_unbiased vs barlow_twins against the population Barlow Twins terms (float64).

    python benchmarks/mc_barlow_unbiased.py [--float32]

Prints the table of docs/objectives.md: per law (Gaussian / skewed = Exp(1) - 1, independent / mixed
coordinates) and n in {4, 8, 32, 256}, z = (MC mean - population) / standard error of each term (numerator
cross-covariance U-statistic and plug-in, standardized off-diagonal term, on-diagonal term) and the relative bias
where the population value is not 0. Fixed seeds: the same numbers every run (~1 CPU-minute).
``--float32`` also evaluates every estimator on the same batches in float32 and prints
max |mean32 - mean64| / standard error per estimator (the float32 rounding against the Monte-Carlo error).
tests/test_barlow_unbiased.py asserts on these same Monte-Carlo cells.

Population objective: sum_i (1 - rho_ii)^2 + lambda sum_{i!=j} rho_ij^2, rho the population cross-correlation
of the two views. Laws with known rho: z1 = x M1, z2 = x M2 + e N with x, e i.i.d. standard Gaussian or
Exp(1) - 1 vectors; ``indep`` laws have diagonal M1, M2, N (off-diagonal rho = 0), ``mixed`` full matrices.
"""
from __future__ import annotations

import argparse
import math
import sys
from functools import lru_cache
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bsstudy.objectives import estimators as E  # noqa: E402
from bsstudy.objectives import terms as T  # noqa: E402

F64 = torch.float64
D = 4
NS = (4, 8, 32, 256)
LAWS = ("gauss_indep", "gauss_mixed", "skewed_indep", "skewed_mixed")
EPS = 1e-300         # no eps in float64 (BatchNorm needs eps > 0)
REPS = {4: 20000, 8: 10000, 32: 4000, 256: 1000}


def _law(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M1, M2, N) of z1 = x M1, z2 = x M2 + e N."""
    g = torch.Generator().manual_seed(seed)
    if name.endswith("indep"):
        m1 = torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=F64))
        m2 = torch.diag(torch.tensor([0.9, 1.0, -0.4, 0.3], dtype=F64))
        nn = torch.diag(torch.tensor([0.5, 1.5, 0.2, 1.0], dtype=F64))
    else:
        m1 = torch.eye(D, dtype=F64) + 0.5 * torch.randn(D, D, generator=g, dtype=F64)
        m2 = 0.8 * m1 + 0.4 * torch.randn(D, D, generator=g, dtype=F64)
        nn = 0.6 * torch.eye(D, dtype=F64) + 0.2 * torch.randn(D, D, generator=g, dtype=F64)
    return m1, m2, nn


def population(name: str) -> dict[str, float]:
    m1, m2, nn = _law(name)
    c11, c22, c12 = m1.T @ m1, m2.T @ m2 + nn.T @ nn, m1.T @ m2     # x, e have identity covariance
    rho = c12 / torch.sqrt(torch.diagonal(c11)[:, None] * torch.diagonal(c22)[None, :])
    off = ~torch.eye(D, dtype=torch.bool)
    return {"cross_cov": c12[off].pow(2).sum().item(), "off": rho[off].pow(2).sum().item(),
            "on": (1 - torch.diagonal(rho)).pow(2).sum().item()}


def sample(name: str, n: int, reps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    m1, m2, nn = _law(name)

    def draw() -> torch.Tensor:
        if name.startswith("skewed"):
            return torch.empty(reps, n, D, dtype=F64).exponential_(1.0, generator=g) - 1.0
        return torch.randn(reps, n, D, generator=g, dtype=F64)

    x, e = draw(), draw()
    return x @ m1, x @ m2 + e @ nn


def estimates(z1: torch.Tensor, z2: torch.Tensor, eps: float = EPS) -> dict[str, torch.Tensor]:
    """Every estimator on a stack of batches (reps, n, d) -> {key: (reps,)}; eps ~ 0 (the population has none)."""
    on_plug, off_plug = T.barlow_twins(z1, z2, eps=eps)
    on_jack, off_u = T.barlow_twins_unbiased(z1, z2, eps=eps, on_diagonal="jackknife")
    return {"cross_cov:U": E.cross_offdiag_sq(z1, z2, unbiased=True),
            "cross_cov:plugin": E.cross_offdiag_sq(z1, z2, unbiased=False),
            "off:unbiased": off_u, "off:barlow": off_plug,
            "on:jackknife": on_jack, "on:barlow": on_plug}


@lru_cache(maxsize=None)
def mc(name: str, n: int) -> dict[str, tuple[float, float, float]]:
    """{estimator: (mean - population, standard error, population)} over REPS[n] batches."""
    reps = REPS[n]
    z1, z2 = sample(name, n, reps, seed=1000 * n + LAWS.index(name))
    pop = population(name)
    out = {}
    for key, v in estimates(z1, z2).items():
        target = pop[key.split(":")[0]]
        out[key] = ((v.mean() - target).item(), (v.std() / math.sqrt(reps)).item(), target)
    return out


def float32_rounding() -> dict[str, float]:
    """{estimator: max over cells of |mean in float32 - mean in float64| / MC standard error} on the same batches
    (eps = 1e-30 in float32: 1e-300 underflows to 0, and a constant column would divide by 0)."""
    worst: dict[str, float] = {}
    for law in LAWS:
        for n in NS:
            z1, z2 = sample(law, n, REPS[n], seed=1000 * n + LAWS.index(law))
            e64, e32 = estimates(z1, z2), estimates(z1.float(), z2.float(), eps=1e-30)
            for key, v in e64.items():
                se = (v.std() / math.sqrt(v.numel())).item()
                worst[key] = max(worst.get(key, 0.0), abs(e32[key].double().mean().item() - v.mean().item()) / se)
    return worst


def table() -> str:
    """Markdown table of z-scores (mean - population)/standard error and relative biases."""
    rows = ["| law | n | U cross-cov z | plug-in cross-cov z | unbiased off z (rel. bias) | Barlow off z (rel. bias) "
            "| jackknife on z (rel. bias) | Barlow on z (rel. bias) |", "|---" * 8 + "|"]

    def cell(v: tuple[float, float, float]) -> str:
        err, se, target = v
        rel = "" if target == 0 else f" ({err / target:+.1%})"
        return f"{err / se:+.1f}{rel}"

    for law in LAWS:
        for n in NS:
            r = mc(law, n)
            rows.append(f"| {law} | {n} | {cell(r['cross_cov:U'])} | {cell(r['cross_cov:plugin'])} | "
                        f"{cell(r['off:unbiased'])} | {cell(r['off:barlow'])} | {cell(r['on:jackknife'])} | "
                        f"{cell(r['on:barlow'])} |")
    pops = ", ".join(f"{law}: off {population(law)['off']:.3f}, on {population(law)['on']:.3f}" for law in LAWS)
    return "\n".join(rows) + f"\n\nPopulation values (d = {D}): {pops}. Batches per cell: {REPS}."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float32", action="store_true", help="also the float32 rounding against the MC error")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(table())
    if args.float32:
        worst = float32_rounding()
        print("\nfloat32 vs float64 on the same batches, max |mean32 - mean64| / MC standard error: "
              + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
