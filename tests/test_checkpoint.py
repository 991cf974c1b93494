"""Checkpoint safety: weights_only loading (a crafted pickle runs nothing), RNG states as plain data,
corrupt checkpoints set aside instead of a silent restart, temp files of killed saves removed."""
from __future__ import annotations

import json
import os
import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bsstudy.errors import UserError
from bsstudy.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


class _Payload:
    """Unpickling this calls os.mkdir(marker): the stand-in for os.system in a crafted checkpoint."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _write_malicious(path: Path, marker: Path, fmt: str) -> None:
    obj = {"epoch": 5, "model": {}, "payload": _Payload(marker)}
    if fmt == "torch.save":
        torch.save(obj, path)
    else:  # a bare pickle (torch.load reads those too, as its legacy format)
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=int(fmt.split()[-1]))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, fmt):
    ck = tmp_path / "checkpoints"
    save_checkpoint(ck, {"epoch": 1})
    save_checkpoint(ck, {"epoch": 2})  # a good previous.pt: the crafted last.pt must not be skipped silently
    marker = tmp_path / "pwned"
    _write_malicious(ck / "last.pt", marker, fmt)
    with pytest.raises(UserError) as e, warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        load_checkpoint(ck)
    msg = str(e.value)
    assert not marker.exists(), "the payload ran"
    assert [str(w.message) for w in shown] == []  # torch's pickle-protocol warning would precede the line
    assert str(ck / "last.pt") in msg and "\n" not in msg and "refused" in msg
    assert (ck / "last.pt").exists() and not (ck / "last.pt.corrupt").exists()  # left for the user to inspect


@pytest.mark.slow
def test_resume_with_crafted_checkpoint_runs_nothing(tmp_path):
    """`bsstudy train` resuming a run whose last.pt was replaced: the run fails with the one-line refusal."""
    from bsstudy.train import run_cell
    from bsstudy.train.cli import prepare_run_dir

    run_dir = prepare_run_dir(["batch_size=32", "epochs=1", "dataset.train_subset=64", "model.width=4",
                               "model.feature_dim=16", "method.projector.hidden_dim=16",
                               "method.projector.out_dim=16", f"out={tmp_path / 'run'}"])
    marker = tmp_path / "pwned"
    (run_dir / "checkpoints").mkdir()
    _write_malicious(run_dir / "checkpoints" / "last.pt", marker, "torch.save")
    with pytest.raises(UserError, match="refused"):
        run_cell(run_dir)
    assert not marker.exists()
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "failed" and "refused" in res["error"]


def test_rng_state_is_plain_data_and_round_trips(tmp_path):
    g = torch.Generator().manual_seed(7)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # a cached gaussian is part of numpy's state
    save_checkpoint(tmp_path, {"epoch": 1, "rng": rng_state({"augment": g})})
    want = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist(),
            torch.rand(3, generator=g).tolist())
    st = torch.load(tmp_path / "last.pt", weights_only=True)  # no numpy arrays, no globals to allow
    random.seed(9), np.random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    set_rng_state(st["rng"], {"augment": g})
    got = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist(),
           torch.rand(3, generator=g).tolist())
    assert got == want


def test_checkpoint_with_numpy_rng_state_of_earlier_versions_still_resumes(tmp_path):
    """Runs in flight when bsstudy is upgraded: their checkpoints hold numpy's state as an ndarray."""
    np.random.seed(4)
    old = {"epoch": 3, "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                               "torch": torch.get_rng_state(), "cuda": None, "generators": {}}}
    want = np.random.random_sample(4).tolist()
    torch.save(old, tmp_path / "last.pt")
    st = load_checkpoint(tmp_path)
    assert st["epoch"] == 3
    np.random.seed(0)
    set_rng_state(st["rng"], {})
    assert np.random.random_sample(4).tolist() == want


def test_unreadable_last_is_set_aside_so_previous_survives_the_next_save(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 1})
    save_checkpoint(tmp_path, {"epoch": 2})
    (tmp_path / "last.pt").write_bytes(b"\x00garbage, not a zip file")
    with pytest.warns(RuntimeWarning, match=r"last\.pt is unreadable .*moved to last\.pt\.corrupt.*previous\.pt "
                                            r"\(epoch 1\)"):
        assert load_checkpoint(tmp_path)["epoch"] == 1
    assert (tmp_path / "last.pt.corrupt").read_bytes().startswith(b"\x00garbage")
    save_checkpoint(tmp_path, {"epoch": 2})
    # without setting it aside, this save rotates the garbage onto previous.pt: one good checkpoint left
    assert torch.load(tmp_path / "previous.pt", weights_only=True)["epoch"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(tmp_path)["epoch"] == 2


@pytest.mark.parametrize("files", [("last.pt", "previous.pt"), ("last.pt",)])
def test_no_readable_checkpoint_is_an_error_until_restart(tmp_path, files):
    blobs = {"last.pt": b"\x00garbage", "previous.pt": torch.zeros(2).numpy().tobytes()}
    for f in files:
        (tmp_path / f).write_bytes(blobs[f])
    for _ in range(2):  # and again on the next start: never a silent restart from epoch 0
        with pytest.raises(UserError) as e:
            load_checkpoint(tmp_path)
        msg = str(e.value)
        assert str(tmp_path) in msg and "--restart" in msg and "\n" not in msg
        assert all(f in msg for f in files)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    with pytest.warns(RuntimeWarning, match="starting over from epoch 0"):
        assert load_checkpoint(tmp_path, restart=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f + ".corrupt" for f in files)
    assert load_checkpoint(tmp_path) is None  # the restarted run is a fresh one


def test_foreign_file_counts_as_unreadable(tmp_path):
    torch.save({"model": {}}, tmp_path / "last.pt")  # loads, but is not a bsstudy checkpoint
    with pytest.raises(UserError, match="not a bsstudy checkpoint"):
        load_checkpoint(tmp_path)


def test_temp_files_of_killed_saves_are_removed_on_start(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 1})
    stale = [tmp_path / ".last.pt.k2j3h4.tmp", tmp_path / ".last.pt.zz9.tmp"]
    for s in stale:
        s.write_bytes(b"\x00" * 4096)  # a half-written checkpoint
    keep = tmp_path / ".notes.tmp"
    keep.write_text("not ours")
    assert load_checkpoint(tmp_path)["epoch"] == 1
    assert not any(s.exists() for s in stale) and keep.exists()
    assert load_checkpoint(tmp_path / "missing") is None  # nothing to clean, nothing to load
