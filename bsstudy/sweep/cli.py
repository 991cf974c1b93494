"""``bsstudy plan``, ``bsstudy submit``, ``bsstudy status`` (docs/sweep.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _plan(args: argparse.Namespace) -> int:
    from ..layout import StudyPaths
    from .plan import plan_cells, plan_summary_table, write_plan
    from .spec import load_sweep

    overrides, results = _split_overrides(args.overrides, args.results)
    sweep = load_sweep(args.sweep, overrides)
    results = Path(results)
    cells = plan_cells(sweep, results)  # validates every cell before anything is written
    w = write_plan(sweep, cells, results)
    study_dir = results / sweep.study
    print(f"plan: study {sweep.study}: {len(cells)} cells -> {StudyPaths(study_dir).plan} "
          f"({w['configs_new']} new, {w['configs_unchanged']} unchanged, {w['configs_rewritten']} rewritten)")
    print(plan_summary_table(cells))
    return 0


def _split_overrides(rest: list[str], results: str) -> tuple[list[str], str]:
    """Overrides after the sweep file may be mixed with ``--results DIR`` (argparse cannot interleave them)."""
    from ..errors import UserError

    out, i = [], 0
    while i < len(rest):
        a = rest[i]
        if a == "--results" and i + 1 < len(rest):
            results, i = rest[i + 1], i + 2
            continue
        if a.startswith("--results="):
            results = a.split("=", 1)[1]
        elif a.startswith("-"):
            raise UserError(f"unknown option {a!r} (options: --results DIR)")
        else:
            out.append(a)
        i += 1
    return out, results


def _submit(args: argparse.Namespace) -> int:
    from .submit import submit

    # None: submit's default (wait for local runs, the machine is busy anyway; not for slurm)
    wait = True if args.wait else (False if args.no_wait else None)
    return submit(args.study_dir, cluster=args.cluster, retry_failed=args.retry_failed, dry_run=args.dry_run,
                  wait=wait, parallel=args.parallel)


def _fmt(v) -> str:
    return "-" if v is None else str(v)


def _status(args: argparse.Namespace) -> int:
    from ..layout import Status
    from .state import cell_states, counts

    states = cell_states(Path(args.study_dir))
    c = counts(states)
    if args.json:
        json.dump({"cells": [s.to_dict() for s in states], "counts": c}, sys.stdout, indent=1)
        print()
        return 0
    head = ("run_id", "state", "job", "epoch")
    rows = [(s.run_id, s.state, _fmt(s.job_id), f"{_fmt(s.epoch)}/{s.epochs}") for s in states]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for s, r in zip(states, rows):
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        if s.state == Status.FAILED:
            print(f"    error: {s.error}")
            if s.log:
                print(f"    log:   {s.log}")
    print("counts: " + ", ".join(f"{k} {n}" for k, n in c.items() if n) + f" (total {len(states)})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the plan, submit and status verbs."""
    from ..layout import STATUS_ORDER

    p = sub.add_parser("plan", help="expand a sweep YAML into run configs (results/<study>/plan.csv, runs/)",
                       description="Validate every cell of SWEEP.yaml, then write results/<study>/plan.csv and "
                       "runs/<run_id>/config.yaml. Overrides: grid.KEY=[..], base config KEY=VALUE, "
                       "slurm.KEY=VALUE, study=NAME. Re-planning the same sweep changes nothing.")
    p.add_argument("sweep", help="sweep YAML file (schema: docs/sweep.md)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="e.g. grid.seed=[0,1,2] epochs=5 slurm.partition=gpu")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.set_defaults(func=_plan)

    s = sub.add_parser("submit", help="submit a planned study (SLURM job arrays via submitit, or local)",
                       description="Submit the cells of results/<study> that are not done, pending or running. "
                       "Local runs go in parallel up to the number of cores and are waited for by default.")
    s.add_argument("study_dir", help="results/<study>")
    s.add_argument("--cluster", default="auto", choices=("auto", "slurm", "local", "debug"),
                   help="auto: slurm when sbatch is on PATH, else local (an error for a sweep with a "
                   "slurm: block); slurm with --dry-run needs no SLURM")
    s.add_argument("--retry-failed", action="store_true", help="also resubmit failed and diverged cells")
    s.add_argument("--dry-run", action="store_true", help="show what would be submitted; submit nothing")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--wait", action="store_true", help="wait until every submitted cell ended (slurm)")
    g.add_argument("--no-wait", action="store_true", help="return at once (local: a detached dispatcher runs)")
    s.add_argument("--parallel", type=int, default=None, help="local: cells at once (default: CPU cores)")
    s.set_defaults(func=_submit)

    t = sub.add_parser("status", help="state of every cell of a study",
                       description=f"One row per cell: {'/'.join(STATUS_ORDER)}, job id, epoch reached; "
                       "for failures the error line and the log path.")
    t.add_argument("study_dir", help="results/<study>")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    t.set_defaults(func=_status)
