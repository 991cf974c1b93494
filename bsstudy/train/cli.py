"""``bsstudy train key=value ... out=DIR`` (compose + run one cell) and ``bsstudy train --run-dir DIR``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def top_keys() -> tuple[str, ...]:
    """The keys of ``conf/config.yaml`` besides the groups, as the help shows them: ``key`` for a value,
    ``section.key`` for a section of one key, ``section.*`` for a larger one."""
    from importlib.resources import files

    from ..layout import yaml_load

    root = yaml_load(files("bsstudy.conf").joinpath("config.yaml").read_text())
    out = []
    for k, v in root.items():
        if k == "defaults":  # the group selections, listed apart
            continue
        if isinstance(v, dict):
            out.append(f"{k}.{next(iter(v))}" if len(v) == 1 else f"{k}.*")
        else:
            out.append(k)
    return tuple(out)


def _epilog() -> str:
    from ..config import CONF_GROUPS, group_options

    groups = "\n".join(f"  {g}={{{','.join(group_options(g))}}}" for g in CONF_GROUPS)
    return (f"config groups:\n{groups}\n"
            f"top-level keys: {', '.join(top_keys())}\n"
            "any key of a group can be set too, e.g. method.loss.variance=c4 optim.warmup_epochs=2\n"
            "example: bsstudy train method=vicreg batch_size=256 epochs=5 dataset.train_subset=10000 out=runs/x")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    p = sub.add_parser("train", help="train and evaluate one run (a sweep cell)",
                       description="Train one run: compose the config from key=value overrides (requires "
                                   "out=DIR), or run an existing planned cell with --run-dir. Re-running "
                                   "the same directory resumes from its checkpoints.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (hydra syntax)")
    p.add_argument("--run-dir", type=Path, default=None, help="run an existing cell directory (has config.yaml)")
    p.set_defaults(func=_main)


def prepare_run_dir(overrides: list[str]) -> Path:
    """Compose the config, require ``out=``, write DIR/config.yaml (refusing a different existing one)."""
    from omegaconf import OmegaConf

    from ..config import canonical_json, cell_config, load_run_config
    from ..io import atomic_write_text
    from ..layout import RunPaths, yaml_dump

    cfg = cell_config(overrides, source="train")
    if cfg.out is None:
        raise UserError("out=DIR is required (the run directory)")
    out = Path(str(cfg.out))
    path = RunPaths(out).config
    if path.exists():
        old = load_run_config(path)
        if canonical_json(old) != canonical_json(cfg):
            raise UserError(f"{out} holds a run with a different config; choose another out=")
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml_dump(OmegaConf.to_container(cfg, resolve=True)))  # = the planner's format
    return out


def _main(args: argparse.Namespace) -> int:
    import json

    if args.run_dir is not None:
        if args.overrides:
            raise UserError("--run-dir takes no key=value overrides (the cell's config.yaml is used as is)")
        from ..layout import RunPaths

        run_dir = args.run_dir
        if not RunPaths(run_dir).config.exists():
            raise UserError(f"{run_dir}: no config.yaml (plan the cell first, or use key=value ... out=DIR)")
    else:
        run_dir = prepare_run_dir(list(args.overrides))
    from . import run_cell

    result = run_cell(run_dir)
    keys = ("run_id", "status", "linear_top1", "knn_top1", "final_loss", "diverged_at_epoch", "train_seconds")
    print(json.dumps({k: result.get(k) for k in keys}))
    return 0  # done or diverged (a valid outcome of a study); failures raise
