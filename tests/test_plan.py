"""bsstudy plan: sweep schema, fast planner == one compose per cell, idempotence, one-line errors."""
from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from bsstudy import config as bc
from bsstudy.cli import main
from bsstudy.layout import PLAN_COLUMNS
from bsstudy.sweep.plan import plan_cells
from bsstudy.sweep.spec import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "study": "tiny",
    "base": {"model.width": 4, "dataset.train_subset": 128, "device": "cpu",
             "method.projector": {"hidden_dim": 32, "out_dim": 16}},
    "grid": {"method": ["simclr", "vicreg", "vicreg_unbiased"], "batch_size": [8, 16], "epochs": [2],
             "seed": [0]},
}


def write(tmp: Path, data, name: str = "s.yaml") -> Path:
    p = tmp / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def rows(study_dir: Path) -> list[dict]:
    with open(study_dir / "plan.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_plan_writes_cells_and_replan_is_noop(tmp_path, capsys):
    sweep = write(tmp_path, TINY)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    out = capsys.readouterr().out
    assert "6 cells" in out and "6 new" in out
    assert "simclr" in out and "total" in out
    r = rows(res / "tiny")
    assert len(r) == 6
    assert tuple(r[0]) == PLAN_COLUMNS  # no varied key, no throughput: exactly the contract's columns
    assert {x["method"] for x in r} == {"simclr", "vicreg", "vicreg_unbiased"}
    for x in r:
        run_dir = res / "tiny" / "runs" / x["run_id"]
        cfg = bc.load_run_config(run_dir / "config.yaml")
        # what the trainer reads back hashes to the run_id (contract), and `out` points at the run dir
        assert bc.run_id(cfg) == x["run_id"]
        assert bc.config_hash(cfg) == x["config_hash"]
        assert Path(cfg.out) == run_dir.resolve()
        assert cfg.study == "tiny" and cfg.model.width == 4 and cfg.method.projector.hidden_dim == 32
        assert float(x["lr"]) == pytest.approx(cfg.lr.effective)
    mtimes = {p: p.stat().st_mtime_ns for p in (res / "tiny").rglob("*") if p.is_file()}
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    assert "0 new, 6 unchanged" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (res / "tiny").rglob("*") if p.is_file()} == mtimes


def test_changed_value_makes_new_runs_and_keeps_old(tmp_path, capsys):
    sweep = write(tmp_path, TINY)
    res = tmp_path / "results"
    main(["plan", str(sweep), "--results", str(res)])
    old = {x["run_id"] for x in rows(res / "tiny")}
    assert main(["plan", str(sweep), "--results", str(res), "model.width=6"]) == 2  # would drop all 6
    assert {x["run_id"] for x in rows(res / "tiny")} == old
    assert main(["plan", str(sweep), "--results", str(res), "model.width=6", "--replace"]) == 0
    new = {x["run_id"] for x in rows(res / "tiny")}
    assert len(new) == 6 and not (old & new)
    assert {p.name for p in (res / "tiny" / "runs").iterdir()} == old | new


@pytest.mark.slow
def test_fast_path_equals_one_compose_per_cell(tmp_path):
    """The planner's dict merges give exactly the config of bsstudy.config.cell_config (full compose)."""
    for name in ("demo", "batchsize", "zoo"):
        sw = load_sweep(ROOT / "sweeps" / f"{name}.yaml")
        cells = plan_cells(sw, tmp_path)
        overrides = expand(sw)
        assert len(cells) == len(overrides)
        for i in sorted({0, len(cells) // 2, len(cells) - 1, 5}):
            ref = bc.cell_config([f"{k}={'null' if v is None else v}" for k, v in overrides[i].items()]
                                 + [f"study={sw.study}"])
            assert bc.run_id(ref) == cells[i].run_id
            got = {k: v for k, v in cells[i].config.items() if k != "out"}
            want = {k: v for k, v in OmegaConf.to_container(ref).items() if k != "out"}
            assert got == want
            assert bc.canonical_json(ref) == bc.canonical_json(cells[i].config)


@pytest.mark.slow
def test_shipped_sweeps_plan(tmp_path, capsys, monkeypatch):
    from bsstudy.sweep.preflight import FOLDERS

    folder, files = FOLDERS["cifar10"]  # stand-in CIFAR-10 files: plan checks that they are present
    (tmp_path / "data" / folder).mkdir(parents=True)
    for f in files:
        (tmp_path / "data" / folder / f).write_bytes(b"x")
    monkeypatch.setenv("BSSTUDY_DATA_CACHE", str(tmp_path / "data"))
    assert main(["plan", str(ROOT / "sweeps" / "batchsize.yaml"), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "144 cells" in out and "estimated GPU-hours" in out
    r = rows(tmp_path / "batchsize")
    assert sorted({int(x["batch_size"]) for x in r}) == [2 ** k for k in range(5, 13)]
    assert {x["backbone"] for x in r} == {"resnet18"} and {x["dataset"] for x in r} == {"cifar10"}
    assert all(float(x["gpu_hours"]) > 0 for x in r)
    assert main(["plan", str(ROOT / "sweeps" / "demo.yaml"), "--results", str(tmp_path)]) == 0
    r = rows(tmp_path / "demo")
    assert {x["method"] for x in r} == {"simclr", "vicreg", "vicreg_unbiased"}
    assert len({x["batch_size"] for x in r}) >= 4 and {x["dataset"] for x in r} == {"fashion_mnist"}


def test_zoo_sweep_plans_every_method(tmp_path, capsys):
    """sweeps/zoo.yaml: every registered method x B in {32, 128, 512}, one seed, with its per-method settings."""
    from bsstudy.registry import METHODS

    assert main(["plan", str(ROOT / "sweeps" / "zoo.yaml"), "--results", str(tmp_path)]) == 0
    assert "30 cells" in capsys.readouterr().out
    r = rows(tmp_path / "zoo")
    assert {x["method"] for x in r} == set(METHODS)
    assert sorted({int(x["batch_size"]) for x in r}) == [32, 128, 512] and {x["seed"] for x in r} == {"0"}
    cfg = {x["method"]: yaml.safe_load((tmp_path / "zoo" / "runs" / x["run_id"] / "config.yaml").read_text())
           for x in r if x["batch_size"] == "512"}
    assert cfg["mocov2"]["method"]["loss"]["queue_size"] <= cfg["mocov2"]["dataset"]["train_subset"]
    assert cfg["sogclr"]["method"]["loss"]["temperature"] == 0.5
    assert cfg["simsiam"]["method"]["predictor"]["hidden_dim"] == 32
    assert all(c["method"]["projector"]["hidden_dim"] == 128 and c["eval"]["at_init"] for c in cfg.values())


def test_grid_override_exclude_include_per_method(tmp_path, capsys):
    data = dict(TINY, exclude=[{"method": "vicreg", "batch_size": 16}],
                include=[{"method": "vicreg_unbiased", "batch_size": 4, "epochs": 1, "seed": 7,
                          "method.loss.variance": "c4"}],
                per_method={"simclr": {"method.loss.temperature": 0.2, "slurm": {"mem_gb": 3}}})
    sweep = write(tmp_path, data)
    res = tmp_path / "r"
    assert main(["plan", str(sweep), "--results", str(res), "grid.seed=[0,1]"]) == 0
    r = rows(res / "tiny")
    # 3 methods x 2 B x 2 seeds, minus vicreg B=16 (2 seeds), plus the include
    assert len(r) == 12 - 2 + 1
    assert not [x for x in r if x["method"] == "vicreg" and x["batch_size"] == "16"]
    inc = [x for x in r if x["seed"] == "7"]
    assert len(inc) == 1 and inc[0]["method.loss.variance"] == "c4" and inc[0]["batch_size"] == "4"
    for x in r:
        cfg = bc.load_run_config(res / "tiny" / "runs" / x["run_id"] / "config.yaml")
        if x["method"] == "simclr":
            assert cfg.method.loss.temperature == 0.2
    spec = yaml.safe_load((res / "tiny" / "sweep.yaml").read_text())
    assert spec["per_method"]["simclr"]["slurm"] == {"mem_gb": 3}


BAD = [
    ("unknown method", {"grid": {"method": ["simclrr"]}}, "method"),
    ("B=2 unbiased", {"grid": {"method": ["vicreg_unbiased"], "batch_size": [2]}}, "batch_size"),
    ("typo key", {"base": {"model.widht": 4}}, "model.widht"),
    ("typo top", {"gird": {"seed": [0]}}, "gird"),
    ("B > dataset", {"grid": {"batch_size": [256]}}, "batch_size"),
    ("bad slurm key", {"slurm": {"partitoin": "x"}}, "slurm.partitoin"),
    ("grid not list", {"grid": {"seed": 3}}, "grid.seed"),
    ("bad group option", {"base": {"dataset": "mnist"}}, "dataset"),
]


@pytest.mark.parametrize("what,patch,key", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_one_line_exit2_nothing_written(tmp_path, capsys, what, patch, key):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for k, v in patch.items():
        if k in data and isinstance(data[k], dict):
            data[k].update(v)
        else:
            data[k] = v
    sweep = write(tmp_path, data)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(sweep) in err and key in err, err
    assert not res.exists()


def test_invalid_yaml_via_console(tmp_path):
    """The real command line: exit 2, one line naming the file and the position, nothing written."""
    sweep = write(tmp_path, "study: x\ngrid:\n  method: [simclr\n  seed: [0]\n")
    res = tmp_path / "results"
    p = subprocess.run([sys.executable, "-m", "bsstudy.cli", "plan", str(sweep), "--results", str(res)],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(sweep) in lines[0] and "invalid YAML" in lines[0] and "line" in lines[0]
    assert not res.exists()


def test_replan_that_drops_cells_is_refused_dry_run_shows_diff_replace_accepts(tmp_path, capsys):
    """issue 13 item 8: a re-plan to a smaller grid never silently shrinks plan.csv."""
    sweep = write(tmp_path, TINY)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    before = (res / "tiny" / "plan.csv").read_text()
    dropped = sorted(x["run_id"] for x in rows(res / "tiny") if x["batch_size"] == "16")
    capsys.readouterr()
    assert main(["plan", str(sweep), "--results", str(res), "grid.batch_size=[8]"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "drop 3" in err and "--replace" in err and dropped[0] in err, err
    assert (res / "tiny" / "plan.csv").read_text() == before
    assert main(["plan", str(sweep), "grid.batch_size=[8]", "--results", str(res), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"- {r}" in out for r in dropped) and "0 added, 3 unchanged, 3 dropped" in out, out
    assert (res / "tiny" / "plan.csv").read_text() == before
    assert main(["plan", str(sweep), "--results", str(res), "grid.batch_size=[8]", "--replace"]) == 0
    assert len(rows(res / "tiny")) == 3
    assert len(list((res / "tiny" / "runs").iterdir())) == 6  # the dropped cells' directories stay


def test_replan_that_adds_cells_is_allowed(tmp_path, capsys):
    sweep = write(tmp_path, TINY)
    res = tmp_path / "results"
    assert main(["plan", str(sweep), "--results", str(res)]) == 0
    old = {x["run_id"] for x in rows(res / "tiny")}
    assert main(["plan", str(sweep), "--results", str(res), "grid.seed=[0,1]", "--dry-run"]) == 0
    assert "6 added, 6 unchanged, 0 dropped" in capsys.readouterr().out
    assert main(["plan", str(sweep), "--results", str(res), "grid.seed=[0,1]"]) == 0
    new = {x["run_id"] for x in rows(res / "tiny")}
    assert len(new) == 12 and old < new


def test_command_line_slurm_overrides_survive_the_next_plan(tmp_path, capsys):
    """issue 13 item 8: slurm.* given once are kept in results/<study>/sweep.yaml until given again."""
    sweep = write(tmp_path, dict(TINY, slurm={"partition": "debug", "mem_gb": 4}))
    res = tmp_path / "results"
    stored = lambda: load_sweep(res / "tiny" / "sweep.yaml")  # noqa: E731 - what submit reads
    assert main(["plan", str(sweep), "--results", str(res), "slurm.partition=gpu", "slurm.account=proj"]) == 0
    assert stored().resources("simclr")["partition"] == "gpu"
    capsys.readouterr()
    assert main(["plan", str(sweep), "--results", str(res), "grid.seed=[0,1]"]) == 0
    out = capsys.readouterr().out
    assert "keeping slurm.partition=gpu" in out and "keeping slurm.account=proj" in out
    r = stored().resources("vicreg")
    assert (r["partition"], r["account"], r["mem_gb"]) == ("gpu", "proj", 4)
    assert main(["plan", str(sweep), "--results", str(res), "slurm.partition=debug"]) == 2  # drops seed 1
    assert main(["plan", str(sweep), "--results", str(res), "slurm.partition=debug", "grid.seed=[0,1]"]) == 0
    r = stored().resources("vicreg")
    assert (r["partition"], r["account"]) == ("debug", "proj")


# ── GPU-hour estimates (issue 13 item 6): a throughput table per (model, B), evaluation time, assumptions ──
KEY4 = "small_cnn-w4@1x28x28"  # TINY's model_key (bsstudy.throughput.model_key)


def _tp_table(tmp: Path, points: dict[int, float], key: str = KEY4, eval_s: float | None = 36.0,
              eval_n: int | None = 72000) -> Path:
    from bsstudy.throughput import write_throughput_table

    return write_throughput_table(tmp / "tp.csv", [
        {"model_key": key, "batch_size": b, "images_per_second": v, "eval_seconds": eval_s, "eval_images": eval_n,
         "device": "cuda:test", "method": "vicreg"} for b, v in points.items()])


def _by_b(study_dir: Path) -> dict[int, float]:
    return {int(x["batch_size"]): float(x["gpu_hours"]) for x in rows(study_dir)}


BIG = dict(TINY, base=dict(TINY["base"], **{"dataset.train_subset": 8192}),
           grid={"method": ["vicreg"], "batch_size": [32, 256, 4096], "epochs": [100], "seed": [0]})


def test_table_gives_small_batches_more_gpu_hours(tmp_path, capsys):
    """B=32 and B=4096 cells cost the same under one images/s per method; from a table they do not."""
    table = _tp_table(tmp_path, {32: 1500.0, 4096: 12000.0})
    sweep = write(tmp_path, dict(BIG, throughput={"table": str(table)}))
    assert main(["plan", str(sweep), "--results", str(tmp_path / "r")]) == 0
    gh = _by_b(tmp_path / "r" / "tiny")
    # eval: 36 s x (8192 train_subset + 10000 test) / 72000 measured images, once per run
    ev = 36.0 * 18192 / 72000
    assert gh[32] == pytest.approx((8192 * 100 / 1500.0 + ev) / 3600, rel=1e-3)
    assert gh[4096] == pytest.approx((8192 * 100 / 12000.0 + ev) / 3600, rel=1e-3)
    # B=256 lies between the measured points: a power law 1500 * (B/32)**(log 8 / log 128)
    assert gh[256] == pytest.approx((8192 * 100 / (1500.0 * 8 ** (math.log(8) / math.log(128))) + ev) / 3600, rel=1e-3)
    assert gh[32] > gh[256] > gh[4096]
    out = capsys.readouterr().out
    assert f"from {table}" in out and "cuda:test" in out and "log-log" in out and "fell back: none" in out, out


def test_mapping_still_works_and_is_flat_in_b(tmp_path, capsys):
    sweep = write(tmp_path, dict(BIG, throughput={"vicreg": 2000, "default": 1000}))
    assert main(["plan", str(sweep), "--results", str(tmp_path / "r")]) == 0
    gh = _by_b(tmp_path / "r" / "tiny")
    from bsstudy.sweep.cost import EVAL_IMAGE_COST

    want = (8192 * 100 / 2000 + 18192 * EVAL_IMAGE_COST / 2000) / 3600
    assert gh == pytest.approx({32: want, 256: want, 4096: want}, rel=1e-3)
    out = capsys.readouterr().out
    assert "throughput: default 1000, vicreg 2000 (the same at every B)" in out, out
    assert f"{EVAL_IMAGE_COST:g} training images per evaluated image" in out, out


def test_evaluation_time_is_included_per_evaluation_and_gpu(tmp_path):
    """at_init + every k epochs + the end, each costing every GPU of the run (rank 0 evaluates, the rest wait);
    the per-GPU batch picks the images/s."""
    from bsstudy.sweep.cost import CostModel

    table = _tp_table(tmp_path, {64: 1000.0, 128: 2000.0}, key="small_cnn-w32@1x28x28", eval_s=70.0, eval_n=70000)
    cost = CostModel.from_throughput({"table": str(table)})
    base = ["batch_size=128", "epochs=10", "dataset.train_subset=1000"]
    plain = bc.cell_config(base)
    cfgs = [OmegaConf.to_container(c) for c in (
        plain, bc.cell_config(base + ["eval.at_init=true", "eval.every=3"]),
        bc.cell_config(base + ["distributed.gpus_per_node=2"]))]
    one, more, two_gpus = cost.estimate(cfgs)
    ev = 70.0 * (1000 + 10000) / 70000 / 3600           # train split capped by train_subset, plus test
    assert one.eval_hours == pytest.approx(ev) and one.train_hours == pytest.approx(1000 * 10 / 2000.0 / 3600)
    assert one.hours == pytest.approx(one.train_hours + ev)
    assert more.eval_hours == pytest.approx(5 * ev)       # 1 at init + epochs 3, 6, 9 + the end
    assert two_gpus.per_gpu_batch == 64 and two_gpus.train_hours == pytest.approx(1000 * 10 / 1000.0 / 3600)
    assert two_gpus.eval_hours == pytest.approx(2 * ev)
    no_eval = CostModel.from_throughput({"table": str(_tp_table(tmp_path, {64: 1000.0, 128: 2000.0},
                                                               key="small_cnn-w32@1x28x28", eval_s=None))})
    e = no_eval.estimate(cfgs[:1])[0]
    from bsstudy.sweep.cost import EVAL_IMAGE_COST

    assert e.eval == "constant" and e.eval_hours == pytest.approx(11000 * EVAL_IMAGE_COST / 2000.0 / 3600)
    assert "1 cell(s) on the per-image evaluation constant" in no_eval.assumptions([e])[1]


def test_cells_outside_the_table_are_named_in_the_assumptions(tmp_path, capsys):
    table = _tp_table(tmp_path, {64: 1500.0, 256: 6000.0})
    data = dict(BIG, throughput={"table": str(table), "default": 500},
                include=[{"method": "vicreg", "batch_size": 64, "epochs": 1, "seed": 0, "model.width": 8}])
    assert main(["plan", str(write(tmp_path, data)), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    fell = next(line for line in out.splitlines() if line.startswith("fell back: "))
    assert "1 cell(s) below the smallest measured B (per-GPU B 32)" in fell, fell
    assert "1 cell(s) above the largest measured B (per-GPU B 4096)" in fell, fell
    assert "1 cell(s) of small_cnn-w8@1x28x28 (not in the table) on throughput.default" in fell, fell
    # what plan assumed is kept with the study, and submit --dry-run prints it
    stored = yaml.safe_load((tmp_path / "r" / "tiny" / "sweep.yaml").read_text())
    assert stored["throughput"]["table"] == str(table.resolve()) and stored["gpu_hours_assumptions"][1] == fell
    assert main(["submit", str(tmp_path / "r" / "tiny"), "--dry-run", "--cluster", "local"]) == 0
    out = capsys.readouterr().out
    assert fell in out and f"GPU-hours assume: images/s per GPU from {table.resolve()}" in out, out


def test_slurm_preview_prints_the_assumptions(tmp_path, monkeypatch, capsys):
    table = _tp_table(tmp_path, {32: 1500.0, 4096: 12000.0})
    sweep = write(tmp_path, dict(BIG, throughput={"table": str(table)}, slurm={"gpus_per_node": 1}))
    assert main(["plan", str(sweep), "--results", str(tmp_path / "r")]) == 0
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no sbatch: the preview needs no SLURM
    capsys.readouterr()
    assert main(["submit", str(tmp_path / "r" / "tiny"), "--dry-run", "--cluster", "slurm"]) == 0
    out = capsys.readouterr().out.splitlines()
    total = next(i for i, line in enumerate(out) if line.startswith("total: "))
    assert out[total + 1].startswith(f"GPU-hours assume: images/s per GPU from {table}") and \
        out[total + 2] == "fell back: none", out[total:]


@pytest.mark.parametrize("body, match", [
    ("model_key,batch_size\nx,32\n", r"tp\.csv: missing column\(s\) images_per_second"),
    (f"model_key,batch_size,images_per_second\n{KEY4},32,-5\n", r"tp\.csv:2: images_per_second: '-5' must be"),
    (f"model_key,batch_size,images_per_second\n{KEY4},32,10\n{KEY4},32,11\n", r"tp\.csv:3: .* appears twice"),
])
def test_bad_throughput_table_is_one_line_and_writes_nothing(tmp_path, capsys, body, match):
    (tmp_path / "tp.csv").write_text(body)
    sweep = write(tmp_path, dict(BIG, throughput={"table": str(tmp_path / "tp.csv")}))
    assert main(["plan", str(sweep), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bsstudy plan: error: ") and re.search(match, err), err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("tp, match", [
    ({"table": 3}, "throughput.table: must be the path of a bench_train_throughput.py --write table"),
    ({"table": "nope.csv"}, r"nope\.csv: cannot read the throughput table"),
    ({"vicreg": "fast"}, "throughput.vicreg: must be a positive number of images/s"),
    ([1, 2], r"throughput: must be a mapping \(table: FILE and/or method -> images/s\)"),
])
def test_bad_throughput_block_names_the_key(tmp_path, capsys, tp, match):
    monkey_cwd = os.getcwd()
    os.chdir(tmp_path)  # a relative table is read from the current directory
    try:
        assert main(["plan", str(write(tmp_path, dict(BIG, throughput=tp))), "--results", "r"]) == 2
    finally:
        os.chdir(monkey_cwd)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err
    assert not (tmp_path / "r").exists()


def test_table_path_is_relative_to_the_current_directory_and_overridable(tmp_path, monkeypatch):
    _tp_table(tmp_path, {32: 1000.0})
    monkeypatch.chdir(tmp_path)
    sweep = write(tmp_path, dict(BIG, throughput={"default": 100}))
    flat = load_sweep(sweep)
    assert "table" not in flat.throughput
    s = load_sweep(sweep, ["throughput.table=tp.csv", "throughput.default=null"])
    assert s.throughput == {"table": str(tmp_path / "tp.csv")}


def test_cells_without_any_rate_have_no_estimate_and_say_why(tmp_path, capsys):
    sweep = write(tmp_path, dict(TINY, throughput={"simclr": 900}))
    assert main(["plan", str(sweep), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "4 cells without an estimate" in out, out
    assert "fell back: 4 cell(s) without an estimate (no throughput.vicreg or throughput.default; " \
           "no throughput.vicreg_unbiased or throughput.default)" in out, out
    gh = {x["method"]: x["gpu_hours"] for x in rows(tmp_path / "r" / "tiny")}
    assert gh["vicreg"] == "" and float(gh["simclr"]) > 0
