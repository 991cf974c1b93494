"""Progress output (terminal bar, non-terminal lines, evaluation phases), no UserWarning in a run,
TensorBoard event files (read back as `tensorboard --logdir results/<study>` does, no duplicate steps after
a resume), and result.json's git_dirty."""
from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from bsstudy.io import read_jsonl
from bsstudy.provenance import git_state
from bsstudy.train import run_cell
from bsstudy.train.cli import prepare_run_dir
from bsstudy.train.hooks import Hook, ProgressBar, ProgressLog, RunShape, format_seconds, progress_every

TINY = ["batch_size=32", "epochs=2", "dataset.train_subset=128", "model.width=4", "model.feature_dim=16",
        "method.projector.hidden_dim=32", "method.projector.out_dim=32", "eval.probe_weight_decays=[0.0]",
        "eval.probe_max_iter=30", "device=cpu"]
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _make(d: Path, extra: list[str] = ()) -> Path:
    return prepare_run_dir([*TINY, *extra, f"out={d}"])


def _scalars(study: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{run: {tag: [(step, value)]}} of every run under ``study``, loaded the way `tensorboard --logdir
    study` loads them (one run per directory holding event files, orphaned events purged)."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(study))
    mux.Reload()
    return {run: {tag: [(e.step, e.value) for e in mux.Scalars(run, tag)] for tag in tags["scalars"]}
            for run, tags in mux.Runs().items()}


def test_progress_every_defaults_to_a_tenth_of_the_run():
    assert progress_every(None, 1000) == 100 and progress_every(None, 3) == 1 and progress_every(7, 1000) == 7
    assert [format_seconds(s) for s in (None, 12.4, 245, 3725)] == ["?", "12s", "4m05s", "1h02m"]


@pytest.mark.slow
def test_terminal_run_shows_one_bar_and_no_user_warning(tmp_path):
    """`bsstudy train` with stderr on a terminal (a pty, 120 columns) and every UserWarning an error: the run
    ends done and draws one bar over the whole run (steps 0..8 of 8, both epochs). Before the hooks got a
    detached loss, the bar's float(loss) raised torch's 'Converting a tensor with requires_grad=True to a
    scalar' UserWarning at every interactive run."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-W", "error::UserWarning", "-m", "bsstudy", "train", *TINY,
                             f"out={tmp_path / 'run'}"], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:   # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    out, _ = proc.communicate(timeout=600)
    os.close(master)
    tty = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, tty[-3000:]
    assert "Warning" not in tty and json.loads(out.decode().strip().splitlines()[-1])["status"] == "done"
    frames = [f for f in tty.replace("\n", "\r").split("\r") if "step/s" in f or "?step" in f]
    assert frames and all(re.search(r"\d+/8 \[", f) for f in frames)          # one bar: 8 steps in all
    assert any("epoch 2/2" in f and "8/8" in f and "img/s" in f and "loss=" in f for f in frames)


@pytest.mark.slow
def test_non_terminal_run_logs_progress_lines_and_evaluation_phases(tmp_path, capsys):
    res = run_cell(_make(tmp_path / "run", ["log.progress_every=3", "log.tensorboard=false"]))
    assert res["status"] == "done"
    err = capsys.readouterr().err
    steps = re.findall(r"^\[run\] epoch (\d)/2 step (\d+)/8 \((\d+)%\) loss=[\d.]+ \d+ img/s eta (\S+)$", err,
                       re.M)
    # every 3 global steps across the epoch boundary, and the last step
    assert [(int(e), int(s), int(p)) for e, s, p, _ in steps] == [(1, 3, 38), (2, 6, 75), (2, 8, 100)]
    assert steps[-1][3] == "0s"
    for phase in ("extracting features (128 train, 10000 test images)", "linear probe (1 weight decays)",
                  "kNN (k=20)", "collapse diagnostics (128 images)"):
        assert f"[run] evaluation: {phase}" in err
    assert not (tmp_path / "run" / "tb").exists()   # log.tensorboard=false


@pytest.mark.slow
def test_progress_output_does_not_change_training(tmp_path, capsys):
    """A bar, a line every step and TensorBoard on: the same metrics (loss, terms, lr, collapse) as a run
    with none of them (progress hooks must not touch the RNG streams or tensors)."""
    shape = RunShape("a", 2, 4, 32)
    a = run_cell(_make(tmp_path / "a"), hooks=[ProgressBar(shape), ProgressLog(shape, 1)])
    b = run_cell(_make(tmp_path / "b", ["log.tensorboard=false", "log.progress_every=100"]))
    timing = {"seconds", "images_per_second"}
    rows = [[{k: v for k, v in r.items() if k not in timing} for r in read_jsonl(d / "metrics.jsonl")]
            for d in (tmp_path / "a", tmp_path / "b")]
    assert rows[0] == rows[1] and a["final_loss"] == b["final_loss"] and a["linear_top1"] == b["linear_top1"]


@pytest.mark.slow
def test_tensorboard_event_files_mirror_metrics_and_result(tmp_path):
    """tensorboard --logdir results/<study>: one run per cell (runs/<id>/tb), the metrics.jsonl scalars per
    epoch at its optimizer step, eval accuracies at step 0 (at init), every eval.every epoch and the end."""
    study = tmp_path / "study"
    d = _make(study / "runs" / "cell", ["eval.at_init=true", "eval.every=1"])
    res = run_cell(d)
    rows = read_jsonl(d / "metrics.jsonl")
    init = json.loads((d / "init_eval.json").read_text())
    runs = _scalars(study)
    assert list(runs) == [os.path.join("runs", "cell", "tb")]
    sc = runs[os.path.join("runs", "cell", "tb")]
    for key in ("loss", "lr", "invariance", "variance", "covariance", "images_per_second"):
        assert sc[f"train/{key}"] == [(r["step"], pytest.approx(r[key])) for r in rows], key
    for key in ("emb_std", "emb_min_std", "emb_effective_rank", "emb_avg_abs_corr"):
        assert sc[f"collapse/{key}"] == [(r["step"], pytest.approx(r[key])) for r in rows], key
    for key in ("linear_top1", "knn_top1"):
        assert sc[f"eval/{key}"] == [(0, pytest.approx(init[key])), (4, pytest.approx(rows[0][key])),
                                     (8, pytest.approx(res[key]))], key
    assert sc["eval_collapse/embeddings_effective_rank"] == [(8, pytest.approx(res["collapse"]["effective_rank"]))]
    assert sc["eval_collapse/backbone_min_std"] == [
        (0, pytest.approx(init["collapse_backbone"]["min_std"])), (8, pytest.approx(res["collapse_backbone"]["min_std"]))]


class _FailAt(Hook):
    """Raises when ``epoch`` starts (a killed job, without changing the config as debug.fail_at_epoch does)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_start(self, epoch: int, steps: int) -> None:
        if epoch == self.epoch:
            raise RuntimeError("killed")


@pytest.mark.slow
@pytest.mark.parametrize("fail_at,resumed_from", [(4, 2), (2, 0)])
def test_resumed_run_has_each_step_once_in_tensorboard(tmp_path, capsys, fail_at, resumed_from):
    """checkpoint.every=2: a run stopped at the start of epoch ``fail_at`` logged epochs its checkpoint does not
    hold (epoch 3, or epoch 1 when no checkpoint was written); the resumed run trains them again. TensorBoard
    shows each step once, with the values of the final metrics.jsonl."""
    study = tmp_path / "study"
    d = _make(study / "runs" / "cell", ["epochs=4", "checkpoint.every=2", "eval.at_init=true"])
    with pytest.raises(RuntimeError, match="killed"):
        run_cell(d, hooks=[_FailAt(fail_at)])
    assert len(list((d / "tb").iterdir())) == 1
    capsys.readouterr()
    res = run_cell(d)
    assert res["status"] == "done" and len(list((d / "tb").iterdir())) == 2
    assert ("resumed from epoch 2" in capsys.readouterr().err) == (resumed_from == 2)
    rows = read_jsonl(d / "metrics.jsonl")
    sc = _scalars(study)[os.path.join("runs", "cell", "tb")]
    assert sc["train/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in rows]
    assert [s for s, _ in sc["train/loss"]] == [4, 8, 12, 16]
    init = json.loads((d / "init_eval.json").read_text())
    assert sc["eval/linear_top1"] == [(0, pytest.approx(init["linear_top1"])), (16, pytest.approx(res["linear_top1"]))]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_git_state_reports_uncommitted_changes_to_tracked_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    commit, dirty = git_state(repo)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and dirty is False
    (repo / "new.txt").write_text("untracked\n")      # results/ and the like: not a change of the code
    assert git_state(repo) == (commit, False)
    for data in ("results/s/runs/r/result.json", "reports/s/report.md"):  # committed study records: data
        (repo / data).parent.mkdir(parents=True, exist_ok=True)
        (repo / data).write_text("{}\n")
    _git(repo, "add", "results", "reports")
    _git(repo, "commit", "-q", "-m", "records")
    commit = git_state(repo)[0]
    (repo / "results/s/runs/r/result.json").write_text('{"status": "done"}\n')
    (repo / "reports/s/report.md").write_text("new\n")
    assert git_state(repo) == (commit, False)
    (repo / "a.py").write_text("x = 2\n")
    assert git_state(repo) == (commit, True)
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_state(outside) == (None, None)


def test_result_records_git_dirty_next_to_git_commit(tmp_path):
    """result.json of a run (here one that fails at once) has git_dirty, the dirty flag of the source tree
    bsstudy ran from, as the report's provenance reads it."""
    d = _make(tmp_path / "run", ["debug.fail_at_epoch=1"])
    with pytest.raises(RuntimeError):
        run_cell(d)
    res = json.loads((d / "result.json").read_text())
    assert (res["git_commit"], res["git_dirty"]) == git_state()
    assert list(res).index("git_dirty") == list(res).index("git_commit") + 1
