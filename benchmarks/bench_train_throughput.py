"""Training throughput (images/s) per backbone and batch size on CPU: the cost of small batches.

One step = two augmented views (TwoViewAugment) → backbone+projector twice → objective → backward → LARS.
Images are random uint8 of the dataset's shape (Fashion-MNIST 1x28x28 by default); time excludes a
warm-up step. Ratios are against the largest batch size of the same backbone measured in this run.

    python benchmarks/bench_train_throughput.py --quick
    python benchmarks/bench_train_throughput.py --backbones small_cnn --batches 32 64 128 256 --projector 512 2048
"""
from __future__ import annotations

import argparse
import time

import torch
from omegaconf import OmegaConf

from bsstudy.config import cell_config
from bsstudy.data.augment import TwoViewAugment
from bsstudy.models import SSLModel, build_backbone, build_projector
from bsstudy.objectives import build_objective
from bsstudy.runtime import tune_malloc
from bsstudy.train.optim import build_optimizer

MODELS = {"small_cnn": "model=small_cnn", "resnet18_cifar": "model=resnet18_cifar"}


def images_per_second(model_key: str, batch: int, proj: int, method: str, min_seconds: float, max_steps: int,
                      channels_last: bool) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process). On a shared machine the second
    is the robust one: with 1 thread it is what an idle core would give."""
    cfg = cell_config([MODELS[model_key], f"method={method}", f"batch_size={batch}",
                       f"method.projector.hidden_dim={proj}", f"method.projector.out_dim={proj}"])
    torch.manual_seed(0)
    bb = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size))
    model = SSLModel(bb, build_projector(bb.feature_dim, cfg.method.projector))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    obj = build_objective(method, **OmegaConf.to_container(cfg.method.loss))
    opt = build_optimizer(model, cfg.optim, float(cfg.lr.effective))
    aug = TwoViewAugment(cfg.dataset, "cpu")
    g = torch.Generator().manual_seed(0)
    s = int(cfg.dataset.image_size)
    x = torch.randint(0, 256, (batch, int(cfg.dataset.channels), s, s), dtype=torch.uint8, generator=g)

    def step() -> None:
        v1, v2 = aug(x, g)
        _, z1 = model(v1.contiguous(memory_format=fmt))
        _, z2 = model(v2.contiguous(memory_format=fmt))
        loss = obj(z1, z2).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, first-step imports)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < max_steps and (n == 0 or time.perf_counter() - t0 < min_seconds):
        step()
        n += 1
    return n * batch / (time.perf_counter() - t0), n * batch / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few configurations, ~1-3 minutes")
    ap.add_argument("--backbones", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[16, 32, 64, 128, 256, 512, 1024])
    ap.add_argument("--projector", nargs="+", type=int, default=[2048], help="projector hidden=out widths")
    ap.add_argument("--method", default="vicreg")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--no-channels-last", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()  # as bsstudy train does
    plan = {b: args.batches for b in args.backbones}
    if args.quick:
        plan = {"small_cnn": [16, 64, 256, 1024], "resnet18_cifar": [16, 64]}
        plan = {k: v for k, v in plan.items() if k in args.backbones}
        args.min_seconds = min(args.min_seconds, 1.5)
    print(f"CPU, {args.threads} thread(s), method={args.method}, channels_last={not args.no_channels_last}")
    print(f"{'backbone':<16}{'proj':>6}{'batch':>7}{'img/s':>10}{'img/cpu-s':>11}{'vs largest B (cpu)':>20}")
    for bb, batches in plan.items():
        for proj in args.projector:
            rows = []
            for b in batches:
                # resnet18 at B>=256 on CPU takes tens of seconds a step: a single timed step is enough
                max_steps = 1 if bb == "resnet18_cifar" and b >= 256 else 10_000
                rows.append((b, images_per_second(bb, b, proj, args.method, args.min_seconds, max_steps,
                                                  not args.no_channels_last)))
            ref = rows[-1][1][1]
            for b, (ips, cps) in rows:
                print(f"{bb:<16}{proj:>6}{b:>7}{ips:>10.1f}{cps:>11.1f}{cps / ref:>19.2f}x", flush=True)


if __name__ == "__main__":
    main()
