"""Cell state, derived on every call from the run files, jobs.jsonl and the scheduler (never stored).

States (``bsstudy.layout.Status``): planned (never submitted) · pending · running · preempted
(requeued/pending after training started, or PREEMPTED in sacct; or a local job that ``submit`` stopped on
Ctrl-C/SIGTERM, which the next submit resumes) · done · diverged · failed (result.json
says so, or the job ended without one) · unknown (the scheduler could not be asked).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io import read_jsonl
from ..locks import run_is_training
from ..layout import (ACTIVE, FINISHED_BAD, RESULT_FILE, RESULT_STATUSES, STATUS_ORDER, TERMINAL, Status,
                      RunPaths, StudyPaths, read_result, result_error_line)
from ..layout import study_paths as study_paths  # noqa: PLC0414 - re-export until every caller uses layout

# The job has left the scheduler: its files (result.json or its absence) say how it went. Not a Status.
_ENDED = "ended"
_P, _R = Status.PENDING, Status.RUNNING
# sacct/squeue states -> ours.
_SLURM: dict[str, str] = {
    "PENDING": _P, "CONFIGURING": _P, "REQUEUED": _P, "REQUEUE_HOLD": _P, "REQUEUE_FED": _P,
    "RESV_DEL_HOLD": _P, "SUSPENDED": _P, "SPECIAL_EXIT": _P,
    "RUNNING": _R, "COMPLETING": _R, "RESIZING": _R, "STAGE_OUT": _R, "SIGNALING": _R,
    "PREEMPTED": Status.PREEMPTED,
    "COMPLETED": _ENDED, "FAILED": _ENDED, "CANCELLED": _ENDED, "TIMEOUT": _ENDED, "NODE_FAIL": _ENDED,
    "OUT_OF_MEMORY": _ENDED, "BOOT_FAIL": _ENDED, "DEADLINE": _ENDED, "REVOKED": _ENDED,
}


@dataclass
class CellState:
    """What status shows for one cell."""

    run_id: str
    method: str
    batch_size: int
    epochs: int
    seed: int
    state: Status = Status.PLANNED
    job_id: str | None = None
    cluster: str | None = None
    epoch: int | None = None          # last epoch in metrics.jsonl
    error: str | None = None          # first line of the error (failed cells)
    log: str | None = None            # submitit stderr log of the latest job
    scheduler_state: str | None = None
    interrupted: bool = False         # a local submit stopped its job (Ctrl-C/SIGTERM): resumable

    def to_dict(self) -> dict:
        """JSON form (``status --json``)."""
        return {k: getattr(self, k) for k in ("run_id", "method", "batch_size", "epochs", "seed", "state",
                                              "job_id", "cluster", "epoch", "error", "log", "scheduler_state")}


def read_plan(study_dir: Path) -> list[dict]:
    """Rows of plan.csv (strings), in plan order."""
    with open(study_paths(study_dir).plan, newline="") as f:
        return list(csv.DictReader(f))


def latest_jobs(study_dir: Path) -> dict[str, dict]:
    """run_id -> the latest jobs.jsonl line for it."""
    last: dict[str, dict] = {}
    for row in read_jsonl(StudyPaths(Path(study_dir)).jobs):
        if "run_id" in row:
            last[row["run_id"]] = row
    return last


def _expand_array(jid: str) -> list[str]:
    """'12_[0-2,5%2]' -> ['12_0', '12_1', '12_2', '12_5']; plain ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", jid)
    if not m:
        return [jid]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out += [f"{m.group(1)}_{i}" for i in range(int(a), int(b) + 1)]
        elif part:
            out.append(f"{m.group(1)}_{part}")
    return out


def slurm_states(job_ids: list[str]) -> dict[str, str] | None:
    """Scheduler state (SLURM names) of job ids: squeue for live jobs, sacct for the rest; None if unreachable."""
    if not job_ids:
        return {}
    if not shutil.which("squeue") or not shutil.which("sacct"):
        return None
    wanted = set(job_ids)
    bases = sorted({j.split("_")[0] for j in job_ids})
    states: dict[str, str] = {}
    try:
        # -r: one line per array task, so pending tasks are not folded into '12_[1-3]'.
        q = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)],
                           capture_output=True, text=True, timeout=30)
        # squeue fails with 'Invalid job id' once every listed job has left the queue: not an error.
        for line in q.stdout.splitlines():
            jid, _, st = line.strip().partition("|")
            for j in _expand_array(jid):
                if j in wanted:
                    states[j] = st
        rest = [j for j in job_ids if j not in states]
        if rest:
            a = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j",
                                ",".join(sorted({j.split("_")[0] for j in rest}))],
                               capture_output=True, text=True, timeout=30)
            if a.returncode != 0:
                return None
            for line in a.stdout.splitlines():
                jid, _, st = line.strip().partition("|")
                st = st.split()[0] if st else st  # "CANCELLED by 0" -> CANCELLED
                for j in _expand_array(jid):
                    if j in wanted and j not in states:
                        states[j] = st
    except (OSError, subprocess.TimeoutExpired):
        return None
    return states


def local_alive(pid: str) -> bool:
    """A local submitit job (job id = pid of its process) is still running."""
    try:
        p = int(str(pid).split("_")[0])
        stat = Path(f"/proc/{p}/stat").read_text()
        cmd = Path(f"/proc/{p}/cmdline").read_bytes()
    except (ValueError, OSError):
        return False
    # pid reuse: the process must be a submitit job, and not a zombie
    return b"submitit" in cmd and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _last_epoch(metrics: Path) -> int | None:
    rows = read_jsonl(metrics)
    eps = [r["epoch"] for r in rows if isinstance(r.get("epoch"), int)]
    return max(eps) if eps else None


def log_path(submitit_dir: Path, job_id: str) -> Path:
    """submitit's stderr file of a job (task 0)."""
    return Path(submitit_dir) / f"{job_id}_0_log.err"


_EXC = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*|[\w.]+Error)$")


def error_line(result: dict | None, log: Path | None) -> str | None:
    """First line of a cell's error: result.json's (``layout.result_error_line``), else the last exception
    line of the log."""
    line = result_error_line(result)
    if line:
        return line
    if log is not None and log.exists():
        lines = log.read_text(errors="replace").splitlines()
        for line in reversed(lines):
            s = line.strip()
            if _EXC.match(s) and not s.startswith("submitit"):
                return s
        # no exception line: the scheduler's own message (e.g. CANCELLED, TIMEOUT)
        for line in reversed(lines):
            if "slurmstepd" in line or "CANCELLED" in line:
                return line.strip()
    return None


def _unreadable_dir(run: RunPaths) -> str | None:
    """'PATH: cannot read (Permission denied)' for a run directory, or one of its files, that this user
    cannot read (chmod 000, another owner); None when everything present reads."""
    try:
        names = set(os.listdir(run.dir))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{run.dir}: cannot read ({exc.strerror or type(exc).__name__})"
    for f in (run.config, run.metrics, run.result):
        if f.name in names:
            try:
                with open(f, "rb") as fh:
                    fh.read(1)
            except OSError as exc:
                return f"{f}: cannot read ({exc.strerror or type(exc).__name__})"
    return None


def _bad_result(path: Path, result: dict | None) -> str | None:
    """Why a result.json that exists does not count (non-UTF-8, not JSON, ``[]``/``null``, an unknown
    status), in one line naming it; None when it is absent or fine. Without this, status would say the job
    "ended without result.json" while the file is there."""
    if result is None:
        try:
            read_result(path, strict=True)
        except UserError as exc:
            return str(exc)
        return None
    if result.get("status") not in RESULT_STATUSES:
        return f"{path}: status {result.get('status')!r} is not one of {', '.join(RESULT_STATUSES)}"
    return None


def cell_states(study_dir: Path, query_scheduler: bool = True) -> list[CellState]:
    """The state of every planned cell (see module doc)."""
    paths = study_paths(study_dir)
    plan = read_plan(study_dir)
    jobs = latest_jobs(study_dir)
    sched: dict[str, str] | None = {}
    slurm_ids = [j["job_id"] for r, j in jobs.items() if j.get("cluster") == "slurm"]
    if query_scheduler and slurm_ids:
        sched = slurm_states(slurm_ids)
    out = []
    for row in plan:
        rid = row["run_id"]
        run = paths.run(rid)
        cs = CellState(rid, row["method"], int(row["batch_size"]), int(row["epochs"]), int(row["seed"]))
        cs.error = _unreadable_dir(run)
        if cs.error:  # nothing in it can be trusted or resubmitted until its permissions are fixed
            cs.state = Status.UNREADABLE
            out.append(cs)
            continue
        cs.epoch = _last_epoch(run.metrics)
        job = jobs.get(rid)
        if job:
            cs.job_id, cs.cluster = str(job["job_id"]), job.get("cluster")
            cs.log = str(log_path(paths.submitit, cs.job_id))
        result = read_result(run.result)  # None when absent or unreadable (a torn write)
        live = None
        if job and cs.cluster == "slurm":
            st = None if sched is None else sched.get(cs.job_id)
            cs.scheduler_state = st
            live = Status.UNKNOWN if sched is None else _SLURM.get(st or "", _ENDED if st else Status.UNKNOWN)
        elif job and cs.cluster == "local":
            live = Status.RUNNING if local_alive(cs.job_id) else _ENDED
        elif job:  # debug executor runs in-process: over when submit returned
            live = _ENDED
        terminal = bool(result) and result.get("status") in TERMINAL
        if live in ACTIVE:
            # a running job after a failed result.json (retry) is the truth; so is a requeued one
            cs.state = Status.PREEMPTED if live == Status.PENDING and cs.epoch is not None else Status(live)
        elif not terminal and run_is_training(run.dir):
            # a trainer holds the run lock (bsstudy/locks.py): whatever started it, the cell is running
            cs.state = Status.RUNNING
        elif job and job.get("event") == "interrupted" and not terminal and live == _ENDED:
            cs.state, cs.interrupted = Status.PREEMPTED, True
        elif result and result.get("status") in RESULT_STATUSES:
            cs.state = Status(result["status"])
        elif live == Status.UNKNOWN:
            cs.state = Status.UNKNOWN
        elif job:
            cs.state = Status.FAILED  # the job ended without writing result.json (killed, OOM, timeout)
        if cs.state == Status.FAILED:
            cs.error = _bad_result(run.result, result) or error_line(result, Path(cs.log) if cs.log else None) or (
                f"job ended ({cs.scheduler_state}) without {RESULT_FILE}" if cs.scheduler_state else
                f"job ended without {RESULT_FILE}")
        out.append(cs)
    return out


def counts(states: list[CellState]) -> dict[Status, int]:
    """Cells per state, in ``STATUS_ORDER``."""
    c: dict[Status, int] = {k: 0 for k in STATUS_ORDER}
    for s in states:
        c[s.state] = c.get(s.state, 0) + 1
    return c


__all__ = ["CellState", "cell_states", "counts", "slurm_states", "read_plan", "latest_jobs", "study_paths",
           "error_line", "log_path", "ACTIVE", "FINISHED_BAD"]
