"""plan -> submit --cluster slurm -> status on the project's REAL single-node SLURM cluster (ci/slurm/up.sh).

Real trainer, tiny Fashion-MNIST cells. Run by ci/run_tests.sh with BSSTUDY_SLURM=1 (tests/conftest.py).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from bsstudy.cli import main
from bsstudy.io import read_jsonl
from bsstudy.sweep.state import cell_states

from test_submit_local import status_json, tiny_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def sacct_job_ids(name: str) -> list[str]:
    """Every job SLURM accounting knows with this job name (submit names jobs bsstudy-<study>)."""
    time.sleep(2.0)  # records reach slurmdbd asynchronously (ci/slurm/NOTES.md, gotcha 11)
    p = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "2000-01-01", "--name", name],
                       capture_output=True, text=True, check=True)
    return sorted(set(p.stdout.split()))


def wait_until(pred, timeout: float, what: str, every: float = 0.5):
    """Poll ``pred`` (which returns a truthy value when satisfied) at most ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_array_runs_to_the_end_and_resubmit_is_noop(tmp_path, capsys):
    """MUST SHOW 1 and 4: a 4-cell job array, all done with result.json; a second submit adds no job."""
    grid = {"method": ["simclr", "vicreg", "vicreg_unbiased"], "batch_size": [32], "epochs": [2], "seed": [0]}
    sweep = tiny_sweep(tmp_path, "arr", grid, include=[{"method": "vicreg", "batch_size": 16, "epochs": 2,
                                                        "seed": 0}])
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    study = res / "arr"
    assert main(["submit", str(study), "--cluster", "slurm", "--wait"]) == 0
    st = status_json(study, capsys)
    assert st["counts"]["done"] == 4 and len(st["cells"]) == 4, st
    arrays = {c["job_id"].split("_")[0] for c in st["cells"]}
    assert len(arrays) == 1, st  # one array job, tasks _0.._3
    array = arrays.pop()
    assert sorted(c["job_id"] for c in st["cells"]) == [f"{array}_{i}" for i in range(4)]
    for c in st["cells"]:
        assert c["cluster"] == "slurm" and c["epoch"] == 2
        r = json.loads((study / "runs" / c["run_id"] / "result.json").read_text())
        assert r["status"] == "done" and r["linear_top1"] is not None

    before = sacct_job_ids("bsstudy-arr")
    assert set(before) >= {c["job_id"] for c in st["cells"]}
    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "slurm"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert sacct_job_ids("bsstudy-arr") == before
    assert len(read_jsonl(study / "jobs.jsonl")) == 4


def test_failure_and_preemption(tmp_path, capsys):
    """MUST SHOW 2 and 3 in one array: cell F raises at epoch 2 and is shown failed with its error line;
    cell P gets USR2 (preemption) after its first checkpoint, is requeued, resumes at epoch > 0, trains
    every epoch exactly once and ends done."""
    # P: 4 epochs of >= 4 s each (4 steps x 1 s sleep); F: raises when epoch 2 starts.
    grid = {"method": ["vicreg_unbiased"], "batch_size": [32], "epochs": [4], "seed": [0],
            "debug.sleep_per_step": [1.0]}
    # timeout_min >= 50: submitit reads an early USR2 as preemption, not as a timeout (NOTES gotcha 3)
    sweep = tiny_sweep(tmp_path, "chaos", grid, include=[
        {"method": "simclr", "batch_size": 32, "epochs": 3, "seed": 0, "debug.fail_at_epoch": 2}],
        slurm={"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 60})
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    study = res / "chaos"
    cells = {c.method: c for c in cell_states(study)}
    p_id, f_id = cells["vicreg_unbiased"].run_id, cells["simclr"].run_id
    assert main(["submit", str(study), "--cluster", "slurm"]) == 0
    jobs = {j["run_id"]: j["job_id"] for j in read_jsonl(study / "jobs.jsonl")}
    p_dir = study / "runs" / p_id

    def first_checkpoint():
        eps = [r["epoch"] for r in read_jsonl(p_dir / "metrics.jsonl")]
        return eps and (p_dir / "checkpoints").is_dir() and any((p_dir / "checkpoints").iterdir())

    wait_until(first_checkpoint, 180, "P's first epoch and checkpoint")
    t_sig = time.monotonic()
    subprocess.run(["scancel", "--signal=USR2", jobs[p_id]], check=True)

    seen = set()

    def finished():
        st = {c.run_id: c for c in cell_states(study)}
        seen.add(st[p_id].state)
        return all(c.state in ("done", "failed", "diverged") for c in st.values()) and st
    st = wait_until(finished, 240, "both cells to end", every=1.0)
    assert st[p_id].state == "done", st[p_id]
    assert st[f_id].state == "failed", st[f_id]
    assert "debug.fail_at_epoch" in st[f_id].error and st[f_id].error.startswith("RuntimeError")
    assert Path(st[f_id].log).exists()

    # resumed from a checkpoint with epoch > 0, every epoch trained exactly once
    log = Path(st[p_id].log).read_text()
    resumed = [int(x) for x in re.findall(r"resumed from epoch (\d+)", log)]
    assert resumed and resumed[0] >= 1, log[-2000:]
    assert "Caught signal SIGUSR2" in log and "preempted" in log, log[-2000:]
    assert [r["epoch"] for r in read_jsonl(p_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    dup = subprocess.run(["sacct", "--duplicates", "-X", "-n", "-P", "-o", "JobID,State", "-j", jobs[p_id]],
                         capture_output=True, text=True, check=True).stdout
    assert "REQUEUED" in dup and "COMPLETED" in dup, dup
    assert seen & {"preempted", "pending", "running"}
    assert time.monotonic() - t_sig < 240

    # the status table: failed cell with its error line and log path; counts at the bottom
    capsys.readouterr()
    assert main(["status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "error: RuntimeError: debug.fail_at_epoch" in out and "log:" in out
    assert out.strip().splitlines()[-1].startswith("counts: done 1, failed 1")


def test_two_task_cell_runs_as_two_ranks(tmp_path, capsys):
    """Issue 7: a cell with distributed.gpus_per_node=2 is one SLURM job with 2 tasks on one node; the tasks
    join one gloo process group (2 ranks), rank 0 writes result.json, and the cell ends done."""
    grid = {"method": ["vicreg_unbiased"], "batch_size": [32], "epochs": [2], "seed": [0]}
    sweep = tiny_sweep(tmp_path, "ddp", grid)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res), "distributed.gpus_per_node=2"]) == 0
    study = res / "ddp"
    assert main(["submit", str(study), "--cluster", "slurm", "--wait"]) == 0
    st = status_json(study, capsys)
    assert st["counts"]["done"] == 1, st
    cell = st["cells"][0]
    job = cell["job_id"].split("_")[0]
    time.sleep(2.0)  # accounting is asynchronous
    p = subprocess.run(["sacct", "-n", "-P", "-o", "JobID,NTasks,State", "-j", job],
                       capture_output=True, text=True, check=True)
    assert re.search(r"^\S+\|2\|COMPLETED$", p.stdout, re.M), p.stdout  # the step ran 2 tasks
    run = study / "runs" / cell["run_id"]
    ck = __import__("torch").load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ck["world_size"] == 2 and len(ck["augment_per_rank"]) == 2
    assert json.loads((run / "result.json").read_text())["status"] == "done"


def test_setup_lines_run_and_time_limit_in_slurm_format(tmp_path, capsys):
    """Issue 13 must-show 2: `setup:` lines run in the job (seen in its log), `timeout_min: "1:00:00"`
    reaches SLURM as 01:00:00, `slurm.python` is the interpreter the job runs, `wckey: null` drops
    submitit's --wckey, and the script sbatch got is the one `submit --dry-run` printed."""
    import sys

    from test_submit_slurm_script import scripts_of

    grid = {"method": ["vicreg"], "batch_size": [32], "epochs": [1], "seed": [0]}
    sweep = tiny_sweep(tmp_path, "setup", grid, slurm={
        "partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "timeout_min": "1:00:00", "wckey": None,
        "python": sys.executable, "additional_parameters": {"comment": "bsstudy-ci"},
        "setup": ["echo bsstudy-setup-ran on $(hostname) job $SLURM_JOB_ID", "export BSSTUDY_SETUP_MARK=42"]})
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    study = res / "setup"
    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "slurm", "--dry-run"]) == 0
    shown = scripts_of(capsys.readouterr().out)
    assert len(shown) == 1
    assert main(["submit", str(study), "--cluster", "slurm", "--wait"]) == 0
    st = status_json(study, capsys)
    assert st["counts"]["done"] == 1, st
    job = st["cells"][0]["job_id"]
    sent = (study / "submitit" / f"{job}_submission.sh").read_text()
    assert sent.rstrip() == shown[0].rstrip()
    assert "--wckey" not in sent and "#SBATCH --comment=bsstudy-ci" in sent
    out_log = (study / "submitit" / f"{job}_0_log.out").read_text()
    assert "bsstudy-setup-ran on" in out_log and f"job {job}" in out_log, out_log[-2000:]
    time.sleep(2.0)
    p = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,Timelimit,Comment,State", "-j", job],
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip().split("|")[1] == "01:00:00", p.stdout


def test_concurrent_submits_and_a_second_trainer_on_slurm(tmp_path, capsys):
    """Issue 16 item 3 on the real cluster: two `submit` at once -> one array, the other stops with one
    line; a second trainer of the running cell (its own sbatch job) is refused by the run lock and never
    trains; status says running meanwhile; every epoch is trained once."""
    import os
    import sys

    from test_submit_local import REPO

    grid = {"method": ["vicreg"], "batch_size": [32], "epochs": [8], "seed": [0], "debug.sleep_per_step": [1.0]}
    name = f"conc{int(time.time())}"  # job names are how sacct finds this test's jobs: unique per run
    sweep = tiny_sweep(tmp_path, name, grid, slurm={"partition": "debug", "cpus_per_task": 1, "mem_gb": 1,
                                                       "timeout_min": 60})
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    study = res / name
    run = next((study / "runs").iterdir())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "bsstudy.cli", "submit", str(study), "--cluster", "slurm"]
    a, b = (subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2))
    outs = [p.communicate(timeout=120) + (p.returncode,) for p in (a, b)]
    rcs = sorted(o[2] for o in outs)
    assert rcs == [0, 2], outs
    err = next(o[1] for o in outs if o[2] == 2).strip().splitlines()
    assert len(err) == 1 and "another bsstudy submit holds" in err[0], err
    ids = wait_until(lambda: sacct_job_ids(f"bsstudy-{name}"), 60, "the job in accounting")
    assert len(ids) == 1, ids
    assert len(read_jsonl(study / "jobs.jsonl")) == 1

    wait_until(lambda: read_jsonl(run / "metrics.jsonl"), 180, "epoch 1 of the cell")
    dup_log = tmp_path / "dup.log"
    sb = subprocess.run(["sbatch", "--parsable", "-p", "debug", "-c", "1", "--mem=1G", "-o", str(dup_log),
                         f"--chdir={REPO}", "--wrap",
                         f"PYTHONPATH={REPO} srun {sys.executable} -m bsstudy.cli train --run-dir {run}; "
                         "echo exit=$?"], capture_output=True, text=True, check=True)
    dup_job = sb.stdout.strip().split(";")[0]
    seen = set()

    def dup_ended():
        seen.add(cell_states(study)[0].state)
        return dup_log.exists() and "exit=" in dup_log.read_text()
    wait_until(dup_ended, 120, f"the duplicate trainer job {dup_job}", every=1.0)
    text = dup_log.read_text()
    assert "exit=2" in text and "another trainer is running this run directory" in text, text
    assert "Traceback" not in text and text.count("another trainer is running") == 1, text
    assert seen == {"running"}, seen  # the refused job never made the cell look failed

    def finished():
        st = cell_states(study)[0]
        return st.state in ("done", "failed") and st
    st = wait_until(finished, 240, "the cell to end", every=1.0)
    assert st.state == "done", st
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(1, 9))
