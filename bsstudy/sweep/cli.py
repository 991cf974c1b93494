"""``bsstudy plan``, ``bsstudy submit``, ``bsstudy status`` (docs/sweep.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _plan(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..layout import StudyPaths, yaml_load_file
    from .plan import PlanDiff, check_no_shrink, plan_cells, plan_summary_table, previous_run_ids, write_plan
    from .preflight import preflight_data
    from .spec import check_cell_count, load_sweep, merge_slurm_overrides

    opts = _split_overrides(args.overrides, {"results": args.results, "dry_run": args.dry_run,
                                             "replace": args.replace, "max_cells": args.max_cells})
    overrides, results = opts["overrides"], Path(opts["results"])
    sweep = load_sweep(args.sweep, overrides)
    paths = StudyPaths(results / sweep.study)
    # slurm.* overrides of the previous plan stay unless given again (docs/sweep.md)
    kept: list[str] = []
    if paths.sweep.exists():
        stored = yaml_load_file(paths.sweep)
        old = stored.get("slurm_overrides") if isinstance(stored, dict) else None
        if isinstance(old, list) and all(isinstance(o, str) for o in old):
            kept = [o for o in merge_slurm_overrides(old, sweep.slurm_overrides) if o not in sweep.slurm_overrides]
    if kept:
        sweep = load_sweep(args.sweep, [*kept, *overrides])
        for o in kept:
            print(f"plan: keeping {o} from the previous plan ({paths.sweep}); give {o.partition('=')[0]}=... "
                  "to change it")
    check_cell_count(sweep, opts["max_cells"])
    cells = plan_cells(sweep, results)  # validates every cell before anything is written
    diff = PlanDiff.between(previous_run_ids(paths.dir), cells)
    if opts["dry_run"]:
        try:
            preflight_data([c.config for c in cells])
        except UserError as exc:  # a plan previewed away from the data: say so, do not stop
            print(f"plan --dry-run: warning: {exc}")
        print(f"plan --dry-run: study {sweep.study}: {len(cells)} cells; against {paths.plan}:")
        print("\n".join(diff.lines()))
        if diff.dropped and not opts["replace"]:
            print("(dropping cells needs --replace)")
        print(plan_summary_table(cells))
        return 0
    if not opts["replace"]:
        check_no_shrink(diff, paths.plan)
    preflight_data([c.config for c in cells])
    try:
        w = write_plan(sweep, cells, results)  # undoes its new run directories on any error
    except PermissionError as exc:  # e.g. a run directory of an earlier plan made unreadable (chmod, owner)
        raise UserError(f"{exc.filename}: {exc.strerror or 'permission denied'} (fix its permissions; "
                        f"{paths.plan} unchanged)") from None
    print(f"plan: study {sweep.study}: {len(cells)} cells -> {paths.plan} "
          f"({w['configs_new']} new, {w['configs_unchanged']} unchanged, {w['configs_rewritten']} rewritten"
          + (f"; {len(diff.dropped)} dropped from plan.csv, their run directories kept" if diff.dropped else "")
          + ")")
    print(plan_summary_table(cells))
    return 0


_PLAN_FLAGS = {"--dry-run": "dry_run", "--replace": "replace"}
_PLAN_VALUES = {"--results": "results", "--max-cells": "max_cells"}


def _split_overrides(rest: list[str], opts: dict) -> dict:
    """Overrides after the sweep file may be mixed with the options (argparse cannot interleave them)."""
    from ..errors import UserError

    out, i = [], 0
    opts = dict(opts)
    while i < len(rest):
        a = rest[i]
        name, eq, val = a.partition("=")
        if name in _PLAN_FLAGS and not eq:
            opts[_PLAN_FLAGS[name]] = True
        elif name in _PLAN_VALUES:
            if not eq:
                if i + 1 >= len(rest):
                    raise UserError(f"{name} needs a value")
                val, i = rest[i + 1], i + 1
            opts[_PLAN_VALUES[name]] = val
        elif a in ("-m", "--multirun"):
            raise UserError(f"{a}: there is no multirun; sweep a key with grid.KEY=[..], e.g. 'grid.seed=[0,1,2]'")
        elif a.startswith("-"):
            raise UserError(f"unknown option {a!r} (options: {', '.join([*_PLAN_VALUES, *_PLAN_FLAGS])})")
        else:
            out.append(a)
        i += 1
    try:
        opts["max_cells"] = int(opts["max_cells"])
    except (TypeError, ValueError):
        raise UserError(f"--max-cells: needs an integer, got {opts['max_cells']!r}") from None
    opts["overrides"] = out
    return opts


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
        if s.state in (Status.FAILED, Status.UNREADABLE):
            print(f"    error: {s.error}")
            if s.log:
                print(f"    log:   {s.log}")
    print("counts: " + ", ".join(f"{k} {n}" for k, n in c.items() if n) + f" (total {len(states)})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the plan, submit and status verbs."""
    from ..layout import STATUS_ORDER
    from .spec import MAX_CELLS

    p = sub.add_parser("plan", help="expand a sweep YAML into run configs (results/<study>/plan.csv, runs/)",
                       description="Validate every cell of SWEEP.yaml, then write results/<study>/plan.csv and "
                       "runs/<run_id>/config.yaml. Overrides: grid.KEY=[..], base config KEY=VALUE, "
                       "slurm.KEY=VALUE, study=NAME. Re-planning the same sweep changes nothing; a re-plan that "
                       "would drop cells of the current plan.csv is refused (--dry-run shows the diff, "
                       "--replace accepts it).")
    p.add_argument("sweep", help="sweep YAML file (schema: docs/sweep.md)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="e.g. grid.seed=[0,1,2] epochs=5 slurm.partition=gpu")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and show the diff against the current plan.csv; write nothing")
    p.add_argument("--replace", action="store_true",
                   help="allow a plan that drops cells of the current plan.csv (their run directories stay)")
    p.add_argument("--max-cells", type=int, default=MAX_CELLS,
                   help=f"refuse sweeps of more cells (default {MAX_CELLS})")
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
