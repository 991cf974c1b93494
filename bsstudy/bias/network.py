"""The frozen network, the fixed pool of augmented pairs, and the objectives to measure."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from .measure import MeasuredObjective, ModuleJT, state_of


def run_config(overrides: Sequence[str], checkpoint: str | None) -> tuple[DictConfig, Path | None]:
    """The config the network is built from: composed defaults + overrides, or a checkpoint's run config.

    A trainer checkpoint lives at <run_dir>/checkpoints/<name>.pt next to <run_dir>/config.yaml.
    """
    from ..config import compose, load_run_config

    if checkpoint is None:
        return compose(overrides), None
    ckpt = Path(checkpoint)
    if not ckpt.is_file():
        raise UserError(f"--checkpoint {ckpt}: no such file")
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise UserError(f"--checkpoint {ckpt}: no config.yaml in its run directory {run_dir}")
    cfg = load_run_config(cfg_path)
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UserError(f"override {bad[0]!r} is not key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except Exception as exc:  # struct mode: an unknown key
            raise UserError(f"override: {str(exc).splitlines()[0]}") from None
    return cfg, ckpt


def _model_state(obj: Any, path: Path) -> dict:
    """The model's state dict inside a trainer checkpoint (key ``model``) or a bare state dict."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return obj
    raise UserError(f"--checkpoint {path}: no model state dict in it (expected key 'model')")


def build_model(cfg: DictConfig, seed: int, device: torch.device, checkpoint: Path | None) -> torch.nn.Module:
    """Backbone + projector from ``cfg``; random init from ``seed`` or weights from ``checkpoint``; eval mode.

    Eval mode matters: BatchNorm then uses fixed running statistics, so each pair's embedding depends
    on that pair alone and the Jacobian J does not depend on which batch the pair is in.
    """
    from ..models import SSLModel, build_backbone, build_projector

    torch.manual_seed(int(seed))
    backbone = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size))
    projector = build_projector(int(backbone.feature_dim), cfg.method.projector)
    model = SSLModel(backbone, projector)
    if checkpoint is not None:
        from ..train.checkpoint import read_checkpoint

        try:
            # never unpickles code: a crafted file is a UserError naming it (issue: checkpoints run code)
            blob = read_checkpoint(checkpoint, map_location="cpu")
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"--checkpoint {checkpoint}: cannot read it ({str(exc).splitlines()[0]})") from None
        state = _model_state(blob, checkpoint)
        # DDP / torch.compile prefixes
        state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(
                f"--checkpoint {checkpoint}: weights do not fit the model of its config.yaml "
                f"({str(exc).splitlines()[0]})"
            ) from None
    model.to(device).float().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def calibrate_batchnorm(model: torch.nn.Module, inputs: Sequence[torch.Tensor], chunk: int) -> None:
    """Set every BatchNorm's running mean/var to the statistics of ``inputs`` (cumulative average over
    chunks), then return to eval mode.

    A freshly initialised network has running mean 0 / var 1, which in eval mode leaves the activations
    unnormalised: the embeddings come out nearly collapsed (std ~1e-3 at the default config), far from
    anything training sees. Calibrating on the pool gives eval-mode BN the scale train-mode BN would have.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight for every chunk
    model.train()
    with torch.no_grad():
        for x in inputs:
            for a in range(0, x.shape[0], chunk):
                model(x[a : a + chunk])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


@dataclass
class Pool:
    """N augmented pairs (inputs x1, x2), their frozen embeddings z1, z2 and the J^T operator."""

    x1: torch.Tensor
    x2: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor
    jt: ModuleJT
    image_indices: torch.Tensor
    n_params: int


def build_pool(
    cfg: DictConfig, model: torch.nn.Module, n_pool: int, seed: int, device: torch.device, chunk: int = 512,
    calibrate_bn: bool = True,
) -> Pool:
    """Draw ``n_pool`` images (without replacement, from ``seed``), augment each once into two views.

    ``calibrate_bn``: set the BatchNorm running statistics to the pool's (see ``calibrate_batchnorm``)."""
    from ..data import load_dataset
    from ..data.augment import TwoViewAugment

    data = load_dataset(cfg.dataset, "pretrain")
    total = int(data.images.shape[0])
    if n_pool > total:
        raise UserError(f"--pool {n_pool}: the dataset has only {total} pretraining images")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(total, generator=g)[:n_pool]
    aug = TwoViewAugment(cfg.dataset, device)
    ag = torch.Generator().manual_seed(int(seed) + 1)  # CPU generator: same views on any device
    x1s, x2s = [], []
    for a in range(0, n_pool, chunk):
        v1, v2 = aug(data.images[idx[a : a + chunk]].to(device), ag)
        x1s.append(v1.float())
        x2s.append(v2.float())
    x1, x2 = torch.cat(x1s), torch.cat(x2s)

    if calibrate_bn:
        calibrate_batchnorm(model, [x1, x2], chunk)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model(x)[1]

    with torch.no_grad():
        z1 = torch.cat([embed(x1[a : a + chunk]) for a in range(0, n_pool, chunk)]).float()
        z2 = torch.cat([embed(x2[a : a + chunk]) for a in range(0, n_pool, chunk)]).float()
    params = [p for p in model.parameters() if p.requires_grad]
    jt = ModuleJT(embed, params, x1, x2, chunk)
    return Pool(x1, x2, z1, z2, jt, idx, jt.numel)


def loss_params(cfg: DictConfig, name: str) -> dict:
    """Loss parameters of objective ``name``: the run config's when it is that method, else conf defaults."""
    from ..config import compose

    src = cfg.method.loss if cfg.method.name == name else compose([f"method={name}"]).method.loss
    return dict(OmegaConf.to_container(src, resolve=True))


def build_objectives(cfg: DictConfig, names: Sequence[str], schemes: Sequence[str]) -> list[MeasuredObjective]:
    """One ``MeasuredObjective`` per name, and one per variance scheme for a method with a ``variance``
    choice in the registry (vicreg_unbiased); scheme ``-`` for the others."""
    from ..objectives import build_objective
    from ..registry import method_spec

    out = []
    for name in names:
        params = loss_params(cfg, name)
        if "variance" in method_spec(name, source="--objectives").choices:
            for s in schemes:
                p = dict(params, variance=s)
                out.append(MeasuredObjective(name, s, build_objective(name, **p), notes={"params": p}))
        else:
            out.append(MeasuredObjective(name, "-", build_objective(name, **params), notes={"params": params}))
    for o in out:
        o.notes["stateful"] = bool(state_of(o.loss_fn))
    return out
