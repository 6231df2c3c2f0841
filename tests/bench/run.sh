#!/usr/bin/env bash
# make bench: benchmarks on the 3-node testbed. Each figure is printed with
# its ratio to a baseline measured in the same run.
# Usage: run.sh BUILD_DIR [RUNS]
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
RUNS=${2:-${BENCH_RUNS:-3}}
here=$(cd "$(dirname "$0")" && pwd)
for b in "$here"/bench_*.sh; do
  B=$B RUNS=$RUNS bash "$b"
done
