"""Objectives that need more than two views' embeddings: simsiam, byol, mocov2, sogclr.

What each needs is declared in the method registry (``bsstudy.registry.MethodSpec``: ``needs_predictor``,
``needs_target``, ``needs_queue``, ``needs_indices``) and the trainer passes it by keyword:

    out = loss_fn(z1, z2, p1=..., p2=..., t1=..., t2=..., indices=...)

- ``p1, p2``: the predictor's outputs (with gradient) of views 1 and 2;
- ``t1, t2``: the momentum target network's embeddings of views 1 and 2 (no gradient);
- ``indices``: (n,) int64 dataset positions of the batch rows (the epoch permutation's slice).

Methods that keep state across steps (the MoCo queue, SogCLR's per-sample denominators) are told the
pretraining set's size once, ``bind(num_samples)``, before the first call. State is updated only in training
mode (``train()``, the default) with gradients enabled, after the loss of the batch has been computed from the
state *before* it; ``state_dict()`` holds plain tensors and ints (checkpointed by bsstudy/train/resume.py).

DDP: like the stateless objectives, every input is gathered across ranks (``gather_with_grad``, rank order), so
the loss, its terms and every state update are those of the global batch, identical on every rank.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..registry import METHODS, MethodSpec
from .distributed import gather_with_grad, world_size
from .losses import Objective, ObjectiveOutput, _as_float, _no_autocast, _number

# ------------------------------------------------------------------------------------ loss terms
def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D(p, z) = -mean_a cos(p_a, z_a), z treated as a constant (stop-gradient)."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def normalized_mse(p: Tensor, t: Tensor) -> Tensor:
    """BYOL's ||p/||p|| - t/||t|| ||^2 = 2 - 2 cos(p, t), mean over rows; t a constant (target network)."""
    return (2.0 - 2.0 * F.cosine_similarity(p, t.detach(), dim=-1)).mean()


def info_nce_queue(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE: row a's positive q_a.k_a against the K queue entries, / tau, cross-entropy with the
    positive as class 0, mean over rows. q, k (n, d) are normalised here; queue (K, d) holds unit keys."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)                       # (n, 1)
    neg = q @ queue.detach().T                                   # (n, K)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


# ------------------------------------------------------------------------------------ base class
class StatefulObjective(Objective):
    """Base of the objectives whose inputs go beyond (z1, z2): checks, float32, DDP gathering of every input.

    Subclasses set ``spec`` (their registry entry) and implement ``_compute_all(z1, z2, **inputs)`` with the
    gathered inputs the spec asks for."""

    spec: MethodSpec

    def __init__(self) -> None:
        super().__init__()
        self.num_samples: int | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The keyword inputs this objective requires."""
        s = self.spec
        return (("p1", "p2") if s.needs_predictor else ()) + (("t1", "t2") if s.needs_target else ()) + (
            ("indices",) if s.needs_indices else ())

    def bind(self, num_samples: int) -> "StatefulObjective":
        """Tell the objective how many pretraining images there are (queue bound, per-sample state size)."""
        self.num_samples = int(num_samples)
        return self

    def _pair(self, a: Any, b: Any, names: str, shape: tuple[int, ...] | None) -> None:
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            raise TypeError(f"{self.name}: {names} must be tensors, got {type(a).__name__}, {type(b).__name__}")
        if a.dim() != 2 or a.shape != b.shape or (shape is not None and a.shape[0] != shape[0]):
            raise ValueError(f"{self.name}: {names} must have the same shape (n, d) as the batch, found "
                             f"{tuple(a.shape)} and {tuple(b.shape)}" + ("" if shape is None else f" (batch {shape})"))
        if not (a.is_floating_point() and b.is_floating_point()):
            raise TypeError(f"{self.name}: {names} must be floating point, found {a.dtype} and {b.dtype}")

    def __call__(self, z1: Tensor, z2: Tensor, **inputs: Any) -> ObjectiveOutput:  # type: ignore[override]
        """Loss of the batch: embeddings z1, z2 (n, d) plus the keyword inputs of ``inputs``."""
        missing = [k for k in self.inputs if inputs.get(k) is None]
        extra = sorted(k for k, v in inputs.items() if k not in self.inputs and v is not None)
        if missing or extra:
            raise ValueError(f"{self.name}: needs inputs z1, z2{''.join(', ' + k for k in self.inputs)}; "
                             f"missing {missing}, unexpected {extra}")
        self._pair(z1, z2, "z1 and z2", None)
        for a, b in (("p1", "p2"), ("t1", "t2")):
            if a in self.inputs:
                self._pair(inputs[a], inputs[b], f"{a} and {b}", tuple(z1.shape))
        idx = inputs.get("indices")
        if idx is not None and (not isinstance(idx, Tensor) or idx.dtype != torch.int64
                                or idx.shape != (z1.shape[0],)):
            raise ValueError(f"{self.name}: indices must be an int64 tensor of shape ({z1.shape[0]},), found "
                             f"{getattr(idx, 'dtype', type(idx).__name__)} {tuple(getattr(idx, 'shape', ()))}")
        with _no_autocast(z1.device):
            ts = {k: (_as_float(v) if v.is_floating_point() else v) for k, v in
                  {"z1": z1, "z2": z2, **{k: inputs[k] for k in self.inputs}}.items()}
            if world_size() > 1:
                ts = {k: gather_with_grad(v) for k, v in ts.items()}
            n = ts["z1"].shape[0]
            if n < max(2, self.min_rows):   # after the gather: the global batch counts
                raise ValueError(f"{self.name}: needs at least {max(2, self.min_rows)} rows per view (global "
                                 f"batch), found n={n}")
            loss, parts = self._compute_all(**ts)
        return ObjectiveOutput(loss, {k: v.detach() for k, v in parts.items()})

    def _compute_all(self, **ts: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def _updating(self) -> bool:
        return self.training and torch.is_grad_enabled()


# ---------------------------------------------------------------------------------------- SimSiam
class SimSiam(StatefulObjective):
    """SimSiam (Chen & He, 2021, Algorithm 1): L = D(p1, sg(z2))/2 + D(p2, sg(z1))/2, D the negative
    cosine similarity (mean over rows). Stateless; needs the predictor. terms: {"neg_cosine"} (min -1)."""

    name = "simsiam"
    spec = METHODS["simsiam"]

    def _compute_all(self, z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)
        return loss, {"neg_cosine": loss}


# ------------------------------------------------------------------------------------------- BYOL
class BYOL(StatefulObjective):
    """BYOL (Grill et al., 2020, eq. 2 and its symmetrisation): L = ||q(z1)~ - t2~||^2 + ||q(z2)~ - t1~||^2,
    ~ the L2 normalisation, i.e. (2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1)), each a mean over rows (summed
    over the two directions like the paper's L + L~). The target t is the momentum network's embedding
    (bsstudy/train/target.py), a constant here. terms: {"normalized_mse"} (in [0, 8])."""

    name = "byol"
    spec = METHODS["byol"]

    def _compute_all(self, z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor, t1: Tensor,
                     t2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = normalized_mse(p1, t2) + normalized_mse(p2, t1)
        return loss, {"normalized_mse": loss}


# ----------------------------------------------------------------------------------------- MoCo v2
class MoCoV2(StatefulObjective):
    """MoCo v2 (Chen et al., 2020; He et al., 2020, Algorithm 1): query q = online embedding of view 1, key
    k = momentum-target embedding of view 2, InfoNCE of q against its key and the queue's K keys at
    temperature tau (official: 0.2). After the loss, the batch's keys (global batch, rank order) replace the
    oldest queue entries (FIFO ring; K need not be a multiple of the batch). The queue starts, as in the
    official code, as K random unit vectors (here from a fixed generator, seed 0, so runs are reproducible).
    K <= the pretraining set size (``bind``). terms: {"info_nce"}. Not symmetrised (official MoCo v2)."""

    name = "mocov2"
    spec = METHODS["mocov2"]

    def __init__(self, *, temperature: float = 0.2, queue_size: int = 4096) -> None:
        super().__init__()
        self.temperature = _number(self.name, "temperature", temperature, low=0.0, low_open=True)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise UserError(f"{self.name}: parameter queue_size={queue_size!r} must be an integer >= 1")
        self.queue_size = queue_size
        self._queue: Tensor | None = None     # (K, d) unit keys
        self._ptr = 0                         # next row to overwrite (the oldest entry)
        self._enqueued = 0                    # keys enqueued so far

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "queue_size": self.queue_size}

    def bind(self, num_samples: int) -> "MoCoV2":
        if self.queue_size > num_samples:
            raise UserError(f"{self.name}: parameter queue_size={self.queue_size} exceeds the {num_samples} "
                            "pretraining images (method.loss.queue_size)")
        return super().bind(num_samples)

    def _init_queue(self, d: int, like: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(0)
        q = F.normalize(torch.randn(self.queue_size, d, generator=g, dtype=torch.float64), dim=1)
        return q.to(device=like.device, dtype=like.dtype)

    def queue(self) -> Tensor | None:
        """The queue's keys, oldest first (a copy)."""
        if self._queue is None:
            return None
        return torch.roll(self._queue, -self._ptr, dims=0).clone()

    def _enqueue(self, k: Tensor) -> None:
        k = F.normalize(k.detach(), dim=1)
        K, b = self.queue_size, k.shape[0]
        if b >= K:                        # only the newest K keys survive
            self._queue, self._ptr = k[b - K:].clone(), 0
        else:
            rows = (self._ptr + torch.arange(b, device=k.device)) % K
            self._queue = self._queue.clone()     # the loss's graph holds the old one
            self._queue[rows] = k
            self._ptr = (self._ptr + b) % K
        self._enqueued += b

    def _compute_all(self, z1: Tensor, z2: Tensor, t1: Tensor, t2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self._queue is None:
            self._queue = self._init_queue(z1.shape[1], z1)
        elif self._queue.shape[1] != z1.shape[1]:
            raise ValueError(f"{self.name}: queue holds {self._queue.shape[1]}-d keys, embeddings are "
                             f"{z1.shape[1]}-d")
        queue = self._queue.to(device=z1.device, dtype=z1.dtype)
        loss = info_nce_queue(z1, t2, queue, self.temperature)
        if self._updating():
            self._queue = queue
            self._enqueue(t2)
        return loss, {"info_nce": loss}

    def state_dict(self) -> dict[str, Any]:
        q = None if self._queue is None else self._queue.detach().cpu().clone()
        return {"queue": q, "ptr": self._ptr, "enqueued": self._enqueued}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"queue", "ptr", "enqueued"}:
            raise ValueError(f"{self.name} state needs keys queue, ptr, enqueued; got {sorted(state)}")
        q = state["queue"]
        if q is not None and (not isinstance(q, Tensor) or q.dim() != 2 or q.shape[0] != self.queue_size):
            raise ValueError(f"{self.name}: queue must be a ({self.queue_size}, d) tensor or None")
        self._queue = None if q is None else q.detach().clone()
        self._ptr, self._enqueued = int(state["ptr"]), int(state["enqueued"])


# ------------------------------------------------------------------------------------------ SogCLR
class SogCLR(StatefulObjective):
    """SogCLR (Yuan et al., ICML 2022, Algorithm 1; conventions of the official code
    Optimization-AI/SogCLR ``dynamic_contrastive_loss``).

    Per anchor i (2n anchors: both views of every image), with cosine similarities s and its 2(n-1)
    negatives j (the other 2n-2 embeddings except i's positive and itself):
        g_i = (1 / (2(n-1))) sum_j exp(s_ij / tau)                        (batch estimate of the denominator)
        u_i <- (1 - gamma) u_i + gamma g_i                                (moving average, per image, per view;
                                                                           the first visit takes g_i: u_i = 0)
        loss = (1/n) sum_i [ -s_i,pos + (1/(2(n-1))) sum_j sg(exp(s_ij/tau) / u_i) s_ij ]   (sum over 2n anchors)
    whose gradient is tau x that of the global contrastive loss -s_pos/tau + log(mean_j exp(s_ij/tau)) with
    the denominator replaced by u. u (one entry per dataset image: the mean of its two views' updated
    estimates, as in the official code) is indexed by dataset position, so it needs ``indices``.
    gamma is the weight of the NEW batch estimate (paper and code; 0.9). terms: {"sogclr"} (the surrogate).
    """

    name = "sogclr"
    spec = METHODS["sogclr"]

    def __init__(self, *, temperature: float = 0.1, gamma: float = 0.9) -> None:
        super().__init__()
        self.temperature = _number(self.name, "temperature", temperature, low=0.0, low_open=True)
        self.gamma = _number(self.name, "gamma", gamma, low=0.0, low_open=True, high=1.0)
        self._u: Tensor | None = None        # (num_samples,) denominators; 0 = not visited yet
        self._updates = 0

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "gamma": self.gamma}

    def _state_for(self, like: Tensor) -> Tensor:
        if self.num_samples is None:
            raise ValueError(f"{self.name}: call bind(num_samples) before the first batch")
        if self._u is None:
            self._u = torch.zeros(self.num_samples, dtype=like.dtype, device=like.device)
        return self._u.to(device=like.device, dtype=like.dtype)

    def _compute_all(self, z1: Tensor, z2: Tensor, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        n, tau = z1.shape[0], self.temperature
        u_all = self._state_for(z1)
        if int(indices.min()) < 0 or int(indices.max()) >= u_all.shape[0]:
            raise ValueError(f"{self.name}: indices outside [0, {u_all.shape[0]})")
        idx = indices.to(z1.device)
        h = F.normalize(torch.cat([z1, z2], dim=0), dim=1)           # (2n, d): view 1 rows, then view 2
        s = h @ h.T                                                   # (2n, 2n) cosine similarities
        ar = torch.arange(2 * n, device=h.device)
        pos_col = torch.cat([ar[n:], ar[:n]])
        neg = torch.ones(2 * n, 2 * n, dtype=torch.bool, device=h.device)
        neg[ar, ar] = False
        neg[ar, pos_col] = False
        # exp(s/tau) <= exp(1/tau); finite in float32 for tau >= 0.012
        e = torch.exp(s / tau) * neg
        m = 2 * (n - 1)
        g = e.sum(dim=1).detach() / m                                 # (2n,)
        u_old = u_all[idx].repeat(2)                                  # each view starts from the image's u
        u = torch.where(u_old > 0, (1.0 - self.gamma) * u_old + self.gamma * g, g)
        w = (e / u[:, None]).detach()
        # official: (loss_a + loss_b).mean(), the two views' anchor means summed
        loss = (-s[ar, pos_col] + (w * s).sum(dim=1) / m).sum() / n
        if self._updating():
            new = u_all.clone()
            new[idx] = 0.5 * (u[:n] + u[n:])
            self._u = new
            self._updates += 1
        return loss, {"sogclr": loss}

    def state(self) -> Tensor | None:
        """The per-sample denominators u (a copy; None before the first batch)."""
        return None if self._u is None else self._u.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"u": None if self._u is None else self._u.detach().cpu().clone(), "updates": self._updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"u", "updates"}:
            raise ValueError(f"{self.name} state needs keys u, updates; got {sorted(state)}")
        u = state["u"]
        if u is not None and (not isinstance(u, Tensor) or u.dim() != 1
                              or (self.num_samples is not None and u.shape[0] != self.num_samples)):
            raise ValueError(f"{self.name}: u must be a ({self.num_samples},) tensor or None")
        self._u = None if u is None else u.detach().clone()
        self._updates = int(state["updates"])


STATEFUL_OBJECTIVES: dict[str, type[StatefulObjective]] = {
    "simsiam": SimSiam, "byol": BYOL, "mocov2": MoCoV2, "sogclr": SogCLR,
}

__all__ = ["StatefulObjective", "SimSiam", "BYOL", "MoCoV2", "SogCLR", "STATEFUL_OBJECTIVES", "negative_cosine",
           "normalized_mse", "info_nce_queue"]
