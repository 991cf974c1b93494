"""SLURM submission without a cluster: resource parsing, the previewed job scripts, the study-wide array cap,
`--cluster auto` and missing SLURM tools (issue 13 items 1-5, 7). A fake ``sbatch`` captures the scripts a
real submit hands to sbatch, so the preview is checked against them byte for byte."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from bsstudy.cli import main
from bsstudy.errors import UserError
from bsstudy.io import read_jsonl
from bsstudy.sweep.spec import load_sweep, parse_time_limit
from bsstudy.sweep.submit import split_parallelism

from test_submit_local import TINY_BASE

SETUP = ["module load cuda/12.4", "source /shared/envs/ssl/bin/activate", "echo setup-done"]


def sweep_file(tmp: Path, study: str, methods=("simclr", "vicreg"), slurm=None, per_method=None,
               text_slurm: str | None = None) -> Path:
    data = {"study": study, "base": dict(TINY_BASE),
            "grid": {"method": list(methods), "batch_size": [16, 32], "epochs": [1], "seed": [0]},
            "per_method": per_method if per_method is not None else {"vicreg": {"slurm": {"mem_gb": 3}}},
            "slurm": slurm if slurm is not None else {
                "partition": "gpu", "account": "proj", "gpus_per_node": 1, "cpus_per_task": 2, "mem_gb": 8,
                "timeout_min": "1:00:00", "array_parallelism": 3, "setup": SETUP, "wckey": None,
                "python": "/shared/envs/ssl/bin/python", "additional_parameters": {"exclusive": True}},
            "throughput": {"default": 100}}
    p = tmp / f"{study}.yaml"
    text = yaml.safe_dump(data)
    if text_slurm is not None:  # raw YAML for the slurm block (unquoted times as a user types them)
        text = re.sub(r"^slurm:\n(  .*\n)*", "slurm:\n" + text_slurm, text, flags=re.M)
    p.write_text(text)
    return p


def planned(tmp: Path, study: str, **kw) -> Path:
    res = tmp / "results"
    assert main(["plan", str(sweep_file(tmp, study, **kw)), "--results", str(res)]) == 0
    return res / study


def no_slurm_path(monkeypatch, tmp: Path, sbatch: bool = False, srun: bool = False) -> Path:
    """PATH = one empty-ish directory: optionally a fake sbatch (copies each script to capture/, answers like
    sbatch) and a fake srun."""
    b = tmp / "bin"
    b.mkdir(exist_ok=True)
    cap = tmp / "capture"
    cap.mkdir(exist_ok=True)
    if sbatch:
        (b / "sbatch").write_text(
            f"#!{sys.executable}\nimport sys, shutil, pathlib\ncap = pathlib.Path({str(cap)!r})\n"
            "n = 100 + len(list(cap.glob('*.sh')))\nshutil.copy(sys.argv[-1], cap / f'{n}.sh')\n"
            "print(f'Submitted batch job {n}')\n")
        (b / "sbatch").chmod(0o755)
    if srun:
        (b / "srun").write_text("#!/bin/sh\nexit 0\n")
        (b / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(b))
    return cap


def scripts_of(out: str) -> list[str]:
    """The job scripts a dry run printed (from '#!/bin/bash' to the command line)."""
    return re.findall(r"(#!/bin/bash\n.*?\n# command\nexport SUBMITIT_EXECUTOR=slurm\n[^\n]*)", out, re.S)


# ─────────────── item 2: time limits ───────────────
@pytest.mark.parametrize("value,minutes", [
    (90, 90), ("90", 90), ("1:00:00", 60), ("24:00:00", 1440), ("90:00", 90), ("30:30", 31),
    ("1-00:00:00", 1440), ("2-12", 3600), ("1-2:30", 1590), ("90m", 90), ("2h", 120), ("1h30m", 90),
    ("1d", 1440), ("45s", 1)])
def test_time_limit_spellings(value, minutes):
    assert parse_time_limit(value, "slurm.timeout_min") == minutes


@pytest.mark.parametrize("value", ["1:70:00", "abc", "0", 0, "", 1.5, True, "-5", "1:2:3:4", "2x", None])
def test_bad_time_limit_names_the_key(value):
    with pytest.raises(UserError, match=r"^slurm.timeout_min: .* is not a time limit \(minutes, MM:SS"):
        parse_time_limit(value, "slurm.timeout_min")


def test_unquoted_hh_mm_ss_is_not_read_as_base_60(tmp_path):
    """YAML 1.1 reads `24:00:00` as 86400 (-> --time=86400, 60 days): file values and command-line
    overrides both give 1440 minutes."""
    p = sweep_file(tmp_path, "t", text_slurm="  timeout_min: 24:00:00\n  partition: debug\n",
                   per_method={"vicreg": {"slurm": {"mem_gb": 3}}})
    assert "timeout_min: 24:00:00" in p.read_text()
    sw = load_sweep(p)
    assert sw.slurm["timeout_min"] == 1440
    assert load_sweep(p, ["slurm.timeout_min=2:00:00"]).slurm["timeout_min"] == 120
    assert load_sweep(p, ["slurm.timeout_min=90"]).slurm["timeout_min"] == 90
    assert load_sweep(p, ["slurm.timeout_min=1-00:00:00"]).slurm["timeout_min"] == 1440
    with pytest.raises(UserError, match=r"slurm.timeout_min: '25:99:00' is not a time limit"):
        load_sweep(p, ["slurm.timeout_min=25:99:00"])
    pm = tmp_path / "pm.yaml"
    pm.write_text(p.read_text().replace("mem_gb: 3", "timeout_min: 2:00:00"))
    assert load_sweep(pm).per_method_slurm["vicreg"]["timeout_min"] == 120


def test_bad_setup_python_wckey_are_one_line_errors(tmp_path):
    for bad, msg in [({"setup": "module load x"}, r"slurm.setup: must be a list of shell lines"),
                     ({"python": ""}, r"slurm.python: must be the command"),
                     ({"wckey": 3}, r"slurm.wckey: must be a string, or null"),
                     ({"array_parallelism": 0}, r"slurm.array_parallelism: must be at least 1")]:
        with pytest.raises(UserError, match=msg):
            load_sweep(sweep_file(tmp_path, "b", slurm=bad))


# ─────────────── items 1 and 4: the previewed script is the submitted one ───────────────
def test_dry_run_without_sbatch_prints_the_scripts_a_real_submit_sends(tmp_path, monkeypatch, capsys):
    study = planned(tmp_path, "prev")
    no_slurm_path(monkeypatch, tmp_path)
    capsys.readouterr()
    assert main(["submit", str(study), "--dry-run", "--cluster", "slurm"]) == 0
    out = capsys.readouterr().out
    shown = scripts_of(out)
    assert len(shown) == 2, out
    for s in shown:
        assert "\n# setup\nmodule load cuda/12.4\nsource /shared/envs/ssl/bin/activate\necho setup-done\n" in s
        assert "#SBATCH --time=60\n" in s and "#SBATCH --exclusive\n" in s and "#SBATCH --partition=gpu\n" in s
        assert "--wckey" not in s  # wckey: null drops submitit's --wckey=submitit
        assert s.rstrip().endswith(f"/shared/envs/ssl/bin/python -u -m submitit.core._submit "
                                   f"{study.resolve() / 'submitit'}")
    assert "#SBATCH --mem=8GB" in shown[0] and "#SBATCH --mem=3GB" in shown[1]
    assert re.search(r"== array 1/2: 2 cell\(s\), at most 2 at once; estimated [\d.]+ GPU-h .*; at most 2.00 "
                     r"GPU-h \(1 GPU x 60 min x 2 cell\(s\)\)", out), out
    assert "total: 4 cell(s) in 2 array(s), at most 3 task(s) at once" in out
    assert not (study / "jobs.jsonl").exists() and not (study / "submitit").exists()

    # a real submit (fake sbatch/srun on PATH) hands sbatch exactly these scripts
    cap = no_slurm_path(monkeypatch, tmp_path, sbatch=True, srun=True)
    assert main(["submit", str(study), "--cluster", "slurm"]) == 0
    sent = [p.read_text() for p in sorted(cap.glob("*.sh"))]
    assert [s.rstrip() for s in sent] == [s.rstrip() for s in shown]
    jobs = read_jsonl(study / "jobs.jsonl")
    assert sorted(j["job_id"] for j in jobs) == ["100_0", "100_1", "101_0", "101_1"]


def test_wckey_default_is_submitits_and_can_be_set(tmp_path, monkeypatch, capsys):
    study = planned(tmp_path, "wk", slurm={"partition": "debug", "wckey": "mylab"})
    no_slurm_path(monkeypatch, tmp_path)
    capsys.readouterr()
    assert main(["submit", str(study), "--dry-run", "--cluster", "slurm"]) == 0
    assert all("#SBATCH --wckey=mylab\n" in s for s in scripts_of(capsys.readouterr().out))
    study2 = planned(tmp_path, "wk2", slurm={"partition": "debug"})
    assert main(["submit", str(study2), "--dry-run", "--cluster", "slurm"]) == 0
    shown = scripts_of(capsys.readouterr().out)
    assert shown and all("#SBATCH --wckey=submitit\n" in s for s in shown)
    # default python: the submitting interpreter
    assert all(s.rstrip().split(" -u -m submitit")[0].endswith(sys.executable) for s in shown)


# ─────────────── item 5: array_parallelism is per study ───────────────
def _max_concurrent(sizes, plan):
    """Most tasks that can run at once: arrays of a dependency chain never overlap; sum the lanes' caps."""
    def lane(i):
        return i if plan[i][1] is None else lane(plan[i][1])

    lane_of = {i: lane(i) for i in range(len(plan))}
    lanes = {}
    for i, (w, _) in enumerate(plan):
        lanes[lane_of[i]] = max(lanes.get(lane_of[i], 0), min(w, sizes[i]))
    return sum(lanes.values())


@pytest.mark.parametrize("sizes,caps,total", [
    ([10, 1, 1], [64] * 3, 4), ([5, 5, 5], [64] * 3, 2), ([3, 3, 3], [64] * 3, 3), ([8, 8], [2, 64], 10),
    ([1, 2, 3, 4, 5], [64] * 5, 2), ([7], [64], 64)])
def test_split_parallelism_honours_the_study_cap(sizes, caps, total):
    plan = split_parallelism(sizes, caps, total)
    assert len(plan) == len(sizes)
    assert _max_concurrent(sizes, plan) <= total
    assert all(1 <= w <= max(1, min(s, c)) for (w, _), s, c in zip(plan, sizes, caps))
    if len(sizes) <= total:  # every slot the arrays can use is given out
        assert sum(w for w, _ in plan) == min(total, sum(min(s, c) for s, c in zip(sizes, caps)))


def test_three_groups_never_exceed_the_study_cap(tmp_path, monkeypatch, capsys):
    """A sweep in 3 resource groups with array_parallelism 2: never 3 x %2 = 6 tasks at once; the third
    array waits for one of the others (afterany), as sbatch gets it."""
    study = planned(tmp_path, "cap", methods=("simclr", "vicreg", "vicreg_unbiased"),
                    slurm={"partition": "debug", "array_parallelism": 2},
                    per_method={"vicreg": {"slurm": {"mem_gb": 3}}, "vicreg_unbiased": {"slurm": {"mem_gb": 4}}})
    cap = no_slurm_path(monkeypatch, tmp_path, sbatch=True, srun=True)
    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "slurm"]) == 0
    out = capsys.readouterr().out
    sent = [p.read_text() for p in sorted(cap.glob("*.sh"))]
    assert len(sent) == 3
    pars = [int(re.search(r"#SBATCH --array=0-1%(\d+)", s).group(1)) for s in sent]
    deps = [re.search(r"#SBATCH --dependency=afterany:(\d+)", s) for s in sent]
    assert pars == [1, 1, 1], sent
    assert sum(d is None for d in deps) == 2 and deps[2] is not None and deps[2].group(1) in ("100", "101")
    assert "after array" in out


# ─────────────── items 3 and 7: no silent fallback, no traceback ───────────────
def test_auto_without_sbatch_refuses_a_sweep_with_a_slurm_block(tmp_path, monkeypatch, capsys):
    study = planned(tmp_path, "auto")
    no_slurm_path(monkeypatch, tmp_path)
    capsys.readouterr()
    for extra in ([], ["--dry-run"]):
        assert main(["submit", str(study), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "slurm: block but sbatch is not on PATH" in err[0] and "--cluster local" in err[0]
    assert not (study / "jobs.jsonl").exists()
    assert main(["submit", str(study), "--cluster", "local", "--dry-run"]) == 0
    assert "4 cell(s) to local" in capsys.readouterr().out
    # a sweep without any slurm block still runs locally under auto
    bare = planned(tmp_path, "bare", slurm={}, per_method={})
    assert main(["submit", str(bare), "--dry-run"]) == 0
    assert "4 cell(s) to local" in capsys.readouterr().out


def test_sbatch_without_srun_is_one_line(tmp_path, monkeypatch, capsys):
    study = planned(tmp_path, "nosrun")
    cap = no_slurm_path(monkeypatch, tmp_path, sbatch=True)
    capsys.readouterr()
    assert main(["submit", str(study), "--cluster", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sbatch is on PATH but srun is not" in err[0], err
    assert not list(cap.glob("*.sh")) and not (study / "jobs.jsonl").exists()
    assert main(["submit", str(study)]) == 2  # auto picks slurm (sbatch found), same message
    assert "srun is not" in capsys.readouterr().err
