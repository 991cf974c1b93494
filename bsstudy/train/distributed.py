"""Process groups for multi-rank training (torchrun or SLURM tasks through submitit), and a global BatchNorm.

``batch_size`` in every config is the GLOBAL batch: each rank trains on its ``B / world`` slice of every
global batch, objectives gather embeddings across ranks with gradients (bsstudy.objectives.distributed),
and DDP averages parameter gradients, so a step on W ranks x B/W equals a step on 1 rank x B.

How a run becomes distributed:
- torchrun: ``torchrun --nproc_per_node 2 -m bsstudy train --run-dir DIR`` (RANK/WORLD_SIZE/MASTER_* set);
- SLURM: ``bsstudy submit`` asks for ``nodes`` x ``gpus_per_node`` tasks; inside each task
  ``submitit.helpers.TorchDistributedEnvironment`` exports the same variables from the SLURM ones.
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from ..errors import UserError


def _env_world_size() -> int:
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_NTASKS" in os.environ and "SLURM_JOB_ID" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return 1


def init_from_env(cfg: Any) -> bool:
    """Join the process group the environment describes; return True if this call created it.

    A no-op when a group already exists (tests, callers that manage it) or the job has one task. The
    world size must equal ``distributed.nodes * distributed.gpus_per_node`` of the config."""
    if not tdist.is_available() or tdist.is_initialized():
        return False
    want = int(cfg.distributed.nodes) * int(cfg.distributed.gpus_per_node)
    if want == 1:  # a single-rank config ignores the environment (e.g. a multi-task salloc around it)
        return False
    world = _env_world_size()
    if world <= 1:
        raise UserError(f"distributed: config asks for {want} ranks but this process runs alone "
                        "(start it with torchrun or through `bsstudy submit`)")
    if world != want:
        raise UserError(f"distributed: {world} ranks started but the config asks for {want} "
                        "(distributed.nodes * distributed.gpus_per_node)")
    if "RANK" not in os.environ:  # SLURM task started by submitit: derive torch's variables
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    backend = str(cfg.distributed.backend)
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    tdist.init_process_group(backend=backend, init_method="env://", timeout=_dt.timedelta(minutes=30))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def destroy() -> None:
    """Leave the process group (after a run that created it)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` without a process group)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) whose backward is all_reduce(SUM) of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        tdist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        tdist.all_reduce(g)
        return g


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the GLOBAL batch, on any backend (gloo on CPU too).

    torch's SyncBatchNorm accepts only accelerator tensors; this one all-reduces per-channel sums with
    autograd (``_AllReduceSum``), so forward and backward equal single-process BatchNorm
    on the concatenated batch. Eval mode uses running statistics as usual."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or not (tdist.is_available() and tdist.is_initialized()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        tdist.all_reduce(count)
        n = float(count.item())
        mean = _AllReduceSum.apply(xf.sum(dims)) / n
        xc = xf - mean.view(shape)
        var = _AllReduceSum.apply((xc * xc).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by a global-batch one: torch's SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out
