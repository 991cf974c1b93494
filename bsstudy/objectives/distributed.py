"""Global-batch statistics under DDP: gather embeddings from all ranks, with gradients.

Convention (documented in docs/objectives.md): every rank computes the same global-batch loss L. The backward
of ``gather_with_grad`` all-reduces (sums) the incoming gradient and returns this rank's slice, so the gradient
w.r.t. this rank's embeddings is ``world_size * dL/dz_rank``. DDP then *averages* parameter gradients over
ranks, which cancels the factor: parameter gradients equal the single-process gradients of L on the global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """World size when torch.distributed is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(z) for _ in range(world)]
        dist.all_gather(parts, z.contiguous())
        ctx.rank, ctx.n = rank, z.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        # Every rank holds dL/dZ_global of the same L; summing gives world * dL/dz_rank for this slice.
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(z: Tensor) -> Tensor:
    """Concatenate ``z`` (n, d) from all ranks in rank order -> (world*n, d), differentiable.

    Identity when torch.distributed is not initialised or the world size is 1. Every rank must pass the same
    shape (use drop_last batches); a mismatch raises ValueError naming the shapes found.
    """
    world = world_size()
    if world == 1:
        return z
    shape = torch.tensor(list(z.shape), dtype=torch.int64, device=z.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    found = [tuple(int(x) for x in s.tolist()) for s in shapes]
    if len(set(found)) != 1:
        raise ValueError(f"gather_with_grad needs the same embedding shape on every rank, found {found}")
    return _GatherWithGrad.apply(z)


def all_reduce_mean_(t: Tensor) -> Tensor:
    """In-place mean of ``t`` over ranks (no-op with one process); used to keep EMA buffers identical."""
    world = world_size()
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world)
    return t
