"""One training epoch: ``train_epoch(run, epoch, hooks)`` → its metrics.jsonl line and whether it diverged.

Each rank takes its contiguous ``local_batch`` slice of every global batch of the epoch's permutation;
two augmented views → model → objective → backward → optimizer → schedule, for every method alike.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..io import json_finite
from .hooks import Hook
from .setup import Run


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of ``epoch``: a pure function of (seed, epoch), so resume needs no sampler state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


@dataclass(frozen=True)
class EpochResult:
    metrics: dict[str, Any]   # the metrics.jsonl line (``eval.every`` may add linear_top1 / knn_top1)
    diverged: bool            # a non-finite loss: the epoch stopped at that step
    seconds: float            # wall time of the steps
    images: int               # global images trained on


def train_epoch(run: Run, epoch: int, hooks: Sequence[Hook] = ()) -> EpochResult:
    """Train epoch ``epoch`` (1-based) of ``run``."""
    for h in hooks:
        h.epoch_start(epoch, run.steps_per_epoch)
    run.model.train()
    perm = epoch_permutation(len(run.images), int(run.cfg.seed), epoch).to(run.device)
    # On CUDA check finiteness every few steps (a host sync); on CPU it is free.
    check_every = 1 if run.device.type == "cpu" else 25
    loss_sum = torch.zeros((), device=run.device, dtype=torch.float64)
    term_sums: dict[str, torch.Tensor] = {}
    lr_sum = 0.0
    t0 = time.perf_counter()
    z1 = None
    steps = 0
    for step in range(run.steps_per_epoch):
        lo = step * run.batch_size + run.dist.rank * run.local_batch
        idx = perm[lo:lo + run.local_batch]
        x = run.images[idx]
        v1, v2 = run.augment(x, run.aug_gen)
        v1 = v1.contiguous(memory_format=run.memory_format)
        v2 = v2.contiguous(memory_format=run.memory_format)
        lr_sum += run.optimizer.param_groups[0]["lr"]
        z1, z2, extra = _forward(run, v1, v2, idx)
        out = run.objective(z1, z2, **extra)
        run.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        run.optimizer.step()
        if run.target is not None:   # after the optimizer step, with k = steps completed before this one
            run.target.update(run.model, run.schedule.step_count)
        run.schedule.step()
        steps += 1
        loss_sum += out.loss.detach().double()
        for k, v in out.terms.items():
            term_sums[k] = term_sums.get(k, 0.0) + v.detach().double()
        if (step + 1) % check_every == 0 or step + 1 == run.steps_per_epoch:
            if not math.isfinite(float(loss_sum)):
                break
        for h in hooks:
            h.step_end(step, out.loss.detach())
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - t0
    for h in hooks:
        h.epoch_end(epoch)
    return _epoch_result(run, epoch, steps, seconds, loss_sum, term_sums, lr_sum, z1)


def _forward(run: Run, v1: torch.Tensor, v2: torch.Tensor,
             idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Embeddings of both views and the objective's other inputs its registry entry asks for: predictor
    outputs p1, p2; target embeddings t1, t2 (no gradient); the rows' dataset positions ``indices``."""
    spec, extra = run.spec, {}
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        if spec.needs_predictor:
            _, z1, p1 = run.forward(v1, predict=True)
            _, z2, p2 = run.forward(v2, predict=True)
            extra.update(p1=p1.float(), p2=p2.float())
        else:
            _, z1 = run.forward(v1)
            _, z2 = run.forward(v2)
        if run.target is not None:
            extra.update(t1=run.target(v1).float(), t2=run.target(v2).float())
    if spec.needs_indices:
        extra["indices"] = idx
    return z1.float(), z2.float(), extra


def _epoch_result(run: Run, epoch: int, steps: int, seconds: float, loss_sum: torch.Tensor,
                  term_sums: dict[str, torch.Tensor], lr_sum: float, z1: torch.Tensor | None) -> EpochResult:
    """Epoch means of loss, terms and lr, throughput, and collapse diagnostics of the last view-1 batch."""
    loss = float(loss_sum) / steps
    images = steps * run.batch_size
    m: dict[str, Any] = {
        "epoch": epoch, "step": run.schedule.step_count, "loss": json_finite(loss),
        "lr": lr_sum / steps, "seconds": seconds,
        "images_per_second": images / seconds if seconds > 0 else None,
    }
    for k, v in term_sums.items():
        m[k] = json_finite(float(v) / steps)
    diverged = not math.isfinite(loss)
    if not diverged and z1 is not None:
        from ..evaluate import collapse_diagnostics

        d = collapse_diagnostics(z1.detach().float())
        m.update({"emb_std": d["mean_std"], "emb_min_std": d["min_std"],
                  "emb_effective_rank": d["effective_rank"], "emb_avg_abs_corr": d["avg_abs_corr"]})
    return EpochResult(metrics=m, diverged=diverged, seconds=seconds, images=images)
