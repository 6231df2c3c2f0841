#!/usr/bin/env bash
# Raw QEMU migration on the testbed (uno <-> due over the migration
# network), driven by our QMP client: an idle 1 GiB guest and a guest
# rewriting 256 MiB as fast as it can. Baseline: the same migration with
# QEMU 7.2's default bandwidth cap (128 MiB/s), measured in this run.
# One guest ping-pongs between the nodes, so each sample is one migration.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
RUN=/run/vmm-bench
RUNS=${RUNS:-3}
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT
tb down >/dev/null 2>&1 || true
tb up 2 >/dev/null
mkdir -p "$RUN"

source "$(dirname "$0")/lib_bench.sh"

declare -A TOTAL DOWN MBPS PASSES
measure() {
  local key=$1; shift
  local name=$1 app=$2; shift 2
  local rows; rows=$(raw_case "$name" "$MEM_1G" "$app" "$@")
  if grep -q timeout <<<"$rows"; then TOTAL[$key]=timeout; else
    TOTAL[$key]=$(col "$rows" 1)
  fi
  DOWN[$key]=$(col "$rows" 2)
  MBPS[$key]=$(col "$rows" 3)
  PASSES[$key]=$(col "$rows" 4)
}

IDLE="vmtest.mode=idle"
BUSY="vmtest.mode=mem vmtest.mib=256 vmtest.rate=0"
echo "bench: raw QEMU migration, TCG guests, $RUNS runs each (median), RAM 1 GiB - 8 KiB"
measure idle_default idle "$IDLE" "$RUNS" 120 --max-bandwidth 128M
measure idle_unlim idle "$IDLE" "$RUNS" 120 --max-bandwidth unlimited
measure busy_unlim busy "$BUSY" "$RUNS" 120 --max-bandwidth unlimited
measure busy_multifd busy "$BUSY" "$RUNS" 120 --max-bandwidth unlimited --multifd 2
measure busy_default busy "$BUSY" 1 30 --max-bandwidth 128M

printf '%-34s %10s %10s %10s %7s  %s\n' case total_ms downtime_ms Mbit/s passes "speed vs baseline"
row() { printf '%-34s %10s %10s %10s %7s  %s\n' "$1" "${TOTAL[$2]}" "${DOWN[$2]}" "${MBPS[$2]}" "${PASSES[$2]}" "$3"; }
row "idle 1G, QEMU default 128 MiB/s"  idle_default "baseline"
row "idle 1G, max-bandwidth unlimited" idle_unlim "$(ratio "${TOTAL[idle_default]}" "${TOTAL[idle_unlim]}")"
busy_base=${TOTAL[busy_default]}
[ "$busy_base" = timeout ] && busy_base=30000
row "busy 256M, QEMU default 128 MiB/s" busy_default "baseline$([ "${TOTAL[busy_default]}" = timeout ] && echo ' (did not converge in 30 s)')"
row "busy 256M, unlimited"          busy_unlim "$(ratio "$busy_base" "${TOTAL[busy_unlim]}")$([ "${TOTAL[busy_default]}" = timeout ] && echo ' (at least)')"
row "busy 256M, unlimited, multifd 2" busy_multifd "$(ratio "$busy_base" "${TOTAL[busy_multifd]}")$([ "${TOTAL[busy_default]}" = timeout ] && echo ' (at least)')"
