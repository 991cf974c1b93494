#!/usr/bin/env bash
# Install the Debian packages the test suite uses, when missing and when we may (root or sudo).
# SLURM packages for the real single-node cluster; Chromium for the report's screenshot test.
set -euo pipefail
need=()
command -v slurmctld >/dev/null || [ -x /usr/sbin/slurmctld ] || need+=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
command -v chromium >/dev/null || need+=(chromium)
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
((${#need[@]})) || exit 0
if ! command -v apt-get >/dev/null; then
  echo "sysdeps: apt-get not found; tests needing ${need[*]} will be skipped" >&2; exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
echo "sysdeps: installing ${need[*]}"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/bsstudy-sysdeps.log 2>&1 \
  || { tail -n 20 /tmp/bsstudy-sysdeps.log >&2; exit 1; }
