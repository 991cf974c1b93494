"""The study-wide cache of the untrained network's probe (eval.at_init): one probe per distinct untrained
backbone, identical to probing it in every run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bsstudy.train import evaluation as E
from bsstudy.train import run_cell
from bsstudy.train.cli import prepare_run_dir

TINY = ["epochs=1", "dataset.train_subset=128", "model.width=4", "model.feature_dim=16",
        "method.projector.hidden_dim=32", "method.projector.out_dim=32", "eval.probe_weight_decays=[0.0]",
        "eval.probe_max_iter=30", "eval.max_train_samples=300", "eval.at_init=true", "eval.few_shot=[5]",
        "eval.few_shot_draws=2", "device=cpu", "precision=fp32", "channels_last=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _cell(root: Path, name: str, extra: list[str]) -> Path:
    return prepare_run_dir([*TINY, *extra, f"out={root / 'runs' / name}"])


def test_runs_of_one_seed_probe_the_untrained_network_once(tmp_path, monkeypatch):
    study = tmp_path / "study"
    (study / "runs").mkdir(parents=True)
    (study / "plan.csv").write_text("run_id\n")      # marks a study folder
    calls = []
    real = E.evaluate_at_init
    monkeypatch.setattr(E, "evaluate_at_init", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = _cell(study, "a", ["method=vicreg", "batch_size=32", "seed=0"])
    b = _cell(study, "b", ["method=simclr", "batch_size=64", "seed=0"])      # same backbone at init
    c = _cell(study, "c", ["method=vicreg", "batch_size=32", "seed=1"])      # another backbone
    res = [run_cell(d) for d in (a, b, c)]
    assert len(calls) == 2 and len(list((study / E.INIT_CACHE_DIR).glob("*.json"))) == 2
    ia, ib, ic = (json.loads((d / "init_eval.json").read_text()) for d in (a, b, c))
    assert ia == ib and ia != ic
    assert res[0]["init_linear_top1"] == res[1]["init_linear_top1"] and "init_few_shot" in res[1]
    # the shared probe is exactly what the run computes alone (outside a study: no cache)
    alone = prepare_run_dir([*TINY, "method=simclr", "batch_size=64", "seed=0", f"out={tmp_path / 'alone'}"])
    run_cell(alone)
    assert json.loads((alone / "init_eval.json").read_text()) == ib and len(calls) == 3


def test_an_unreadable_cache_entry_is_computed_again(tmp_path, monkeypatch):
    study = tmp_path / "study"
    (study / "runs").mkdir(parents=True)
    (study / "plan.csv").write_text("run_id\n")
    a = _cell(study, "a", ["method=vicreg", "batch_size=32", "seed=0"])
    run_cell(a)
    (entry,) = (study / E.INIT_CACHE_DIR).glob("*.json")
    entry.write_bytes(b"\xff not json")
    b = _cell(study, "b", ["method=simclr", "batch_size=32", "seed=0"])
    run_cell(b)
    assert json.loads((b / "init_eval.json").read_text()) == json.loads((a / "init_eval.json").read_text())
    assert json.loads(entry.read_text()) == json.loads((a / "init_eval.json").read_text())
