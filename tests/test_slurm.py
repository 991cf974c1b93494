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
