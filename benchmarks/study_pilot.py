"""The pilot table of docs/study.md, from the committed runs of results/fmnist_pilot.

Per candidate setting (pretraining images x epochs) and accuracy metric: the gain of the trained network
over the untrained network of its own seed (paired, mean over methods and batch sizes, 95% t-CI over
seeds), the within-seed residual SD (statsmodels OLS ``y ~ C(seed) + C(method):C(B)``), the batch-size
effect (smallest minus largest B, paired within seed, mean over methods) and both as multiples of the noise.

    python benchmarks/study_pilot.py [results/fmnist_pilot]
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from statsmodels.formula.api import ols

from bsstudy.errors import UserError
from bsstudy.report.load import load_study
from bsstudy.report.stats import power_table
from bsstudy.report.tables import accuracy_columns, metric_label, t_half_width, to_markdown


def _t_ci(v: np.ndarray) -> tuple[float, float]:
    """Mean and 95% Student-t half-width of ``v`` (the report's ``t_half_width``; NaN for one value)."""
    n = len(v)
    return float(v.mean()), float(t_half_width(v.std(ddof=1) if n > 1 else np.nan, n))


def pilot_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (train_subset, epochs, metric); points throughout."""
    runs = runs[runs["status"] == "done"].copy()
    runs["train_subset"] = runs["config.dataset.train_subset"] if "config.dataset.train_subset" in runs else None
    rows = []
    for (subset, epochs), g in runs.groupby(["train_subset", "epochs"], sort=True):
        bs = sorted(g["batch_size"].unique())
        if len(bs) < 2 or g["seed"].nunique() < 2:
            continue                      # not finished enough for a within-seed residual
        for col, label in accuracy_columns(runs).items():
            if col not in g or f"init_{col}" not in g:
                continue
            d = pd.DataFrame({"y": 100 * g[col].astype(float), "init": 100 * g[f"init_{col}"].astype(float),
                              "seed": g["seed"], "method": g["method"], "B": g["batch_size"]})
            gain_seed = (d["y"] - d["init"]).groupby(d["seed"]).mean().to_numpy()
            gain, gain_ci = _t_ci(gain_seed)
            fit = ols("y ~ C(seed) + C(method):C(B)", data=d).fit()
            sd = float(np.sqrt(fit.scale))
            small, large = d[d["B"] == bs[0]], d[d["B"] == bs[-1]]
            eff = (small.set_index(["method", "seed"])["y"] - large.set_index(["method", "seed"])["y"]).dropna()
            b_eff, b_ci = _t_ci(eff.groupby(level="seed").mean().to_numpy())
            rows.append({"pretrain images": int(subset), "epochs": int(epochs), "metric": label,
                         "untrained": round(float(d["init"].mean()), 2),
                         "gain (pts)": f"{gain:+.2f} ± {gain_ci:.2f}", "resid SD": round(sd, 2),
                         "gain / SD": round(gain / sd, 1),
                         "B small − B large (pts)": f"{b_eff:+.2f} ± {b_ci:.2f}",
                         "|B effect| / SD": round(abs(b_eff) / sd, 1), "n seeds": len(gain_seed),
                         "runs": len(d)})
    return pd.DataFrame(rows)


STUDY_GRID = (16, 32, 64, 128, 256, 512)   # the batch sizes sweeps/fmnist_batchsize.yaml plans


def power_rows(runs: pd.DataFrame, effects=(1.0,)) -> pd.DataFrame:
    """`bsstudy power --batch-sizes 16,...,512 --effect 1` (stats.power_table) per setting of the pilot:
    seeds needed for a 1-point slope per doubling, a 1-point B contrast (= per-B method-pair difference)
    and a 1-point-per-doubling slope difference, at 80% power, on the study's planned grid."""
    out = []
    for (subset, epochs), g in runs[runs["status"] == "done"].groupby(["config.dataset.train_subset", "epochs"]):
        if g["seed"].nunique() < 2 or g["batch_size"].nunique() < 2:
            continue
        try:
            t = power_table(g, effects, tuple(accuracy_columns(g)), batch_sizes=STUDY_GRID)
        except UserError:            # not finished enough
            continue
        t.insert(0, "setting", f"{int(subset)} x {int(epochs)} ep")
        t["metric"] = t["metric"].map(metric_label)
        out.append(t[["setting", "metric", "quantity", "resid_sd_pts", "mde_pts"]
                     + [f"seeds_for_{e:g}" for e in effects]].round(3))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def main(argv: list[str]) -> int:
    study = load_study(argv[0] if argv else "results/fmnist_pilot", warn=lambda u: None)
    runs = study.runs.copy()
    cfg = {r: c for r, c in zip(study.plan["run_id"], study.plan.get("dataset.train_subset", [None] * len(study.plan)))}
    runs["config.dataset.train_subset"] = runs["run_id"].map(cfg)
    print(to_markdown(pilot_table(runs)))
    print()
    print(to_markdown(power_rows(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
