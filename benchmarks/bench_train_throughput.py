"""Training throughput (images/s) per backbone and batch size: the cost of small batches.

One step is the trainer's (bsstudy/train): two augmented views (TwoViewAugment, on the device) → backbone
+projector twice under the run's autocast → objective in fp32 → backward → optimizer. Images are random
uint8 of the dataset's shape; time excludes warm-up steps (cuDNN autotune, allocator). On CPU the second
column (images per CPU second of this process) is the robust one on a shared machine; ratios are against
the largest batch size of the same backbone measured in this run.

    python benchmarks/bench_train_throughput.py --quick
    python benchmarks/bench_train_throughput.py --backbones small_cnn --batches 32 64 128 256 --projector 512 2048
    python benchmarks/bench_train_throughput.py --write results/throughput.csv      # table for cost estimates

``--write PATH`` measures in the configuration a sweep cell trains in (device auto, precision auto,
channels_last, the method's own projector) and writes the table bsstudy.throughput reads (format:
bsstudy/throughput.py, docs/sweep.md), including one end-of-run evaluation's seconds per backbone.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bsstudy.config import cell_config  # noqa: E402
from bsstudy.data.augment import TwoViewAugment  # noqa: E402
from bsstudy.data.sizes import EVAL_SIZES  # noqa: E402
from bsstudy.models import SSLModel, build_backbone, build_projector  # noqa: E402
from bsstudy.objectives import build_objective  # noqa: E402
from bsstudy.runtime import resolve_device, tune_malloc  # noqa: E402
from bsstudy.throughput import model_key, write_throughput_table  # noqa: E402
from bsstudy.train.setup import resolve_precision  # noqa: E402
from bsstudy.train.optim import build_optimizer  # noqa: E402

# backbone option -> the dataset whose image shape it is measured on (the study's pairing)
MODELS = {"small_cnn": "fashion_mnist", "resnet18_cifar": "cifar10", "resnet18": "stl10", "resnet50": "stl10"}
GPU_BATCHES = [32, 64, 128, 256, 512, 1024, 2048, 4096]


@dataclass
class Measurement:
    images_per_second: float        # per wall second
    cpu_images_per_second: float    # per CPU second of this process
    peak_memory_bytes: int | None   # torch.cuda.max_memory_allocated during the timed steps (CUDA only)
    steps: int


def cell(backbone: str, batch: int, method: str, dataset: str | None = None,
         projector: int | None = None) -> DictConfig:
    """The composed run config of one measurement (``projector``: hidden=out width, None = the method's)."""
    o = [f"model={backbone}", f"dataset={dataset or MODELS[backbone]}", f"method={method}", f"batch_size={batch}"]
    if projector is not None:
        o += [f"method.projector.hidden_dim={projector}", f"method.projector.out_dim={projector}"]
    return cell_config(o)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, device: torch.device, amp_dtype: torch.dtype | None, channels_last: bool,
            min_seconds: float, max_steps: int) -> Measurement:
    """Time the trainer's step on random uint8 images at ``cfg.batch_size`` (after warm-up steps: 1 on
    CPU, 3 on CUDA for cuDNN autotuning and the allocator)."""
    batch = int(cfg.batch_size)
    torch.manual_seed(0)
    bb = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = SSLModel(bb, build_projector(bb.feature_dim, cfg.method.projector)).to(device, memory_format=fmt)
    obj = build_objective(str(cfg.method.name), **OmegaConf.to_container(cfg.method.loss))
    opt = build_optimizer(model, cfg.optim, float(cfg.lr.effective))
    aug = TwoViewAugment(cfg.dataset, device)
    g = torch.Generator().manual_seed(0)
    s, c = int(cfg.dataset.image_size), int(cfg.dataset.channels)
    x = torch.randint(0, 256, (batch, c, s, s), dtype=torch.uint8, generator=g).to(device)

    def step() -> None:
        v1, v2 = aug(x, g)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            _, z1 = model(v1.contiguous(memory_format=fmt))
            _, z2 = model(v2.contiguous(memory_format=fmt))
        loss = obj(z1.float(), z2.float()).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(1 if device.type == "cpu" else 3):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < max_steps and (n == 0 or time.perf_counter() - t0 < min_seconds):
        step()
        n += 1
        if n % 10 == 0:
            _sync(device)  # bounds the queue so the time check sees finished work
    _sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Measurement(n * batch / wall, n * batch / max(cpu, 1e-9), peak, n)


def eval_seconds(cfg, device: torch.device, amp_dtype: torch.dtype | None,
                 max_images: int | None) -> dict[str, float]:
    """Seconds of one end-of-run evaluation (features of the eval train+test splits, probe, kNN) with the
    cell's eval settings, on random images/labels of the dataset's sizes. With ``max_images`` each part
    runs on fewer images and is scaled to the full sizes: features and probe linearly, kNN by train x test.
    Returns the seconds of each part, their ``total``, and the ``images`` (train+test) it stands for."""
    from bsstudy.evaluate import extract_features, knn_top1, linear_probe

    n_tr, n_te = EVAL_SIZES[str(cfg.dataset.name)]
    if cfg.eval.max_train_samples is not None:
        n_tr = min(n_tr, int(cfg.eval.max_train_samples))
    f_tr = f_te = 1.0
    if max_images is not None and n_tr + n_te > max_images:
        f_tr = n_tr / max(1, int(max_images * n_tr / (n_tr + n_te)))
        f_te = n_te / max(1, int(max_images * n_te / (n_tr + n_te)))
    m_tr, m_te = round(n_tr / f_tr), round(n_te / f_te)
    torch.manual_seed(0)
    bb = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size)).to(device)
    bb = bb.to(memory_format=torch.channels_last)
    proj = build_projector(bb.feature_dim, cfg.method.projector).to(device)
    s, c = int(cfg.dataset.image_size), int(cfg.dataset.channels)
    imgs = torch.randint(0, 256, (m_tr + m_te, c, s, s), dtype=torch.uint8)
    nc = int(cfg.dataset.num_classes)
    y = torch.randint(0, nc, (m_tr + m_te,), device=device)
    _sync(device)
    t = time.perf_counter()
    tr_f, _ = extract_features(bb, imgs[:m_tr], cfg.dataset, device, autocast_dtype=amp_dtype, head=proj)
    te_f = extract_features(bb, imgs[m_tr:], cfg.dataset, device, autocast_dtype=amp_dtype)
    _sync(device)
    t_feat = time.perf_counter() - t
    ev = cfg.eval
    t = time.perf_counter()
    if ev.linear:
        linear_probe(tr_f, y[:m_tr], te_f, y[m_tr:], weight_decays=list(ev.probe_weight_decays),
                     val_fraction=float(ev.probe_val_fraction), max_iter=int(ev.probe_max_iter), num_classes=nc)
    _sync(device)
    t_probe = time.perf_counter() - t
    t = time.perf_counter()
    if ev.knn:
        knn_top1(tr_f, y[:m_tr], te_f, y[m_tr:], k=int(ev.knn_k), temperature=float(ev.knn_temperature),
                 num_classes=nc)
    _sync(device)
    t_knn = time.perf_counter() - t
    parts = {"features": t_feat * (n_tr + n_te) / (m_tr + m_te), "probe": t_probe * f_tr, "knn": t_knn * f_tr * f_te}
    return parts | {"total": sum(parts.values()), "images": n_tr + n_te}


def max_steps_for(backbone: str, batch: int, device: torch.device, default: int) -> int:
    """ResNets at B>=256 on CPU take tens of seconds a step: a single timed step is enough there."""
    return 1 if backbone.startswith("resnet") and batch >= 256 and device.type == "cpu" else default


def device_label(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else \
        f"cpu:{torch.get_num_threads()}threads"


def write_table(args: argparse.Namespace, device: torch.device) -> None:
    """``--write``: measure every (backbone, B) in the training configuration and write the table."""
    amp = resolve_precision(args.precision, device)
    channels_last = not args.no_channels_last
    rows = []
    print(f"{'model_key':<28}{'batch':>7}{'img/s':>10}{'peak GiB':>10}")
    for bb in args.backbones:
        base = cell(bb, 32, args.method, args.dataset)
        key = model_key(base)
        parts = None if args.no_eval else eval_seconds(base, device, amp, args.eval_images)
        ev = None if parts is None else parts["total"]
        for b in args.batches:
            cfg = cell(bb, b, args.method, args.dataset)
            try:
                m = measure(cfg, device, amp, channels_last, args.min_seconds,
                            max_steps_for(bb, b, device, args.max_steps))
            except torch.cuda.OutOfMemoryError:
                print(f"{key:<28}{b:>7}  out of memory: no row (larger B will not fit either)", flush=True)
                torch.cuda.empty_cache()
                break
            peak = f"{m.peak_memory_bytes / 2**30:10.2f}" if m.peak_memory_bytes is not None else f"{'-':>10}"
            print(f"{key:<28}{b:>7}{m.images_per_second:>10.1f}{peak}", flush=True)
            rows.append({"model_key": key, "backbone": str(cfg.model.name), "width": cfg.model.get("width"),
                         "image_shape": key.split("@")[1], "dataset": str(cfg.dataset.name),
                         "method": args.method, "batch_size": b,
                         "images_per_second": f"{m.images_per_second:.1f}",
                         "eval_seconds": None if ev is None else f"{ev:.2f}",
                         "eval_images": None if parts is None else parts["images"], "device": device_label(device),
                         "precision": "bf16" if amp is torch.bfloat16 else "fp32",
                         "channels_last": str(channels_last).lower(),
                         "measured_at": _dt.date.today().isoformat()})
        if ev is not None:
            print(f"{key:<28} one evaluation: {ev:.1f} s (features {parts['features']:.1f}, probe "
                  f"{parts['probe']:.1f}, kNN {parts['knn']:.1f}"
                  + (f"; timed on {args.eval_images} images and scaled)" if args.eval_images else ")"), flush=True)
    path = write_throughput_table(args.write, rows)
    print(f"wrote {path} ({len(rows)} rows)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few configurations, ~1-3 minutes on CPU")
    ap.add_argument("--backbones", nargs="+", default=None, choices=list(MODELS),
                    help="default: small_cnn resnet18_cifar")
    ap.add_argument("--dataset", default=None, help="image shape and eval sizes (default: per backbone, "
                                                    + ", ".join(f"{k}: {v}" for k, v in MODELS.items()) + ")")
    ap.add_argument("--batches", nargs="+", type=int, default=None,
                    help=f"default 16..1024 on CPU; with --write on CUDA {GPU_BATCHES}")
    ap.add_argument("--projector", nargs="+", type=int, default=[2048], help="projector hidden=out widths")
    ap.add_argument("--method", default="vicreg")
    ap.add_argument("--device", default=None, help="cpu | cuda | auto (default: cpu; with --write: auto)")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (auto: bf16 on CUDA)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=10_000)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--write", nargs="?", const="results/throughput.csv", default=None, metavar="PATH",
                    help="measure in the training configuration and write the table (default PATH "
                         "results/throughput.csv)")
    ap.add_argument("--eval-images", type=int, default=None,
                    help="--write: time evaluation on at most this many images and scale (default: all on "
                         "CUDA, 4096 on CPU)")
    ap.add_argument("--no-eval", action="store_true", help="--write: leave eval_seconds empty")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_malloc()  # as bsstudy train does
    if args.write is not None:
        device = resolve_device(args.device or "auto", source="--device")
        args.backbones = args.backbones or (["resnet18_cifar"] if args.quick else ["small_cnn", "resnet18_cifar"])
        if args.batches is None:
            args.batches = GPU_BATCHES if device.type == "cuda" else ([16, 64] if args.quick else [16, 64, 256])
        if args.eval_images is None and device.type == "cpu":
            args.eval_images = 4096
        if args.quick:
            args.min_seconds = min(args.min_seconds, 1.5)
        print(f"{device_label(device)}, method={args.method}, precision={args.precision}, "
              f"channels_last={not args.no_channels_last}")
        write_table(args, device)
        return
    device = resolve_device(args.device or "cpu", source="--device")
    amp = resolve_precision(args.precision, device)
    backbones = args.backbones or ["small_cnn", "resnet18_cifar"]
    plan = {b: args.batches or [16, 32, 64, 128, 256, 512, 1024] for b in backbones}
    if args.quick:
        plan = {"small_cnn": [16, 64, 256, 1024], "resnet18_cifar": [16, 64]}
        plan = {k: v for k, v in plan.items() if k in backbones}
        args.min_seconds = min(args.min_seconds, 1.5)
    print(f"{device_label(device)}, method={args.method}, amp={amp}, channels_last={not args.no_channels_last}")
    print(f"{'backbone':<16}{'proj':>6}{'batch':>7}{'img/s':>10}{'img/cpu-s':>11}{'vs largest B (cpu)':>20}")
    for bb, batches in plan.items():
        for proj in args.projector:
            rows = []
            for b in batches:
                cfg = cell(bb, b, args.method, args.dataset, proj)
                rows.append((b, measure(cfg, device, amp, not args.no_channels_last, args.min_seconds,
                                        max_steps_for(bb, b, device, args.max_steps))))
            ref = rows[-1][1].cpu_images_per_second
            for b, m in rows:
                print(f"{bb:<16}{proj:>6}{b:>7}{m.images_per_second:>10.1f}{m.cpu_images_per_second:>11.1f}"
                      f"{m.cpu_images_per_second / ref:>19.2f}x", flush=True)


if __name__ == "__main__":
    main()
