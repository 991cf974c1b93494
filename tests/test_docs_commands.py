"""Every ``bsstudy ...`` command of README.md and docs/*.md works as written (issue 13 item 12).

Commands come from fenced code blocks (one per line, ``# comment`` dropped) and from inline code spans
that start with ``bsstudy <verb> <argument>``. Synopsis brackets (``[--dry-run]``, ``[key=value ...]``)
are dropped and ``<study>`` / ``<run_id>`` name a tiny planned study. Each command then runs in-process
in a fresh directory with what it needs (a planned study for status/submit, a fabricated finished one for
report and power); long runs are shrunk: ``train``/``bias`` get tiny sizes (given keys are replaced), ``submit``
gets ``--dry-run``. A code-block command this file cannot parse fails the test, so docs stay testable;
inline spans that are prose fragments (``...``, CAPITALISED placeholders) are not commands.
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from bsstudy.cli import VERBS, main
from bsstudy.sweep import preflight

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A tiny planned study for <study>/<run_id> placeholders.
DOCS_SWEEP = {"study": "docs", "base": {"model.width": 4, "dataset.train_subset": 64, "device": "cpu",
                                        "precision": "fp32", "channels_last": False, "eval.max_train_samples": 64,
                                        "eval.probe_max_iter": 5, "method.projector": {"hidden_dim": 32, "out_dim": 16}},
              "grid": {"method": ["vicreg"], "batch_size": [8], "epochs": [1], "seed": [0]}}
TINY_TRAIN = {"epochs": "1", "batch_size": "8", "dataset.train_subset": "64", "model.width": "4",
              "eval.max_train_samples": "64", "eval.probe_max_iter": "5", "device": "cpu", "precision": "fp32",
              "channels_last": "false", "method.projector.hidden_dim": "32", "method.projector.out_dim": "16"}
TINY_BIAS = ["--batch-sizes", "8,16", "--repeats", "6", "--groups", "3", "--pool", "32", "--embedding-only",
             "--objectives", "vicreg", "--schemes", "jackknife", "--quiet", "--device", "cpu", "model.width=4", "dataset.train_subset=64"]


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) of every documented bsstudy command, in document order, deduplicated."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text()
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
        for b in blocks:
            for line in b.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("bsstudy "):
                    found.append((doc.name, line))
        prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
        for span in re.findall(r"`([^`\n]+)`", prose):
            words = span.split()
            if len(words) >= 3 and words[0] == "bsstudy" and words[1] in VERBS and _whole(words):
                found.append((doc.name, span.strip()))
    seen, out = set(), []
    for where, cmd in found:  # a synopsis and a plain example of the same command run once
        key = _strip_synopsis(cmd)
        if key not in seen:
            seen.add(key)
            out.append((where, cmd))
    return out


def _strip_synopsis(cmd: str) -> str:
    """``cmd`` without ``[...]`` groups after a space ([--x a|b], [key=value ...]); grid.seed=[0,1] stays."""
    while True:
        new = re.sub(r"\s\[[^\[\]]*\]", "", cmd)
        if new == cmd:
            return cmd
        cmd = new


def _whole(words: list[str]) -> bool:
    """An inline span is a command, not a prose fragment such as `bsstudy plan SWEEP.yaml KEY=VALUE ...`:
    no '...', no CAPITALISED placeholder, and plan/submit/status/report name their file or study."""
    if any("..." in w or re.search(r"\b[A-Z]{3,}\b", w) for w in words):
        return False
    return words[1] not in ("plan", "submit", "status", "report") or "/" in words[2]


def normalise(cmd: str, run_id: str) -> list[str]:
    """argv (without 'bsstudy') of a documented command: synopsis brackets dropped, placeholders filled."""
    cmd = _strip_synopsis(cmd).replace("<study>", "docs").replace("<run_id>", run_id)
    argv = shlex.split(cmd)[1:]
    bad = [a for a in argv if re.search(r"[<>|]|\.\.\.", a) or a.isupper()]
    if bad:
        raise AssertionError(f"documented command {cmd!r}: cannot fill in {bad}")
    return argv


def _sizes(argv: list[str], tiny: dict[str, str]) -> list[str]:
    given = [a for a in argv if not (a.partition("=")[0] in tiny and "=" in a)]
    return given + [f"{k}={v}" for k, v in tiny.items()]


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """$BSSTUDY_DATA_CACHE with stand-in CIFAR-10 files (the shipped batchsize sweep plans on CIFAR-10;
    plan only checks that they are present). Everything else links to the real cache (decoded
    Fashion-MNIST tensors), so the runs below do not decode the dataset again."""
    real = preflight.cache_dir()
    real.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("data")
    for name in ("tensors", "FashionMNIST"):
        (real / name).mkdir(exist_ok=True)
        (root / name).symlink_to(real / name)
    folder, files = preflight.FOLDERS["cifar10"]
    (root / folder).mkdir()
    for f in files:
        (root / folder / f).write_bytes(b"stand-in")
    return root


def _plan_study(study: str) -> str:
    """Plan results/<study> (shipped sweep, or the tiny docs sweep); its first run_id."""
    if study == "docs":
        Path("docs.yaml").write_text(yaml.safe_dump(DOCS_SWEEP))
        sweep = "docs.yaml"
    else:
        sweep = f"sweeps/{study}.yaml"
    if not Path("results", study, "plan.csv").exists():
        assert main(["plan", sweep]) == 0
    return next(iter(sorted(p.name for p in Path("results", study, "runs").iterdir())))


COMMANDS = documented_commands()


def test_docs_have_commands_of_every_verb():
    verbs = {cmd.split()[1] for _, cmd in COMMANDS}
    assert {"plan", "submit", "status", "report", "train", "bias"} <= verbs, verbs


@pytest.mark.slow
@pytest.mark.parametrize("where,cmd", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_documented_command_runs(where, cmd, tmp_path, monkeypatch, data_cache, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BSSTUDY_DATA_CACHE", str(data_cache))
    (tmp_path / "sweeps").symlink_to(ROOT / "sweeps")
    run_id = _plan_study("docs")
    argv = normalise(cmd, run_id)
    verb = argv[0]
    study = next((Path(a).name for a in argv[1:] if a.startswith("results/")), None)
    if verb in ("status", "submit") and study and study != "docs":
        _plan_study(study)
    if verb == "submit":
        argv += ["--dry-run"] + ([] if "--cluster" in argv else ["--cluster", "local"])
    elif verb in ("report", "power"):  # both read a finished study: a fabricated one
        from bsstudy.report.synthetic import write_study

        shutil.rmtree(Path("results", study), ignore_errors=True)
        write_study(Path("results", study), methods=("simclr", "vicreg"), batch_sizes=(64, 256), seeds=(0, 1))
        if verb == "report":
            argv += [] if "--format" in argv else ["--format", "md"]  # html/tex add only rendering time
    elif verb == "train" and "--help" not in argv and "--run-dir" not in argv:
        # evaluation is the slow part: kept only where the command is about it (eval.at_init=true)
        evals = {} if any(a.startswith("eval.") for a in argv) else {"eval.linear": "false", "eval.knn": "false"}
        argv = _sizes(argv, {**TINY_TRAIN, **evals})
    elif verb == "bias":
        argv = argv + TINY_BIAS
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # --help
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 0, f"{where}: `{cmd}` -> bsstudy {' '.join(argv)}: exit {rc}\n{err}"
    if verb == "train" and "--help" not in argv:
        assert '"status": "done"' in out, out
