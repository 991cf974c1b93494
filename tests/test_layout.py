"""bsstudy.layout (the study/run contract) and bsstudy.registry (the method registry): readers of
result.json and error lines, statuses in JSON, paths, YAML, and that registry, objective classes, config
groups and the derived lists agree."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bsstudy import config as bc
from bsstudy import layout, registry
from bsstudy.errors import UserError
from bsstudy.layout import (ACTIVE, FINISHED_BAD, RESULT_STATUSES, STATUS_ORDER, TERMINAL, RunPaths, Status,
                            StudyPaths, read_config_block, read_result, result_error_line)


# ─────────────────────────────── result.json ───────────────────────────────
def test_read_result_absent_invalid_not_an_object(tmp_path):
    p = tmp_path / "result.json"
    assert read_result(p) is None and read_result(p, strict=True) is None  # absent: not an error
    p.write_text('{"status": "done", "run_id": "x"}')
    assert read_result(p) == {"status": "done", "run_id": "x"}
    p.write_text('{"status": "do')  # torn write
    assert read_result(p) is None
    with pytest.raises(UserError, match=r"result\.json: unreadable result \(JSONDecodeError"):
        read_result(p, strict=True)
    p.write_text('["done"]')
    assert read_result(p) is None
    with pytest.raises(UserError, match="not a result record.*got list"):
        read_result(p, strict=True)
    p.write_bytes(b"\xff\xfe{")
    assert read_result(p) is None
    with pytest.raises(UserError) as e:
        read_result(p, strict=True)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_write_result_is_finite_json_with_every_field(tmp_path):
    rec = layout.new_result(run_id="r", status=Status.DONE, final_loss=float("nan"))
    assert set(layout.RESULT_FIELDS) <= set(rec) and rec["schema"] == layout.RESULT_SCHEMA
    layout.write_result(tmp_path / "result.json", rec)
    back = read_result(tmp_path / "result.json", strict=True)
    assert back["final_loss"] is None and back["status"] == "done" and Status(back["status"]) is Status.DONE
    with pytest.raises(KeyError, match="lienar_top1"):
        layout.new_result(lienar_top1=0.5)


@pytest.mark.parametrize("rec,line", [
    (None, None),
    ({}, None),
    ({"status": "done"}, None),
    ({"status": "failed", "error": "RuntimeError: boom\nTraceback (most recent call last):\n  x"},
     "RuntimeError: boom"),
    ({"status": "failed", "error": "\n  ValueError: lead  \n"}, "ValueError: lead"),
    ({"status": "failed", "error": "   ", "message": "from message"}, "from message"),  # blank error skipped
    ({"status": "failed", "error_message": "E1", "exception": "E2"}, "E1"),
    ({"status": "failed", "traceback": "Traceback\n  File x\nKeyError: 'k'\n\n"}, "KeyError: 'k'"),  # last line
    ({"status": "failed", "error": 3}, None),  # not text: no line
    ({"status": "diverged", "diverged_at_epoch": 4}, "diverged at epoch 4"),
    ({"status": "diverged", "diverged_at_epoch": 4, "error": "loss is nan at epoch 4"}, "loss is nan at epoch 4"),
])
def test_result_error_line(rec, line):
    assert result_error_line(rec) == line


# ─────────────────────────────── statuses ───────────────────────────────
def test_status_json_round_trip_and_groups():
    for s in Status:
        text = json.dumps({"state": s, s: 1})
        assert text == f'{{"state": "{s.value}", "{s.value}": 1}}'
        back = json.loads(text)
        assert Status(back["state"]) is s and back[s] == 1  # a plain str key finds the member and back
        assert f"{s}" == s.value and str(s) == s.value
    assert STATUS_ORDER == tuple(Status) and len(set(STATUS_ORDER)) == len(Status)
    for group in (ACTIVE, RESULT_STATUSES, TERMINAL, FINISHED_BAD):
        assert set(group) <= set(Status)
    assert set(TERMINAL) <= set(RESULT_STATUSES) and set(FINISHED_BAD) <= set(RESULT_STATUSES)
    assert not set(ACTIVE) & set(RESULT_STATUSES)


def test_cell_state_json_uses_status_names(tmp_path):
    from bsstudy.sweep.state import CellState, counts

    cells = [CellState("a", "vicreg", 8, 1, 0), CellState("b", "vicreg", 8, 1, 1, state=Status.FAILED)]
    d = json.loads(json.dumps({"cells": [c.to_dict() for c in cells], "counts": counts(cells)}))
    assert [c["state"] for c in d["cells"]] == ["planned", "failed"]
    assert list(d["counts"]) == [s.value for s in STATUS_ORDER]
    assert d["counts"]["planned"] == 1 and d["counts"]["failed"] == 1 and sum(d["counts"].values()) == 2


# ─────────────────────────────── paths ───────────────────────────────
def test_run_and_study_paths(tmp_path):
    study = StudyPaths(tmp_path / "s")
    run = study.run("vicreg-b8-e1-s0-deadbeef")
    assert run == RunPaths(tmp_path / "s" / "runs" / "vicreg-b8-e1-s0-deadbeef")
    assert run.run_id == "vicreg-b8-e1-s0-deadbeef"
    assert (run.config.name, run.result.name, run.metrics.name, run.init_eval.name, run.checkpoints.name) == (
        "config.yaml", "result.json", "metrics.jsonl", "init_eval.json", "checkpoints")
    assert run.retired(2) == run.dir / "result.retired2.json"
    assert (study.plan.name, study.sweep.name, study.jobs.name) == ("plan.csv", "sweep.yaml", "jobs.jsonl")
    assert study.bias_csv == tmp_path / "s" / "bias" / "bias.csv"
    assert study.run_dirs() == []  # no runs/ yet
    for rid in ("b", "a"):
        study.run(rid).dir.mkdir(parents=True)
    (study.runs / "stray.txt").write_text("")
    assert [r.run_id for r in study.run_dirs()] == ["a", "b"]
    with pytest.raises(UserError, match="no plan.csv"):
        layout.study_paths(study.dir)
    study.plan.write_text("run_id\n")
    assert layout.study_paths(study.dir) == study
    from bsstudy.sweep import state

    assert state.study_paths is layout.study_paths  # kept importable for callers not yet on layout


# ─────────────────────────────── YAML ───────────────────────────────
def test_yaml_round_trip_and_one_line_errors(tmp_path):
    obj = {"b": 1, "a": {"x": [1, 2], "y": None, "z": 1.0e-4}, "s": "x" * 300}
    text = layout.yaml_dump(obj)
    assert layout.yaml_load(text) == obj and text.index("b:") < text.index("a:")  # key order kept
    assert "\n" not in layout.yaml_dump({"s": "x" * 300}).rstrip("\n")  # never folded
    assert layout.yaml_load("") == {}
    p = tmp_path / "bad.yaml"
    p.write_text("a: [1,\nb: 2\n")
    with pytest.raises(UserError) as e:
        layout.yaml_load_file(p)
    msg = str(e.value)
    assert str(p) in msg and "invalid YAML (line" in msg and "\n" not in msg
    with pytest.raises(UserError, match="missing"):
        layout.yaml_load_file(tmp_path / "nope.yaml")


def test_read_config_block_equals_full_parse(tmp_path):
    from bsstudy.sweep.plan import config_text

    cfg = bc.cell_config(["method=vicreg_unbiased", "method.loss.variance=c4", "batch_size=8", "out=/x"])
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(cfg, resolve=True)
    p = tmp_path / "config.yaml"
    p.write_text(config_text(d))
    cache: dict = {}
    got = read_config_block(p, "method", cache)
    assert got == {"method": d["method"]} and len(cache) == 1
    assert read_config_block(p, "method", cache) is got  # parsed once per distinct block
    # unexpected layouts fall back to a full parse
    p.write_text("method: {name: simclr, loss: {temperature: 0.5}}\nseed: 0\n")
    assert read_config_block(p, "method", cache) == {"method": {"name": "simclr", "loss": {"temperature": 0.5}}}
    p.write_text("seed: 0\n")
    assert read_config_block(p, "method", cache) == {"method": {}}


# ─────────────────────────────── registry ───────────────────────────────
def test_registry_objectives_and_config_groups_agree():
    from bsstudy.objectives import OBJECTIVES

    names = registry.method_names()
    assert list(OBJECTIVES) == list(names)
    assert set(names) == set(bc.group_options("method"))
    assert bc.METHODS == names
    for name in names:
        spec = registry.method_spec(name)
        cls = OBJECTIVES[name]
        assert cls.name == name and cls.min_rows == spec.min_rows == bc.MIN_BATCH[name]
        group = layout.yaml_load_file(Path(bc.__file__).parent / "conf" / "method" / f"{name}.yaml")
        assert group["name"] == name
        for param, choices in spec.choices.items():
            assert group["loss"][param] in choices  # the shipped default is a valid choice
        for param in spec.variant_params:
            assert param in group["loss"]
    with pytest.raises(UserError, match="unknown method 'nope'"):
        registry.method_spec("nope")


@pytest.mark.parametrize("param", sorted(registry.METHODS["vicreg_unbiased"].choices))
def test_config_validates_every_choice_param(param):
    choices = registry.METHODS["vicreg_unbiased"].choices[param]
    for value in choices:
        bc.cell_config(["method=vicreg_unbiased", f"method.loss.{param}={value}", "batch_size=8"])
    with pytest.raises(UserError) as e:
        bc.cell_config(["method=vicreg_unbiased", f"method.loss.{param}=bogus", "batch_size=8"], source="t")
    assert str(e.value) == f"t: method.loss.{param}: 'bogus' (choose from {', '.join(choices)})"


def test_min_batch_from_registry():
    with pytest.raises(UserError, match=r"batch_size: 2 is invalid for vicreg_unbiased \(needs an integer >= 4\)"):
        bc.cell_config(["method=vicreg_unbiased", "batch_size=2"])
    bc.cell_config(["method=vicreg", "batch_size=2"])


def test_variant_and_labels():
    assert registry.variant("vicreg_unbiased", {"variance": "c4", "cov_target": "offdiag"}) == "c4,offdiag"
    assert registry.variant("vicreg_unbiased", {}) == "?,?"
    assert registry.variant("vicreg", {"variance": "c4"}) == "" and registry.variant(None, None) == ""
    label = registry.method_label("vicreg_unbiased", "c4,offdiag")
    assert label == "vicreg_unbiased[c4,offdiag]" and registry.split_label(label) == ("vicreg_unbiased", "c4,offdiag")
    assert registry.method_label("simclr") == "simclr" and registry.split_label("simclr") == ("simclr", "")


def test_train_help_top_keys_are_the_root_config_keys():
    from bsstudy.train.cli import top_keys

    cfg = bc.compose([])
    keys = top_keys()
    heads = [k.split(".")[0] for k in keys]
    assert set(heads) == set(cfg) - set(bc.CONF_GROUPS)
    for k in keys:
        head, _, rest = k.partition(".")
        if rest == "*":
            assert len(cfg[head]) > 1
        elif rest:
            assert list(cfg[head]) == [rest]
        else:
            assert not hasattr(cfg[head], "keys")
