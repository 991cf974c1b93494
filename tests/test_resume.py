"""Checkpoint/resume: kill -9 mid-epoch and restart gives the same run; corrupt last.pt falls back."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bsstudy.io import read_jsonl
from bsstudy.train import run_cell
from bsstudy.train.checkpoint import load_checkpoint, save_checkpoint
from bsstudy.train.cli import prepare_run_dir

TINY = ["batch_size=32", "epochs=3", "seed=3", "deterministic=true", "dataset.train_subset=256",
        "model.width=4", "model.feature_dim=16", "method.projector.hidden_dim=32", "method.projector.out_dim=32",
        "eval.probe_weight_decays=[0.0,0.001]", "eval.probe_max_iter=50", "channels_last=false"]


# Per-method settings small enough for TINY (256 images, 32-d embeddings).
METHOD_ARGS = {
    "vicreg_unbiased": [],
    "simsiam": ["method=simsiam", "method.predictor.hidden_dim=8"],
    "byol": ["method=byol", "method.predictor.hidden_dim=16"],
    "mocov2": ["method=mocov2", "method.loss.queue_size=80"],   # wraps around within an epoch (B=32)
    "sogclr": ["method=sogclr"],
}
TERMS = {"vicreg_unbiased": ("invariance", "variance", "covariance"), "simsiam": ("neg_cosine",),
         "byol": ("normalized_mse",), "mocov2": ("info_nce",), "sogclr": ("sogclr",)}


def _make(tmp: Path, name: str, extra: list[str] = ()) -> Path:
    return prepare_run_dir([*TINY, *extra, f"out={tmp / name}"])


def _same_state(a, b, where: str) -> None:
    """Nested dicts of tensors / numbers (checkpoint entries) equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_state(a[k], b[k], f"{where}.{k}")
    else:
        assert a == b, where


def _final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_kill9_mid_epoch_then_resume_equals_uninterrupted(tmp_path, one_thread, method):
    """Every method's state (model, optimizer, RNG; momentum target; MoCo queue; SogCLR u) is in the
    checkpoint: a run killed mid-epoch 2 and resumed equals the uninterrupted one bit for bit."""
    ref_dir = _make(tmp_path, "ref", ["debug.sleep_per_step=0.0", *METHOD_ARGS[method]])
    ref = run_cell(ref_dir)
    assert ref["status"] == "done"

    run_dir = _make(tmp_path, "killed", ["debug.sleep_per_step=0.15", *METHOD_ARGS[method]])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bsstudy.cli", "train", "--run-dir", str(run_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(read_jsonl(run_dir / "metrics.jsonl")) < 1:   # epoch 1 done and checkpointed
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "subprocess made no progress"
            time.sleep(0.05)
        time.sleep(0.5)                                          # ~3 of epoch 2's 8 steps
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "result.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 1

    res = run_cell(run_dir)                                      # resumes from epoch 1
    assert res["status"] == "done"
    m_ref, m_res = read_jsonl(ref_dir / "metrics.jsonl"), read_jsonl(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in m_res] == [1, 2, 3]
    for a, b in zip(m_ref, m_res):
        for k in ("loss", *TERMS[method], "lr", "emb_std"):
            assert a[k] == b[k], (a["epoch"], k, a[k], b[k])
    pa, pb = _final_params(ref_dir), _final_params(run_dir)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    ca, cb = (torch.load(d / "checkpoints" / "last.pt", weights_only=False) for d in (ref_dir, run_dir))
    for entry in ("target", "objective"):
        _same_state(ca[entry], cb[entry], entry)
    if method in ("byol", "mocov2"):
        assert ca["target"] is not None
    if method in ("mocov2", "sogclr"):
        assert ca["objective"]
    assert res["linear_top1"] == ref["linear_top1"] and res["knn_top1"] == ref["knn_top1"]
    assert res["final_loss"] == ref["final_loss"]

    # a finished run returns its result without training again
    mtime = (run_dir / "result.json").stat().st_mtime_ns
    again = run_cell(run_dir)
    assert again == json.loads((run_dir / "result.json").read_text())
    assert (run_dir / "result.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_corrupt_last_falls_back_to_previous(tmp_path, one_thread):
    run_dir = _make(tmp_path, "fail3", ["debug.fail_at_epoch=3"])
    with pytest.raises(RuntimeError, match="fail_at_epoch"):
        run_cell(run_dir)
    first = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in first] == [1, 2]
    ck = run_dir / "checkpoints"
    assert torch.load(ck / "previous.pt", weights_only=False)["epoch"] == 1
    (ck / "last.pt").write_bytes(b"\x00garbage, not a zip file")

    # the run resumes from previous.pt (epoch 1), recomputes epoch 2 identically, then fails again at 3;
    # the unreadable last.pt is kept as last.pt.corrupt, so the save of epoch 2 keeps previous.pt (epoch 1)
    with pytest.warns(RuntimeWarning, match="unreadable"), pytest.raises(RuntimeError, match="fail_at_epoch"):
        run_cell(run_dir)
    assert (ck / "last.pt.corrupt").read_bytes().startswith(b"\x00garbage")
    assert load_checkpoint(ck)["epoch"] == 2 and torch.load(ck / "previous.pt")["epoch"] == 1
    again = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in again] == [1, 2]
    assert again[1]["loss"] == first[1]["loss"]
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "failed" and "fail_at_epoch" in res["error"]


def test_save_rotates_last_to_previous(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 1})
    save_checkpoint(tmp_path, {"epoch": 2})
    assert torch.load(tmp_path / "previous.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path)["epoch"] == 2
    assert load_checkpoint(tmp_path / "none") is None


def test_checkpoint_state_round_trip_and_old_scaler_entry(tmp_path, one_thread):
    """A checkpoint restores every counter and RNG stream; one of an older version (with its always-None
    ``scaler`` entry) still loads; a different config is refused."""
    from bsstudy.config import load_run_config
    from bsstudy.errors import UserError
    from bsstudy.train.resume import checkpoint_state, restore
    from bsstudy.train.setup import Dist, build_run

    cfg = load_run_config(_make(tmp_path, "state") / "config.yaml")
    run = build_run(cfg, Dist())
    run.progress.epoch, run.progress.train_seconds, run.progress.images_seen, run.progress.last_loss = 2, 1.5, 64, 3.0
    st = checkpoint_state(run)
    assert "scaler" not in st
    expected = run.aug_gen.get_state()
    run.aug_gen.manual_seed(123)
    other = build_run(cfg, Dist())
    restore(other, {**st, "scaler": None}, tmp_path)
    assert (other.progress.epoch, other.progress.train_seconds, other.progress.images_seen,
            other.progress.last_loss) == (2, 1.5, 64, 3.0)
    assert torch.equal(other.aug_gen.get_state(), expected)
    with pytest.raises(UserError, match="different config"):
        restore(other, {**st, "config_hash": "x"}, tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``bsstudy ARGS`` as a user runs it (one torch thread, as the in-process reference)."""
    return subprocess.run([sys.executable, "-m", "bsstudy.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


@pytest.mark.slow
def test_both_checkpoints_corrupt_stop_the_cli_until_restart(tmp_path, one_thread):
    """issue 16 item 10, end to end: `bsstudy train` on a run whose last.pt and previous.pt are both damaged
    stops with one line naming both files and the --restart command; `--restart` sets them aside and trains
    from epoch 0 to the same result as the uninterrupted run."""
    run_dir = _make(tmp_path, "both", ["epochs=2"])
    ref = run_cell(run_dir)
    assert ref["status"] == "done"
    ck = run_dir / "checkpoints"
    (run_dir / "result.json").unlink()          # as if killed during the final evaluation
    (ck / "last.pt").write_bytes(b"\x00garbage, not a zip file")
    (ck / "previous.pt").write_bytes((ck / "previous.pt").read_bytes()[:100])   # truncated

    for _ in range(2):  # the same on every start: never a silent restart
        p = _cli("train", "--run-dir", str(run_dir))
        assert p.returncode == 2, p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1, p.stderr
        assert err[0].startswith("bsstudy train: error: both checkpoints in ") and str(ck) in err[0]
        assert "last.pt: not a zip archive" in err[0] and "previous.pt: " in err[0]
        assert err[0].endswith(f"bsstudy train --run-dir {run_dir} --restart"), err[0]
        assert sorted(f.name for f in ck.iterdir()) == ["last.pt", "previous.pt"]
        res = json.loads((run_dir / "result.json").read_text())
        assert res["status"] == "failed" and "--restart" in res["error"].splitlines()[0]

    p = _cli("train", "--run-dir", str(run_dir), "--restart")
    assert p.returncode == 0, p.stderr
    warned = [ln for ln in p.stderr.splitlines() if "starting over" in ln]   # one line, like the error
    assert len(warned) == 1 and warned[0].startswith("bsstudy train: warning: both checkpoints in "), p.stderr
    assert warned[0].endswith("starting over from epoch 0 (restart)"), warned
    assert sorted(f.name for f in ck.iterdir()) == ["last.pt", "last.pt.corrupt", "previous.pt",
                                                   "previous.pt.corrupt"]
    assert [m["epoch"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "done" and json.loads(p.stdout.splitlines()[-1])["status"] == "done"
    for k in ("final_loss", "linear_top1", "knn_top1"):
        assert res[k] == ref[k], k
