"""The ``bsstudy`` command: plan, submit, status, report, power, train, bias.

Each verb lives in its own module exposing ``register(subparsers)`` (adds its parser and sets
``func``); heavy imports (torch, pandas) happen inside ``func`` so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# verb -> module providing register(subparsers)
VERBS = {
    "plan": "bsstudy.sweep.cli",
    "submit": "bsstudy.sweep.cli",
    "status": "bsstudy.sweep.cli",
    "report": "bsstudy.report.cli",
    "power": "bsstudy.report.power_cli",
    "train": "bsstudy.train.cli",
    "bias": "bsstudy.bias.cli",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full CLI parser (each verb's module registers its own sub-parser)."""
    parser = _Parser(
        prog="bsstudy",
        description="Batch-size studies of self-supervised learning: plan -> submit -> status -> report; "
        "train one run; bias measures minibatch gradient bias against batch size.",
    )
    parser.add_argument("--version", action="version", version=f"bsstudy {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    seen = set()
    for verb, mod in VERBS.items():
        if mod in seen:
            continue
        seen.add(mod)
        importlib.import_module(mod).register(sub)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush of the broken pipe cannot raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except BrokenPipeError:  # `bsstudy plan ... | head -1`: the reader left; no traceback
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a command killed by the signal
    except UserError as exc:
        print(f"bsstudy {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bsstudy: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
