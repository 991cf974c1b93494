"""Objectives under torch.distributed: 2 gloo processes on CPU, each with half of the batch, give the
single-process global-batch loss, embedding gradients (x world size, see below) and EMA state; and with
DistributedDataParallel the parameter gradients equal the single-process ones.

Convention (docs/objectives.md): gather_with_grad's backward all-reduces the gradient, so on rank r
dL/dz_r(DDP) = world_size * dL/dz_r(single process); DDP's averaging over ranks cancels the factor.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bsstudy.objectives import VARIANCE_SCHEMES, build_objective

WORLD = 2
N, D = 12, 5          # global batch; 6 rows per rank
STEPS = 2             # two calls: the second uses the EMA state the first created

CONFIGS = [("simclr", {"temperature": 0.2}), ("vicreg", {}), ("vicreg", {"paper_form": True})] + [
    ("vicreg_unbiased", {"variance": s, "cov_target": "identity"}) for s in VARIANCE_SCHEMES] + [
    ("vicreg_unbiased", {"variance": "jackknife", "cov_target": "offdiag"}),
    ("barlow_twins", {}), ("barlow_twins_unbiased", {}), ("barlow_twins_unbiased", {"on_diagonal": "plugin"}),
    ("dcl", {}), ("dcl", {"weighting": "vmf"})]
# objectives valid on a global batch of 2: run with 1 row per rank (the row check must come after the gather)
ONE_ROW = [("simclr", {}), ("vicreg", {}), ("barlow_twins", {}), ("dcl", {})]


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(STEPS):
        z1 = 0.6 * torch.randn(N, D, generator=g, dtype=torch.float64) + 0.2   # std < gamma: hinges active
        out.append((z1, z1 + 0.4 * torch.randn(N, D, generator=g, dtype=torch.float64)))
    return out


def _run(name: str, params: dict, batches, rows: slice) -> dict:
    """Loss, embedding gradients and state after each step, on rows ``rows`` of every batch."""
    f = build_objective(name, **params)
    res = {"loss": [], "g1": [], "g2": [], "terms": []}
    for z1, z2 in batches:
        a = z1[rows].clone().requires_grad_(True)
        b = z2[rows].clone().requires_grad_(True)
        out = f(a, b)
        out.loss.backward()
        res["loss"].append(out.loss.detach())
        res["terms"].append({k: v.clone() for k, v in out.terms.items()})
        res["g1"].append(a.grad)
        res["g2"].append(b.grad)
    res["state"] = f.state_dict()
    return res


def _ddp_param_grads(name: str, params: dict, rows: slice, wrap: bool) -> list[torch.Tensor]:
    """A linear projector trained one step on x[rows]; optionally wrapped in DistributedDataParallel."""
    torch.manual_seed(1)
    model = torch.nn.Linear(7, D).double()
    if wrap:
        model = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(N, 7, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(N, 7, generator=g, dtype=torch.float64)
    f = build_objective(name, **params)
    f(model(x1[rows]), model(x2[rows])).loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        batches = _batches()
        results = {f"{name}:{sorted(p.items())}": _run(name, p, batches, rows) for name, p in CONFIGS}
        two = [(z1[:WORLD], z2[:WORLD]) for z1, z2 in batches]
        one_row = {name: _run(name, p, two, slice(rank, rank + 1)) for name, p in ONE_ROW}
        grads = {name: _ddp_param_grads(name, p, rows, wrap=True)
                 for name, p in [("simclr", {}), ("vicreg_unbiased", {"variance": "jackknife_ema_gate"})]}
        torch.save({"results": results, "param_grads": grads, "one_row": one_row},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("name,params", CONFIGS)
def test_two_ranks_equal_one_rank(ranks, name, params):
    key = f"{name}:{sorted(params.items())}"
    single = _run(name, params, _batches(), slice(None))
    for r, res in enumerate(ranks):
        got = res["results"][key]
        rows = slice(r * N // WORLD, (r + 1) * N // WORLD)
        for step in range(STEPS):
            _close(got["loss"][step], single["loss"][step])
            for k, v in single["terms"][step].items():
                _close(got["terms"][step][k], v)
            # gradient w.r.t. this rank's embeddings = world_size x the single-process gradient of its rows
            _close(got["g1"][step] / WORLD, single["g1"][step][rows])
            _close(got["g2"][step] / WORLD, single["g2"][step][rows])
        assert got["state"].keys() == single["state"].keys()
        for k, v in single["state"].items():
            if isinstance(v, torch.Tensor):
                _close(got["state"][k], v)
            else:
                assert got["state"][k] == v


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("simclr", {}), ("vicreg_unbiased", {"variance": "jackknife_ema_gate"})])
def test_ddp_parameter_gradients_equal_single_process(ranks, name, params):
    single = _ddp_param_grads(name, params, slice(None), wrap=False)
    for res in ranks:
        for got, want in zip(res["param_grads"][name], single):
            _close(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("name,params", ONE_ROW)
def test_two_ranks_with_one_row_each_equal_one_rank_with_two(ranks, name, params):
    single = _run(name, params, [(z1[:WORLD], z2[:WORLD]) for z1, z2 in _batches()], slice(None))
    for r, res in enumerate(ranks):
        got = res["one_row"][name]
        for step in range(STEPS):
            _close(got["loss"][step], single["loss"][step])
            _close(got["g1"][step] / WORLD, single["g1"][step][r:r + 1])
