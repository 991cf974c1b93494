"""GPU check: the study's training path (CIFAR-10-shaped ResNet-18, VICReg) on this machine, against a
standard torchvision-DataLoader + lightly-loss loop in the same run. Run by benchmarks/gpu_check.sh.

    python benchmarks/gpu_check.py            # full: 50,000 synthetic 32x32x3 images, B=256, < 8 min on one GPU
    python benchmarks/gpu_check.py --quick    # tiny (CPU ok, ~2 min): checks the script runs end to end

--quick swaps ResNet-18 for a width-8 small CNN (ResNet-18 at 32x32 costs ~1.7 GFLOP per view and step, tens
of seconds per step on a shared CPU) and uses 128 images; everything else is the same path.

Sections (each prints as it finishes; a summary follows):
1. ours: ``bsstudy.train.run_cell`` on synthetic CIFAR-10 files (torchvision's pickle layout) with the
   defaults a cluster user gets (device auto, precision auto = bf16 on CUDA, channels_last); 2 epochs,
   the second timed (the first holds cuDNN autotuning and allocator growth); evaluation timed as the rest.
2. ours with compile=true (GPU only unless --compile): the same, through torch.compile (inductor).
3. baseline: the same backbone + projector fed by a torchvision DataLoader (PIL two-view transforms equal in
   distribution to ours, benchmarks/bench_augment.py) with lightly's VICRegLoss and LARS, same autocast and
   memory format; epoch 2 timed.
4. augmentation alone: two-view views/s of ours on the device vs the DataLoader's.
5. training images/s at B=32 vs B=1024 (benchmarks/bench_train_throughput.py's step), with peak memory.
Peak memory is torch.cuda.max_memory_allocated per section (CUDA only).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench_augment import PILTwoViews, bench_ours, bench_pil, pil_view  # noqa: E402
from bench_train_throughput import device_label, measure  # noqa: E402

from bsstudy.config import cell_config  # noqa: E402
from bsstudy.runtime import resolve_device, tune_malloc  # noqa: E402
from bsstudy.train.setup import resolve_precision  # noqa: E402

RESNET = ["model=resnet18_cifar"]
TINY_NET = ["model=small_cnn", "model.width=8", "model.feature_dim=64", "method.projector.hidden_dim=128",
            "method.projector.out_dim=128"]
FULL = {"net": RESNET, "train": 50000, "test": 10000, "batch": 256, "throughput_batches": (32, 1024), "min_seconds": 3.0,
        "aug_images": 16384, "aug_batch": 1024}
QUICK = {"net": TINY_NET, "train": 128, "test": 64, "batch": 32, "throughput_batches": (8, 32), "min_seconds": 0.2,
         "aug_images": 512, "aug_batch": 32}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEADLINE_S = 7 * 60  # optional sections are skipped past this, so the whole check stays under 8 minutes


def write_synthetic_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images in torchvision's CIFAR-10 pickle layout under root/cifar-10-batches-py;
    returns the train images (N, 3, 32, 32)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, size=(n_train, 3 * 32 * 32), dtype=np.uint8)
    per = -(-n_train // 5)
    for i in range(5):
        part = train[i * per:(i + 1) * per]
        with open(d / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": part, "labels": rng.integers(0, 10, len(part)).tolist()}, f)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8),
                     "labels": rng.integers(0, 10, n_test).tolist()}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)
    return train.reshape(-1, 3, 32, 32)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} GiB"


def cfg_for(net: list[str], batch: int):
    """The composed config of a CIFAR-10 VICReg cell with the network overrides ``net``."""
    return cell_config(["dataset=cifar10", "method=vicreg", f"batch_size={batch}", *net])


def run_ours(root: Path, out: Path, net: list[str], batch: int, device: torch.device, compile_: bool) -> dict:
    """One real training run (2 epochs) through bsstudy.train.run_cell; epoch 2 timed from metrics.jsonl."""
    from bsstudy.train import run_cell
    from bsstudy.train.cli import prepare_run_dir

    overrides = ["dataset=cifar10", f"dataset.root={root}", *net, "method=vicreg", f"batch_size={batch}", "epochs=2", f"device={device}", "precision=auto",
                 "channels_last=true", f"compile={str(compile_).lower()}", f"out={out}"]
    _peak_reset(device)
    t = time.perf_counter()
    res = run_cell(prepare_run_dir(overrides))
    wall = time.perf_counter() - t
    if res["status"] != "done":
        raise RuntimeError(f"run_cell ended {res['status']}: {res.get('error')}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"epoch1_s": rows[0]["seconds"], "epoch_s": rows[1]["seconds"],
            "images_per_second": rows[1]["images_per_second"], "final_loss": res["final_loss"],
            "rest_s": wall - res["train_seconds"], "wall_s": wall, "peak_gib": _peak_gib(device),
            "device": res["device"]}


def run_baseline(images: np.ndarray, net: list[str], batch: int, device: torch.device, amp: torch.dtype | None,
                 workers: int) -> dict:
    """The standard loop: DataLoader(PIL two views, workers) -> same model -> lightly VICRegLoss -> lightly LARS."""
    from lightly.loss import VICRegLoss
    from lightly.utils.lars import LARS
    from torch.utils.data import DataLoader

    from bsstudy.data.augment import TwoViewAugment
    from bsstudy.models import SSLModel, build_backbone, build_projector

    cfg = cfg_for(net, batch)
    ds = cfg.dataset
    t1, t2 = (pil_view(v, ds.image_size, ds.channels, list(ds.mean), list(ds.std))
              for v in TwoViewAugment(ds, "cpu").views)
    dl = DataLoader(PILTwoViews(images, t1, t2), batch_size=batch, shuffle=True, drop_last=True,
                    num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    bb = build_backbone(cfg.model, int(ds.channels), int(ds.image_size))
    model = SSLModel(bb, build_projector(bb.feature_dim, cfg.method.projector))
    model = model.to(device, memory_format=torch.channels_last)
    loss_fn = VICRegLoss()  # lambda=25, mu=25, nu=1: the same coefficients as ours
    opt = LARS(model.parameters(), lr=float(cfg.lr.effective), momentum=0.9, weight_decay=1e-6)
    _peak_reset(device)
    times, loss = [], float("nan")
    for _ in range(2):
        t = time.perf_counter()
        for v1, v2 in dl:
            v1 = v1.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            v2 = v2.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                _, z1 = model(v1)
                _, z2 = model(v2)
            out = loss_fn(z1.float(), z2.float())
            opt.zero_grad(set_to_none=True)
            out.backward()
            opt.step()
        loss = float(out.detach())  # a host sync: the epoch's work is done
        times.append(time.perf_counter() - t)
    steps = len(images) // batch
    return {"epoch1_s": times[0], "epoch_s": times[1], "images_per_second": steps * batch / times[1],
            "final_loss": loss, "peak_gib": _peak_gib(device), "workers": workers}


def augment_views_per_second(images: np.ndarray, batch: int, device: torch.device, workers: int,
                             min_seconds: float) -> dict:
    """Two-view augmentation alone: ours on the device vs the PIL DataLoader (one epoch after a warm one)."""
    from torch.utils.data import DataLoader

    from bsstudy.config import compose
    from bsstudy.data.augment import TwoViewAugment

    ds = compose(["dataset=cifar10"]).dataset
    aug = TwoViewAugment(ds, device)
    ours = 2 * bench_ours(aug, torch.from_numpy(images), batch, device, min_seconds)
    t1, t2 = (pil_view(v, ds.image_size, ds.channels, list(ds.mean), list(ds.std)) for v in aug.views)
    dl = DataLoader(PILTwoViews(images, t1, t2), batch_size=batch, num_workers=workers,
                    persistent_workers=workers > 0)
    for _ in dl:  # worker start-up, not timed
        pass
    return {"ours": ours, "pil": 2 * bench_pil(dl), "workers": workers}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=os.environ.get("GPU_CHECK_QUICK") == "1",
                    help="tiny sizes (also GPU_CHECK_QUICK=1)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=None, help="baseline DataLoader workers (default: cores-1, <=16)")
    ap.add_argument("--compile", dest="compile_", action="store_true", default=None,
                    help="also time compile=true (default: on CUDA only)")
    ap.add_argument("--no-compile", dest="compile_", action="store_false")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 when the device is the CPU, as the other benchmarks; "
                         "else torch's)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    tune_malloc()  # before the DataLoaders fork, as bench_augment does
    p = QUICK if args.quick else FULL
    device = resolve_device(args.device, source="--device")
    # One thread on CPU: on a shared/oversubscribed machine more threads spin and run ~10x slower.
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    amp = resolve_precision("auto", device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = args.workers if args.workers is not None else max(1, min(16, cores - 1))
    do_compile = device.type == "cuda" if args.compile_ is None else args.compile_
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the baseline gets what a tuned user loop would have
    print(f"gpu_check: {device_label(device)}  torch {torch.__version__}  cuda {torch.version.cuda}  "
          f"autocast={amp}  cores={cores}  {'QUICK' if args.quick else 'full'}: {p['train']} train images, "
          f"B={p['batch']}", flush=True)
    summary: dict[str, dict] = {}
    failed: list[str] = []

    def left() -> float:
        return DEADLINE_S - (time.perf_counter() - t_start)

    def section(name: str, fn, line) -> None:
        """Run one section; a failure is printed and the other sections still run (one GPU lease, all numbers)."""
        try:
            summary[name] = fn()
        except Exception as e:  # noqa: BLE001 - report and go on; the exit code says something failed
            failed.append(name)
            print(f"[{name}] FAILED {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            return
        print(line(summary[name]), flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp_p = Path(tmp)
        old_cache = os.environ.get("BSSTUDY_DATA_CACHE")
        os.environ["BSSTUDY_DATA_CACHE"] = str(tmp_p / "cache")  # decoded tensors stay in the temp dir
        images = write_synthetic_cifar10(tmp_p / "data", p["train"], p["test"])

        section("ours", lambda: run_ours(tmp_p / "data", tmp_p / "run", p["net"], p["batch"], device, False),
                lambda r: f"[1] ours (run_cell): epoch {r['epoch_s']:.2f} s ({r['images_per_second']:.0f} img/s; "
                          f"epoch 1 {r['epoch1_s']:.2f} s); setup+evaluation {r['rest_s']:.1f} s; peak "
                          f"{_gib(r['peak_gib'])}; loss {r['final_loss']:.3f}")
        if do_compile and left() > 150:
            section("ours_compiled",
                    lambda: run_ours(tmp_p / "data", tmp_p / "run_c", p["net"], p["batch"], device, True),
                    lambda r: f"[2] ours compile=true: epoch {r['epoch_s']:.2f} s ({r['images_per_second']:.0f} "
                              f"img/s); epoch 1 (compiling) {r['epoch1_s']:.1f} s; peak {_gib(r['peak_gib'])}; "
                              f"loss {r['final_loss']:.3f}")
        elif do_compile:
            print("[2] compile=true skipped: too little of the 8-minute budget left", flush=True)
        section("baseline", lambda: run_baseline(images, p["net"], p["batch"], device, amp, workers),
                lambda r: f"[3] baseline DataLoader({workers} workers)+lightly: epoch {r['epoch_s']:.2f} s "
                          f"({r['images_per_second']:.0f} img/s; epoch 1 {r['epoch1_s']:.2f} s); peak "
                          f"{_gib(r['peak_gib'])}; loss {r['final_loss']:.3f}")
        section("augment", lambda: augment_views_per_second(images[:p["aug_images"]], p["aug_batch"], device,
                                                            workers, p["min_seconds"]),
                lambda r: f"[4] augmentation views/s (B={p['aug_batch']}): ours {r['ours']:.0f} vs PIL "
                          f"DataLoader({workers} workers) {r['pil']:.0f} ({r['ours'] / r['pil']:.1f}x)")
        for b in p["throughput_batches"]:
            if left() < 30:
                print(f"[5] B={b} skipped: too little of the 8-minute budget left", flush=True)
                continue
            section(f"B={b}", lambda: _throughput(cfg_for(p["net"], b), device, amp, p["min_seconds"]),
                    lambda r: f"[5] B={b}: {r['images_per_second']:.0f} img/s ({r['steps']} steps); "
                              f"peak {_gib(r['peak_gib'])}")

        if old_cache is None:
            del os.environ["BSSTUDY_DATA_CACHE"]
        else:
            os.environ["BSSTUDY_DATA_CACHE"] = old_cache

    print("\n== gpu_check summary ==")
    net = "ResNet-18 (CIFAR stem)" if p["net"] is RESNET else "small CNN width 8 (--quick)"
    print(f"device                 {device_label(device)}  (autocast {amp}, channels_last)")
    print(f"SSL epoch ({net}, VICReg, 32x32x3, {p['train']} img, B={p['batch']}):")
    o, c, b = summary.get("ours"), summary.get("ours_compiled"), summary.get("baseline")
    for label, r in (("ours run_cell", o), ("ours compile=true", c), ("baseline DL+lightly", b)):
        if r is not None:
            print(f"  {label:<21}{r['epoch_s']:8.2f} s  {r['images_per_second']:9.0f} img/s  peak {_gib(r['peak_gib'])}")
    if o and c:
        print(f"  compile time         ~{c['epoch1_s'] - o['epoch1_s']:.0f} s (its epoch 1 minus ours)")
    if o and b:
        print(f"  ours / baseline      {b['epoch_s'] / o['epoch_s']:8.2f}x faster ({b['workers']} DataLoader workers)")
    if o:
        print(f"  evaluation + setup   {o['rest_s']:8.1f} s  (one run: data load, end-of-run features, probe, kNN "
              f"on {p['train']}+{p['test']} img)")
    a = summary.get("augment")
    if a:
        print(f"augmentation views/s   ours {a['ours']:.0f}  PIL DataLoader {a['pil']:.0f}  ({a['ours'] / a['pil']:.1f}x)")
    tps = [(bs, summary[f"B={bs}"]) for bs in p["throughput_batches"] if f"B={bs}" in summary]
    for bs, r in tps:
        print(f"images/s at B={bs:<5}    {r['images_per_second']:9.0f}  peak {_gib(r['peak_gib'])}")
    if len(tps) == 2:
        (b1, r1), (b2, r2) = tps
        print(f"B={b2} / B={b1} images/s  {r2['images_per_second'] / r1['images_per_second']:.2f}x")
    print(f"wall time              {time.perf_counter() - t_start:.0f} s")
    if failed:
        print(f"FAILED sections: {', '.join(failed)}")
    return 1 if failed else 0


def _throughput(cfg, device: torch.device, amp: torch.dtype | None, min_seconds: float) -> dict:
    m = measure(cfg, device, amp, True, min_seconds, 10_000)
    peak = None if m.peak_memory_bytes is None else m.peak_memory_bytes / 2**30
    return {"images_per_second": m.images_per_second, "peak_gib": peak, "steps": m.steps}


if __name__ == "__main__":
    sys.exit(main())
