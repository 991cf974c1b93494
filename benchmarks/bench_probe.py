"""Linear probe: cached features + full-batch L-BFGS (bsstudy.evaluate) vs the usual baseline, 100 epochs
of minibatch SGD on a linear head through the frozen backbone (features recomputed every epoch).

Prints both accuracies, both wall times and the speed ratio (measured in the same run, same backbone,
same standardisation and the weight decay the probe chose on held-out train data).

    python benchmarks/bench_probe.py [--n-train 1000] [--n-test 10000] [--epochs 100] [--checkpoint last.pt]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bsstudy.config import cell_config
from bsstudy.data import load_dataset
from bsstudy.data.augment import normalize
from bsstudy.evaluate import extract_features, fit_logreg, linear_probe
from bsstudy.models import SSLModel, build_backbone, build_projector


def sgd_probe(backbone, tr_img, tr_y, te_img, te_y, dcfg, mean, std, wd, epochs, bs=256, lr=0.1, seed=0):
    """Baseline: linear head trained by SGD, frozen backbone run on every batch of every epoch."""
    g = torch.Generator().manual_seed(seed)
    k = int(tr_y.max()) + 1
    head = torch.nn.Linear(backbone.feature_dim, k)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((len(tr_img) + bs - 1) // bs))
    backbone.eval()
    for _ in range(epochs):
        perm = torch.randperm(len(tr_img), generator=g)
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            with torch.no_grad():
                f = (backbone(normalize(tr_img[idx], dcfg)) - mean) / std
            loss = F.cross_entropy(head(f), tr_y[idx]) + wd * (head.weight ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        f = (extract_features(backbone, te_img, dcfg, "cpu") - mean) / std
        return float((head(f).argmax(1) == te_y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--checkpoint", default=None, help="a run's checkpoints/last.pt (default: random init)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weight-decays", nargs="+", type=float, default=None,
                    help="probe grid (default: eval.probe_weight_decays of the config)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = cell_config([f"dataset.train_subset={args.n_train}"])
    bb = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size))
    if args.checkpoint:
        model = SSLModel(bb, build_projector(bb.feature_dim, cfg.method.projector))
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=False)["model"])
    tr, te = load_dataset(cfg.dataset, "train"), load_dataset(cfg.dataset, "test")
    # one-time costs (torch.optim's first step imports torch._dynamo: seconds) kept out of both timings
    fit_logreg(torch.randn(64, 4), torch.arange(64) % 2, 2, 0.0, 5)
    te_img, te_y = te.images[:args.n_test], te.labels[:args.n_test]

    wds = args.weight_decays if args.weight_decays is not None else list(cfg.eval.probe_weight_decays)
    t0, c0 = time.perf_counter(), time.process_time()
    tr_f = extract_features(bb, tr.images, cfg.dataset, "cpu")
    te_f = extract_features(bb, te_img, cfg.dataset, "cpu")
    res = linear_probe(tr_f, tr.labels, te_f, te_y, weight_decays=wds,
                       val_fraction=float(cfg.eval.probe_val_fraction), max_iter=int(cfg.eval.probe_max_iter))
    t_probe, c_probe = time.perf_counter() - t0, time.process_time() - c0
    mean, std = tr_f.mean(0, keepdim=True), tr_f.std(0, keepdim=True).clamp_min(1e-6)

    t0, c0 = time.perf_counter(), time.process_time()
    acc_sgd = sgd_probe(bb, tr.images, tr.labels, te_img, te_y, cfg.dataset, mean, std, res["weight_decay"],
                        args.epochs)
    t_sgd, c_sgd = time.perf_counter() - t0, time.process_time() - c0
    n_wd = len(wds)
    print(f"backbone: small_cnn ({'checkpoint' if args.checkpoint else 'random init'}), "
          f"{args.n_train} train / {args.n_test} test images, {args.threads} thread(s)")
    print(f"cached L-BFGS probe ({n_wd} weight decays on held-out train + refit, incl. feature extraction): "
          f"top1={res['top1']:.4f}  {t_probe:.2f}s wall {c_probe:.2f}s cpu  (chose wd={res['weight_decay']:g})")
    print(f"SGD through frozen backbone, {args.epochs} epochs, one wd:  top1={acc_sgd:.4f}  {t_sgd:.2f}s wall {c_sgd:.2f}s cpu")
    print(f"speed ratio (SGD / cached): {t_sgd / t_probe:.1f}x wall, {c_sgd / c_probe:.1f}x cpu time   accuracy difference: "
          f"{100 * (res['top1'] - acc_sgd):+.2f} points")


if __name__ == "__main__":
    main()
