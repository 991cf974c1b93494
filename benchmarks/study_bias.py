"""Gradient bias along training for the published study (docs/study.md): ``bsstudy bias`` on the untrained
network and on the end of training of one cell per stateless method at the reference batch size, merged
into ``results/<study>/bias/bias.csv`` (what ``bsstudy report`` reads), labelled by network.

    python benchmarks/study_bias.py [results/fmnist_batchsize] [--run-b 256] [--run-epochs 10] [--seed 0]
                                    [--repeats 64] [--pool 1024]

Each measurement is one ``bsstudy bias`` run into ``bias/<network>/``; a finished one (its bias.csv exists)
is not measured again, so the script resumes. The trained networks are the runs' ``checkpoints/last.pt``
(kept on the machine that trained them, never committed): the merged bias.csv and every sub-folder's
bias.csv/bias.json are the committed record.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bsstudy.layout import yaml_load_file
from bsstudy.registry import bias_refusal, method_spec

# the objective of each trained network, and the estimator it is compared with on the same network
PAIRS = {"vicreg": "vicreg_unbiased", "vicreg_unbiased": "vicreg", "barlow_twins": "barlow_twins_unbiased",
         "barlow_twins_unbiased": "barlow_twins"}


def _net_overrides(config: dict) -> list[str]:
    """The study network's keys (from a run's config.yaml) for a random-init measurement."""
    m, p = config["model"], config["method"]["projector"]
    return [f"model.width={m['width']}", f"model.feature_dim={m['feature_dim']}",
            f"method.projector.hidden_dim={p['hidden_dim']}", f"method.projector.out_dim={p['out_dim']}",
            f"dataset.train_subset={config['dataset']['train_subset']}", "device=cpu", "precision=fp32",
            "channels_last=false"]


def _measure(out: Path, objectives: list[str], extra: list[str], args: argparse.Namespace) -> Path:
    csv = out / "bias.csv"
    if csv.is_file():
        print(f"study_bias: {out} measured already")
        return csv
    cmd = [sys.executable, "-m", "bsstudy", "bias", "--out", str(out), "--objectives", ",".join(objectives),
           "--schemes", "jackknife", "--repeats", str(args.repeats), "--pool", str(args.pool), "--seed",
           str(args.seed), "--quiet", *extra]
    print("study_bias: " + " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)
    return csv


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", nargs="?", default="results/fmnist_batchsize")
    ap.add_argument("--run-b", type=int, default=256)
    ap.add_argument("--run-epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=64)
    ap.add_argument("--pool", type=int, default=1024)
    args = ap.parse_args(argv)
    study = Path(args.study)
    plan = pd.read_csv(study / "plan.csv")
    cells = plan[(plan["batch_size"] == args.run_b) & (plan["epochs"] == args.run_epochs) & (plan["seed"] == args.seed)]
    trained = {m: rid for m, rid in zip(cells["method"], cells["run_id"]) if bias_refusal(m) is None}
    if not trained:
        raise SystemExit(f"study_bias: no stateless method has a B={args.run_b}, {args.run_epochs}-epoch, "
                         f"seed-{args.seed} cell in {study / 'plan.csv'}")
    first = study / "runs" / next(iter(trained.values()))
    parts = []
    csv = _measure(study / "bias" / "untrained", sorted(trained), _net_overrides(yaml_load_file(first / "config.yaml")), args)
    parts.append(pd.read_csv(csv).assign(network="untrained"))
    for method, rid in sorted(trained.items()):
        ckpt = study / "runs" / rid / "checkpoints" / "last.pt"
        if not (study / "bias" / rid / "bias.csv").is_file() and not ckpt.is_file():
            print(f"study_bias: {rid}: no checkpoint yet (skipped)")
            continue
        objectives = [method] + ([PAIRS[method]] if method in PAIRS else [])
        csv = _measure(study / "bias" / rid, objectives, ["--checkpoint", str(ckpt), "device=cpu"], args)
        parts.append(pd.read_csv(csv).assign(network=f"trained {method_spec(method).title or method}"))
    merged = pd.concat(parts, ignore_index=True)
    merged["label"] = merged["label"].astype(str) + " · " + merged["network"]
    merged.to_csv(study / "bias" / "bias.csv", index=False, float_format="%.6g", lineterminator="\n")
    print(f"study_bias: wrote {study / 'bias' / 'bias.csv'} ({len(merged)} rows, {len(parts)} networks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
