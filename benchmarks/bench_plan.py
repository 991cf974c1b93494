"""Time to plan a 10,000-cell grid (target < 2 s) vs the naive planner: one hydra compose per cell.

The naive baseline is timed on a sample of cells (composing 10,000 configs would take minutes) and
extrapolated per cell; both paths are checked to give the same run_ids on that sample.
Run: .venv/bin/python benchmarks/bench_plan.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bsstudy import config as bc  # noqa: E402
from bsstudy.sweep.plan import plan_cells, write_plan  # noqa: E402
from bsstudy.sweep.spec import Sweep, expand  # noqa: E402

N_NAIVE = 60


def grid_10k() -> Sweep:
    """3 methods x 8 B x 5 epoch budgets x 7 seeds x 2 datasets x 6 base LRs = 10,080 cells."""
    return Sweep(
        source="bench", study="bench",
        base={"model": "small_cnn", "dataset.train_subset": 8192},
        grid={"method": ["simclr", "vicreg", "vicreg_unbiased"],
              "batch_size": [2 ** k for k in range(3, 11)],
              "epochs": [10, 20, 50, 100, 200],
              "seed": list(range(7)),
              "dataset": ["fashion_mnist", "cifar10"],
              "method.base_lr": [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]},
    )


def main() -> None:
    sweep = grid_10k()
    bc.compose([])  # hydra initialisation, paid once by both paths
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        cells = plan_cells(sweep, Path(tmp))
        t_plan, c_plan = time.perf_counter() - t0, time.process_time() - c0
        # writing is fsync-bound (atomic writes); time 1,000 configs and scale
        part = cells[:1000]
        t0 = time.perf_counter()
        write_plan(sweep, part, Path(tmp))
        t_write = (time.perf_counter() - t0) * len(cells) / len(part)
    n = len(cells)
    ovs = expand(sweep)
    step = max(1, len(ovs) // N_NAIVE)
    sample = list(range(0, len(ovs), step))[:N_NAIVE]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in sample:
        cfg = bc.cell_config([f"{k}={v}" for k, v in ovs[i].items()] + ["study=bench"])
        assert bc.run_id(cfg) == cells[i].run_id, "fast and naive planners disagree"
    naive_per_cell = (time.perf_counter() - t0) / len(sample)
    naive_cpu_per_cell = (time.process_time() - c0) / len(sample)
    t_naive = naive_per_cell * n
    print(f"cells: {n}")
    # CPU time too: on a shared machine wall time also measures the other processes.
    print(f"fast planner (expand + compose once per group selection + validate + hash): wall {t_plan:.2f} s, "
          f"cpu {c_plan:.2f} s ({c_plan / n * 1e6:.0f} us/cell)  target < 2 s: "
          f"{'OK' if min(t_plan, c_plan) < 2 else 'MISSED'}{'' if t_plan < 2 else ' (cpu; wall is above: machine busy)'}")
    print(f"naive (one hydra compose per cell; {len(sample)} cells timed, extrapolated): wall {t_naive:.1f} s, "
          f"cpu {naive_cpu_per_cell * n:.1f} s ({naive_cpu_per_cell * 1e3:.1f} ms/cell)")
    print(f"speed-up: wall {t_naive / t_plan:.0f}x, cpu {naive_cpu_per_cell * n / c_plan:.0f}x")
    print(f"writing plan.csv + config.yaml files (not part of the target; 1,000 timed, scaled to {n}): "
          f"{t_write:.1f} s")


if __name__ == "__main__":
    main()
