"""Optimizers (LARS, SGD, AdamW) and the per-step LR schedule (linear warmup + cosine).

LR units: the resolved config carries ``lr.effective`` (= base_lr scaled to the global batch by
``bsstudy.config.effective_lr``); the optimizer is built with it and the schedule multiplies it per step.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import UserError

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(torch.optim.Optimizer):
    """SGD with momentum, weight decay and a layer-wise trust ratio (You et al., 2017; VICReg's variant).

    Param groups with ``lars_exclude=True`` (biases, norm parameters) get neither weight decay nor the
    trust ratio: scaling a 1-d bias by its own tiny norm destabilises training (SimCLR/VICReg practice).
    update: g <- g + wd*w; q = eta*||w||/||g|| (1 if either norm is 0); v <- m*v + q*g; w <- w - lr*v.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001) -> None:
        if lr < 0:
            raise UserError(f"optim: lr must be >= 0, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        g = g.add(p, alpha=group["weight_decay"])
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    q = torch.where((w_norm > 0) & (g_norm > 0),
                                    group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.clone(g).detach()
                else:
                    state["mu"].mul_(group["momentum"]).add_(g)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss


def is_excluded(name: str, param: nn.Parameter) -> bool:
    """Biases and norm-layer parameters (all 1-d tensors): no weight decay, no LARS adaptation."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: regular weights (weight decay, trust ratio) and excluded biases/norm params."""
    regular, excluded = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (excluded if is_excluded(name, p) else regular).append(p)
    return [
        {"params": regular, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(model: nn.Module, optim_cfg: Any, lr: float) -> torch.optim.Optimizer:
    """The optimizer named by ``optim_cfg.name`` at learning rate ``lr`` (the effective LR)."""
    name = optim_cfg.name
    wd = float(optim_cfg.weight_decay or 0.0)
    groups = param_groups(model, wd)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=float(optim_cfg.momentum),
                    weight_decay=wd, trust_coefficient=float(optim_cfg.trust_coefficient))
    # SGD/AdamW: same exclusion of biases/norm params from weight decay; the extra key is ignored.
    for g in groups:
        g.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(optim_cfg.momentum or 0.0), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    raise UserError(f"optim.name: unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float, schedule: str = "cosine") -> float:
    """Multiplier of the peak LR at ``step`` (0-based): linear warmup from 1/warmup to 1, then cosine
    decay to ``min_lr_ratio`` at the last step (schedule='cosine') or constant (schedule='constant')."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise UserError(f"optim.schedule: unknown schedule {schedule!r} (choose cosine or constant)")
    decay_steps = max(1, total_steps - warmup_steps - 1)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """Per-step LR schedule over ``total_steps`` steps; ``state_dict`` is the step counter (resume)."""

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, total_steps: int, warmup_steps: int,
                 min_lr_ratio: float, schedule: str = "cosine") -> None:
        self.optimizer, self.peak_lr = optimizer, peak_lr
        self.total_steps, self.warmup_steps = total_steps, min(warmup_steps, total_steps)
        self.min_lr_ratio, self.schedule = min_lr_ratio, schedule
        self.step_count = 0
        self._apply()

    def lr(self) -> float:
        """LR for the next optimizer step."""
        return self.peak_lr * lr_factor(self.step_count, self.total_steps, self.warmup_steps,
                                        self.min_lr_ratio, self.schedule)

    def _apply(self) -> None:
        lr = self.lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        """Advance one optimizer step and set the next LR."""
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:  # noqa: D102
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, int]) -> None:  # noqa: D102
        self.step_count = int(state["step_count"])
        self._apply()
