"""Submission of a planned study through submitit: SLURM job arrays, or local processes.

Idempotent: the state of every cell is derived first (bsstudy.sweep.state); only ``planned`` cells
(and ``failed``/``diverged`` ones with ``--retry-failed``) are submitted. One jobs.jsonl line per cell
submission. Nothing here prompts, so it runs with no TTY.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .. import locks
from ..errors import UserError
from ..io import append_jsonl
from ..layout import ACTIVE, FINISHED_BAD, RunPaths, Status, StudyPaths, study_paths, yaml_load_file
from .spec import Sweep, load_sweep
from .state import CellState, cell_states, counts


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def has_slurm_block(sweep: Sweep) -> bool:
    """The sweep asks for SLURM resources (a ``slurm:`` block, or one under ``per_method``)."""
    return bool(sweep.slurm) or any(sweep.per_method_slurm.values())


def pick_cluster(cluster: str, sweep: Sweep | None = None, dry_run: bool = False) -> str:
    """``auto`` -> slurm when sbatch is on PATH, else local (always explicit for submitit).

    ``auto`` never falls back to local for a sweep with a ``slurm:`` block: that sweep was written for a
    cluster, and running it on this machine must be asked for (``--cluster local``). A slurm dry run needs
    no SLURM (it only renders the job scripts)."""
    if cluster not in ("auto", "slurm", "local", "debug"):
        raise UserError(f"--cluster: {cluster!r} (choose auto, slurm or local)")
    if cluster == "auto":
        if shutil.which("sbatch"):
            cluster = "slurm"
        elif sweep is not None and has_slurm_block(sweep):
            raise UserError("--cluster auto: the sweep has a slurm: block but sbatch is not on PATH; submit "
                            "from a SLURM login node, preview with --cluster slurm --dry-run, or run it on "
                            "this machine with --cluster local")
        else:
            return "local"
    if cluster == "slurm" and not dry_run:
        if not shutil.which("sbatch"):
            raise UserError("--cluster slurm: sbatch not found on PATH (is SLURM installed here? "
                            "--dry-run previews the job scripts without it)")
        if not shutil.which("srun"):
            raise UserError("--cluster slurm: sbatch is on PATH but srun is not (the job script runs its "
                            "task with srun): install SLURM's client tools or fix PATH")
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


def slurm_python(r: dict[str, Any]) -> str:
    """The shell command that runs python in the job: ``slurm.python``, default the submitting interpreter
    (only right where compute nodes see the same path, e.g. a shared venv)."""
    return r.get("python") or shlex.quote(sys.executable)


def slurm_parameters(r: dict[str, Any], study: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (its native sbatch names) of one resource group.

    The one translation of resources to sbatch options: used for real submissions and for the dry run's
    rendered script alike. ``array_parallelism`` here is the group's own cap; ``submit`` replaces it
    with the group's share of the study-wide cap (``split_parallelism``)."""
    from submitit.slurm.slurm import _convert_mem

    p: dict[str, Any] = {"job_name": f"bsstudy-{study}", "time": int(r["timeout_min"]),
                         "nodes": int(r["nodes"]), "ntasks_per_node": int(r["tasks_per_node"]),
                         "cpus_per_task": int(r["cpus_per_task"]), "mem": _convert_mem(r["mem_gb"]),
                         "array_parallelism": int(r["array_parallelism"])}
    if r.get("gpus_per_node"):
        p["gpus_per_node"] = int(r["gpus_per_node"])
    for k in ("partition", "account", "qos", "constraint", "signal_delay_s", "additional_parameters", "setup"):
        if r.get(k) not in (None, "", {}, []):
            p[k] = r[k]
    if "wckey" in r:  # submitit writes --wckey=submitit unless told otherwise; None drops the line
        p["wckey"] = r["wckey"] or None
    return p


def split_parallelism(sizes: list[int], caps: list[int], total: int) -> list[tuple[int, int | None]]:
    """Per array: (its ``%`` cap, index of the array it must wait for or None), so that at most ``total``
    tasks of the study run at once however many resource groups (arrays) it has.

    With at least one slot per array the study cap is shared out in proportion to array sizes (each
    array also within its own cap and size). With more arrays than slots the arrays form ``total`` lanes
    of one task at a time, each array of a lane starting after the previous one ended
    (``--dependency=afterany``)."""
    n = len(sizes)
    limit = [max(1, min(s, c)) for s, c in zip(sizes, caps)]
    if n <= total:
        width = [1] * n
        spare = total - n
        while spare > 0:
            grow = [i for i in range(n) if width[i] < limit[i]]
            if not grow:
                break
            i = max(grow, key=lambda j: (sizes[j] / width[j], -j))
            width[i] += 1
            spare -= 1
        return [(w, None) for w in width]
    lanes: list[list[int]] = [[] for _ in range(total)]
    load = [0] * total
    for i in sorted(range(n), key=lambda j: -sizes[j]):  # biggest arrays first, to the emptiest lane
        k = min(range(total), key=lambda j: (load[j], j))
        lanes[k].append(i)
        load[k] += sizes[i]
    out: list[tuple[int, int | None]] = [(1, None)] * n
    for lane in lanes:
        for prev, i in zip([None, *lane], lane):
            out[i] = (1, prev)
    return out


def _retire_result(run: RunPaths) -> None:
    """Keep a failed/diverged result aside (``RunPaths.retired(n)``) so the retried run can write its own."""
    if run.result.exists():
        n = 1
        while run.retired(n).exists():
            n += 1
        os.replace(run.result, run.retired(n))


def _record(paths: StudyPaths, rid: str, job_id: str, cluster: str, **extra: Any) -> None:
    append_jsonl(paths.jobs, {"run_id": rid, "job_id": str(job_id), "cluster": cluster, "time": _now(), **extra})


def resumable(s: CellState) -> bool:
    """A cell a local submit stopped (Ctrl-C, SIGTERM): ``preempted`` with no job left to resume it."""
    return s.state == Status.PREEMPTED and s.interrupted


def select(states: list[CellState], retry_failed: bool) -> tuple[list[CellState], dict[str, int]]:
    """Cells to submit, and why the others are skipped."""
    todo, skipped = [], {}
    for s in states:
        if s.state == Status.PLANNED or resumable(s) or (retry_failed and s.state in FINISHED_BAD):
            todo.append(s)
        else:
            skipped[s.state] = skipped.get(s.state, 0) + 1
    return todo, skipped


def submit(study_dir: Path | str, cluster: str = "auto", retry_failed: bool = False, dry_run: bool = False,
           wait: bool | None = None, parallel: int | None = None, out=None) -> int:
    """Submit the cells that need it; returns the exit code (1 if waited for and some cell failed).

    Holds the study's submit lock (bsstudy/locks.py) from the state check to the end, so a concurrent
    submit of the same study stops with a one-line error instead of submitting the same cells again.
    ``wait=None``: wait for local runs, not for SLURM."""
    out = out or sys.stdout
    study_dir = Path(study_dir)
    paths = study_paths(study_dir)
    sweep = _stored_sweep(paths)
    cluster = pick_cluster(cluster, sweep, dry_run)
    if dry_run:  # reads only: no lock, so a preview works while a dispatcher runs
        return _submit_locked(study_dir, sweep, cluster, retry_failed, True, wait, parallel, out)
    inherited = os.environ.pop(_LOCK_FD_ENV, None)
    with locks.study_submit_lock(study_dir, int(inherited) if inherited else None) as fd:
        return _submit_locked(study_dir, sweep, cluster, retry_failed, False, wait, parallel, out, fd)


_LOCK_FD_ENV = "BSSTUDY_SUBMIT_LOCK_FD"  # the detached dispatcher inherits its parent's study lock


def _submit_locked(study_dir: Path, sweep: Sweep, cluster: str, retry_failed: bool, dry_run: bool,
                   wait: bool | None, parallel: int | None, out, lock_fd: int | None = None) -> int:
    paths = study_paths(study_dir)
    study = sweep.study
    states = cell_states(study_dir)
    todo, skipped = select(states, retry_failed)
    if Status.UNKNOWN in skipped:
        print(f"warning: {skipped[Status.UNKNOWN]} cell(s) have an unknown scheduler state (sacct/squeue "
              f"unreachable); not resubmitted", file=out)
    if Status.UNREADABLE in skipped:
        first = next(s.error for s in states if s.state == Status.UNREADABLE)
        print(f"warning: {skipped[Status.UNREADABLE]} cell(s) cannot be read ({first}); not submitted: fix "
              "their permissions", file=out)
    skip_txt = ", ".join(f"{n} {k}" for k, n in skipped.items()) or "none"
    if not todo:
        print(f"submit: nothing to submit ({skip_txt} skipped)", file=out)
        return _wait(study_dir, cluster, [], wait, out) if wait and cluster == "slurm" else 0
    groups: dict[tuple, list[tuple[CellState, dict]]] = {}
    cfgs = []
    for s in todo:
        cfg_p = paths.run(s.run_id).config
        if not cfg_p.exists():
            raise UserError(f"{cfg_p}: missing (re-run `bsstudy plan`)")
        cfgs.append(yaml_load_file(cfg_p))
        r = cell_resources(sweep, s.method, cfgs[-1])
        key = tuple(sorted((k, repr(v)) for k, v in r.items()))
        groups.setdefault(key, []).append((s, r))
    _preflight([(s.run_id, paths.run(s.run_id).config) for s in todo], cfgs)
    resumed = sum(resumable(s) for s in todo)
    print(f"submit: {len(todo)} cell(s) to {cluster} in {len(groups)} resource group(s)"
          + (f" ({resumed} interrupted, resumed)" if resumed else "") + f"; skipped: {skip_txt}", file=out)
    members_of = list(groups.values())
    if cluster == "slurm":
        study_cap = int(sweep.resources("").get("array_parallelism"))
        arrays = split_parallelism([len(m) for m in members_of],
                                   [int(m[0][1]["array_parallelism"]) for m in members_of], study_cap)
    if dry_run:
        if cluster == "slurm":
            return _preview_slurm(paths, study, members_of, arrays, study_cap, out, sweep.gpu_hours_assumptions)
        for members in members_of:
            r = members[0][1]
            print(f"  {len(members)} cell(s): " + " ".join(f"{k}={v}" for k, v in sorted(r.items())), file=out)
            for s, _ in members:
                print(f"    {s.run_id}  ({s.state})", file=out)
        for line in sweep.gpu_hours_assumptions:  # what plan.csv's gpu_hours assumed (written by plan)
            print(line, file=out)
        return 0
    import submitit

    folder = paths.submitit
    folder.mkdir(parents=True, exist_ok=True)
    for s in todo:
        if (retry_failed and s.state in FINISHED_BAD) or resumable(s):
            _retire_result(paths.run(s.run_id))
    if cluster == "local":
        if wait is False:
            return _detach_local(study_dir, parallel, lock_fd, out)
        return _run_local(study_dir, study, [s for m in members_of for s, _ in m], groups, parallel, out)
    if cluster == "debug":  # in-process, one after the other (debugging a cell; never behind a pipe)
        ex = submitit.AutoExecutor(folder=folder, cluster="debug")
        for s, _ in (x for m in members_of for x in m):
            job = ex.submit(_job(paths.run(s.run_id)))
            _record(paths, s.run_id, job.job_id, "debug")
            try:
                job.result()
            except Exception as exc:  # the cell's failure is in its result.json
                print(f"  {s.run_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}", file=out)
        return 0
    submitted: list[str] = []
    array_ids: dict[int, str] = {}
    for i, members, width, after, r, params in _arrays(members_of, arrays, study, lambda a: array_ids[a]):
        try:
            ex = submitit.SlurmExecutor(folder=folder, python=slurm_python(r))
            ex.update_parameters(**params)
            with ex.batch():
                # torch threads = the CPUs SLURM gave the task (without cgroups torch would take all cores)
                jobs = [ex.submit(_job(paths.run(s.run_id), int(r["cpus_per_task"]))) for s, r in members]
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            raise UserError(f"sbatch failed: {msg[-1] if msg else type(exc).__name__}") from None
        for (s, _), job in zip(members, jobs):
            _record(paths, s.run_id, job.job_id, "slurm")
            submitted.append(s.run_id)
        array_ids[i] = jobs[0].job_id.split("_")[0]
        print(f"  array {array_ids[i]}: {len(jobs)} cell(s), at most {width} at once"
              + (f", after array {array_ids[after]}" if after is not None else ""), file=out)
    if wait:
        return _wait(study_dir, "slurm", submitted, True, out)
    return 0


def _preflight(cells: list[tuple[str, Path]], cfgs: list[dict]) -> None:
    """Before anything is submitted or written (also by ``--dry-run``: a real submit would stop): each
    cell's config.yaml still hashes to its run_id (a hand edit, e.g. ``epochs: 0``, would only fail in the
    job), and the data the cells need is still where their config.yaml says (it may have moved since plan)."""
    from ..config import load_checked_run_config, run_id
    from .preflight import preflight_data

    for (rid, cfg_p), cfg in zip(cells, cfgs):
        try:
            same = run_id(cfg) == rid  # a hash of the file as read: cheap, unlike the trainer's full check
        except (KeyError, TypeError, AttributeError):  # a hand edit of the wrong shape
            same = False
        if not same:
            try:
                load_checked_run_config(cfg_p)  # the trainer's own one-line error for this file
            except UserError as exc:
                raise UserError(f"{exc}; nothing submitted") from None
            raise UserError(f"{cfg_p}: does not hash to its run_id {rid}; re-plan the study; nothing submitted")
    try:
        preflight_data(cfgs)
    except UserError as exc:
        raise UserError(f"{exc}; nothing submitted ({len(cfgs)} cell(s) need it: put the data back where "
                        "their config.yaml says, or re-plan with the new dataset.root)") from None


def _arrays(members_of: list, arrays: list[tuple[int, int | None]], study: str, dependency_of):
    """Each array in submission order as (index, members, width, after, resources, sbatch parameters): the
    one place a real submit and the ``--dry-run`` preview get their parameters from. ``dependency_of(after)``
    names the array it waits for (its job id once submitted; a placeholder in the preview); it is called
    when the array's turn comes, so earlier arrays of a real submit have their ids by then."""
    for i in _submission_order(arrays):
        members = members_of[i]
        width, after = arrays[i]
        r = members[0][1]
        params = dict(slurm_parameters(r, study), array_parallelism=width)
        if after is not None:
            params["dependency"] = f"afterany:{dependency_of(after)}"
        yield i, members, width, after, r, params


def _submission_order(arrays: list[tuple[int, int | None]]) -> list[int]:
    """Array indices with every array after the one it depends on."""
    order: list[int] = []
    while len(order) < len(arrays):
        order += [i for i, (_, after) in enumerate(arrays)
                  if i not in order and (after is None or after in order)]
    return order


def _preview_slurm(paths: StudyPaths, study: str, members_of: list, arrays: list, study_cap: int, out,
                   assumptions: list[str] = ()) -> int:
    """``submit --dry-run --cluster slurm``: each array's job script exactly as sbatch would get it
    (submitit's own script builder, same parameters as a real submit), its cells and its GPU-hours."""
    from submitit.slurm.slurm import _make_sbatch_string

    from .state import read_plan

    est = {row["run_id"]: row.get("gpu_hours") for row in read_plan(paths.dir)}
    folder = paths.submitit.expanduser().absolute()
    label = {i: n + 1 for n, i in enumerate(_submission_order(arrays))}
    total_est, total_max, any_est = 0.0, 0.0, False
    for i, members, width, after, r, params in _arrays(members_of, arrays, study,
                                                        lambda a: f"<job id of array {label[a]}>"):
        cmd = " ".join([slurm_python(r), "-u -m submitit.core._submit", shlex.quote(str(folder))])
        script = _make_sbatch_string(command=cmd, folder=folder, map_count=len(members) if len(members) > 1
                                     else None, **params)
        gpus = int(r.get("gpus_per_node") or 0) * int(r["nodes"])
        ceiling = gpus * int(r["timeout_min"]) / 60 * len(members)
        vals = [est.get(s.run_id) for s, _ in members]
        known = [float(v) for v in vals if v not in (None, "")]
        any_est = any_est or bool(known)
        total_est += sum(known)
        total_max += ceiling
        est_txt = (f"estimated {sum(known):.3g} GPU-h (plan.csv gpu_hours)" if len(known) == len(vals) else
                   "no estimate (no throughput in the sweep)" if not known else
                   f"estimated {sum(known):.3g} GPU-h for {len(known)} of {len(vals)} cells")
        print(f"\n== array {label[i]}/{len(arrays)}: {len(members)} cell(s), at most {width} at once"
              + (f", after array {label[after]} ends" if after is not None else "")
              + f"; {est_txt}; at most {ceiling:.2f} GPU-h ({gpus} GPU x {r['timeout_min']} min x "
              f"{len(members)} cell(s))", file=out)
        print(script.rstrip("\n"), file=out)
        print("# cells (array task: run_id):", file=out)
        for k, (s, _) in enumerate(members):
            print(f"#   {k}: {s.run_id}  {s.method} B={s.batch_size} seed={s.seed} ({s.state})", file=out)
    print(f"\ntotal: {sum(len(m) for m in members_of)} cell(s) in {len(arrays)} array(s), at most {study_cap} "
          f"task(s) at once (slurm.array_parallelism, per study); "
          + (f"estimated {total_est:.3g} GPU-h, " if any_est else "")
          + f"at most {total_max:.2f} GPU-h by the time limits", file=out)
    for line in assumptions:  # what plan.csv's gpu_hours assumed (written by plan into sweep.yaml)
        print(line, file=out)
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


class _Stop(BaseException):
    """SIGTERM/SIGHUP of a local submit: stop like Ctrl-C (BaseException: no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum, frame) -> None:
    raise _Stop(signum)


def _detach_local(study_dir: Path, parallel: int | None, lock_fd: int | None, out) -> int:
    """--no-wait locally: a detached `bsstudy submit --cluster local` keeps at most `parallel` cells running.

    The dispatcher inherits this submit's study lock (the fd), so no other submit can slip in between."""
    folder = study_paths(study_dir).submitit
    cmd = [sys.executable, "-m", "bsstudy.cli", "submit", str(study_dir), "--cluster", "local"]
    if parallel:
        cmd += ["--parallel", str(parallel)]
    env = dict(os.environ)
    fds: tuple[int, ...] = ()
    if lock_fd is not None:
        env[_LOCK_FD_ENV], fds = str(lock_fd), (lock_fd,)
    with open(folder / "dispatch.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                env=env, pass_fds=fds)
    if lock_fd is not None:
        locks.set_holder(lock_fd, proc.pid)
    print(f"submit: local dispatcher started (pid {proc.pid}, log {folder / 'dispatch.log'}); "
          f"follow with `bsstudy status {study_dir}`", file=out)
    return 0


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty elsewhere)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[-1].split()[1]) == pid:
                out.append(int(d.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _stop_jobs(running: dict[str, Any], signalled: bool, grace_s: float = 20.0) -> None:
    """Stop local jobs and wait until their processes are gone: nothing keeps training once submit returns.

    Each job is a submitit controller that stops its task when it gets SIGINT. After a Ctrl-C at a
    terminal the controllers got that SIGINT already (``signalled``); a second one would interrupt their
    clean-up, so it is sent only to those still alive after a few seconds. What is left after ``grace_s``
    is killed, the task first (it would outlive a killed controller)."""
    procs = [p for p in (getattr(j, "_process", None) for j in running.values()) if p is not None]
    if not signalled:
        for job in running.values():
            job.cancel(check=False)
    start = time.monotonic()
    nudged = not signalled
    while any(p.poll() is None for p in procs) and time.monotonic() - start < grace_s:
        if not nudged and time.monotonic() - start > 5.0:
            for job in running.values():
                job.cancel(check=False)
            nudged = True
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            for child in _children(p.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            p.kill()
            p.wait()


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` while a job's controller is started, so that the controller's
    own messages (a KeyboardInterrupt traceback on Ctrl-C) go to its log, not over submit's terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run_local(study_dir: Path, study: str, cells: list[CellState], groups: dict, parallel: int | None,
               out) -> int:
    """Run cells as local processes, at most ``parallel`` at once, torch threads split between them.

    Ctrl-C, SIGTERM or SIGHUP stops the running cells (no process outlives submit) and records them as
    interrupted: they show ``preempted`` and the next submit resumes them from their last checkpoint."""
    import submitit
    from tqdm import tqdm

    paths = study_paths(study_dir)
    folder = paths.submitit
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parallel = max(1, min(parallel or cores, len(cells)))
    threads = max(1, cores // parallel)
    res = {s.run_id: r for m in groups.values() for s, r in m}
    ex = submitit.AutoExecutor(folder=folder, cluster="local")
    queue = list(cells)
    running: dict[str, Any] = {}
    bar = tqdm(total=len(cells), desc=f"cells ({parallel} parallel x {threads} thread)", unit="cell",
               file=sys.stderr)
    old_omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the job processes before torch starts
    # SIGTERM/SIGHUP stop the cells like Ctrl-C does (signal handlers can only be set in the main thread)
    stop_sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old_handlers = {sig: signal.getsignal(sig) for sig in stop_sigs}
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGHUP, _raise_stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                s = queue.pop(0)
                ex.update_parameters(timeout_min=int(res[s.run_id]["timeout_min"]), tasks_per_node=1,
                                     nodes=1, gpus_per_node=0, name=f"bsstudy-{study}")
                with _stderr_to(folder / "controllers.log"):
                    job = ex.submit(_job(paths.run(s.run_id), threads))
                _record(paths, s.run_id, job.job_id, "local")
                running[s.run_id] = job
            time.sleep(0.5)
            for rid, job in list(running.items()):
                if job.done():
                    del running[rid]
                    bar.update(1)
    except (KeyboardInterrupt, _Stop) as exc:
        # the signals submit's handlers get must not reach the cells twice: ignore them while stopping
        if threading.current_thread() is threading.main_thread():
            for sig in stop_sigs:
                signal.signal(sig, signal.SIG_IGN)
        bar.close()
        _stop_jobs(running, signalled=isinstance(exc, KeyboardInterrupt))
        for rid, job in running.items():
            _record(paths, rid, job.job_id, "local", event="interrupted")
        name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else signal.Signals(exc.signum).name
        print(f"submit: interrupted ({name}): stopped {len(running)} running cell(s), marked preempted; "
              f"`bsstudy submit {study_dir}` resumes them", file=sys.stderr)
        return 128 + (signal.SIGINT if isinstance(exc, KeyboardInterrupt) else exc.signum)
    finally:
        bar.close()
        if threading.current_thread() is threading.main_thread():
            for sig, h in old_handlers.items():
                signal.signal(sig, h if h is not None else signal.SIG_DFL)
        if old_omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_omp
    c = counts(cell_states(study_dir))
    print("submit: " + ", ".join(f"{n} {k}" for k, n in c.items() if n), file=out)
    return 1 if c[Status.FAILED] else 0
