"""Throughput table (bench_train_throughput.py --write): format, reader, log-log interpolation, errors."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bsstudy.config import cell_config
from bsstudy.errors import UserError
from bsstudy.throughput import (COLUMNS, eval_seconds, images_per_second, load_throughput_table, model_key,
                                range_of, write_throughput_table)

ROOT = Path(__file__).resolve().parents[1]
KEY = "resnet18-cifar@3x32x32"


def _table(tmp_path: Path, points: dict[int, float], key: str = KEY, eval_s: float | None = 12.5,
           eval_n: int | None = None):
    rows = [{"model_key": key, "backbone": "resnet18", "image_shape": "3x32x32", "dataset": "cifar10",
             "method": "vicreg", "batch_size": b, "images_per_second": v, "eval_seconds": eval_s,
             "eval_images": eval_n,
             "device": "cuda:test", "precision": "bf16", "channels_last": "true"} for b, v in points.items()]
    return load_throughput_table(write_throughput_table(tmp_path / "t.csv", rows))


def test_round_trip_exact_points_and_metadata(tmp_path):
    t = _table(tmp_path, {256: 9000.0, 32: 1500.0, 1024: 12000.0})
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    m = t.models[KEY]
    assert m.batch_sizes == (32, 256, 1024) and m.images_per_second == (1500.0, 9000.0, 12000.0)
    assert (m.device, m.precision, m.method) == ("cuda:test", "bf16", "vicreg")
    assert [images_per_second(t, KEY, b) for b in (32, 256, 1024)] == [1500.0, 9000.0, 12000.0]
    assert eval_seconds(t, KEY) == 12.5


def test_interpolation_is_linear_in_log_log(tmp_path):
    t = _table(tmp_path, {32: 1000.0, 128: 2000.0, 512: 2000.0})
    # log-log midpoint of (32, 1000) and (128, 2000): 1000 * 2**0.5
    assert images_per_second(t, KEY, 64) == pytest.approx(1000 * math.sqrt(2))
    assert images_per_second(t, KEY, 256) == pytest.approx(2000.0)
    # a power law between the points is reproduced exactly: ips = 1000 * (B/32)**0.5
    assert images_per_second(t, KEY, 40) == pytest.approx(1000 * (40 / 32) ** 0.5)


def test_outside_the_measured_range(tmp_path):
    t = _table(tmp_path, {64: 1000.0, 256: 3000.0})
    assert images_per_second(t, KEY, 4096) == 3000.0                     # above: flat (saturated)
    slope = math.log(3) / math.log(4)
    assert images_per_second(t, KEY, 16) == pytest.approx(1000 * (16 / 64) ** slope)   # below: first slope
    steep = _table(tmp_path, {64: 100.0, 128: 1000.0})                  # slope > 1 is capped at 1
    assert images_per_second(steep, KEY, 32) == pytest.approx(50.0)
    falling = _table(tmp_path, {64: 1000.0, 128: 500.0})                 # negative slope is capped at 0
    assert images_per_second(falling, KEY, 32) == pytest.approx(1000.0)
    one = _table(tmp_path, {256: 7000.0})
    assert images_per_second(one, KEY, 32) == images_per_second(one, KEY, 4096) == 7000.0


def test_small_batches_cost_more_per_image(tmp_path):
    """The point of the table: GPU-hours of B=32 exceed those of B=4096 for the same images."""
    t = _table(tmp_path, {32: 1500.0, 256: 9000.0, 4096: 14000.0})
    assert images_per_second(t, KEY, 64) < images_per_second(t, KEY, 1024) < images_per_second(t, KEY, 4096)


def test_arrays_of_batch_sizes_match_one_at_a_time(tmp_path):
    t = _table(tmp_path, {32: 1500.0, 256: 9000.0, 4096: 14000.0})
    bs = np.array([8, 32, 64, 256, 1000, 4096, 8192])
    got = images_per_second(t, KEY, bs)
    assert isinstance(got, np.ndarray) and got.tolist() == pytest.approx([images_per_second(t, KEY, int(b)) for b in bs])
    assert isinstance(images_per_second(t, KEY, 64), float)
    assert range_of(t, KEY, bs).tolist() == ["below", "measured", "interpolated", "measured", "interpolated",
                                             "measured", "above"]
    assert range_of(t, KEY, 16) == "below"


def test_eval_seconds_scale_with_the_images_evaluated(tmp_path):
    t = _table(tmp_path, {32: 1.0}, eval_s=60.0, eval_n=60000)
    assert eval_seconds(t, KEY) == 60.0 and eval_seconds(t, KEY, 15000) == pytest.approx(15.0)
    unscaled = _table(tmp_path, {32: 1.0}, eval_s=60.0)  # no eval_images: taken as it is
    assert eval_seconds(unscaled, KEY, 15000) == 60.0


def test_unknown_model_names_the_file_and_what_was_measured(tmp_path):
    t = _table(tmp_path, {32: 1.0})
    with pytest.raises(UserError, match=r"t\.csv: no throughput measured for small_cnn-w32@1x28x28 "
                                        r"\(measured: resnet18-cifar@3x32x32\)"):
        images_per_second(t, "small_cnn-w32@1x28x28", 32)


@pytest.mark.parametrize("body, match", [
    ("model_key,batch_size\nx,32\n", "missing column"),
    ("model_key,batch_size,images_per_second\nx,32,0\n", r"t\.csv:2: images_per_second: '0' must be a positive"),
    ("model_key,batch_size,images_per_second\nx,32,fast\n", "images_per_second: 'fast' is not a number"),
    ("model_key,batch_size,images_per_second\nx,3.5,10\n", "batch_size: '3.5' is not a number"),
    ("model_key,batch_size,images_per_second\nx,32,10\nx,32,11\n", r"t\.csv:3: x batch_size 32 appears twice"),
    ("model_key,batch_size,images_per_second\n,32,10\n", "model_key is empty"),
    ("model_key,batch_size,images_per_second,eval_seconds\nx,32,10,5\nx,64,11,6\n", "eval_seconds 6.0 differs"),
    ("model_key,batch_size,images_per_second,eval_images\nx,32,10,500\nx,64,11,600\n", "eval_images 600 differs"),
    ("model_key,batch_size,images_per_second,eval_images\nx,32,10,5e3\n", "eval_images: '5e3' is not a number"),
])
def test_bad_tables_are_one_line_user_errors(tmp_path, body, match):
    (tmp_path / "t.csv").write_text(body)
    with pytest.raises(UserError, match=match) as e:
        load_throughput_table(tmp_path / "t.csv")
    assert "\n" not in str(e.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nope.csv: cannot read"):
        load_throughput_table(tmp_path / "nope.csv")


def test_extra_columns_and_missing_eval_are_fine(tmp_path):
    (tmp_path / "t.csv").write_text("model_key,batch_size,images_per_second,note\nx,32,10,my laptop\nx,64,15,\n")
    t = load_throughput_table(tmp_path / "t.csv")
    assert images_per_second(t, "x", 64) == 15.0 and eval_seconds(t, "x") is None


def test_model_key_of_cell_configs():
    assert model_key(cell_config([])) == "small_cnn-w32@1x28x28"
    assert model_key(cell_config(["model=resnet18_cifar", "dataset=cifar10"])) == "resnet18-cifar@3x32x32"
    assert model_key(cell_config(["model=resnet50", "dataset=stl10"])) == "resnet50-imagenet@3x96x96"
    plain = {"model": {"name": "small_cnn", "width": 8}, "dataset": {"channels": 1, "image_size": 28}}
    assert model_key(plain) == "small_cnn-w8@1x28x28"


def test_throughput_module_does_not_import_torch():
    code = "import sys, bsstudy.throughput; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # ~15 s: two timed batch sizes and a scaled-down evaluation of the small CNN
@pytest.mark.usefixtures("one_thread")
def test_bench_write_produces_a_table_the_reader_takes(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_train_throughput as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "tp.csv"
    bench.main(["--write", str(out), "--device", "cpu", "--backbones", "small_cnn", "--batches", "8", "16",
                "--min-seconds", "0.05", "--max-steps", "2", "--eval-images", "128"])
    t = load_throughput_table(out)
    key = model_key(cell_config([]))
    m = t.models[key]
    assert list(t.models) == [key] and m.batch_sizes == (8, 16)
    assert all(v > 0 for v in m.images_per_second) and m.eval_seconds > 0
    assert m.eval_images == 60000 + 10000  # Fashion-MNIST's evaluation splits, timed on 128 and scaled
    assert (m.device, m.precision, m.method) == ("cpu:1threads", "fp32", "vicreg")
    assert min(m.images_per_second) <= images_per_second(t, key, 12) <= max(m.images_per_second)
    assert f"wrote {out} (2 rows)" in capsys.readouterr().out
