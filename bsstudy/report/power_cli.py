"""``bsstudy power results/<study> [--effect 0.5,1,2] [--metric linear_top1]``: size the seeds of a study
from a finished pilot (the within-seed residual SD of its runs; see bsstudy.report.stats.power_table)."""
from __future__ import annotations

import argparse
import math

from ..errors import UserError


def parse_effects(text: str) -> tuple[float, ...]:
    """'0.5,1,2' -> (0.5, 1.0, 2.0); UserError naming --effect on anything but positive numbers."""
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        vals = ()
    if not vals or not all(v > 0 and math.isfinite(v) for v in vals):
        raise UserError(f"--effect: expected positive numbers in points, e.g. 1.0 or 0.5,1,2 (got {text!r})")
    return vals


def format_power(table, effects) -> str:
    """The power table as fixed-width text: one row per metric and quantity."""
    from .stats import ALPHA, MAX_SEEDS, POWER, QUANTITIES

    def seeds(v: float) -> str:
        return f">{MAX_SEEDS}" if not math.isfinite(v) else str(int(v))

    first = table.iloc[0]
    head = [f"{first['n_seeds']} seeds, batch sizes {first['batch_sizes']}; power {POWER:.0%}, two-sided "
            f"{ALPHA:.0%}; effects in points (per doubling of B for slopes)"]
    cols = ["metric", "quantity", "resid SD", f"MDE@{first['n_seeds']}"] + [f"seeds@{e:g}" for e in effects]
    rows = [[r["metric"], QUANTITIES[r["quantity"]], f"{r['resid_sd_pts']:.3f}", f"{r['mde_pts']:.3f}"]
            + [seeds(r[f"seeds_for_{e:g}"]) for e in effects] for _, r in table.iterrows()]
    width = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, width)).rstrip()  # noqa: E731
    return "\n".join(head + [fmt(cols), fmt(["-" * w for w in width])] + [fmt(r) for r in rows])


def _run(args: argparse.Namespace) -> int:
    from .load import load_study
    from .stats import power_table
    from .tables import accuracy_columns

    effects = parse_effects(args.effect)
    study = load_study(args.study)
    known = tuple(accuracy_columns(study.runs))
    metrics = known if args.metric is None else (args.metric,)
    if args.metric is not None and args.metric not in known:
        raise UserError(f"--metric: unknown metric {args.metric!r} (choose from {', '.join(known)})")
    try:
        table = power_table(study.runs, effects, metrics, batch_sizes=parse_batch_sizes(args.batch_sizes))
    except UserError as exc:
        raise UserError(f"{args.study}: {exc}") from None
    print(format_power(table, effects))
    return 0


def parse_batch_sizes(text: str | None) -> tuple[int, ...] | None:
    """``--batch-sizes 16,32,64``: the planned grid (None: the study's own); UserError naming the option."""
    if text is None:
        return None
    try:
        bs = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise UserError(f"--batch-sizes: {text!r} is not a comma list of integers (e.g. 16,32,64)") from None
    if len(bs) < 2 or bs[0] < 1:
        raise UserError(f"--batch-sizes: {text!r}: give at least two positive batch sizes")
    return bs


def register(sub) -> None:
    """Add the ``power`` verb."""
    p = sub.add_parser("power", help="seeds a study needs, from a finished pilot",
                       description="From the within-seed residual SD of results/<study>'s finished runs: the "
                       "minimum detectable slope (points per doubling of B), B-vs-B_ref contrast and method-pair "
                       "slope difference at 80% power for its seed count, and the seeds needed for each --effect.")
    p.add_argument("study", help="study directory, results/<study>")
    p.add_argument("--effect", default="0.5,1,2", help="effect sizes in points, comma list (default 0.5,1,2)")
    p.add_argument("--batch-sizes", default=None,
                   help="size this planned grid (comma list, e.g. 16,32,64,128,256,512) from the study's residual "
                        "SD (default: the study's own batch sizes)")
    p.add_argument("--metric", default=None, help="linear_top1, knn_top1 or few_shot.<k>.top1 (eval.few_shot) (default: all the study has)")
    p.set_defaults(func=_run)
