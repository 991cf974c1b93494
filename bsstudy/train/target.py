"""The momentum target network of BYOL and MoCo v2: an exponential moving average of backbone + projector.

``MomentumTarget(model, base_momentum, schedule, total_steps)`` holds a copy of the online network's backbone
and projector (never the predictor), without gradients. ``update(step)``, called once after every optimizer
step, moves every parameter **and every floating-point buffer** (BatchNorm running statistics) towards the
online network's: ``t <- tau * t + (1 - tau) * theta``; integer buffers (``num_batches_tracked``) are copied.

Momentum schedule (BYOL, Grill et al. 2020, section 3.2): ``cosine``
``tau_k = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2`` with k the optimizer steps completed before this
update (0 for the first) and K the run's total steps, so tau rises from tau_base to ~1; ``constant`` keeps
tau_base (MoCo's m).

Forward: the target runs in training mode with BatchNorm using the batch's statistics (as BYOL's and MoCo's
key encoders do) but without updating its own running statistics, which are the EMA of the online ones.
Under DDP the online parameters are identical on every rank after each step, so the target is too; with
``distributed.sync_bn`` its BatchNorm statistics are global-batch ones, like the online network's.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..errors import UserError

SCHEDULES = ("cosine", "constant")


def momentum_at(step: int, total_steps: int, base: float, schedule: str) -> float:
    """tau of the update after optimizer step ``step + 1`` (``step`` steps completed before it)."""
    if schedule == "constant":
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


class MomentumTarget(nn.Module):
    """EMA copy of ``model.backbone`` + ``model.projector``; ``target(x)`` -> embeddings (no gradient)."""

    def __init__(self, model: nn.Module, base_momentum: float, schedule: str, total_steps: int) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise UserError(f"method.target.schedule: {schedule!r} (choose from {', '.join(SCHEDULES)})")
        if not 0.0 <= base_momentum <= 1.0:
            raise UserError(f"method.target.base_momentum: {base_momentum} must be in [0, 1]")
        self.backbone = copy.deepcopy(model.backbone)
        self.projector = copy.deepcopy(model.projector)
        self.base_momentum, self.schedule, self.total_steps = float(base_momentum), schedule, int(total_steps)
        for p in self.parameters():
            p.requires_grad_(False)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.track_running_stats = False   # batch statistics in forward; running stats are the EMA's
        self.train()

    def train(self, mode: bool = True) -> "MomentumTarget":
        # Always training mode: batch-statistics BatchNorm (``model.eval()`` of a parent must not change it).
        return super().train(True)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def _pairs(self, model: nn.Module):
        for name in ("backbone", "projector"):
            mine, theirs = getattr(self, name), getattr(model, name)
            yield from zip(mine.parameters(), theirs.parameters())
            yield from zip(mine.buffers(), theirs.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """Move towards ``model`` (the online SSLModel) after optimizer step ``step + 1``; returns the tau used."""
        tau = momentum_at(step, self.total_steps, self.base_momentum, self.schedule)
        for t, o in self._pairs(model):
            if t.is_floating_point():
                t.lerp_(o.detach().to(t.dtype), 1.0 - tau)    # t + (1 - tau)(o - t) = tau t + (1 - tau) o
            else:
                t.copy_(o)
        return tau

    def state(self) -> dict[str, Any]:
        """Plain tensors for the checkpoint (parameters and buffers of the copy)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_state(self, st: dict[str, Any]) -> None:
        """Restore ``state()``."""
        self.load_state_dict(st)
