"""Submission of a planned study through submitit: SLURM job arrays, or local processes.

Idempotent: the state of every cell is derived first (bsstudy.sweep.state); only ``planned`` cells
(and ``failed``/``diverged`` ones with ``--retry-failed``) are submitted. One jobs.jsonl line per cell
submission. Nothing here prompts, so it runs with no TTY.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import append_jsonl, atomic_write_text
from ..layout import ACTIVE, FINISHED_BAD, RunPaths, Status, StudyPaths, study_paths, yaml_load_file
from .spec import Sweep, load_sweep
from .state import CellState, cell_states, counts


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pick_cluster(cluster: str) -> str:
    """``auto`` -> slurm when sbatch is on PATH, else local (always explicit for submitit)."""
    if cluster == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if cluster not in ("slurm", "local", "debug"):
        raise UserError(f"--cluster: {cluster!r} (choose auto, slurm or local)")
    if cluster == "slurm" and not shutil.which("sbatch"):
        raise UserError("--cluster slurm: sbatch not found on PATH (is SLURM installed here?)")
    return cluster


def _stored_sweep(paths: StudyPaths) -> Sweep:
    """The checked sweep ``bsstudy plan`` stored in the study (its resources and study name)."""
    if not paths.sweep.exists():
        raise UserError(f"{paths.sweep}: missing (re-run `bsstudy plan` for this study)")
    return load_sweep(paths.sweep)


def cell_resources(sweep: Sweep, method: str, cfg: dict) -> dict[str, Any]:
    """SLURM resources of one cell: ``Sweep.resources(method)``; nodes and tasks from the cell's config."""
    r = sweep.resources(method)
    dist = cfg["distributed"]
    r["nodes"] = int(dist["nodes"])
    r["tasks_per_node"] = int(dist["gpus_per_node"])  # one rank per task (config: ranks per node)
    if r.get("gpus_per_node") and r["gpus_per_node"] < r["tasks_per_node"]:
        raise UserError(f"slurm.gpus_per_node: {r['gpus_per_node']} < distributed.gpus_per_node "
                        f"{r['tasks_per_node']} for {method} cells")
    return r


def executor_parameters(r: dict[str, Any], study: str) -> dict[str, Any]:
    """submitit AutoExecutor parameters of a resource dict (generic names + slurm_* ones)."""
    p: dict[str, Any] = {"name": f"bsstudy-{study}", "timeout_min": int(r["timeout_min"]),
                         "nodes": r["nodes"], "tasks_per_node": r["tasks_per_node"],
                         "cpus_per_task": int(r["cpus_per_task"]), "mem_gb": r["mem_gb"],
                         "slurm_array_parallelism": int(r["array_parallelism"])}
    if r.get("gpus_per_node"):
        p["gpus_per_node"] = int(r["gpus_per_node"])
    for k in ("partition", "account", "qos", "constraint", "signal_delay_s", "additional_parameters"):
        if r.get(k) not in (None, "", {}):
            p[f"slurm_{k}"] = r[k]
    return p


def _retire_result(run: RunPaths) -> None:
    """Keep a failed/diverged result aside (``RunPaths.retired(n)``) so the retried run can write its own."""
    if run.result.exists():
        n = 1
        while run.retired(n).exists():
            n += 1
        os.replace(run.result, run.retired(n))


def _record(paths: StudyPaths, rid: str, job_id: str, cluster: str) -> None:
    append_jsonl(paths.jobs, {"run_id": rid, "job_id": str(job_id), "cluster": cluster, "time": _now()})


def select(states: list[CellState], retry_failed: bool) -> tuple[list[CellState], dict[str, int]]:
    """Cells to submit, and why the others are skipped."""
    todo, skipped = [], {}
    for s in states:
        if s.state == Status.PLANNED or (retry_failed and s.state in FINISHED_BAD):
            todo.append(s)
        else:
            skipped[s.state] = skipped.get(s.state, 0) + 1
    return todo, skipped


def submit(study_dir: Path | str, cluster: str = "auto", retry_failed: bool = False, dry_run: bool = False,
           wait: bool | None = None, parallel: int | None = None, out=None) -> int:
    """Submit the cells that need it; returns the exit code (1 if waited for and some cell failed)."""
    out = out or sys.stdout
    study_dir = Path(study_dir)
    paths = study_paths(study_dir)
    cluster = pick_cluster(cluster)
    sweep = _stored_sweep(paths)
    study = sweep.study
    if cluster == "local":
        _refuse_if_dispatching(paths.submitit)
    states = cell_states(study_dir)
    todo, skipped = select(states, retry_failed)
    if Status.UNKNOWN in skipped:
        print(f"warning: {skipped[Status.UNKNOWN]} cell(s) have an unknown scheduler state (sacct/squeue "
              f"unreachable); not resubmitted", file=out)
    skip_txt = ", ".join(f"{n} {k}" for k, n in skipped.items()) or "none"
    if not todo:
        print(f"submit: nothing to submit ({skip_txt} skipped)", file=out)
        return _wait(study_dir, cluster, [], wait, out) if wait and cluster == "slurm" else 0
    groups: dict[tuple, list[tuple[CellState, dict]]] = {}
    for s in todo:
        cfg_p = paths.run(s.run_id).config
        if not cfg_p.exists():
            raise UserError(f"{cfg_p}: missing (re-run `bsstudy plan`)")
        r = cell_resources(sweep, s.method, yaml_load_file(cfg_p))
        key = tuple(sorted((k, repr(v)) for k, v in r.items()))
        groups.setdefault(key, []).append((s, r))
    print(f"submit: {len(todo)} cell(s) to {cluster} in {len(groups)} resource group(s); skipped: {skip_txt}",
          file=out)
    if dry_run:
        for members in groups.values():
            r = members[0][1]
            print(f"  {len(members)} cell(s): " + " ".join(f"{k}={v}" for k, v in sorted(r.items())), file=out)
            for s, _ in members:
                print(f"    {s.run_id}  ({s.state})", file=out)
        return 0
    import submitit

    folder = paths.submitit
    folder.mkdir(parents=True, exist_ok=True)
    if retry_failed:
        for s in todo:
            _retire_result(paths.run(s.run_id))
    if cluster == "local":
        if wait is False:
            return _detach_local(study_dir, parallel, out)
        return _run_local(study_dir, study, [s for m in groups.values() for s, _ in m], groups, parallel, out)
    if cluster == "debug":  # in-process, one after the other (debugging a cell; never behind a pipe)
        ex = submitit.AutoExecutor(folder=folder, cluster="debug")
        for s, _ in (x for m in groups.values() for x in m):
            job = ex.submit(_job(paths.run(s.run_id)))
            _record(paths, s.run_id, job.job_id, "debug")
            try:
                job.result()
            except Exception as exc:  # the cell's failure is in its result.json
                print(f"  {s.run_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}", file=out)
        return 0
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    submitted = []
    for members in groups.values():
        ex.update_parameters(**executor_parameters(members[0][1], study))
        try:
            with ex.batch():
                # torch threads = the CPUs SLURM gave the task (without cgroups torch would take all cores)
                jobs = [ex.submit(_job(paths.run(s.run_id), int(r["cpus_per_task"]))) for s, r in members]
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            raise UserError(f"sbatch failed: {msg[-1] if msg else type(exc).__name__}") from None
        for (s, _), job in zip(members, jobs):
            _record(paths, s.run_id, job.job_id, "slurm")
            submitted.append(s.run_id)
        print(f"  array {jobs[0].job_id.split('_')[0]}: {len(jobs)} cell(s)", file=out)
    if wait:
        return _wait(study_dir, "slurm", submitted, True, out)
    return 0


def _job(run: RunPaths, threads: int | None = None):
    from .job import CellJob

    return CellJob(str(run.dir.resolve()), threads)


def _wait(study_dir: Path, cluster: str, run_ids: list[str], wait: bool | None, out) -> int:
    """Poll cell states until no cell is pending/running/preempted; tqdm progress on finished cells."""
    from tqdm import tqdm

    states = cell_states(study_dir)
    watch = set(run_ids) or {s.run_id for s in states if s.state in ACTIVE}
    bar = tqdm(total=len(watch), desc="cells", unit="cell", file=sys.stderr, disable=not watch)
    while True:
        states = [s for s in cell_states(study_dir) if s.run_id in watch]
        finished = sum(s.state not in ACTIVE and s.state != Status.UNKNOWN for s in states)
        bar.n = finished
        bar.refresh()
        if finished == len(states):
            break
        time.sleep(2.0)
    bar.close()
    c = counts(states)
    print("submit: " + ", ".join(f"{n} {k}" for k, n in c.items() if n), file=out)
    return 1 if c[Status.FAILED] else 0


def _dispatch_pid(folder: Path) -> Path:
    return folder / "dispatch.pid"


def _refuse_if_dispatching(folder: Path) -> None:
    p = _dispatch_pid(folder)
    try:
        pid = int(p.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return
    if pid != os.getpid():
        raise UserError(f"a local dispatcher (pid {pid}) is already running this study; "
                        f"see `bsstudy status` (its log: {folder / 'dispatch.log'})")


def _detach_local(study_dir: Path, parallel: int | None, out) -> int:
    """--no-wait locally: a detached `bsstudy submit --cluster local` keeps at most `parallel` cells running."""
    folder = study_paths(study_dir).submitit
    cmd = [sys.executable, "-m", "bsstudy.cli", "submit", str(study_dir), "--cluster", "local"]
    if parallel:
        cmd += ["--parallel", str(parallel)]
    with open(folder / "dispatch.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    print(f"submit: local dispatcher started (pid {proc.pid}, log {folder / 'dispatch.log'}); "
          f"follow with `bsstudy status {study_dir}`", file=out)
    return 0


def _run_local(study_dir: Path, study: str, cells: list[CellState], groups: dict, parallel: int | None,
               out) -> int:
    """Run cells as local processes, at most ``parallel`` at once, torch threads split between them."""
    import submitit
    from tqdm import tqdm

    paths = study_paths(study_dir)
    folder = paths.submitit
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parallel = max(1, min(parallel or cores, len(cells)))
    threads = max(1, cores // parallel)
    atomic_write_text(_dispatch_pid(folder), f"{os.getpid()}\n")
    res = {s.run_id: r for m in groups.values() for s, r in m}
    ex = submitit.AutoExecutor(folder=folder, cluster="local")
    queue = list(cells)
    running: dict[str, Any] = {}
    failed = 0
    bar = tqdm(total=len(cells), desc=f"cells ({parallel} parallel x {threads} thread)", unit="cell",
               file=sys.stderr)
    old_omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the job processes before torch starts
    try:
        while queue or running:
            while queue and len(running) < parallel:
                s = queue.pop(0)
                ex.update_parameters(timeout_min=int(res[s.run_id]["timeout_min"]), tasks_per_node=1,
                                     nodes=1, gpus_per_node=0, name=f"bsstudy-{study}")
                job = ex.submit(_job(paths.run(s.run_id), threads))
                _record(paths, s.run_id, job.job_id, "local")
                running[s.run_id] = job
            time.sleep(0.5)
            for rid, job in list(running.items()):
                if job.done():
                    del running[rid]
                    if job.state != "FINISHED" or job.exception() is not None:
                        failed += 1
                    bar.update(1)
    except KeyboardInterrupt:
        for job in running.values():
            job.cancel(check=False)
        raise
    finally:
        bar.close()
        if old_omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_omp
        try:
            _dispatch_pid(folder).unlink()
        except FileNotFoundError:
            pass
    c = counts(cell_states(study_dir))
    print("submit: " + ", ".join(f"{n} {k}" for k, n in c.items() if n), file=out)
    return 1 if c[Status.FAILED] else 0
