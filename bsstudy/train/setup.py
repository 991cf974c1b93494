"""Building a run's state from its config: device, precision, seeds, data, model, objective, optimizer.

``build_run(cfg, dist)`` returns a ``Run``: everything the epoch loop touches, plus its ``Progress`` (the
counters a checkpoint saves). Construction order matters: the backbone and projector draw their initial
weights from the global torch RNG right after seeding, so reordering this function changes every run.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..registry import MethodSpec, method_spec
from ..runtime import resolve_device
from . import distributed as ddp
from .optim import WarmupCosine, build_optimizer
from .target import MomentumTarget


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a DDP job; ``current_dist()`` is the single place rank/world are read."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_dist() -> Dist:
    """Rank, world size and local rank of the initialised process group (a single process otherwise)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: auto = bf16 on CUDA with bf16 support, fp32 (None) elsewhere."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise UserError(f"precision: {precision!r} (choose auto, fp32 or bf16)")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy, torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def device_name(device: torch.device) -> str:
    """The ``device`` field of result.json: GPU model, or CPU thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()}threads"


@dataclass
class Progress:
    """How far a run got: what a checkpoint restores besides model/optimizer/RNG state."""
    epoch: int = 0                 # completed epochs
    train_seconds: float = 0.0
    images_seen: int = 0
    last_loss: float | None = None

    @property
    def images_per_second(self) -> float | None:
        return self.images_seen / self.train_seconds if self.train_seconds else None


@dataclass
class Run:
    """The state of one run while it trains."""
    cfg: DictConfig
    dist: Dist
    device: torch.device
    amp_dtype: torch.dtype | None
    images: torch.Tensor           # uint8 pretraining images, on the device
    batch_size: int                # GLOBAL batch
    local_batch: int               # this rank's slice of it
    steps_per_epoch: int
    augment: Any                   # TwoViewAugment
    aug_gen: torch.Generator       # augmentation stream (CPU, checkpointed, distinct per rank)
    model: torch.nn.Module         # the plain module: state_dict, evaluation
    forward: torch.nn.Module       # what trains: model, DDP-wrapped and/or compiled
    memory_format: torch.memory_format
    objective: Any
    spec: MethodSpec               # what the objective needs besides z1, z2 (registry)
    target: MomentumTarget | None  # momentum target network (methods with spec.needs_target)
    lr: float
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    progress: Progress = field(default_factory=Progress)


def build_run(cfg: DictConfig, dist: Dist) -> Run:
    """Seed, then build data, augmentation, model, objective, optimizer and schedule of ``cfg``."""
    from ..data import load_dataset
    from ..data.augment import TwoViewAugment
    from ..models import SSLModel, build_backbone, build_predictor, build_projector
    from ..objectives import build_objective

    device = resolve_device(str(cfg.device), dist.local_rank, source="device")
    amp_dtype = resolve_precision(str(cfg.precision), device)
    seed_everything(int(cfg.seed), bool(cfg.deterministic))

    # Data on the device once, as uint8; augmentation happens there per batch.
    images = load_dataset(cfg.dataset, "pretrain").images.to(device)
    batch_size = int(cfg.batch_size)
    if batch_size % dist.world_size:
        raise UserError(f"batch_size: {batch_size} not divisible by world size {dist.world_size}")
    steps_per_epoch = len(images) // batch_size          # drop_last
    if steps_per_epoch < 1:
        raise UserError(f"batch_size: {batch_size} exceeds the {len(images)} pretraining images")
    augment = TwoViewAugment(cfg.dataset, device)
    aug_gen = torch.Generator().manual_seed(int(cfg.seed) * 7919 + dist.rank)

    spec = method_spec(str(cfg.method.name))
    backbone = build_backbone(cfg.model, int(cfg.dataset.channels), int(cfg.dataset.image_size))
    projector = build_projector(backbone.feature_dim, cfg.method.projector)
    # drawn after the projector, so methods without one initialise exactly as before
    predictor = (build_predictor(int(cfg.method.projector.out_dim), cfg.method.predictor)
                 if spec.needs_predictor else None)
    model = SSLModel(backbone, projector, predictor)
    if dist.world_size > 1 and cfg.distributed.sync_bn:
        model = ddp.convert_sync_batchnorm(model, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format)
    forward: torch.nn.Module = model
    total_steps = steps_per_epoch * int(cfg.epochs)
    # a copy of the (converted, placed) online network: same BatchNorm kind, device and memory format
    target = (MomentumTarget(model, float(cfg.method.target.base_momentum), str(cfg.method.target.schedule),
                             total_steps) if spec.needs_target else None)
    if dist.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        forward = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        forward = torch.compile(forward)
    objective = build_objective(str(cfg.method.name), **OmegaConf.to_container(cfg.method.loss))
    if spec.needs_num_samples:
        objective.bind(len(images))

    lr = float(cfg.lr.effective)
    optimizer = build_optimizer(model, cfg.optim, lr)
    schedule = WarmupCosine(optimizer, lr, total_steps,
                            int(round(float(cfg.optim.warmup_epochs) * steps_per_epoch)),
                            float(cfg.optim.min_lr_ratio), str(cfg.optim.schedule))
    return Run(cfg=cfg, dist=dist, device=device, amp_dtype=amp_dtype, images=images, batch_size=batch_size,
               local_batch=batch_size // dist.world_size, steps_per_epoch=steps_per_epoch, augment=augment,
               aug_gen=aug_gen, model=model, forward=forward, memory_format=memory_format, objective=objective,
               spec=spec, target=target, lr=lr, optimizer=optimizer, schedule=schedule)
