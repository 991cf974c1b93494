"""The objectives: SimCLR, DCL, VICReg (official-code conventions), unbiased VICReg (seed 000), Barlow Twins
(official-code conventions) and unbiased Barlow Twins.

Each is a callable ``loss_fn(z1, z2) -> ObjectiveOutput(loss, terms)`` built by ``build_objective``. The terms
are the pure functions of ``terms.py``. Common behaviour (in ``Objective.__call__``):

- shapes are checked (same (n, d)) with messages that print what was found, and the global batch (after
  the DDP gather) must have ``min_rows`` rows (2, or 4 for the U-statistic objectives);
- half-precision inputs are cast to float32 and autocast is disabled inside, so statistics are float32;
  float32/float64 inputs are used as they are;
- under torch.distributed with world size > 1 the embeddings are gathered with gradients
  (``distributed.gather_with_grad``), so the loss is the global-batch loss on every rank.

State: only ``vicreg_unbiased`` with ``variance`` in {jackknife_ema_gate, ema} keeps state, an EMA of the
per-dimension variance (a d-vector, the mean of both views' 1/(n-1) variances). It is updated only when the
objective is in training mode (``train()``, the default; ``eval()`` freezes it) and ``torch.is_grad_enabled()``,
averaged over ranks under DDP, and saved/restored with ``state_dict()`` / ``load_state_dict()``. Stateless
objectives return ``{}``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor

from ..errors import UserError
from . import estimators as E
from . import terms as T
from .distributed import all_reduce_mean_, gather_with_grad, world_size

from ..registry import METHODS

VARIANCE_SCHEMES = METHODS["vicreg_unbiased"].choices["variance"]
COV_TARGETS = METHODS["vicreg_unbiased"].choices["cov_target"]


@dataclass
class ObjectiveOutput:
    """``loss``: differentiable scalar; ``terms``: detached scalar tensors, one per loss term (unweighted)."""

    loss: Tensor
    terms: dict[str, Tensor]


# ------------------------------------------------------------------------------- parameter checks
def _number(obj: str, name: str, value: Any, *, low: float = 0.0, low_open: bool = False,
            high: float | None = None, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{obj}: parameter {name}={value!r} must be a finite number")
    v = float(value)
    if v < low or (low_open and v == low):
        raise UserError(f"{obj}: parameter {name}={value!r} must be {'>' if low_open else '>='} {low:g}")
    if high is not None and (v > high or (high_open and v == high)):
        raise UserError(f"{obj}: parameter {name}={value!r} must be {'<' if high_open else '<='} {high:g}")
    return v


def _choice(obj: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"{obj}: parameter {name}={value!r} is not one of {', '.join(choices)}")
    return str(value)


def _flag(obj: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{obj}: parameter {name}={value!r} must be true or false")
    return value


@contextlib.contextmanager
def _no_autocast(device: torch.device) -> Iterator[None]:
    if device.type in ("cpu", "cuda"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def _as_float(z: Tensor) -> Tensor:
    # Statistics (variances, 4th moments, U-statistic cancellations) need float32 at least.
    if z.dtype in (torch.float16, torch.bfloat16):
        return z.float()
    return z


# ---------------------------------------------------------------------------------------- base
class Objective:
    """Base: input checks, float32 statistics, DDP gathering, train/eval mode, (empty) state."""

    name = "objective"
    min_rows = 2  # global rows needed

    def __init__(self) -> None:
        self.training = True

    def train(self, mode: bool = True) -> "Objective":
        """Training mode: stateful objectives update their EMA (when gradients are enabled)."""
        self.training = mode
        return self

    def eval(self) -> "Objective":
        """Evaluation mode: state is used but never updated."""
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint; ``{}`` for stateless objectives."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output."""
        if state:
            raise ValueError(f"{self.name} is stateless but got state keys {sorted(state)}")

    def __call__(self, z1: Tensor, z2: Tensor) -> ObjectiveOutput:
        """Loss of two views' embeddings z1, z2: (n, d) each, row a of z1 and z2 from the same image."""
        if not (isinstance(z1, Tensor) and isinstance(z2, Tensor)):
            raise TypeError(f"{self.name}: z1 and z2 must be tensors, got {type(z1).__name__}, {type(z2).__name__}")
        if z1.dim() != 2 or z1.shape != z2.shape:
            raise ValueError(f"{self.name}: z1 and z2 must have the same shape (n, d), found "
                             f"{tuple(z1.shape)} and {tuple(z2.shape)}")
        if not (z1.is_floating_point() and z2.is_floating_point()):
            raise TypeError(f"{self.name}: embeddings must be floating point, found {z1.dtype} and {z2.dtype}")
        with _no_autocast(z1.device):
            z1, z2 = _as_float(z1), _as_float(z2)
            if world_size() > 1:
                z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
            # after the gather: 2 ranks x 1 row is a valid global batch of 2
            if z1.shape[0] < self.min_rows:
                raise ValueError(f"{self.name}: needs at least {self.min_rows} rows per view (global batch), "
                                 f"found n={z1.shape[0]}")
            loss, parts = self._compute(z1, z2)
        return ObjectiveOutput(loss, {k: v.detach() for k, v in parts.items()})

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    def params(self) -> dict[str, Any]:
        """The parameters this objective was built with."""
        return {}


# --------------------------------------------------------------------------------------- SimCLR
class SimCLR(Objective):
    """SimCLR NT-Xent (Chen et al., 2020): cosine similarity / temperature, 2n-2 negatives per anchor,
    mean over all 2n anchors; computed as cross-entropy on logits. terms: {"nt_xent"}."""

    name = "simclr"

    def __init__(self, *, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = _number(self.name, "temperature", temperature, low=0.0, low_open=True)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = T.nt_xent(z1, z2, self.temperature)
        return loss, {"nt_xent": loss}


# --------------------------------------------------------------------------------------- VICReg
class VICReg(Objective):
    """VICReg (Bardes et al., 2022) with the conventions of facebookresearch/vicreg ``main_vicreg.py``.

    loss = inv_coeff * inv + var_coeff * var + cov_coeff * cov with
      inv = mean over n*d of (z1 - z2)^2;
      var = 1/2 [ (1/d) sum_i relu(gamma - sqrt(Var z1_i + eps)) + same for z2 ]  (1/(n-1) variance);
      cov = [ sum_{i!=j} C(z1)_ij^2 + sum_{i!=j} C(z2)_ij^2 ] / d, C the 1/(n-1) sample covariance.
    Differences from the paper: (1) the 1/2 on the variance term is in the code, not the paper;
    ``paper_form=True`` drops it. (2) The paper writes the invariance as (1/n) sum ||z - z'||^2; the code
    (and we, in both forms) divide by d too, and the published coefficients go with that.
    (3) The official code divides by ``args.batch_size - 1``; we take n from the tensor.
    terms: {"invariance", "variance", "covariance"} (unweighted, after the 1/2).
    """

    name = "vicreg"

    def __init__(self, *, inv_coeff: float = 25.0, var_coeff: float = 25.0, cov_coeff: float = 1.0,
                 gamma: float = 1.0, eps: float = 1e-4, paper_form: bool = False) -> None:
        super().__init__()
        o = self.name
        self.inv_coeff = _number(o, "inv_coeff", inv_coeff)
        self.var_coeff = _number(o, "var_coeff", var_coeff)
        self.cov_coeff = _number(o, "cov_coeff", cov_coeff)
        self.gamma = _number(o, "gamma", gamma, low_open=True)
        self.eps = _number(o, "eps", eps)
        self.paper_form = _flag(o, "paper_form", paper_form)

    def params(self) -> dict[str, Any]:
        return {"inv_coeff": self.inv_coeff, "var_coeff": self.var_coeff, "cov_coeff": self.cov_coeff,
                "gamma": self.gamma, "eps": self.eps, "paper_form": self.paper_form}

    def _combine(self, inv: Tensor, var_sum: Tensor, cov: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        var = var_sum if self.paper_form else 0.5 * var_sum
        loss = self.inv_coeff * inv + self.var_coeff * var + self.cov_coeff * cov
        return loss, {"invariance": inv, "variance": var, "covariance": cov}

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        inv = T.invariance(z1, z2)
        var_sum = T.hinge(T.plugin_std(z1, self.eps), self.gamma) + T.hinge(T.plugin_std(z2, self.eps), self.gamma)
        cov = T.vicreg_covariance(z1) + T.vicreg_covariance(z2)
        return self._combine(inv, var_sum, cov)


# ------------------------------------------------------------------------------ unbiased VICReg
class UnbiasedVICReg(VICReg):
    """Unbiased VICReg (seed 000): minibatch estimator of the population objective
    lambda E||z - z'||^2 + mu/d sum_i max(0, gamma - sqrt(Var Z_i)) + nu ||Cov(Z) - I||_F^2.

    - invariance: mean over n*d of (z1 - z2)^2, i.e. the per-dimension mean E||z - z'||^2 / d as in VICReg
      (already unbiased).
    - covariance: exact U-statistic (unbiased value and gradient for every n >= 4) of ||Sigma - I||_F^2
      (``cov_target=identity``, the seed) or sum_{i!=j} Sigma_ij^2 (``offdiag``, VICReg's term), divided by
      d like VICReg and summed over both views. May be negative; never clamped.
    - variance: the hinge of a std has no unbiased estimator; ``variance`` picks a bias-reduction scheme
      (shared/ESTIMATORS.md): jackknife (default, bias O(n^-2), stateless), jackknife_ema_gate (hinge on/off
      from an EMA of the variance), ema (MINE-style outer derivative from an EMA), c4 (Gaussian-exact std),
      plugin (VICReg's). Applied to both views with VICReg's 1/2 (``paper_form=True`` drops it).
      Caveat: at the kink (sigma = gamma) every stateless scheme estimates a smoothed hinge (value bias
      O(n^-1/2)), so the variance term is bias-*reduced*, not unbiased.
    Needs n >= 4 rows per view (global batch).
    """

    name = "vicreg_unbiased"
    min_rows = METHODS["vicreg_unbiased"].min_rows

    def __init__(self, *, inv_coeff: float = 25.0, var_coeff: float = 25.0, cov_coeff: float = 1.0,
                 gamma: float = 1.0, eps: float = 1e-4, paper_form: bool = False, cov_target: str = "identity",
                 variance: str = "jackknife", ema_beta: float = 0.9) -> None:
        super().__init__(inv_coeff=inv_coeff, var_coeff=var_coeff, cov_coeff=cov_coeff, gamma=gamma, eps=eps,
                         paper_form=paper_form)
        o = self.name
        self.cov_target = _choice(o, "cov_target", cov_target, COV_TARGETS)
        self.variance = _choice(o, "variance", variance, VARIANCE_SCHEMES)
        self.ema_beta = _number(o, "ema_beta", ema_beta, high=1.0, high_open=True)
        self.stateful = self.variance in ("jackknife_ema_gate", "ema")
        self._ema_var: Tensor | None = None   # (d,) EMA of the per-dimension variance
        self._ema_updates = 0

    def params(self) -> dict[str, Any]:
        return {**super().params(), "cov_target": self.cov_target, "variance": self.variance,
                "ema_beta": self.ema_beta}

    # -- state
    def state_dict(self) -> dict[str, Any]:
        if not self.stateful:
            return {}
        ema = None if self._ema_var is None else self._ema_var.detach().cpu().clone()
        return {"ema_var": ema, "ema_updates": self._ema_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.stateful:
            return super().load_state_dict(state)
        if set(state) != {"ema_var", "ema_updates"}:
            raise ValueError(f"{self.name} ({self.variance}) state needs keys ema_var, ema_updates; got {sorted(state)}")
        ema = state["ema_var"]
        if ema is not None and (not isinstance(ema, Tensor) or ema.dim() != 1):
            raise ValueError(f"{self.name}: ema_var must be a 1-d tensor or None, got {ema!r}")
        self._ema_var = None if ema is None else ema.detach().clone()
        self._ema_updates = int(state["ema_updates"])

    def _ema_for(self, batch_var: Tensor) -> Tensor:
        """The EMA before this batch (the batch's own variance when there is none yet), as a constant."""
        if self._ema_var is None:
            return batch_var.detach()
        if self._ema_var.shape != batch_var.shape:
            raise ValueError(f"{self.name}: EMA state has {self._ema_var.shape[0]} dimensions, embeddings have "
                             f"{batch_var.shape[0]}")
        return self._ema_var.to(device=batch_var.device, dtype=batch_var.dtype)

    def _update_ema(self, batch_var: Tensor, ema: Tensor) -> None:
        if not (self.training and torch.is_grad_enabled()):
            return
        new = (self.ema_beta * ema + (1.0 - self.ema_beta) * batch_var.detach()).clone()
        self._ema_var = all_reduce_mean_(new)   # identical on every rank (already equal up to rounding)
        self._ema_updates += 1

    # -- loss
    def _variance_sum(self, z: Tensor, m: E.Moments) -> Tensor:
        """Sum over the two stacked views z (2, n, d) of the variance hinge of the chosen scheme."""
        g, eps, scheme = self.gamma, self.eps, self.variance
        if scheme == "plugin":
            return T.hinge(T.plugin_std(z, eps), g).sum()
        if scheme == "c4":
            return T.hinge(T.c4_std(z, eps), g).sum()
        if scheme == "jackknife":
            return T.hinge(T.jackknife_std(z, eps, m), g).sum()
        v = m.s_ii / (z.shape[-2] - 1)                 # (2, d)
        batch_var = v.detach().mean(dim=0)             # mean of both views' variances
        ema = self._ema_for(batch_var)
        if scheme == "jackknife_ema_gate":
            out = T.gated_hinge(T.jackknife_std(z, eps, m), ema, g, eps).sum()
        else:  # ema
            out = T.ema_hinge(v, ema, g, eps).sum()
        self._update_ema(batch_var, ema)
        return out

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        inv = T.invariance(z1, z2)
        # both views in one batched evaluation (half the kernel launches); moments shared by both terms
        z = torch.stack([z1, z2])                      # (2, n, d)
        m = E.moments(z)
        var_sum = self._variance_sum(z, m)
        cov = T.unbiased_covariance(z, self.cov_target, m).sum()
        return self._combine(inv, var_sum, cov)


# ------------------------------------------------------------------------------------------ DCL
DCL_WEIGHTINGS = METHODS["dcl"].choices["weighting"]


class DCL(Objective):
    """Decoupled contrastive learning (Yeh et al., ECCV 2022, eq. 6): NT-Xent without the positive in the
    denominator; 2n-2 negatives per anchor, mean over all 2n anchors. ``weighting=vmf`` is DCLW: the positive
    term weighted by 2 - n softmax(s_aa'/sigma) over the batch (detached). terms: {"dcl"}."""

    name = "dcl"

    def __init__(self, *, temperature: float = 0.1, weighting: str = "none", sigma: float = 0.5) -> None:
        super().__init__()
        self.temperature = _number(self.name, "temperature", temperature, low=0.0, low_open=True)
        self.weighting = _choice(self.name, "weighting", weighting, DCL_WEIGHTINGS)
        self.sigma = _number(self.name, "sigma", sigma, low=0.0, low_open=True)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "weighting": self.weighting, "sigma": self.sigma}

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = T.dcl(z1, z2, self.temperature, self.sigma if self.weighting == "vmf" else None)
        return loss, {"dcl": loss}


# --------------------------------------------------------------------------------- Barlow Twins
class BarlowTwins(Objective):
    """Barlow Twins (Zbontar et al., ICML 2021) with the conventions of facebookresearch/barlowtwins main.py
    (= lightly 1.6 ``BarlowTwinsLoss``): C = bn(z1)^T bn(z2) / n, bn the affine-free BatchNorm (1/n variance,
    ``eps`` inside the square root), loss = sum_i (1 - C_ii)^2 + lambda_param * sum_{i!=j} C_ij^2.
    terms: {"on_diagonal", "off_diagonal"} (unweighted). n from the tensor (the official code divides by the
    configured batch size, which is the same for full batches)."""

    name = "barlow_twins"

    def __init__(self, *, lambda_param: float = 0.0051, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_param = _number(self.name, "lambda_param", lambda_param)
        self.eps = _number(self.name, "eps", eps, low_open=True)   # BatchNorm needs eps > 0

    def params(self) -> dict[str, Any]:
        return {"lambda_param": self.lambda_param, "eps": self.eps}

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        on, off = T.barlow_twins(z1, z2, self.eps)
        return on + self.lambda_param * off, {"on_diagonal": on, "off_diagonal": off}


BARLOW_ON_DIAGONAL = METHODS["barlow_twins_unbiased"].choices["on_diagonal"]


class UnbiasedBarlowTwins(BarlowTwins):
    """Unbiased Barlow Twins: a minibatch estimator of the Barlow Twins loss with *population* correlations,
        sum_i (1 - rho_ii)^2 + lambda_param * sum_{i!=j} rho_ij^2,   rho_ij = Corr(z1_i, z2_j),
    the limit n -> infinity of the plug-in (docs/objectives.md). Columns are standardized with the 1/(n-1)
    variance + eps.
    - off_diagonal: the 4-tuple U-statistic of sum_{i!=j} Cov(x_i, y_j)^2 on the standardized columns. Exactly
      unbiased (value 0 in expectation) for pairs of independent coordinates, whatever n >= 4; for correlated
      pairs a ratio of estimates, so bias-reduced (relative O(1/n)); the plug-in's noise floor, about
      d(d-1)/n, is gone. May be negative; never clamped.
    - on_diagonal: ``jackknife`` (default): delete-one jackknife of (1 - r_ii)^2, bias O(n^-2);
      ``plugin``: (1 - r_ii)^2 itself (bias O(1/n)), for ablation.
    Needs n >= 4 rows per view (global batch)."""

    name = "barlow_twins_unbiased"
    min_rows = METHODS["barlow_twins_unbiased"].min_rows

    def __init__(self, *, lambda_param: float = 0.0051, eps: float = 1e-5, on_diagonal: str = "jackknife") -> None:
        super().__init__(lambda_param=lambda_param, eps=eps)
        self.on_diagonal = _choice(self.name, "on_diagonal", on_diagonal, BARLOW_ON_DIAGONAL)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "on_diagonal": self.on_diagonal}

    def _compute(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        on, off = T.barlow_twins_unbiased(z1, z2, self.eps, self.on_diagonal)
        return on + self.lambda_param * off, {"on_diagonal": on, "off_diagonal": off}

