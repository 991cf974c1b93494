"""Forward+backward time of the objectives, as ratios against baselines measured in the same run.

    python benchmarks/bench_objectives.py [--quick] [--device cuda] [--full]

One row per (n, d, comparison), float32, for n in {64, 256, 1024} x d in {128, 2048, 8192}:
ours/lightly for VICReg, NT-Xent, Barlow Twins and DCL (target <= 1.0); vicreg_unbiased/vicreg and
barlow_twins_unbiased/barlow_twins (ours; target <= 1.2 at n >= 256). On CPU, timings that would take more than
~10 s per call (lightly's VICReg and Barlow Twins always form the d x d matrix) are skipped, shown as nan and
listed, unless --full. --quick: n in {64, 256}, d in {128, 2048}, fewer repeats.
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

    from lightly.loss import BarlowTwinsLoss, DCLLoss, NTXentLoss, VICRegLoss

    device = torch.device(args.device)
    ns, ds = ([64, 256], [128, 2048]) if args.quick else ([64, 256, 1024], [128, 2048, 8192])
    repeats, min_s = (3, 0.5) if args.quick else (5, 2.0)
    cpu_flop_limit = 1.5e11  # ~10 s per call on 2 cores

    # defaults except where lightly's differ: NT-Xent at tau = 0.5 on both sides, Barlow Twins at lightly's 5e-3
    ours = {"vicreg": build_objective("vicreg"), "vicreg_unbiased": build_objective("vicreg_unbiased"),
            "simclr": build_objective("simclr", temperature=0.5), "dcl": build_objective("dcl"),
            "barlow_twins": build_objective("barlow_twins", lambda_param=5e-3),
            "barlow_twins_unbiased": build_objective("barlow_twins_unbiased", lambda_param=5e-3)}
    fns: dict[str, Callable] = {k: (lambda f: lambda a, b: f(a, b).loss)(f) for k, f in ours.items()}
    fns.update({"lightly_vicreg": VICRegLoss(), "lightly_ntxent": NTXentLoss(temperature=0.5, memory_bank_size=0),
                "lightly_barlow": BarlowTwinsLoss(lambda_param=5e-3), "lightly_dcl": DCLLoss(temperature=0.1)})
    # (label, ours, baseline): dcl's temperature is its default 0.1 on both sides
    pairs = [("vicreg / lightly", "vicreg", "lightly_vicreg"), ("simclr / lightly", "simclr", "lightly_ntxent"),
             ("barlow_twins / lightly", "barlow_twins", "lightly_barlow"), ("dcl / lightly", "dcl", "lightly_dcl"),
             ("vicreg_unbiased / vicreg", "vicreg_unbiased", "vicreg"),
             ("barlow_twins_unbiased / barlow_twins", "barlow_twins_unbiased", "barlow_twins")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# bench_objectives: forward+backward, float32, min over >= {repeats} interleaved rounds, device {name}, "
          f"torch {torch.__version__}")
    print(f"{'n':>5} {'d':>5} | {'comparison':<37} {'ours ms':>9} {'base ms':>9} {'ratio':>6}")
    skipped = []
    g = torch.Generator(device=device).manual_seed(0)
    for n in ns:
        for d in ds:
            # forward+backward flops, both views: lightly's VICReg and Barlow Twins always form d x d (~12 n d^2);
            # ours use the cheaper of the Gram (n x n) and covariance (d x d) forms
            # (lightly's boolean off-diagonal mask copies d^2 entries: ~1.2 s per call at d=2048 on one core)
            slow_lightly = device.type == "cpu" and not args.full and (12 * n * d * d > cpu_flop_limit or d >= 8192)
            if device.type == "cpu" and not args.full and 12 * n * d * min(n, d) > cpu_flop_limit:
                skipped.append(f"n={n} d={d} (all)")
                continue
            z1 = torch.randn(n, d, generator=g, device=device)
            z2 = z1 + 0.5 * torch.randn(n, d, generator=g, device=device)
            slow = {"lightly_vicreg", "lightly_barlow"} if slow_lightly else set()
            t = {k: float("nan") for k in slow}
            t.update(time_fb({k: f for k, f in fns.items() if k not in slow}, z1, z2, repeats, min_s))
            if slow_lightly:
                skipped.append(f"n={n} d={d} (lightly VICReg, Barlow Twins)")
            for label, a, b in pairs:
                print(f"{n:>5} {d:>5} | {label:<37} {t[a] * 1e3:>9.2f} {t[b] * 1e3:>9.2f} {t[a] / t[b]:>6.2f}",
                      flush=True)
    if skipped:
        print("# skipped on CPU (> ~10 s per call; use --full or --device cuda): " + ", ".join(skipped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
