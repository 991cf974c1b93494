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


# ───────────────────── W ranks x B/W == 1 rank x B (training) ─────────────────────
def _no_augment(view: str) -> list[str]:
    # Identical views in both runs: augmentation streams differ per rank by design, so they are switched off
    # to compare the distributed mechanics (sharding, gathers, DDP averaging, global BatchNorm) exactly.
    a = f"dataset.augment.{view}"
    return [f"{a}.crop_scale=[1.0,1.0]", f"{a}.crop_ratio=[1.0,1.0]", f"{a}.hflip_p=0.0", f"{a}.jitter_p=0.0",
            f"{a}.grayscale_p=0.0", f"{a}.blur_p=0.0", f"{a}.solarize_p=0.0"]


# Per-method overrides for the tiny cell (128 images): MoCo's queue must fit the data.
METHOD_ARGS = {"mocov2": ["method.loss.queue_size=48"], "byol": ["method.predictor.hidden_dim=16"],
               "simsiam": ["method.predictor.hidden_dim=8"]}


def _tiny_cell(run_dir: Path, method: str, ranks: int, sync_bn: bool = True) -> Path:
    from omegaconf import OmegaConf

    from bsstudy.config import cell_config

    cfg = cell_config([
        f"method={method}", "batch_size=32", "epochs=2", "seed=3", "device=cpu", "precision=fp32",
        "deterministic=true", "channels_last=false", "model.width=4", "model.feature_dim=16",
        "method.projector.hidden_dim=32", "method.projector.out_dim=16", "dataset.train_subset=128",
        "eval.linear=false", "eval.knn=false", "eval.max_train_samples=64",
        f"distributed.gpus_per_node={ranks}", f"distributed.sync_bn={str(sync_bn).lower()}",
        *_no_augment("view1"), *_no_augment("view2"), *METHOD_ARGS.get(method, []), f"out={run_dir}",
    ])
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return run_dir


def _train_worker(rank: int, world: int, port: int, run_dir: str) -> None:
    _init(rank, world, port)
    from bsstudy.train import run_cell

    res = run_cell(run_dir)
    assert res["status"] == "done", res
    torch.distributed.destroy_process_group()


def _rel_diffs(a: Path, b: Path) -> dict[str, float]:
    """Per-tensor ||theta_a - theta_b|| / ||theta_a|| of the final checkpoints' floating-point tensors."""
    s1 = torch.load(a / "checkpoints" / "last.pt", weights_only=False)
    s2 = torch.load(b / "checkpoints" / "last.pt", weights_only=False)
    assert s1["epoch"] == s2["epoch"] == 2
    m1, m2 = s1["model"], s2["model"]
    assert m1.keys() == m2.keys()
    return {k: float((m1[k] - m2[k]).norm() / m1[k].norm().clamp_min(1e-12)) for k in m1 if m1[k].is_floating_point()}


def _losses(run: Path) -> list[float]:
    import json

    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


# float32 training: reductions run in another order on 2 ranks, and 8 LARS steps amplify the rounding most
# in the BatchNorm shifts of the first block (measured max 2e-3, all other tensors <= 6e-4).
TOL = 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vicreg_unbiased", "simclr", "byol", "mocov2", "sogclr"])
def test_two_ranks_train_like_one(tmp_path: Path, method: str) -> None:
    """2 epochs on 2 gloo ranks x 16 == 1 rank x 32 (global batch 32): same losses and parameters, and for
    the stateful methods the same momentum target, MoCo queue (gathered keys) and SogCLR u (gathered indices)."""
    one = _tiny_cell(tmp_path / "w1", method, 1)
    two = _tiny_cell(tmp_path / "w2", method, 2)
    _spawn(_train_worker, 1, str(one))
    _spawn(_train_worker, 2, str(two))
    diffs = _rel_diffs(one, two)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < TOL, f"{worst}: relative difference {diffs[worst]:.2e}"
    assert _losses(one) == pytest.approx(_losses(two), rel=1e-5)
    s1, s2 = (torch.load(d / "checkpoints" / "last.pt", weights_only=False) for d in (one, two))
    states = {f"target.{k}": (v, s2["target"][k]) for k, v in (s1["target"] or {}).items()}
    states.update({f"objective.{k}": (v, s2["objective"][k]) for k, v in s1["objective"].items()})
    for k, (a, b) in states.items():
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            rel = float((a - b).norm() / a.norm().clamp_min(1e-12))
            assert rel < TOL, f"{k}: relative difference {rel:.2e}"
        elif isinstance(a, torch.Tensor):
            assert torch.equal(a, b), k
        else:
            assert a == b, k
    if method == "sogclr":   # every image visited: u > 0 everywhere, same positions on both
        assert bool((s1["objective"]["u"] > 0).all()) and bool((s2["objective"]["u"] > 0).all())
    if method == "mocov2":
        assert s1["objective"]["enqueued"] == s2["objective"]["enqueued"] == 8 * 32
    assert torch.load(two / "checkpoints" / "last.pt", weights_only=False)["world_size"] == 2
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["last.pt", "previous.pt"]
    import json

    assert json.loads((two / "result.json").read_text())["status"] == "done"
    if method == "vicreg_unbiased":
        # Negative control: per-rank BatchNorm statistics (sync_bn off) must be detected by the same check.
        local_bn = _tiny_cell(tmp_path / "w2-local-bn", method, 2, sync_bn=False)
        _spawn(_train_worker, 2, str(local_bn))
        assert max(_rel_diffs(one, local_bn).values()) > 10 * TOL
