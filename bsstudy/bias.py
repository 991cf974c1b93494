"""``bsstudy bias``: how biased is each objective's minibatch gradient, as a function of batch size?

For a frozen network (random init from --seed, or --checkpoint) and a fixed pool of N augmented
pairs, each objective's target is its own estimator applied to the whole pool (g* = ∇L(pool)); R
batches of size B are drawn by simple random sampling from the pool and the mean minibatch gradient
is compared with g*. Method, estimators and caveats: docs/bias.md. Internals: bsstudy/biaslib/.
Outputs in --out: bias.csv (one row per objective × scheme × B), bias.json, bias.png, bias.pdf.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError
from .provenance import git_state, versions

DEFAULT_BATCH_SIZES = (8, 32, 128, 512)
DEFAULT_OBJECTIVES = ("vicreg", "vicreg_unbiased", "simclr")
ALL_SCHEMES = ("jackknife", "jackknife_ema_gate", "ema", "c4", "plugin")
# Default: the default scheme and the published one, so the default run fits in minutes on a CPU;
# `--schemes all` measures every scheme (each adds a cell per batch size).
DEFAULT_SCHEMES = ("jackknife", "plugin")
DEFAULT_POOL = 1024
DEFAULT_REPEATS = 64
DEFAULT_GROUPS = 8

# Leading columns of bias.csv (contract with bsstudy.report, which reads results/<study>/bias/bias.csv).
CSV_COLUMNS = (
    "objective", "scheme", "label", "batch_size", "repeats", "groups", "pool",
    "rel_bias", "rel_bias_ci_low", "rel_bias_ci_high", "cosine", "rel_noise", "loss_bias",
    "loss_bias_ci_low", "loss_bias_ci_high", "noise_floor", "rel_bias_raw", "rel_bias_sq",
    "rel_bias_sq_se", "cosine_corrected", "bias_along", "bias_along_ci_low", "bias_along_ci_high",
    "loss", "loss_pool",
)


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
    from .config import MIN_BATCH

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
    need = max(MIN_BATCH.get(o, 2) for o in s.objectives)
    for b in s.batch_sizes:
        if b < need:
            raise UserError(f"--batch-sizes: {b} is too small for {', '.join(s.objectives)} (needs >= {need})")
        if b >= s.pool:
            raise UserError(f"--batch-sizes: {b} must be smaller than --pool {s.pool}")
    if len(set(s.batch_sizes)) != len(s.batch_sizes):
        raise UserError("--batch-sizes: duplicate batch size")


# ------------------------------------------------------------------------------------ measurement
def measure_all(
    objectives: list,
    z1: Any,
    z2: Any,
    jt: Any,
    batch_sizes: Sequence[int],
    repeats: int,
    groups: int,
    seed: int,
    level: float = 0.95,
    warm_chunk: int = 512,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Measure every objective at every batch size on pool embeddings (z1, z2) with J^T operator ``jt``
    (None: embedding space only). Network-agnostic, so tests drive it with synthetic embeddings.

    Returns (rows, notes): rows as in bias.csv plus ``terms_bias``; notes per objective label.
    """
    import torch
    from tqdm import tqdm

    from .biaslib import engine

    n = z1.shape[0]
    notes: dict[str, dict] = {}
    targets = {}
    for obj in objectives:
        # stateful schemes: EMA warmed on the pool, then frozen (every batch sees the same state)
        beta = obj.notes.get("params", {}).get("ema_beta")
        # enough calls that the initial state is forgotten: beta^calls = e^-10
        calls = math.ceil(10.0 / (1.0 - float(beta)) - 1e-9) if beta is not None and 0 < float(beta) < 1 else 200
        notes[obj.label] = dict(obj.notes, **engine.warm_state(obj, z1, z2, warm_chunk, calls, seed))
        targets[obj.label] = engine.pool_target(obj, z1, z2)
    target_param = {}
    if jt is not None:
        stack = torch.stack([targets[o.label].grad for o in objectives])
        pushed = jt(stack)
        target_param = {o.label: pushed[i] for i, o in enumerate(objectives)}
        del stack, pushed
    # same batches for every objective (common random numbers make the comparison sharper)
    indices = {b: engine.batch_indices(n, b, repeats, seed * 1_000_003 + b) for b in batch_sizes}
    rows = []
    bar = tqdm(total=len(objectives) * len(batch_sizes), desc="bias", unit="cell", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for obj in objectives:
        t = targets[obj.label]
        for b in batch_sizes:
            bar.set_postfix_str(f"{obj.label} B={b}")
            row = engine.measure(obj, z1, z2, indices[b], groups, t, target_param.get(obj.label), jt, level)
            row.update(objective=obj.objective, scheme=obj.scheme, label=obj.label, batch_size=int(b),
                       repeats=int(repeats), groups=int(groups), pool=int(n))
            rows.append(row)
            bar.update(1)
    bar.close()
    return rows, notes


def run(s: Settings, progress: bool = True) -> "Any":
    """Build network, pool and objectives from ``s``, measure, write DIR/bias.{csv,json,png,pdf}.

    Returns the bias.csv table as a pandas DataFrame.
    """
    from .biaslib import figure, network
    from .runtime import tune_malloc

    check(s)
    tune_malloc()
    t0 = time.perf_counter()
    device = network.pick_device(s.device)
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
    figure.plot(df, out, title=f"{cfg.dataset.name}, {cfg.model.name}, pool {s.pool}, R={s.repeats} "
                f"({s.groups} groups), {'checkpoint' if ckpt else 'random init'}")
    return df


def _plain(x: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(x, resolve=True)


def write_outputs(rows: list[dict], out: Path, meta: dict) -> "Any":
    """Write bias.csv and bias.json (atomically); return the CSV table."""
    import pandas as pd

    from .io import atomic_write_json, atomic_write_text, json_finite

    flat = [{k: v for k, v in r.items() if k != "terms_bias"} for r in rows]
    df = pd.DataFrame(flat)
    cols = [c for c in CSV_COLUMNS if c in df.columns]
    cols += sorted(c for c in df.columns if c not in cols)
    df = df[cols]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bias.csv", df.to_csv(index=False, float_format="%.6g"))
    meta = dict(meta, schema=1, csv_columns=cols,
                terms_bias=[{"label": r["label"], "batch_size": r["batch_size"], "terms": r["terms_bias"]}
                            for r in rows])
    atomic_write_json(out / "bias.json", json_finite(meta))
    return df


def summary_table(df: "Any") -> str:
    """A compact text table: one line per objective/scheme, one column per batch size."""
    lines = []
    bs = sorted(df["batch_size"].unique())
    space = "rel_bias" if "rel_bias" in df.columns and df["rel_bias"].notna().any() else "emb_rel_bias"
    lines.append(f"relative gradient bias ({'parameters' if space == 'rel_bias' else 'embeddings'}), "
                 f"estimate [95% CI]; noise floor in ()")
    lines.append("objective".ljust(30) + "".join(f"B={b}".ljust(30) for b in bs))
    for lab in dict.fromkeys(df["label"]):
        d = df[df["label"] == lab].set_index("batch_size")
        pre = space[:-len("rel_bias")]
        cells = []
        for b in bs:
            r = d.loc[b]
            cells.append(f"{r[space]:.3g} [{r[space + '_ci_low']:.2g},{r[space + '_ci_high']:.2g}] "
                         f"({r[pre + 'noise_floor']:.2g})".ljust(30))
        lines.append(lab.ljust(30) + "".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
def _main(args: argparse.Namespace) -> int:
    s = Settings(
        overrides=list(args.overrides),
        out=args.out,
        batch_sizes=_int_list(args.batch_sizes, "--batch-sizes"),
        repeats=args.repeats,
        groups=args.groups,
        pool=args.pool,
        objectives=_name_list(args.objectives, "--objectives", DEFAULT_OBJECTIVES),
        schemes=list(ALL_SCHEMES) if args.schemes == "all" else _name_list(args.schemes, "--schemes", ALL_SCHEMES),
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
    print(summary_table(df))
    print(f"wrote {Path(s.out) / 'bias.csv'} (+ bias.json, bias.png, bias.pdf) in {time.perf_counter() - t0:.0f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bias`` verb to the bsstudy CLI."""
    p = sub.add_parser(
        "bias",
        help="measure minibatch gradient bias against batch size (vicreg, vicreg_unbiased, simclr)",
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
    p.add_argument("--objectives", default=",".join(DEFAULT_OBJECTIVES), help="comma-separated (default: %(default)s)")
    p.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES), help="variance schemes of vicreg_unbiased, comma-separated or 'all' (default: %(default)s)")
    p.add_argument("--checkpoint", default=None, help="trainer checkpoint (<run_dir>/checkpoints/last.pt); default: random init")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="network init, pool, augmentation and batches (default: 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default: 0.95)")
    p.add_argument("--embedding-only", action="store_true", help="skip the parameter-space backward passes")
    p.add_argument("--chunk", type=int, default=512, help="pairs per forward/backward chunk (memory; default: 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
