"""Measurement: batches from a fixed pool, group-mean gradient errors, Jacobian-transpose pushes.

The network is frozen, so an objective's minibatch gradient w.r.t. the parameters is J^T G_B, where
G_B ∈ R^{N×2d} is the gradient of the batch loss w.r.t. the pool embeddings (zero outside the batch
rows) and J the Jacobian of the pool embeddings w.r.t. the parameters. By linearity the mean of R
parameter gradients is J^T (mean of the G_B): one backward per group mean, none per batch.
Nothing here knows about images: a ``JacobianT`` maps K cotangents (K, N, 2d) to (K, P).
``measure_all`` is the entry point (every objective × batch size); ``measure_cell`` one cell.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from ..registry import method_label
from . import stats


class JacobianT(Protocol):
    """Applies J^T (embedding cotangents → parameter gradients) to a stack of K cotangents."""

    def __call__(self, cotangents: torch.Tensor) -> torch.Tensor:  # (K, N, 2d) -> (K, P)
        ...


def identity_jt(cotangents: torch.Tensor) -> torch.Tensor:
    """The identity 'Jacobian' (parameters = the embeddings themselves): for synthetic checks."""
    return cotangents.reshape(cotangents.shape[0], -1)


class ModuleJT:
    """J^T for ``embed(x) -> z`` (a frozen nn.Module in eval mode) over a pool of input pairs (x1, x2).

    Each call recomputes the forward in chunks of ``chunk`` pairs (keeping the whole pool's graph
    would not fit in memory) and runs one backward per cotangent on the chunk's shared graph.
    """

    def __init__(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        params: Sequence[torch.nn.Parameter],
        x1: torch.Tensor,
        x2: torch.Tensor,
        chunk: int = 512,
    ) -> None:
        self.embed, self.params, self.x1, self.x2, self.chunk = embed, list(params), x1, x2, int(chunk)
        self.numel = sum(p.numel() for p in self.params)

    def __call__(self, cotangents: torch.Tensor) -> torch.Tensor:
        k, n, two_d = cotangents.shape
        d = two_d // 2
        out = torch.zeros(k, self.numel, dtype=torch.float32, device=cotangents.device)
        for a in range(0, n, self.chunk):
            b = min(n, a + self.chunk)
            with torch.enable_grad():
                z1 = self.embed(self.x1[a:b])
                z2 = self.embed(self.x2[a:b])
                for j in range(k):
                    ct = cotangents[j, a:b]
                    grads = torch.autograd.grad(
                        (z1, z2),
                        self.params,
                        grad_outputs=(ct[:, :d].to(z1.dtype), ct[:, d:].to(z2.dtype)),
                        retain_graph=j < k - 1,
                        allow_unused=True,
                    )
                    out[j] += torch.cat(
                        [
                            (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                            for g, p in zip(grads, self.params)
                        ]
                    )
        return out


def gram64(x: torch.Tensor, y: torch.Tensor | None = None, cols: int = 1 << 20) -> np.ndarray:
    """x @ y^T for row-stacked (K, P) tensors, accumulated in float64 over column chunks."""
    y = x if y is None else y
    out = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64, device=x.device)
    for a in range(0, x.shape[1], cols):
        out += x[:, a : a + cols].double() @ y[:, a : a + cols].double().T
    return out.cpu().numpy()


def batch_indices(n_pool: int, batch_size: int, repeats: int, seed: int) -> torch.Tensor:
    """(repeats, batch_size) row indices: each row an independent simple random sample of the pool
    (without replacement within a batch, independent across batches)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n_pool, generator=g)[:batch_size] for _ in range(repeats)])


@dataclass
class MeasuredObjective:
    """One objective under measurement: a loss function of (z1, z2) and, when stateful, its frozen state.

    (Not ``bsstudy.objectives.Objective``, the loss module base class: this wraps any loss callable.)"""

    objective: str  # registry name (vicreg, vicreg_unbiased, simclr, or a test objective)
    scheme: str  # variance scheme of vicreg_unbiased; "-" otherwise
    loss_fn: Callable[[torch.Tensor, torch.Tensor], Any]
    state: dict | None = None  # restored before every call so every batch sees the same state
    notes: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The objective's label in bias.csv: ``name`` or ``name[scheme]`` (``bsstudy.registry.method_label``)."""
        return method_label(self.objective, "" if self.scheme == "-" else self.scheme)

    def __call__(self, z1: torch.Tensor, z2: torch.Tensor) -> Any:
        if self.state is not None:
            self.loss_fn.load_state_dict(copy.deepcopy(self.state))
        return self.loss_fn(z1, z2)


def state_of(loss_fn: Any) -> dict:
    """The objective's state (``{}`` for stateless objectives and plain functions)."""
    sd = getattr(loss_fn, "state_dict", None)
    return copy.deepcopy(sd()) if callable(sd) else {}


def _loss_and_grad(
    obj: MeasuredObjective, z1: torch.Tensor, z2: torch.Tensor
) -> tuple[float, dict, torch.Tensor, torch.Tensor]:
    a = z1.detach().clone().requires_grad_(True)
    b = z2.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = obj(a, b)
        ga, gb = torch.autograd.grad(out.loss, (a, b), allow_unused=True)
    ga = torch.zeros_like(a) if ga is None else ga
    gb = torch.zeros_like(b) if gb is None else gb
    terms = {k: float(v) for k, v in (getattr(out, "terms", None) or {}).items()}
    return float(out.loss.detach()), terms, ga, gb


@dataclass
class Target:
    """The objective applied to the whole pool: loss L*, terms, embedding gradient G* (N, 2d)."""

    loss: float
    terms: dict
    grad: torch.Tensor


def pool_target(obj: MeasuredObjective, z1: torch.Tensor, z2: torch.Tensor) -> Target:
    """Each objective's own estimator on the whole pool: the target its minibatch versions aim at."""
    loss, terms, ga, gb = _loss_and_grad(obj, z1, z2)
    return Target(loss, terms, torch.cat([ga, gb], dim=1))


def measure_cell(
    obj: MeasuredObjective,
    z1: torch.Tensor,
    z2: torch.Tensor,
    indices: torch.Tensor,
    groups: int,
    target: Target,
    target_param: torch.Tensor | None,
    jt: JacobianT | None,
    level: float = 0.95,
) -> dict[str, Any]:
    """Bias/noise of ``obj``'s minibatch gradient at batch size ``indices.shape[1]`` against ``target``.

    indices: (R, B) batches (R a multiple of ``groups``); target_param: J^T G* (None with jt=None:
    embedding space only). Returns the row of bias.csv (without run-level columns) plus
    ``terms_bias`` (relative bias of each loss term, for bias.json).
    """
    t0 = time.perf_counter()
    r_total, bsz = indices.shape
    k = int(groups)
    if r_total % k:
        raise ValueError(f"repeats {r_total} is not a multiple of groups {k}")
    m = r_total // k
    n, d = z1.shape
    acc = torch.zeros(k, n, 2 * d, dtype=z1.dtype, device=z1.device)
    sq_sum = 0.0
    losses = np.empty(r_total)
    term_vals: dict[str, list[float]] = {}
    for r in range(r_total):
        ix = indices[r].to(z1.device)
        loss, terms, ga, gb = _loss_and_grad(obj, z1[ix], z2[ix])
        grp = acc[r // m]
        grp[ix, :d] += ga  # rows are distinct within a batch (sampling without replacement)
        grp[ix, d:] += gb
        sq_sum += float(ga.double().pow(2).sum() + gb.double().pow(2).sum())
        losses[r] = loss
        for name, v in terms.items():
            term_vals.setdefault(name, []).append(v)
    acc.div_(m).sub_(target.grad.unsqueeze(0))  # acc[k] is now E_k = group mean − G*
    err = acc.reshape(k, -1)
    g_star = target.grad.reshape(1, -1)

    row: dict[str, Any] = {}
    # embedding-gradient space: Gram of the group errors, plus the exact per-batch noise
    e_gram = gram64(err)
    e_cross = gram64(err, g_star)[:, 0]
    e_tsq = float(gram64(g_star)[0, 0])
    emb = stats.summarize_group_errors(e_gram, e_cross, e_tsq, m, level)
    mean_sq = e_tsq + 2.0 * float(e_cross.mean()) + float(e_gram.sum()) / k**2  # ‖mean of all R‖²
    per_batch_var = max((sq_sum - r_total * mean_sq) / (r_total - 1), 0.0)
    emb["rel_noise"] = math.sqrt(per_batch_var) / math.sqrt(e_tsq) if e_tsq > 0 else float("nan")
    emb["noise_floor"] = math.sqrt(per_batch_var / r_total) / math.sqrt(e_tsq) if e_tsq > 0 else float("nan")
    row.update({f"emb_{key}": v for key, v in emb.items()})
    t_emb = time.perf_counter()

    # parameter space: K backward passes, one per group mean
    if jt is not None and target_param is not None:
        d_par = jt(acc)
        del acc
        p_gram = gram64(d_par)
        p_cross = gram64(d_par, target_param.reshape(1, -1))[:, 0]
        p_tsq = float(gram64(target_param.reshape(1, -1))[0, 0])
        row.update(stats.summarize_group_errors(p_gram, p_cross, p_tsq, m, level))
    else:
        del acc
    t_par = time.perf_counter()

    lmean, llo, lhi = stats.mean_ci(losses, level)
    denom = abs(target.loss) if target.loss != 0 else float("nan")
    row.update(
        {
            "loss": lmean,
            "loss_pool": target.loss,
            "loss_bias": (lmean - target.loss) / denom,
            "loss_bias_ci_low": (llo - target.loss) / denom,
            "loss_bias_ci_high": (lhi - target.loss) / denom,
            "seconds_batches": t_emb - t0,
            "seconds_backward": t_par - t_emb,
        }
    )
    terms_bias = {}
    for name, vals in term_vals.items():
        ref = target.terms.get(name)
        if ref is None:
            continue
        mu, lo, hi = stats.mean_ci(np.asarray(vals), level)
        scale = abs(ref) if ref != 0 else float("nan")
        terms_bias[name] = {"pool": ref, "mean": mu, "rel_bias": (mu - ref) / scale,
                            "ci_low": (lo - ref) / scale, "ci_high": (hi - ref) / scale}
    row["terms_bias"] = terms_bias
    return row


def warm_state(
    obj: MeasuredObjective,
    z1: torch.Tensor,
    z2: torch.Tensor,
    chunk: int,
    calls: int,
    seed: int = 0,
) -> dict:
    """Warm a stateful objective's EMA on the pool, then freeze it (``obj.state``).

    The objective is called (no grad) ``calls`` times on chunks of ``chunk`` pool rows taken in
    random order, cycling through the pool, as training would feed it batches. Its state afterwards
    is near the stationary state of training on this pool (the EMA of 1/(n−1) chunk variances has
    mean equal to the pool variance). Returns a note for bias.json; stateless objectives are untouched.
    """
    fn = obj.loss_fn
    before = state_of(fn)
    if not before:
        return {"stateful": False}
    n = z1.shape[0]
    chunk = min(int(chunk), n)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    if callable(getattr(fn, "train", None)):
        fn.train()  # bsstudy objectives update their EMA only in training mode with grad enabled
    # grad mode on (objectives update state only then) but inputs detached, so no graph is built
    with torch.enable_grad():
        start = 0
        for c in range(int(calls)):
            if start + chunk > n:  # a new pass over the pool, in a new order
                perm, start = torch.randperm(n, generator=g), 0
            ix = perm[start : start + chunk].to(z1.device)
            start += chunk
            fn(z1[ix].detach(), z2[ix].detach())
    if callable(getattr(fn, "eval", None)):
        fn.eval()  # freeze (the state is also restored before every call)
    obj.state = state_of(fn)
    before_flat, after_flat = _flat_state(before), _flat_state(obj.state)
    if before_flat.shape == after_flat.shape and torch.equal(before_flat, after_flat):
        raise RuntimeError(f"{obj.label}: its state did not change while warming on the pool")
    summary = {k: {"mean": float(v.double().mean()), "min": float(v.min()), "max": float(v.max())}
               for k, v in obj.state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()}
    return {"stateful": True, "warm_calls": int(calls), "warm_chunk": chunk, "state": summary}


def _flat_state(sd: dict) -> torch.Tensor:
    parts = [v.detach().double().reshape(-1).cpu() for v in sd.values() if torch.is_tensor(v) and v.is_floating_point()]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def measure_all(
    objectives: Sequence[MeasuredObjective],
    z1: torch.Tensor,
    z2: torch.Tensor,
    jt: JacobianT | None,
    batch_sizes: Sequence[int],
    repeats: int,
    groups: int,
    seed: int,
    level: float = 0.95,
    warm_chunk: int = 512,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Measure every objective at every batch size on pool embeddings (z1, z2) with J^T operator ``jt``
    (None: embedding space only). Network-agnostic, so tests drive it with synthetic embeddings.

    Returns (rows, notes): rows as in bias.csv plus ``terms_bias``; notes per objective label.
    """
    from tqdm import tqdm

    n = z1.shape[0]
    notes: dict[str, dict] = {}
    targets = {}
    for obj in objectives:
        # stateful schemes: EMA warmed on the pool, then frozen (every batch sees the same state)
        beta = obj.notes.get("params", {}).get("ema_beta")
        # enough calls that the initial state is forgotten: beta^calls = e^-10
        calls = math.ceil(10.0 / (1.0 - float(beta)) - 1e-9) if beta is not None and 0 < float(beta) < 1 else 200
        notes[obj.label] = dict(obj.notes, **warm_state(obj, z1, z2, warm_chunk, calls, seed))
        targets[obj.label] = pool_target(obj, z1, z2)
    target_param = {}
    if jt is not None:
        stack = torch.stack([targets[o.label].grad for o in objectives])
        pushed = jt(stack)
        target_param = {o.label: pushed[i] for i, o in enumerate(objectives)}
        del stack, pushed
    # same batches for every objective (common random numbers make the comparison sharper)
    indices = {b: batch_indices(n, b, repeats, seed * 1_000_003 + b) for b in batch_sizes}
    rows = []
    bar = tqdm(total=len(objectives) * len(batch_sizes), desc="bias", unit="cell", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for obj in objectives:
        t = targets[obj.label]
        for b in batch_sizes:
            bar.set_postfix_str(f"{obj.label} B={b}")
            row = measure_cell(obj, z1, z2, indices[b], groups, t, target_param.get(obj.label), jt, level)
            row.update(objective=obj.objective, scheme=obj.scheme, label=obj.label, batch_size=int(b),
                       repeats=int(repeats), groups=int(groups), pool=int(n))
            rows.append(row)
            bar.update(1)
    bar.close()
    return rows, notes
