#!/usr/bin/env bash
# The test command behind `make test`: bring up the project's single-node SLURM cluster (when root),
# run pytest (all marks, slurm and slow included), always stop the cluster.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
if [ "$(id -u)" = 0 ] && command -v slurmctld >/dev/null; then
  trap 'bash ci/slurm/down.sh >/dev/null 2>&1 || true' EXIT
  if bash ci/slurm/up.sh; then export BSSTUDY_SLURM=1; else echo "run_tests: SLURM bring-up failed" >&2; [ "${CI:-}" = true ] && exit 1; fi
fi
# In CI a missing cluster or browser is a failure, not a skip.
[ "${CI:-}" = true ] && export BSSTUDY_REQUIRE_ALL=1
.venv/bin/python -m pytest "$@"
