"""plan -> submit --cluster local -> status with the real trainer on tiny Fashion-MNIST cells (no cluster)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bsstudy.cli import main
from bsstudy.io import read_jsonl
from bsstudy.sweep.state import _expand_array, error_line

# Tiny real cells: a few seconds of training each, evaluation on a small subset.
TINY_BASE = {
    "model.width": 4, "model.feature_dim": 16, "dataset.train_subset": 128, "eval.max_train_samples": 300,
    "eval.probe_max_iter": 20, "eval.probe_weight_decays": [0.0], "device": "cpu", "precision": "fp32",
    "channels_last": False, "method.projector": {"hidden_dim": 32, "out_dim": 16},
}


def tiny_sweep(tmp: Path, study: str, grid: dict, **extra) -> Path:
    data = {"study": study, "base": dict(TINY_BASE), "grid": grid,
            "slurm": {"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10}, **extra}
    p = tmp / f"{study}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def status_json(study_dir: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["status", str(study_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_local_plan_submit_status(tmp_path, capsys):
    grid = {"method": ["simclr", "vicreg_unbiased"], "batch_size": [32], "epochs": [2], "seed": [0]}
    sweep = tiny_sweep(tmp_path, "loc", grid)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    study = res / "loc"
    st = status_json(study, capsys)
    assert [c["state"] for c in st["cells"]] == ["planned", "planned"]

    assert main(["submit", str(study), "--cluster", "local", "--dry-run"]) == 0
    assert not (study / "jobs.jsonl").exists() and not (study / "submitit").exists()

    assert main(["submit", str(study), "--cluster", "local"]) == 0  # waits (local default)
    st = status_json(study, capsys)
    assert st["counts"]["done"] == 2, st
    for c in st["cells"]:
        assert c["cluster"] == "local" and c["epoch"] == 2
        result = json.loads((study / "runs" / c["run_id"] / "result.json").read_text())
        assert result["status"] == "done" and result["run_id"] == c["run_id"]
        assert 0.0 <= result["linear_top1"] <= 1.0
    jobs = read_jsonl(study / "jobs.jsonl")
    assert sorted(j["run_id"] for j in jobs) == sorted(c["run_id"] for c in st["cells"])

    # idempotent: nothing left to submit
    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "local"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert len(read_jsonl(study / "jobs.jsonl")) == 2

    # a failed cell is resubmitted only with --retry-failed (dry run: nothing written)
    rid = st["cells"][0]["run_id"]
    rp = study / "runs" / rid / "result.json"
    res_d = json.loads(rp.read_text())
    rp.write_text(json.dumps(dict(res_d, status="failed", error="RuntimeError: boom\ntraceback...")))
    st = status_json(study, capsys)
    failed = [c for c in st["cells"] if c["state"] == "failed"]
    assert [c["run_id"] for c in failed] == [rid] and failed[0]["error"] == "RuntimeError: boom"
    assert main(["submit", str(study), "--cluster", "local", "--dry-run"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert main(["submit", str(study), "--cluster", "local", "--dry-run", "--retry-failed"]) == 0
    out = capsys.readouterr().out
    assert "1 cell(s) to local" in out and rid in out
    assert rp.exists() and len(read_jsonl(study / "jobs.jsonl")) == 2


def test_status_of_unplanned_dir_is_one_line_error(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plan.csv" in err[0]


def test_expand_array_and_error_line(tmp_path):
    assert _expand_array("12_[0-2,5%2]") == ["12_0", "12_1", "12_2", "12_5"]
    assert _expand_array("12_3") == ["12_3"]
    log = tmp_path / "x_0_log.err"
    log.write_text("Traceback (most recent call last):\n  File x\nRuntimeError: debug.fail_at_epoch: at 2\n"
                   "submitit ERROR (2026) - Submitted job triggered an exception\n")
    assert error_line(None, log) == "RuntimeError: debug.fail_at_epoch: at 2"
    assert error_line({"error": "ValueError: x\nmore"}, log) == "ValueError: x"
    # the result's line comes from the one reader (layout.result_error_line): a traceback's last line
    assert error_line({"traceback": "Traceback\n  File y\nKeyError: 'k'"}, log) == "KeyError: 'k'"
    assert error_line({"status": "failed"}, log) == "RuntimeError: debug.fail_at_epoch: at 2"


def test_dry_run_resources_come_from_the_stored_sweep(tmp_path, capsys):
    """defaults < sweep slurm < per_method.<m>.slurm (Sweep.resources); nodes/tasks from each config."""
    grid = {"method": ["simclr", "vicreg"], "batch_size": [8], "epochs": [1], "seed": [0]}
    sweep = tiny_sweep(tmp_path, "res", grid, per_method={"vicreg": {"slurm": {"mem_gb": 3}}})
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    capsys.readouterr()
    assert main(["submit", str(res / "res"), "--cluster", "local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cell(s) to local in 2 resource group(s); skipped: none" in out, out
    groups = [ln.strip() for ln in out.splitlines() if ln.startswith("  1 cell(s): ")]
    common = "array_parallelism=64 cpus_per_task=1 gpus_per_node=0"
    tail = "nodes=1 partition=debug tasks_per_node=1 timeout_min=10"
    assert groups == [f"1 cell(s): {common} mem_gb=1 {tail}", f"1 cell(s): {common} mem_gb=3 {tail}"], groups
    assert not (res / "res" / "jobs.jsonl").exists()
    (res / "res" / "sweep.yaml").unlink()
    assert main(["submit", str(res / "res"), "--cluster", "local", "--dry-run"]) == 2
    assert "sweep.yaml: missing (re-run `bsstudy plan`" in capsys.readouterr().err
