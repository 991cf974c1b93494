"""``bsstudy report results/<study> [--out reports/<study>] [--format md,html,tex]``."""
from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from .build import build_report, parse_formats

    build_report(args.study, args.out, parse_formats(args.format), reproducible=args.reproducible)
    return 0


def register(sub) -> None:
    """Add the ``report`` verb."""
    p = sub.add_parser("report", help="tables, figures and a citeable report of a study",
                       description="Read results/<study> (plan.csv, runs/*/result.json, metrics.jsonl, config.yaml, "
                       "optional bias/bias.csv) and write runs.csv, summary.csv, tables/, figures/, report.md, "
                       "report.html and provenance.json.")
    p.add_argument("study", help="study directory, results/<study>")
    p.add_argument("--out", default=None, help="output folder (default: reports/<study>)")
    p.add_argument("--format", default="md,html,tex", help="comma list of md, html, tex (CSV is always written)")
    p.add_argument("--reproducible", action="store_true",
                   help="output depends only on the runs: date = last run's finished_at, no git state or machine "
                        "of the rendering checkout (for reports committed next to their runs)")
    p.set_defaults(func=_run)
