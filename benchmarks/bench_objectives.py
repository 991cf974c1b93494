"""Forward+backward time of the objectives, as ratios against baselines measured in the same run.

    python benchmarks/bench_objectives.py [--quick] [--device cuda] [--full]

Columns: ours/lightly for VICReg and NT-Xent (target <= 1.0), vicreg_unbiased/vicreg (ours; target <= 1.2 at
n >= 256), for n in {64, 256, 1024} x d in {128, 2048, 8192}, float32. On CPU, timings that would take more than ~10 s
per call (lightly's VICReg always forms the d x d covariance) are skipped, shown as nan and listed, unless --full. --quick: n in {64, 256}, d in {128, 2048}, fewer repeats.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bsstudy.objectives import build_objective  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fb(fns: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]], z1: torch.Tensor,
            z2: torch.Tensor, repeats: int, min_seconds: float) -> dict[str, float]:
    """Seconds of one forward+backward per function: the minimum over interleaved rounds (after one warm-up call
    each). Interleaving exposes all functions to the same machine load; the minimum is the least disturbed
    run (on a shared machine the median of millisecond calls mostly measures the other jobs)."""
    a = z1.clone().requires_grad_(True)
    b = z2.clone().requires_grad_(True)

    def once(f) -> float:
        a.grad = b.grad = None
        _sync(a.device)
        t = time.perf_counter()
        f(a, b).backward()
        _sync(a.device)
        return time.perf_counter() - t

    for f in fns.values():
        once(f)
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_seconds and rounds < 200):
        for k, f in fns.items():
            times[k].append(once(f))
        rounds += 1
    return {k: min(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n in {64,256}, d in {128,2048}, fewer repeats")
    ap.add_argument("--full", action="store_true", help="do not skip slow CPU combinations")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: with other jobs on a 2-core box, 2 threads time the contention)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lightly.loss import NTXentLoss, VICRegLoss

    device = torch.device(args.device)
    ns, ds = ([64, 256], [128, 2048]) if args.quick else ([64, 256, 1024], [128, 2048, 8192])
    repeats, min_s = (3, 0.5) if args.quick else (5, 2.0)
    cpu_flop_limit = 1.5e11  # ~10 s per call on 2 cores

    vic, unb = build_objective("vicreg"), build_objective("vicreg_unbiased")
    sim = build_objective("simclr", temperature=0.5)
    l_vic, l_sim = VICRegLoss(), NTXentLoss(temperature=0.5, memory_bank_size=0)
    fns = {
        "vicreg": lambda a, b: vic(a, b).loss,
        "lightly_vicreg": l_vic,
        "vicreg_unbiased": lambda a, b: unb(a, b).loss,
        "simclr": lambda a, b: sim(a, b).loss,
        "lightly_ntxent": l_sim,
    }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# bench_objectives: forward+backward, float32, min over >= {repeats} interleaved rounds, device {name}, "
          f"torch {torch.__version__}")
    print(f"{'n':>5} {'d':>5} | {'vicreg ms':>9} {'lightly ms':>10} {'ours/lightly':>12} | {'unbiased ms':>11} "
          f"{'unb/vicreg':>10} | {'simclr ms':>9} {'lightly ms':>10} {'ours/lightly':>12}")
    skipped = []
    g = torch.Generator(device=device).manual_seed(0)
    for n in ns:
        for d in ds:
            # forward+backward flops, both views: lightly's VICReg always forms d x d (~12 n d^2);
            # ours uses the cheaper of the Gram (n x n) and covariance (d x d) forms
            # (its boolean off-diagonal mask copies d^2 entries: ~1.2 s per call at d=2048 on one core, ~20 s at 8192)
            slow_lightly = device.type == "cpu" and not args.full and (12 * n * d * d > cpu_flop_limit or d >= 8192)
            if device.type == "cpu" and not args.full and 12 * n * d * min(n, d) > cpu_flop_limit:
                skipped.append(f"n={n} d={d} (all)")
                continue
            z1 = torch.randn(n, d, generator=g, device=device)
            z2 = z1 + 0.5 * torch.randn(n, d, generator=g, device=device)
            run = {k: f for k, f in fns.items() if not (k == "lightly_vicreg" and slow_lightly)}
            t = {"lightly_vicreg": float("nan"), **time_fb(run, z1, z2, repeats, min_s)}
            if slow_lightly:
                skipped.append(f"n={n} d={d} (lightly VICReg)")
            print(f"{n:>5} {d:>5} | {t['vicreg'] * 1e3:>9.2f} {t['lightly_vicreg'] * 1e3:>10.2f} "
                  f"{t['vicreg'] / t['lightly_vicreg']:>12.2f} | {t['vicreg_unbiased'] * 1e3:>11.2f} "
                  f"{t['vicreg_unbiased'] / t['vicreg']:>10.2f} | {t['simclr'] * 1e3:>9.2f} "
                  f"{t['lightly_ntxent'] * 1e3:>10.2f} {t['simclr'] / t['lightly_ntxent']:>12.2f}", flush=True)
    if skipped:
        print("# skipped on CPU (> ~10 s per call; use --full or --device cuda): " + ", ".join(skipped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
