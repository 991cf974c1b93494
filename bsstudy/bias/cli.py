"""``bsstudy bias``: how biased is each objective's minibatch gradient, as a function of batch size?

For a frozen network (random init from --seed, or --checkpoint) and a fixed pool of N augmented
pairs, each objective's target is its own estimator applied to the whole pool (g* = ∇L(pool)); R
batches of size B are drawn by simple random sampling from the pool and the mean minibatch gradient
is compared with g*. Method, estimators and caveats: docs/bias.md. The other modules of this package:
bsstudy/bias/__init__.py. Outputs in --out: bias.csv (one row per objective × scheme × B), bias.json,
bias.png, bias.pdf.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..provenance import git_state, versions
from ..registry import bias_refusal, method_names, method_spec, variance_schemes

DEFAULT_BATCH_SIZES = (8, 32, 128, 512)
# The default selection (and bias.csv row order) of the registry's methods (--objectives: any of them).
DEFAULT_OBJECTIVES = ("vicreg", "vicreg_unbiased", "simclr")
# Default: the default scheme and the published one, so the default run fits in minutes on a CPU;
# `--schemes all` measures every scheme of bsstudy.registry.variance_schemes() (each adds a cell per B).
DEFAULT_SCHEMES = ("jackknife", "plugin")
DEFAULT_POOL = 1024
DEFAULT_REPEATS = 64
DEFAULT_GROUPS = 8


@dataclass
class Settings:
    """Everything one ``bsstudy bias`` run depends on (recorded in bias.json)."""

    overrides: list[str] = field(default_factory=list)
    out: str = "results/bias"
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    repeats: int = DEFAULT_REPEATS
    groups: int = DEFAULT_GROUPS
    pool: int = DEFAULT_POOL
    objectives: list[str] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    schemes: list[str] = field(default_factory=lambda: list(DEFAULT_SCHEMES))
    checkpoint: str | None = None
    device: str = "auto"
    seed: int = 0
    level: float = 0.95
    embedding_only: bool = False
    chunk: int = 512


# ----------------------------------------------------------------------------------------- checks
def _int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 8,32,128") from None
    if not vals:
        raise UserError(f"{flag}: empty list")
    return vals


def _name_list(text: str, flag: str, allowed: Sequence[str]) -> list[str]:
    vals = [t.strip() for t in text.split(",") if t.strip()]
    if not vals:
        raise UserError(f"{flag}: empty list")
    for v in vals:
        if v not in allowed:
            raise UserError(f"{flag}: unknown name {v!r} (choose from {', '.join(allowed)})")
    return list(dict.fromkeys(vals))


def check(s: Settings) -> None:
    """Validate settings; a UserError names the flag."""
    if s.pool < 8:
        raise UserError(f"--pool {s.pool}: need at least 8 pairs")
    if s.groups < 3:
        raise UserError(f"--groups {s.groups}: need at least 3 groups for a confidence interval")
    if s.repeats < 2 * s.groups or s.repeats % s.groups:
        raise UserError(f"--repeats {s.repeats}: must be a multiple of --groups {s.groups} and at least {2 * s.groups}")
    if not 0 < s.level < 1:
        raise UserError(f"--level {s.level}: must be in (0, 1)")
    if s.chunk < 1:
        raise UserError(f"--chunk {s.chunk}: must be >= 1")
    for o in s.objectives:
        reason = bias_refusal(o)
        if reason is not None:  # stateful objectives: docs/bias.md says what is (not) defined for them
            raise UserError(f"--objectives: {reason}")
    need = max(method_spec(o, source="--objectives").min_rows for o in s.objectives)
    for b in s.batch_sizes:
        if b < need:
            raise UserError(f"--batch-sizes: {b} is too small for {', '.join(s.objectives)} (needs >= {need})")
        if b >= s.pool:
            raise UserError(f"--batch-sizes: {b} must be smaller than --pool {s.pool}")
    if len(set(s.batch_sizes)) != len(s.batch_sizes):
        raise UserError("--batch-sizes: duplicate batch size")


# ------------------------------------------------------------------------------------------ run
def run(s: Settings, progress: bool = True) -> "Any":
    """Build network, pool and objectives from ``s``, measure, write DIR/bias.{csv,json,png,pdf}.

    Returns the bias.csv table as a pandas DataFrame.
    """
    from ..runtime import resolve_device, tune_malloc
    from . import network
    from .measure import measure_all
    from .outputs import write_bias_figure, write_outputs

    check(s)
    tune_malloc()
    t0 = time.perf_counter()
    device = resolve_device(s.device, source="--device")
    cfg, ckpt = network.run_config(s.overrides, s.checkpoint)
    objectives = network.build_objectives(cfg, s.objectives, s.schemes)
    model = network.build_model(cfg, s.seed, device, ckpt)
    pool = network.build_pool(cfg, model, s.pool, s.seed, device, s.chunk, calibrate_bn=ckpt is None)
    t_pool = time.perf_counter() - t0
    rows, notes = measure_all(
        objectives, pool.z1, pool.z2, None if s.embedding_only else pool.jt, s.batch_sizes, s.repeats,
        s.groups, s.seed, s.level, progress=progress,
    )
    wall = time.perf_counter() - t0
    out = Path(s.out)
    df = write_outputs(rows, out, {
        "settings": asdict(s),
        "device": str(device),
        "network": {"model": _plain(cfg.model), "projector": _plain(cfg.method.projector),
                    "method_of_config": str(cfg.method.name), "dataset": str(cfg.dataset.name),
                    "init": "checkpoint" if ckpt else f"random (seed {s.seed})",
                    "checkpoint": str(ckpt) if ckpt else None, "n_params": pool.n_params,
                    "embedding_dim": int(pool.z1.shape[1]), "batchnorm": "eval mode; running statistics " + ("of the checkpoint" if ckpt else "calibrated on the pool")},
        "objectives": notes,
        "seconds": {"setup": t_pool, "total": wall},
        "versions": {**versions(), "git_commit": git_state()[0]},
    })
    write_bias_figure(df, out, title=f"{cfg.dataset.name}, {cfg.model.name}, pool {s.pool}, R={s.repeats} "
                      f"({s.groups} groups), {'checkpoint' if ckpt else 'random init'}")
    return df


def _plain(x: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(x, resolve=True)


# ---------------------------------------------------------------------------------------------- CLI
def _main(args: argparse.Namespace) -> int:
    from .outputs import bias_text_table

    s = Settings(
        overrides=list(args.overrides),
        out=args.out,
        batch_sizes=_int_list(args.batch_sizes, "--batch-sizes"),
        repeats=args.repeats,
        groups=args.groups,
        pool=args.pool,
        objectives=_name_list(args.objectives, "--objectives", method_names()),
        schemes=list(variance_schemes()) if args.schemes == "all"
        else _name_list(args.schemes, "--schemes", variance_schemes()),
        checkpoint=args.checkpoint,
        device=args.device,
        seed=args.seed,
        level=args.level,
        embedding_only=args.embedding_only,
        chunk=args.chunk,
    )
    for o in s.overrides:
        if "=" not in o:
            raise UserError(f"{o!r}: expected a key=value config override")
    t0 = time.perf_counter()
    df = run(s, progress=not args.quiet)
    print(bias_text_table(df))
    print(f"wrote {Path(s.out) / 'bias.csv'} (+ bias.json, bias.png, bias.pdf) in {time.perf_counter() - t0:.0f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bias`` verb to the bsstudy CLI."""
    p = sub.add_parser(
        "bias",
        help=f"measure minibatch gradient bias against batch size ({', '.join(method_names())})",
        description=__doc__.split("\n\n")[0] + " Method: docs/bias.md. For the report, write into "
        "results/<study>/bias (bsstudy report reads results/<study>/bias/bias.csv).",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. method.projector.out_dim=512")
    p.add_argument("--out", default="results/bias", help="output directory (default: results/bias)")
    p.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), help="comma-separated (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="batches R per batch size (default: %(default)s)")
    p.add_argument("--groups", type=int, default=DEFAULT_GROUPS,
                   help="K groups of R/K batches: K backward passes per cell, K-1 dof for the CI (default: %(default)s)")
    p.add_argument("--pool", type=int, default=DEFAULT_POOL, help="pool size N of augmented pairs (default: %(default)s)")
    p.add_argument("--objectives", default=",".join(DEFAULT_OBJECTIVES),
                   help=f"comma-separated, of {', '.join(method_names())} (default: %(default)s)")
    p.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                   help=f"variance schemes of vicreg_unbiased ({', '.join(variance_schemes())}), comma-separated "
                   "or 'all' (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help="trainer checkpoint (<run_dir>/checkpoints/last.pt); default: random init")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="network init, pool, augmentation and batches (default: 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default: 0.95)")
    p.add_argument("--embedding-only", action="store_true", help="skip the parameter-space backward passes")
    p.add_argument("--chunk", type=int, default=512, help="pairs per forward/backward chunk (memory; default: 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
