"""The method registry: what every stage needs to know about a method, without importing torch.

One entry per method (objective name = config group ``conf/method/<name>.yaml`` = ``method.name``).
The objective classes (``bsstudy.objectives``) read their minimum rows and parameter choices from here;
config validation, the planner, ``bsstudy bias`` and the report derive method lists, batch-size minima,
variant labels and families from here. Adding a method = an entry here + its objective class + its
config group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import UserError


@dataclass(frozen=True)
class MethodSpec:
    """Registry entry of one method."""

    name: str
    family: str                        # contrastive | covariance | ... (report grouping, docs)
    min_rows: int = 2                  # global rows per view a batch needs
    # loss parameters with a fixed set of values (validated at plan time with the key named)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # loss parameters that make a different estimator (shown as method[v1,v2] when a study varies them)
    variant_params: tuple[str, ...] = ()


METHODS: dict[str, MethodSpec] = {
    "simclr": MethodSpec("simclr", family="contrastive"),
    "vicreg": MethodSpec("vicreg", family="covariance"),
    # U-statistics of 4-tuples need n >= 4 rows (shared/ESTIMATORS.md)
    "vicreg_unbiased": MethodSpec(
        "vicreg_unbiased", family="covariance", min_rows=4,
        choices={"variance": ("jackknife", "jackknife_ema_gate", "ema", "c4", "plugin"),
                 "cov_target": ("identity", "offdiag")},
        variant_params=("variance", "cov_target")),
    "barlow_twins": MethodSpec("barlow_twins", family="covariance"),
    # U-statistics of 4-tuples need n >= 4 rows; on_diagonal=plugin is the ablation of the jackknife
    "barlow_twins_unbiased": MethodSpec(
        "barlow_twins_unbiased", family="covariance", min_rows=4,
        choices={"on_diagonal": ("jackknife", "plugin")}, variant_params=("on_diagonal",)),
    # weighting=vmf is DCLW (the paper's weighted variant)
    "dcl": MethodSpec("dcl", family="contrastive", choices={"weighting": ("none", "vmf")},
                      variant_params=("weighting",)),
}


def method_names() -> tuple[str, ...]:
    """Every registered method, in registry order."""
    return tuple(METHODS)


def method_spec(name: str, source: str = "method.name") -> MethodSpec:
    """The registry entry of ``name``; UserError listing the choices when unknown."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UserError(f"{source}: unknown method {name!r} (choose from {', '.join(METHODS)})") from None


def variance_schemes() -> tuple[str, ...]:
    """The variance-hinge schemes of ``vicreg_unbiased``."""
    return METHODS["vicreg_unbiased"].choices["variance"]


def variant(name: str, loss: Mapping[str, Any] | None) -> str:
    """The values of a method's variant parameters, comma-joined ('' for a method without any)."""
    spec = METHODS.get(name)
    if spec is None or not spec.variant_params:
        return ""
    loss = loss or {}
    return ",".join(str(loss.get(p, "?")) for p in spec.variant_params)


def method_label(name: str, variant_text: str = "") -> str:
    """``name`` or ``name[variant]``: the one spelling of a method variant in tables, figures and bias.csv."""
    return f"{name}[{variant_text}]" if variant_text else name


def split_label(label: str) -> tuple[str, str]:
    """Inverse of ``method_label``: ('vicreg_unbiased[jackknife,identity]') -> (name, variant)."""
    if label.endswith("]") and "[" in label:
        name, _, rest = label.partition("[")
        return name, rest[:-1]
    return label, ""


__all__ = ["MethodSpec", "METHODS", "method_names", "method_spec", "variance_schemes", "variant", "method_label",
           "split_label"]
