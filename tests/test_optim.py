"""Optimizers, LR schedule and LR scaling rules."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bsstudy.config import cell_config, effective_lr
from bsstudy.errors import UserError
from bsstudy.train.optim import LARS, WarmupCosine, build_optimizer, lr_factor, param_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 5)


def test_param_groups_exclude_biases_and_norm_params():
    net = Net()
    regular, excluded = param_groups(net, 1e-4)
    assert {id(p) for p in regular["params"]} == {id(net.conv.weight), id(net.fc.weight)}
    assert {id(p) for p in excluded["params"]} == {id(net.conv.bias), id(net.fc.bias), id(net.bn.weight),
                                                   id(net.bn.bias)}
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"]


def _lars_reference(w, g, lr, wd, eta, exclude):
    if not exclude:
        g = g + wd * w
        q = eta * w.norm() / g.norm()
        g = q * g
    return w - lr * g   # first step: momentum buffer = g


def test_lars_step_matches_formula_and_skips_excluded():
    torch.manual_seed(0)
    net = Net()
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in net.named_parameters()}
    opt = LARS(param_groups(net, 0.1), lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    opt.step()
    for n, p in net.named_parameters():
        w, g = before[n]
        excl = p.ndim <= 1
        torch.testing.assert_close(p.detach(), _lars_reference(w, g, 0.5, 0.1, 0.01, excl))
    # excluded params move by exactly lr*grad (no decay, no trust ratio)
    torch.testing.assert_close(net.fc.bias.detach(), before["fc.bias"][0] - 0.5 * before["fc.bias"][1])


def test_lars_momentum_second_step():
    w = nn.Parameter(torch.tensor([3.0, 4.0]).reshape(1, 2))   # 2-d: LARS applies
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False}], lr=1.0, momentum=0.5,
               trust_coefficient=1.0)
    w.grad = torch.tensor([[0.6, 0.8]])      # ||g|| = 1, ||w|| = 5 → q = 5
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[0.0, 0.0]]))
    w.grad = torch.tensor([[1.0, 0.0]])      # ||w|| = 0 → q = 1; v = 0.5*[3,4] + [1,0]
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[-2.5, -2.0]]))


@pytest.mark.parametrize("name,cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_from_config(name, cls):
    cfg = cell_config([f"optim={name}"])
    opt = build_optimizer(Net(), cfg.optim, 0.3)
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.optim.weight_decay, 0.0]
    assert all(g["lr"] == 0.3 for g in opt.param_groups)


def test_unknown_optimizer_is_user_error():
    with pytest.raises(UserError, match="unknown optimizer"):
        build_optimizer(Net(), OmegaConf.create({"name": "rmsprop", "weight_decay": 0.0}), 0.1)


def test_warmup_cosine_values():
    total, warm, r = 110, 10, 0.01
    f = [lr_factor(s, total, warm, r) for s in range(total)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f[10] == pytest.approx(1.0)                       # peak right after warmup
    assert f[-1] == pytest.approx(r)                          # min at the last step
    mid = 10 + (total - warm - 1) / 2                         # halfway through the decay: average
    assert lr_factor(int(mid), total, warm, r) == pytest.approx(r + (1 - r) * 0.5 * (1 + math.cos(math.pi * int(mid - 10) / 99)))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))        # monotone decay
    assert lr_factor(5, 10, 0, 0.0, "constant") == 1.0


def test_schedule_sets_lr_and_resumes():
    net = Net()
    opt = build_optimizer(net, cell_config(["optim=sgd"]).optim, 2.0)
    s = WarmupCosine(opt, 2.0, 20, 4, 0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    for _ in range(7):
        s.step()
    s2 = WarmupCosine(opt, 2.0, 20, 4, 0.0)
    s2.load_state_dict(s.state_dict())
    assert s2.lr() == s.lr() == pytest.approx(2.0 * lr_factor(7, 20, 4, 0.0))
    assert all(g["lr"] == s.lr() for g in opt.param_groups)


@pytest.mark.parametrize("rule,b,expected", [("linear", 512, 0.4), ("linear", 64, 0.05), ("sqrt", 1024, 0.4),
                                             ("sqrt", 64, 0.1), ("none", 4096, 0.2)])
def test_lr_scaling_rules(rule, b, expected):
    assert effective_lr(0.2, b, rule) == pytest.approx(expected)
    cfg = cell_config([f"batch_size={b}", f"method.lr_scaling={rule}", "method.base_lr=0.2"])
    assert (cfg.lr.base, cfg.lr.scaling) == (0.2, rule)
    assert cfg.lr.effective == pytest.approx(expected)


def test_lr_table_rule_from_config_command_line_and_sweep(tmp_path):
    """lr_scaling=table looks the LR up per batch size; a batch size missing from the table is a one-line
    error at plan time (exit 2, nothing written)."""
    cfg = cell_config(["batch_size=512", "method.lr_scaling=table", "method.lr_table={256:0.3,512:0.45}"])
    assert (cfg.lr.scaling, cfg.lr.effective, cfg.lr.base) == ("table", 0.45, cfg.method.base_lr)
    with pytest.raises(UserError, match=r"method.lr_table: no LR for batch_size 1024 \(the table has 256, 512\)"):
        cell_config(["batch_size=1024", "method.lr_scaling=table", "method.lr_table={256:0.3,512:0.45}"])
    with pytest.raises(UserError, match="lr_scaling=table needs a mapping"):
        cell_config(["method.lr_scaling=table"])
    from bsstudy.cli import main

    sweep = tmp_path / "s.yaml"
    sweep.write_text("study: t\nbase: {dataset.train_subset: 2048}\ngrid: {method: [vicreg], batch_size: [256, 1024],"
                     " epochs: [1], seed: [0]}\nper_method:\n  vicreg: {method.lr_scaling: table, method.lr_table:"
                     " {256: 0.2, 512: 0.3}}\n")
    assert main(["plan", str(sweep), "--results", str(tmp_path / "results")]) == 2
    assert not (tmp_path / "results").exists()
    sweep.write_text(sweep.read_text().replace("512: 0.3", "1024: 0.5"))
    assert main(["plan", str(sweep), "--results", str(tmp_path / "results")]) == 0
    import csv

    rows = list(csv.DictReader(open(tmp_path / "results" / "t" / "plan.csv")))
    assert sorted(float(r["lr"]) for r in rows) == [0.2, 0.5]
    # the planner's fast path resolves the table cell exactly as cell_config does (same config, same hash)
    from bsstudy.config import config_hash, load_run_config

    for r in rows:
        saved = load_run_config(tmp_path / "results" / "t" / "runs" / r["run_id"] / "config.yaml")
        direct = cell_config(["dataset.train_subset=2048", "method=vicreg", f"batch_size={r['batch_size']}", "epochs=1",
                              "seed=0", "method.lr_scaling=table", "method.lr_table={256:0.2,1024:0.5}", "study=t"])
        assert config_hash(saved) == config_hash(direct) == r["config_hash"]
