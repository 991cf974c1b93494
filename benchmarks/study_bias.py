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
from bsstudy.registry import bias_refusal

def _net_overrides(config: dict) -> list[str]:
    """A run's network and loss (from its config.yaml) as overrides, for a random-init measurement of the
    same architecture: model width/features, and every method.projector / predictor / loss value."""
    def text(v) -> str:
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    m, meth = config["model"], config["method"]
    out = [f"method={meth['name']}", f"model.width={m['width']}", f"model.feature_dim={m['feature_dim']}",
           f"dataset.train_subset={config['dataset']['train_subset']}", "device=cpu", "precision=fp32",
           "channels_last=false"]
    for block in ("projector", "predictor", "loss"):
        for k, v in (meth.get(block) or {}).items():
            if not isinstance(v, (dict, list)):
                out.append(f"method.{block}.{k}={text(v)}")
    return out


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
    parts = []
    for method, rid in sorted(trained.items()):
        # the untrained network of that cell (seed --seed, its projector), then the same cell trained
        config = yaml_load_file(study / "runs" / rid / "config.yaml")
        csv = _measure(study / "bias" / f"untrained-{method}", [method], _net_overrides(config), args)
        parts.append(pd.read_csv(csv).assign(network="untrained"))
        ckpt = study / "runs" / rid / "checkpoints" / "last.pt"
        if not (study / "bias" / rid / "bias.csv").is_file() and not ckpt.is_file():
            print(f"study_bias: {rid}: no checkpoint yet (skipped)")
            continue
        csv = _measure(study / "bias" / rid, [method], ["--checkpoint", str(ckpt), "device=cpu"], args)
        parts.append(pd.read_csv(csv).assign(network=f"trained B={args.run_b} {args.run_epochs} ep"))
    merged = pd.concat(parts, ignore_index=True)
    merged["label"] = merged["label"].astype(str) + " · " + merged["network"]
    merged.to_csv(study / "bias" / "bias.csv", index=False, float_format="%.6g", lineterminator="\n")
    print(f"study_bias: wrote {study / 'bias' / 'bias.csv'} ({len(merged)} rows, {len(parts)} networks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
