"""Trainer: divergence, injected failure, result.json contract, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bsstudy.cli import main as cli_main
from bsstudy.config import config_hash, load_run_config
from bsstudy.io import read_jsonl
from bsstudy.layout import RESULT_FIELDS
from bsstudy.train import run_cell
from bsstudy.train.cli import prepare_run_dir
from bsstudy.train.epoch import epoch_permutation
from bsstudy.train.hooks import Hook

TINY = ["batch_size=32", "epochs=2", "dataset.train_subset=128", "model.width=4", "model.feature_dim=16",
        "method.projector.hidden_dim=32", "method.projector.out_dim=32", "eval.probe_weight_decays=[0.0]",
        "eval.probe_max_iter=30"]
CONTRACT = set(RESULT_FIELDS)


pytestmark = pytest.mark.usefixtures("one_thread")


def _make(tmp: Path, name: str, extra: list[str] = ()) -> Path:
    return prepare_run_dir([*TINY, *extra, f"out={tmp / name}"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "vicreg_unbiased"])
def test_done_result_matches_contract(tmp_path, method):
    d = _make(tmp_path, method, [f"method={method}", "eval.every=1"])
    res = run_cell(d)
    assert CONTRACT <= set(res) and res["schema"] == 1 and res["status"] == "done"
    assert res == json.loads((d / "result.json").read_text())
    cfg = load_run_config(d / "config.yaml")
    assert res["config_hash"] == config_hash(cfg)
    assert (res["method"], res["batch_size"], res["epochs"]) == (method, 32, 2)
    assert res["lr"] == pytest.approx(cfg.lr.effective) and res["lr_base"] == cfg.lr.base
    assert res["lr_scaling"] == "linear" and res["lr"] == pytest.approx(cfg.lr.base * 32 / 256)
    assert 0.0 <= res["linear_top1"] <= 1.0 and 0.0 <= res["knn_top1"] <= 1.0
    assert set(res["collapse"]) == {"effective_rank", "avg_abs_corr", "min_std", "mean_std"}
    assert set(res["collapse_backbone"]) == set(res["collapse"])
    assert res["diverged_at_epoch"] is None and res["final_loss"] is not None
    rows = read_jsonl(d / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    terms = {"nt_xent"} if method == "simclr" else {"invariance", "variance", "covariance"}
    for r in rows:
        assert terms | {"loss", "lr", "seconds", "images_per_second", "emb_std", "emb_effective_rank"} <= set(r)
    assert "linear_top1" in rows[0] and "linear_top1" not in rows[1]   # eval.every=1, final eval in result
    assert rows[-1]["loss"] == res["final_loss"]
    assert rows[0]["step"] == 4 and rows[1]["step"] == 8                 # 128 // 32, drop_last


@pytest.mark.slow
def test_absurd_lr_diverges_without_raising(tmp_path):
    d = _make(tmp_path, "div", ["optim=sgd", "method.base_lr=1.0e12", "optim.warmup_epochs=0", "epochs=3"])
    res = run_cell(d)
    assert res["status"] == "diverged" and res["diverged_at_epoch"] == 1
    assert res["linear_top1"] is None and res["final_loss"] is None
    assert json.loads((d / "result.json").read_text())["status"] == "diverged"
    rows = read_jsonl(d / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1] and rows[0]["loss"] is None
    assert run_cell(d) == res   # terminal: not retrained


def test_fail_at_epoch_writes_failed_and_reraises(tmp_path):
    d = _make(tmp_path, "fail", ["debug.fail_at_epoch=1"])
    with pytest.raises(RuntimeError, match="injected failure"):
        run_cell(d)
    res = json.loads((d / "result.json").read_text())
    assert res["status"] == "failed" and res["error"].startswith("RuntimeError: debug.fail_at_epoch")
    assert "Traceback" in res["error"] and CONTRACT <= set(res)
    assert res["device"] is not None and res["train_seconds"] is None   # set up, then failed


class _Count(Hook):
    """Records every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def epoch_start(self, epoch: int, steps: int) -> None:
        self.calls.append(("start", epoch, steps))

    def step_end(self, step: int, loss: torch.Tensor) -> None:
        self.calls.append(("step", step, float(loss)))

    def epoch_end(self, epoch: int) -> None:
        self.calls.append(("end", epoch))


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    a = epoch_permutation(100, 0, 1)
    assert torch.equal(a, epoch_permutation(100, 0, 1)) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_permutation(100, 0, 2))
    assert not torch.equal(a, epoch_permutation(100, 1, 1))


def test_cli_refuses_other_config(tmp_path, capsys):
    # (out= is optional now: results/adhoc/<run_id>, tests/test_cli_inputs.py)
    d = tmp_path / "run"
    prepare_run_dir([*TINY, f"out={d}"])
    assert prepare_run_dir([*TINY, f"out={d}"]) == d            # same config: fine (resume)
    assert cli_main(["train", *TINY, "seed=5", f"out={d}"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["train", "--run-dir", str(tmp_path / "nope")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert cli_main(["train", "batch_sz=3", f"out={d}"]) == 2
    assert "batch_sz" in capsys.readouterr().err


def test_cli_help_lists_groups_and_keys(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    out = capsys.readouterr().out
    assert "method={barlow_twins,barlow_twins_unbiased,byol,dcl,mocov2,simclr,simsiam,sogclr,vicreg,vicreg_unbiased}" in out and "optim={adamw,lars,sgd}" in out
    assert "batch_size" in out and "debug.*" in out


def test_eval_at_init_probes_the_untrained_network_once(tmp_path):
    """eval.at_init: the random-init probe is in init_eval.json and result.json, equal to probing the
    network the run starts from, and training itself is unchanged by it."""
    from bsstudy.evaluate import evaluate_model
    from bsstudy.train.setup import Dist, build_run

    d = _make(tmp_path, "init", ["eval.at_init=true", "epochs=1"])
    res = run_cell(d)
    init = json.loads((d / "init_eval.json").read_text())
    assert res["init_linear_top1"] == init["linear_top1"] and res["init_knn_top1"] == init["knn_top1"]
    assert 0.0 <= init["linear_top1"] <= 1.0
    # the same probe on a freshly built network of the same config gives the same number
    cfg = load_run_config(d / "config.yaml")
    fresh = build_run(cfg, Dist())
    assert evaluate_model(fresh.model, cfg, fresh.device)["linear_top1"] == pytest.approx(init["linear_top1"])
    # training is the same with and without the extra evaluation, and with an extra hook, which sees
    # every step of every epoch (128 // 32 = 4)
    count = _Count()
    plain = run_cell(_make(tmp_path, "plain", ["epochs=1"]), hooks=[count])
    assert plain["final_loss"] == res["final_loss"] and plain["init_linear_top1"] is None
    assert [c[:2] for c in count.calls] == [("start", 1), ("step", 0), ("step", 1), ("step", 2), ("step", 3),
                                            ("end", 1)]
    assert count.calls[0][2] == 4
    assert sum(c[2] for c in count.calls[1:5]) / 4 == pytest.approx(plain["final_loss"])
    assert not (tmp_path / "plain" / "init_eval.json").exists()


@pytest.mark.parametrize("method,extra", [("simsiam", ["method.predictor.hidden_dim=8"]),
                                          ("byol", ["method.predictor.hidden_dim=8"]),
                                          ("mocov2", ["method.loss.queue_size=64"]), ("sogclr", [])])
def test_step_gives_each_method_what_its_registry_entry_asks_for(tmp_path, method, extra):
    """One epoch: the objective receives predictor outputs / target embeddings / the rows' dataset positions
    (the epoch permutation, in order) exactly when the registry says; the target moves once per step, after
    the optimizer step, with tau from the schedule at k = steps before it."""
    from bsstudy.registry import METHODS
    from bsstudy.train.epoch import train_epoch
    from bsstudy.train.setup import Dist, build_run
    from bsstudy.train.target import momentum_at

    cfg = load_run_config(_make(tmp_path, method, [f"method={method}", "device=cpu", *extra]) / "config.yaml")
    run = build_run(cfg, Dist())
    spec = METHODS[method]
    assert (run.model.predictor is not None) == spec.needs_predictor
    assert (run.target is not None) == spec.needs_target
    seen, taus = [], []
    objective = run.objective

    def spy(z1, z2, **kw):
        seen.append({k: v.detach().clone() for k, v in kw.items()})
        return objective(z1, z2, **kw)

    run.objective = spy
    if run.target is not None:
        update = run.target.update

        def spy_update(model, step):
            taus.append((step, update(model, step)))
            return taus[-1][1]

        run.target.update = spy_update
    train_epoch(run, 1)
    want = ({"p1", "p2"} if spec.needs_predictor else set()) | ({"t1", "t2"} if spec.needs_target else set()) | (
        {"indices"} if spec.needs_indices else set())
    assert all(set(s) == want for s in seen) and len(seen) == run.steps_per_epoch
    if spec.needs_indices:
        perm = epoch_permutation(len(run.images), int(cfg.seed), 1)
        assert torch.equal(torch.cat([s["indices"] for s in seen]), perm[:run.steps_per_epoch * 32])
        assert objective.num_samples == 128
    if spec.needs_target:
        total = run.steps_per_epoch * int(cfg.epochs)
        assert [k for k, _ in taus] == list(range(run.steps_per_epoch))
        assert [t for _, t in taus] == [momentum_at(k, total, float(cfg.method.target.base_momentum),
                                                    str(cfg.method.target.schedule)) for k in range(len(taus))]
        assert not any(t.requires_grad for s in seen for t in (s["t1"], s["t2"]))
