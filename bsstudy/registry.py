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


# seaborn's "colorblind" palette; each registered method owns one, in registry order (MethodSpec.color)
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
           "#56b4e9")


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
    title: str = ""                    # how prose names it ("VICReg"); the name when empty
    # the method whose plug-in (minibatch) estimate this one makes unbiased: the report's reading
    # compares the two methods' batch-size dependence
    unbiased_of: str | None = None
    # the method's colour in every figure of every study (its variants: this colour, other line styles/shades)
    color: str = "#333333"
    # What the trainer gives the objective besides z1, z2 (each built once, in bsstudy/train/):
    needs_predictor: bool = False      # a predictor head on the projector: p1, p2 (models.build_predictor)
    needs_target: bool = False         # a momentum (EMA) copy of backbone+projector: t1, t2 (train/target.py)
    needs_queue: bool = False          # a FIFO queue of target keys, kept in the objective's state
    needs_indices: bool = False        # dataset positions of the batch rows (per-sample state): indices

    @property
    def stateful(self) -> bool:
        """Whether a step depends on more than the batch: a target network, a queue or per-sample state."""
        return self.needs_target or self.needs_queue or self.needs_indices

    @property
    def needs_num_samples(self) -> bool:
        """Whether the objective is told the pretraining set's size (queue bound, per-sample state)."""
        return self.needs_queue or self.needs_indices


METHODS: dict[str, MethodSpec] = {
    "simclr": MethodSpec("simclr", color=PALETTE[0], family="contrastive", title="SimCLR"),
    "vicreg": MethodSpec("vicreg", color=PALETTE[1], family="covariance", title="VICReg"),
    # U-statistics of 4-tuples need n >= 4 rows (shared/ESTIMATORS.md)
    "vicreg_unbiased": MethodSpec(
        "vicreg_unbiased", color=PALETTE[2], family="covariance", min_rows=4,
        choices={"variance": ("jackknife", "jackknife_ema_gate", "ema", "c4", "plugin"),
                 "cov_target": ("identity", "offdiag")},
        variant_params=("variance", "cov_target"), title="unbiased VICReg", unbiased_of="vicreg"),
    # stateful / predictor methods (bsstudy/objectives/stateful.py)
    "simsiam": MethodSpec("simsiam", color=PALETTE[3], family="predictor", title="SimSiam", needs_predictor=True),
    "byol": MethodSpec("byol", color=PALETTE[4], family="predictor", title="BYOL", needs_predictor=True,
                       needs_target=True),
    "mocov2": MethodSpec("mocov2", color=PALETTE[5], family="queue", title="MoCo v2", needs_target=True,
                         needs_queue=True),
    "sogclr": MethodSpec("sogclr", color=PALETTE[6], family="contrastive", title="SogCLR", needs_indices=True),
    "barlow_twins": MethodSpec("barlow_twins", color=PALETTE[7], family="covariance", title="Barlow Twins"),
    # U-statistics of 4-tuples need n >= 4 rows; on_diagonal=plugin is the ablation of the jackknife
    "barlow_twins_unbiased": MethodSpec(
        "barlow_twins_unbiased", color=PALETTE[8], family="covariance", min_rows=4,
        choices={"on_diagonal": ("jackknife", "plugin")}, variant_params=("on_diagonal",),
        title="unbiased Barlow Twins", unbiased_of="barlow_twins"),
    # weighting=vmf is DCLW (the paper's weighted variant)
    "dcl": MethodSpec("dcl", color=PALETTE[9], family="contrastive", title="DCL",
                      choices={"weighting": ("none", "vmf")}, variant_params=("weighting",)),
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


def bias_refusal(name: str) -> str | None:
    """Why ``bsstudy bias`` cannot measure method ``name`` (one line), or None when it can: the bias instrument
    feeds an objective two views' embeddings only, and measures the gradient of one batch's loss."""
    spec = method_spec(name)
    if spec.needs_target or spec.needs_queue:
        return (f"{name}: its loss depends on a momentum target network and/or a queue built up over training "
                "steps, so a single batch's gradient bias is not defined; not measured")
    if spec.needs_indices:
        return (f"{name}: its loss uses per-sample moving-average state carried across epochs, so a single "
                "batch's gradient bias is not defined; not measured")
    if spec.needs_predictor:
        return (f"{name}: its loss needs a predictor head's outputs besides the embeddings and has no batch "
                "interaction (per-sample loss: minibatch gradients are unbiased by construction); not measured")
    return None


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


__all__ = ["MethodSpec", "METHODS", "PALETTE", "method_names", "method_spec", "variance_schemes", "variant",
           "method_label", "split_label", "bias_refusal"]
