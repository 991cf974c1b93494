#!/usr/bin/env bash
# GPU check of the training path (docs: benchmarks/gpu_check.py): ours vs a torchvision DataLoader + lightly
# loop on CIFAR-10-shaped ResNet-18 VICReg, augmentation views/s, images/s at B=32 vs B=1024, peak memory.
#   bash benchmarks/gpu_check.sh            # on a GPU node: < 8 minutes (hard limit 8 min)
#   bash benchmarks/gpu_check.sh --quick    # tiny sizes, runs on a CPU too (GPU_CHECK_QUICK=1 works too)
# Extra arguments go to gpu_check.py (--workers N, --no-compile, --device cuda:1, ...). PYTHON=... picks the
# interpreter (default: the repo's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/gpu_check.py "$@"
