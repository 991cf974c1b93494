"""Self-supervised objectives of two views' embeddings: simclr, dcl, vicreg, vicreg_unbiased, barlow_twins,
barlow_twins_unbiased.

    from bsstudy.objectives import build_objective
    loss_fn = build_objective("vicreg", **cfg.method.loss)
    out = loss_fn(z1, z2)          # out.loss (scalar, differentiable), out.terms (detached scalars)

See docs/objectives.md for the formulas, conventions, state and DDP behaviour.
"""
from __future__ import annotations

import inspect
from typing import Any

from ..errors import UserError
from . import estimators
from .losses import (COV_TARGETS, DCL, VARIANCE_SCHEMES, BarlowTwins, Objective, ObjectiveOutput, SimCLR,
                     UnbiasedBarlowTwins, UnbiasedVICReg, VICReg)

OBJECTIVES: dict[str, type[Objective]] = {
    "simclr": SimCLR,
    "vicreg": VICReg,
    "vicreg_unbiased": UnbiasedVICReg,
    "barlow_twins": BarlowTwins,
    "barlow_twins_unbiased": UnbiasedBarlowTwins,
    "dcl": DCL,
}


def build_objective(name: str, **params: Any) -> Objective:
    """The objective ``name`` with loss parameters ``params`` (the method's ``loss:`` block).

    Unknown name or parameter, or an invalid value -> UserError naming it."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r} (choices: {', '.join(OBJECTIVES)})")
    cls = OBJECTIVES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UserError(f"{name}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"(allowed: {', '.join(allowed)})")
    return cls(**params)


__all__ = ["OBJECTIVES", "build_objective", "Objective", "ObjectiveOutput", "SimCLR", "VICReg", "UnbiasedVICReg",
           "BarlowTwins", "UnbiasedBarlowTwins", "DCL",
           "VARIANCE_SCHEMES", "COV_TARGETS", "estimators"]
