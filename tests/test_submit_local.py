"""plan -> submit --cluster local -> status with the real trainer on tiny Fashion-MNIST cells (no cluster)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bsstudy import locks
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


@pytest.mark.parametrize("content,why", [(b'{"status": "done", "run_id": "\xff\xfe"}', "UnicodeDecodeError"),
                                         (b"[]", "got list"), (b"null", "got NoneType"),
                                         (b'{"status": "weird"}', "status 'weird' is not one of done")])
def test_status_names_an_unreadable_result_json(tmp_path, capsys, content, why):
    """A result.json that is there but does not count: the cell is failed and status says why, naming the
    file (not "job ended without result.json")."""
    grid = {"method": ["vicreg"], "batch_size": [8], "epochs": [1], "seed": [0]}
    res = tmp_path / "results"
    assert main(["plan", str(tiny_sweep(tmp_path, "bad", grid)), "--results", str(res)]) == 0
    study = res / "bad"
    rid = next((study / "runs").iterdir()).name
    (study / "jobs.jsonl").write_text(json.dumps({"run_id": rid, "job_id": "2147483646", "cluster": "local",
                                                  "time": "2026-01-01T00:00:00+00:00"}) + "\n")  # ended
    (study / "runs" / rid / "result.json").write_bytes(content)
    st = status_json(study, capsys)
    cell = st["cells"][0]
    assert cell["state"] == "failed" and cell["error"].startswith(str(study / "runs" / rid / "result.json"))
    assert why in cell["error"] and "\n" not in cell["error"], cell["error"]


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


def test_submit_refuses_when_the_data_moved_since_plan(tmp_path, capsys):
    """The data preflight runs again at submit (issue 16): data gone since plan -> one line naming the
    path, exit 2, nothing submitted or written, also for a --dry-run preview (local and slurm)."""
    from bsstudy.sweep import preflight

    data = tmp_path / "fm"
    data.mkdir()
    for f in preflight.FMNIST_FILES:
        (data / f"{f}.gz").write_bytes(b"x")  # enough for the preflight (present and readable)
    grid = {"method": ["vicreg"], "batch_size": [8], "epochs": [1], "seed": [0, 1]}
    sweep = tiny_sweep(tmp_path, "moved", grid)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res), f"dataset.root={data}"]) == 0
    study = res / "moved"
    def files() -> list[str]:  # the submit lock file (empty, left by every submit) aside
        return sorted(str(p.relative_to(study)) for p in study.rglob("*") if p.name != ".submit.lock")

    before = files()
    assert main(["submit", str(study), "--cluster", "slurm", "--dry-run"]) == 0  # data there: a preview
    moved = tmp_path / "fm-moved"
    data.rename(moved)
    for args in (["--cluster", "local"], ["--cluster", "local", "--dry-run"], ["--cluster", "slurm", "--dry-run"],
                 ["--cluster", "local", "--no-wait"]):
        capsys.readouterr()
        assert main(["submit", str(study), *args]) == 2, args
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and not out, (args, out, err)
        assert err.startswith("bsstudy submit: error: dataset 'fashion_mnist': not found or unreadable "
                              f"(looked in {data})"), err
        assert "nothing submitted (2 cell(s) need it" in err and "dataset.root" in err, err
        assert files() == before, args
    moved.rename(data)
    st = status_json(study, capsys)
    assert [c["state"] for c in st["cells"]] == ["planned", "planned"]
    assert main(["submit", str(study), "--cluster", "local", "--dry-run"]) == 0


@pytest.mark.parametrize("edit,needle", [(("epochs: 1", "epochs: 0"), "epochs: 0 must be an integer >= 1"),
                                         (("seed: 0", "seed: 7"), "the config was changed after planning")])
def test_submit_refuses_a_hand_edited_config(tmp_path, capsys, edit, needle):
    """A config.yaml edited after plan is refused by submit (one line naming it, nothing submitted), not
    only later by the trainer inside a submitted job."""
    grid = {"method": ["vicreg"], "batch_size": [8], "epochs": [1], "seed": [0]}
    res = tmp_path / "results"
    assert main(["plan", str(tiny_sweep(tmp_path, "edited", grid)), "--results", str(res)]) == 0
    study = res / "edited"
    cfg = next((study / "runs").iterdir()) / "config.yaml"
    text = cfg.read_text()
    assert f"\n{edit[0]}\n" in text
    cfg.write_text(text.replace(f"\n{edit[0]}\n", f"\n{edit[1]}\n"))
    for args in (["--cluster", "local"], ["--cluster", "slurm", "--dry-run"]):
        capsys.readouterr()
        assert main(["submit", str(study), *args]) == 2
        out, err = capsys.readouterr()
        assert not out and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"bsstudy submit: error: {cfg}: ") and needle in err, err
        assert err.strip().endswith("; nothing submitted"), err
        assert not (study / "jobs.jsonl").exists() and not (study / "submitit").exists()


# ─────────────── interrupts and locks (issue 13 item 10, issue 16 item 3) ───────────────
REPO = Path(__file__).resolve().parents[1]


def spawn(*args: str) -> "subprocess.Popen[str]":
    """``bsstudy ARGS`` of this checkout in its own session (a terminal's process group)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "bsstudy.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def slow_study(tmp: Path, name: str, epochs: int = 3) -> Path:
    grid = {"method": ["vicreg"], "batch_size": [32], "epochs": [epochs], "seed": [0],
            "debug.sleep_per_step": [0.4]}  # 4 steps x 0.4 s: ~2 s per epoch
    res = tmp / "results"
    assert main(["plan", str(tiny_sweep(tmp, name, grid)), "--results", str(res)]) == 0
    return res / name


def wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def epochs_of(run: Path) -> list[int]:
    return [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")]


def procs_of(folder: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names this submitit folder."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if str(folder).encode() in (d / "cmdline").read_bytes() and \
                    (d / "stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
                out.append(int(d.name))
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_ctrl_c_marks_preempted_and_resubmit_resumes(tmp_path, capsys):
    study = slow_study(tmp_path, "intr")
    run = next((study / "runs").iterdir())
    p = spawn("submit", str(study), "--cluster", "local")
    try:
        wait_for(lambda: epochs_of(run) and (run / "checkpoints" / "last.pt").exists(), 120, "epoch 1")
        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("submit: interrupted (SIGINT): stopped 1 running cell(s)")
    assert procs_of(study / "submitit") == []
    st = status_json(study, capsys)
    assert [c["state"] for c in st["cells"]] == ["preempted"], st
    assert not (run / "result.json").exists() or json.loads((run / "result.json").read_text())["status"] != "done"

    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "local"]) == 0  # no --retry-failed needed
    assert "(1 interrupted, resumed)" in capsys.readouterr().out
    st = status_json(study, capsys)
    assert [c["state"] for c in st["cells"]] == ["done"], st
    assert epochs_of(run) == [1, 2, 3]
    log = Path(st["cells"][0]["log"]).read_text()
    assert "resumed from epoch" in log


@pytest.mark.slow
def test_sigterm_of_submit_leaves_no_orphan(tmp_path, capsys):
    study = slow_study(tmp_path, "term", epochs=4)
    run = next((study / "runs").iterdir())
    p = spawn("submit", str(study), "--cluster", "local")
    try:
        wait_for(lambda: epochs_of(run), 120, "epoch 1")
        assert len(procs_of(study / "submitit")) >= 2  # the submitit controller and the training task
        p.send_signal(signal.SIGTERM)  # the submit process only, as `kill PID` does
        _, err = p.communicate(timeout=60)
        assert p.returncode == 143, err
        assert "Traceback" not in err and "interrupted (SIGTERM)" in err, err
        assert procs_of(study / "submitit") == []
    finally:
        for pid in procs_of(study / "submitit"):  # an orphan of a failing run must not keep training
            os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert [c["state"] for c in status_json(study, capsys)["cells"]] == ["preempted"]


def test_submit_refuses_while_another_holds_the_study_lock(tmp_path, capsys):
    study = planned_tiny(tmp_path, "lk")
    with locks.study_submit_lock(study):
        capsys.readouterr()
        assert main(["submit", str(study), "--cluster", "local"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another bsstudy submit holds" in err[0] and ".submit.lock" in err[0], err
        assert not (study / "jobs.jsonl").exists()
        assert main(["submit", str(study), "--cluster", "local", "--dry-run"]) == 0  # a preview reads only
    assert not locks.is_locked(study / locks.SUBMIT_LOCK)


def test_a_held_run_lock_stops_a_second_trainer_and_shows_running(tmp_path, capsys):
    from bsstudy.train import run_cell

    study = planned_tiny(tmp_path, "rl")
    run = next((study / "runs").iterdir())
    with locks.run_lock(run):
        with pytest.raises(locks.LockHeld, match=r"\.lock: another trainer is running this run directory"):
            run_cell(run)
        assert not (run / "metrics.jsonl").exists() and not (run / "result.json").exists()
        assert [c["state"] for c in status_json(study, capsys)["cells"]] == ["running"]
    assert [c["state"] for c in status_json(study, capsys)["cells"]] == ["planned"]


def planned_tiny(tmp: Path, name: str) -> Path:
    grid = {"method": ["vicreg"], "batch_size": [32], "epochs": [1], "seed": [0]}
    res = tmp / "results"
    assert main(["plan", str(tiny_sweep(tmp, name, grid)), "--results", str(res)]) == 0
    return res / name


@pytest.mark.slow
def test_two_concurrent_local_submits_train_each_cell_once(tmp_path, capsys):
    """Two `submit` of one study at the same moment: one runs, the other stops with one line; a
    `bsstudy train --run-dir` of the running cell is refused (the run lock) and status says running."""
    # 6 epochs (~12 s of training) so the third process, which pays a full interpreter + torch start-up,
    # still finds the winner training on an idle machine
    study = slow_study(tmp_path, "twice", epochs=6)
    run = next((study / "runs").iterdir())
    a, b = spawn("submit", str(study), "--cluster", "local"), spawn("submit", str(study), "--cluster", "local")
    try:
        loser = wait_for(lambda: next((p for p in (a, b) if p.poll() is not None), None), 120, "one submit")
        winner = b if loser is a else a
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert len(err.strip().splitlines()) == 1 and "another bsstudy submit holds" in err, err
        wait_for(lambda: epochs_of(run), 120, "epoch 1")
        third = spawn("train", "--run-dir", str(run))
        _, err3 = third.communicate(timeout=120)
        assert third.returncode == 2, err3
        assert len(err3.strip().splitlines()) == 1 and "another trainer is running this run directory" in err3
        assert [c["state"] for c in status_json(study, capsys)["cells"]] == ["running"]
        winner.communicate(timeout=180)
        assert winner.returncode == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert epochs_of(run) == [1, 2, 3, 4, 5, 6]
    assert len(read_jsonl(study / "jobs.jsonl")) == 1
    assert [c["state"] for c in status_json(study, capsys)["cells"]] == ["done"]


@pytest.mark.slow
def test_no_wait_dispatcher_keeps_the_study_lock(tmp_path, capsys):
    """The detached dispatcher inherits the submit's lock: no second submit slips in while it runs."""
    study = slow_study(tmp_path, "nowait", epochs=2)
    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "local", "--no-wait"]) == 0
    pid = int(re.search(r"dispatcher started \(pid (\d+)", capsys.readouterr().out).group(1))
    try:
        assert main(["submit", str(study), "--cluster", "local"]) == 2
        err = capsys.readouterr().err
        assert "another bsstudy submit holds" in err and f"pid {pid} " in err, err
        wait_for(lambda: status_json(study, capsys)["counts"]["done"] == 1, 180, "the dispatched cell")
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                 Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z", 60, "dispatcher exit")
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGTERM)
    assert not locks.is_locked(study / locks.SUBMIT_LOCK)
    assert main(["submit", str(study), "--cluster", "local"]) == 0
    assert "nothing to submit (1 done skipped)" in capsys.readouterr().out
