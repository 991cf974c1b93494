"""Two-view augmentation throughput: our batched tensor pipeline vs a torchvision PIL Dataset + DataLoader.

    python benchmarks/bench_augment.py [--images 4096] [--batch 256] [--workers 2] [--threads N] [--device cpu]

Both sides do the same two-view augmentation of the dataset config (random resized crop, flip, colour
jitter with probability, grayscale, blur, solarize, normalise): ours with ``TwoViewAugment`` on whole
batches, the baseline with torchvision's PIL transforms per image in ``num_workers`` worker processes.
Cases: 32x32 RGB (synthetic CIFAR-like uint8, cifar10 augment config) and 28x28 gray (Fashion-MNIST test
images from the Debian files when present, else synthetic). Prints images/s and the ratio ours/baseline
(target >= 10x on CPU). The baseline's workers are started by an untimed epoch 0; then rounds alternate
ours / baseline and the medians and the median of the per-round ratios are printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bsstudy.config import compose  # noqa: E402
from bsstudy.data.augment import TwoViewAugment, ViewConfig, blur_kernel_size  # noqa: E402
from bsstudy.runtime import tune_malloc  # noqa: E402


def pil_view(cfg: ViewConfig, size: int, channels: int, mean, std) -> T.Compose:
    """torchvision (v1, PIL) transform equal in distribution to one of our views."""
    ops = [T.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=cfg.crop_ratio), T.RandomHorizontalFlip(cfg.hflip_p)]
    sat, hue = (cfg.saturation, cfg.hue) if channels == 3 else (0.0, 0.0)
    ops.append(T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast, sat, hue)], p=cfg.jitter_p))
    if channels == 3:
        ops.append(T.RandomGrayscale(cfg.grayscale_p))
    if cfg.blur_p > 0:
        k = blur_kernel_size(cfg.blur_sigma[1], size, size)
        ops.append(T.RandomApply([T.GaussianBlur(k, cfg.blur_sigma)], p=cfg.blur_p))
    if cfg.solarize_p > 0:
        ops.append(T.RandomSolarize(128, p=cfg.solarize_p))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class PILTwoViews(Dataset):
    """Per-image PIL pipeline: uint8 array -> PIL -> two augmented tensors (the usual SSL data loader)."""

    def __init__(self, images: np.ndarray, t1: T.Compose, t2: T.Compose) -> None:
        self.images, self.t1, self.t2 = images, t1, t2

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        a = self.images[i]
        img = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        return self.t1(img), self.t2(img)


def bench_ours(aug: TwoViewAugment, x: torch.Tensor, batch: int, device: torch.device,
               min_seconds: float = 1.0) -> float:
    """Images/s of our two-view augmentation: whole passes over ``x`` until ``min_seconds`` have elapsed."""
    g = torch.Generator().manual_seed(0)
    x = x.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    aug(x[:batch], g)  # warm-up
    sync()
    n, t = 0, time.perf_counter()
    while True:
        for i in range(0, len(x), batch):
            aug(x[i:i + batch], g)
        n += len(x)
        sync()
        if time.perf_counter() - t >= min_seconds:
            return n / (time.perf_counter() - t)


def bench_pil(dl: DataLoader) -> float:
    """Images/s of one epoch of the PIL DataLoader (persistent workers: started by the caller's warm-up)."""
    t = time.perf_counter()
    n = 0
    for v1, _ in dl:
        n += v1.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per case (median reported)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for our pipeline (default: torch's; use 1 on an oversubscribed machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # As `bsstudy train` does; set before the DataLoader forks, so the baseline's workers run with it too.
    tuned = tune_malloc()
    device = torch.device(args.device)
    print(f"torch threads={torch.get_num_threads()}  baseline DataLoader workers={args.workers}  "
          f"images={args.images}  batch={args.batch}  device={device}  malloc tuned={tuned}")
    rng = np.random.default_rng(0)
    cases = []
    cifar = rng.integers(0, 256, size=(args.images, 3, 32, 32), dtype=np.uint8)
    cases.append(("32x32 RGB (synthetic, cifar10 config)", "cifar10", cifar))
    try:
        from bsstudy.data import load_dataset

        fm = load_dataset(compose(["dataset=fashion_mnist"]).dataset, "test").images[: args.images].numpy()
        label = "28x28 gray (Fashion-MNIST test images)"
    except Exception as e:  # noqa: BLE001 - fall back to synthetic data, say so
        print(f"Fashion-MNIST unavailable ({e}); using synthetic 28x28 gray images")
        fm = rng.integers(0, 256, size=(args.images, 1, 28, 28), dtype=np.uint8)
        label = "28x28 gray (synthetic)"
    cases.append((label, "fashion_mnist", fm))

    print(f"{'case':42s} {'ours img/s':>12s} {'PIL img/s':>12s} {'ratio':>8s}   (median of {args.rounds} "
          f"interleaved rounds; ratio range)")
    for label, dataset, images in cases:
        cfg = compose([f"dataset={dataset}"]).dataset
        aug = TwoViewAugment(cfg, device)
        t1, t2 = (pil_view(v, cfg.image_size, cfg.channels, list(cfg.mean), list(cfg.std)) for v in aug.views)
        dl = DataLoader(PILTwoViews(images, t1, t2), batch_size=args.batch, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
        for _ in dl:  # epoch 0: worker start-up, not timed
            pass
        x = torch.from_numpy(images)
        # Rounds alternate ours / baseline so that drift in the machine's speed hits both alike.
        ours, pil = [], []
        for _ in range(args.rounds):
            ours.append(bench_ours(aug, x, args.batch, device))
            pil.append(bench_pil(dl))
        ratios = sorted(o / p for o, p in zip(ours, pil))
        print(f"{label:42s} {statistics.median(ours):12.0f} {statistics.median(pil):12.0f} "
              f"{statistics.median(ratios):7.1f}x   [{ratios[0]:.1f}, {ratios[-1]:.1f}]")
        del dl


if __name__ == "__main__":
    main()
