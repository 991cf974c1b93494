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
from ..registry import method_names
from . import estimators
from .losses import (COV_TARGETS, DCL, VARIANCE_SCHEMES, BarlowTwins, Objective, ObjectiveOutput, SimCLR,
                     UnbiasedBarlowTwins, UnbiasedVICReg, VICReg)

# objectives with inputs beyond (z1, z2): predictor outputs, target embeddings, dataset indices (stateful.py)
from .stateful import StatefulObjective  # noqa: E402  (imported so its subclasses are found)

def _objective_classes() -> dict[str, type[Objective]]:
    """Every imported ``Objective`` subclass by its ``name`` (subclasses of subclasses included)."""
    out: dict[str, type[Objective]] = {}
    todo = list(Objective.__subclasses__())
    while todo:
        cls = todo.pop()
        out.setdefault(cls.name, cls)
        todo += cls.__subclasses__()
    return out


def _by_registry() -> dict[str, type[Objective]]:
    """name -> class for every method of the registry, in registry order; a method without a class fails
    here, at import, rather than at the first run of a sweep."""
    classes = _objective_classes()
    missing = [m for m in method_names() if m not in classes]
    if missing:
        raise ImportError(f"bsstudy.registry lists {', '.join(missing)} but no Objective subclass has that name")
    return {m: classes[m] for m in method_names()}


OBJECTIVES: dict[str, type[Objective]] = _by_registry()


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
           "VARIANCE_SCHEMES", "COV_TARGETS", "estimators", "StatefulObjective"]
