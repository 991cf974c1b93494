"""Multi-rank training on CPU with gloo: global BatchNorm, and W ranks x B/W == 1 rank x B (issue 7)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bsstudy.train.distributed import GlobalBatchNorm, convert_sync_batchnorm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world: int, *args) -> None:
    port = _free_port()
    mp.start_processes(fn, args=(world, port, *args), nprocs=world, join=True, start_method="spawn")


def _init(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


# ───────────────────────── global BatchNorm ─────────────────────────
def _bn_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    _init(rank, world, port)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 3 + 1
    w = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    bn = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), torch.device("cpu")).double()
    assert isinstance(bn[0], GlobalBatchNorm)
    with torch.no_grad():
        bn[0].weight.copy_(torch.tensor([0.5, 1.5, 2.0]))
        bn[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    xs = x.chunk(world)[rank].clone().requires_grad_(True)
    y = bn(xs)
    loss = (y * w.chunk(world)[rank]).sum()
    loss.backward()
    torch.save({"y": y.detach(), "gx": xs.grad, "gw": bn[0].weight.grad, "rm": bn[0].running_mean,
                "rv": bn[0].running_var}, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_global_batchnorm_equals_single_process_bn(tmp_path: Path) -> None:
    _spawn(_bn_worker, 2, str(tmp_path))
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 4, 4, dtype=torch.float64) * 3 + 1).requires_grad_(True)
    w = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    y = bn(x)
    (y * w).sum().backward()
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    torch.testing.assert_close(torch.cat([r[0]["y"], r[1]["y"]]), y.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat([r[0]["gx"], r[1]["gx"]]), x.grad, rtol=1e-10, atol=1e-12)
    # each rank holds the gradient of its own share of the loss; their sum is the full gradient
    torch.testing.assert_close(r[0]["gw"] + r[1]["gw"], bn.weight.grad, rtol=1e-10, atol=1e-12)
    for k, ref in (("rm", bn.running_mean), ("rv", bn.running_var)):
        torch.testing.assert_close(r[0][k], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(r[1][k], ref, rtol=1e-12, atol=1e-12)
