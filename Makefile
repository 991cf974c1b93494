# Two commands do all set-up on a fresh Debian machine:
#   make demo   # a small real study on Fashion-MNIST (plan -> run -> report), CPU; untracked output
#   make test   # the full test suite (brings up a private single-node SLURM cluster when root)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.bsstudy-installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data sysdeps demo demo-publish test bench slurm-up slurm-down clean-demo

setup: $(STAMP) data

# torch/torchvision come pinned from constraints.txt (edit it to pick another CUDA build).
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

# The embedded default dataset, from Debian's package, only when missing and apt is available.
data:
	@if [ ! -e $(FMNIST) ] && command -v apt-get >/dev/null; then \
	  echo "installing dataset-fashion-mnist (apt)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# System packages the tests use: SLURM (real single-node cluster) and Chromium (report screenshot test).
sysdeps:
	@bash ci/sysdeps.sh

# The demo's network (sweeps/demo.yaml `base`), for the gradient-bias measurement.
DEMO_NET := model.width=8 model.feature_dim=64 method.projector.hidden_dim=128 method.projector.out_dim=128

# `make demo` writes only untracked files: results/demo and its report in reports/demo-local (both ignored
# by git). `make demo-publish` runs the same demo and writes the report into reports/demo, the committed copy.
DEMO_REPORT ?= reports/demo-local

demo: setup
	$(BIN)/bsstudy plan sweeps/demo.yaml
	$(BIN)/bsstudy submit results/demo --cluster local
	$(BIN)/bsstudy status results/demo
	$(BIN)/bsstudy bias --out results/demo/bias --quiet $(DEMO_NET)
	$(BIN)/bsstudy report results/demo --out $(DEMO_REPORT)

demo-publish:
	$(MAKE) demo DEMO_REPORT=reports/demo

test: setup sysdeps
	bash ci/run_tests.sh

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

slurm-up:
	bash ci/slurm/up.sh
slurm-down:
	bash ci/slurm/down.sh

clean-demo:
	rm -rf results/demo reports/demo-local
