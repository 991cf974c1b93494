"""The training options a GPU user gets by default, executed on the CPU so they have run before a GPU does.

On CUDA, ``precision=auto`` means bf16 autocast and ``channels_last=true`` is the default; ``compile=true``
(inductor) is one override away. All three also work on the CPU: each tiny run here must finish ``done``
with a finite loss close to the same run in plain fp32 eager contiguous mode, and must show that the
option took effect (autocast dtype in the log, channels_last weights in the checkpoint, a compiled graph).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bsstudy.train import run_cell
from bsstudy.train.cli import prepare_run_dir

# test_train.TINY with the probe's train features capped: the evaluation then costs ~1 s, not ~5 s.
TINY = ["batch_size=32", "epochs=2", "dataset.train_subset=128", "model.width=4", "model.feature_dim=16",
        "method.projector.hidden_dim=32", "method.projector.out_dim=32", "eval.probe_weight_decays=[0.0]",
        "eval.probe_max_iter=30", "eval.max_train_samples=256", "device=cpu"]
PLAIN = ["precision=fp32", "channels_last=false", "compile=false"]


def _train(out: Path, extra: list[str]) -> dict:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # same reduction order in every run of this file
    try:
        res = run_cell(prepare_run_dir([*TINY, *PLAIN, *extra, f"out={out}"]))
    finally:
        torch.set_num_threads(n)
    assert res["status"] == "done", res.get("error")
    assert res["final_loss"] is not None and math.isfinite(res["final_loss"])
    return res


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict:
    """fp32, contiguous, eager: the reference every option is compared with."""
    return _train(tmp_path_factory.mktemp("gpu_paths") / "plain", [])


@pytest.fixture(scope="module")
def bf16(tmp_path_factory) -> dict:
    return _train(tmp_path_factory.mktemp("gpu_paths") / "bf16", ["precision=bf16"])


def test_bf16_autocast_trains_close_to_fp32(plain, bf16):
    # bf16 rounds activations (8-bit mantissa): the loss moves, but only slightly (measured 1.3e-3 relative).
    assert bf16["final_loss"] != plain["final_loss"]
    assert bf16["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-2)
    assert 0.0 <= bf16["linear_top1"] <= 1.0 and 0.0 <= bf16["knn_top1"] <= 1.0


def test_bf16_autocast_is_on_in_the_run_log(tmp_path, capsys):
    _train(tmp_path / "log", ["precision=bf16", "epochs=1", "eval.linear=false", "eval.knn=false"])
    assert "amp=torch.bfloat16" in capsys.readouterr().err


def test_channels_last_trains_like_contiguous(plain, tmp_path):
    res = _train(tmp_path / "cl", ["channels_last=true"])
    # Same arithmetic in another memory order: only summation order differs (measured 9e-6 relative).
    assert res["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-4)
    weights = torch.load(tmp_path / "cl" / "checkpoints" / "last.pt", weights_only=False)["model"]
    convs = [w for w in weights.values() if w.dim() == 4 and w.shape[1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs)


@pytest.mark.slow  # one CPU core: ~50 s with a cold inductor cache (compiling fwd+bwd), ~10 s warm
def test_compile_with_the_cuda_defaults(bf16, tmp_path):
    """compile=true together with what precision=auto / channels_last give on CUDA (bf16, channels_last)."""
    from torch._dynamo.utils import counters

    counters.clear()
    res = _train(tmp_path / "compiled", ["compile=true", "precision=bf16", "channels_last=true"])
    assert counters["stats"]["unique_graphs"] >= 1     # the model was compiled, not run eagerly
    # Compiled vs eager bf16: fused kernels round differently (measured 6e-4 relative).
    assert res["final_loss"] == pytest.approx(bf16["final_loss"], rel=1e-2)


@pytest.mark.slow  # ~40 s on one CPU core: two tiny trainings, augmentation and throughput sections
def test_gpu_check_quick_runs_every_section_on_cpu(capsys):
    """benchmarks/gpu_check.py --quick: what the GPU check runs, end to end, on the CPU."""
    import sys

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, bench)
    try:
        import gpu_check
    finally:
        sys.path.remove(bench)
    n = torch.get_num_threads()
    try:
        rc = gpu_check.main(["--quick", "--device", "cpu", "--workers", "0", "--no-compile"])
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert rc == 0, out
    for line in ("ours run_cell", "baseline DL+lightly", "ours / baseline", "augmentation views/s",
                 "images/s at B=8", "images/s at B=32", "B=32 / B=8 images/s"):
        assert line in out.split("== gpu_check summary ==")[1], line
    assert "FAILED" not in out
