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

# field JSON KEY: a number from our one-line JSON.
field() { grep -oE "\"$2\":[0-9.]+" <<<"$1" | head -1 | cut -d: -f2; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

# run_case NAME APPEND RUNS TIMEOUT MIGRATE-ARGS...: prints "total down mbps passes" per run.
run_case() {
  local name=$1 app=$2 runs=$3 timeout=$4; shift 4
  local cur=uno other=due dir="$RUN/$name-0" i out
  guest_start "$cur" "$name-0" "$MEM_1G" "$app" >/dev/null 2>>"$RUN/bench.log"
  wait_console "$dir" 'VMTEST OK' 2 40
  for ((i = 1; i <= runs; i++)); do
    local next="$RUN/$name-$i"
    guest_start "$other" "$name-$i" "$MEM_1G" "$app" --incoming >/dev/null 2>>"$RUN/bench.log"
    if out=$("$VMGUEST" migrate --from "$dir" --to "$next" --output json --timeout "$timeout" \
              --uri "tcp:$(tb addr "$other" migration):61000" "$@" 2>>"$RUN/bench.log" | tail -1) &&
       grep -q '"event":"done"' <<<"$out"; then
      echo "$(field "$out" total_ms) $(field "$out" downtime_ms) $(field "$out" mbps) $(field "$out" passes)"
      dir=$next; local t=$cur; cur=$other; other=$t
      wait_console "$dir" 'VMTEST OK' 1 30
    else
      echo "timeout - - -"
      "$VMGUEST" stop --dir "$next" >/dev/null 2>&1 || true
    fi
  done
  "$VMGUEST" verify --dir "$dir" >/dev/null || die "$name: guest memory check failed after the runs"
  "$VMGUEST" stop --dir "$dir" >/dev/null
}

declare -A TOTAL DOWN MBPS PASSES
measure() {
  local key=$1; shift
  local rows; rows=$(run_case "$@")
  if grep -q timeout <<<"$rows"; then TOTAL[$key]=timeout; else
    TOTAL[$key]=$(awk '{print $1}' <<<"$rows" | median)
  fi
  DOWN[$key]=$(awk '$2!="-"{print $2}' <<<"$rows" | median)
  MBPS[$key]=$(awk '$3!="-"{print $3}' <<<"$rows" | median)
  PASSES[$key]=$(awk '$4!="-"{print $4}' <<<"$rows" | median)
}

IDLE="vmtest.mode=idle"
BUSY="vmtest.mode=mem vmtest.mib=256 vmtest.rate=0"
echo "bench: raw QEMU migration, TCG guests, $RUNS runs each (median), RAM 1 GiB - 8 KiB"
measure idle_default idle "$IDLE" "$RUNS" 120 --max-bandwidth 128M
measure idle_unlim idle "$IDLE" "$RUNS" 120 --max-bandwidth unlimited
measure busy_unlim busy "$BUSY" "$RUNS" 120 --max-bandwidth unlimited
measure busy_multifd busy "$BUSY" "$RUNS" 120 --max-bandwidth unlimited --multifd 2
measure busy_default busy "$BUSY" 1 30 --max-bandwidth 128M

ratio() { # baseline / value, "x faster"
  [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] || { echo "-"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'
}
printf '%-34s %10s %10s %10s %7s  %s\n' case total_ms downtime_ms Mbit/s passes "speed vs baseline"
row() { printf '%-34s %10s %10s %10s %7s  %s\n' "$1" "${TOTAL[$2]}" "${DOWN[$2]}" "${MBPS[$2]}" "${PASSES[$2]}" "$3"; }
row "idle 1G, QEMU default 128 MiB/s"  idle_default "baseline"
row "idle 1G, max-bandwidth unlimited" idle_unlim "$(ratio "${TOTAL[idle_default]}" "${TOTAL[idle_unlim]}")"
busy_base=${TOTAL[busy_default]}
[ "$busy_base" = timeout ] && busy_base=30000
row "busy 256M, QEMU default 128 MiB/s" busy_default "baseline$([ "${TOTAL[busy_default]}" = timeout ] && echo ' (did not converge in 30 s)')"
row "busy 256M, unlimited"          busy_unlim "$(ratio "$busy_base" "${TOTAL[busy_unlim]}")$([ "${TOTAL[busy_default]}" = timeout ] && echo ' (at least)')"
row "busy 256M, unlimited, multifd 2" busy_multifd "$(ratio "$busy_base" "${TOTAL[busy_multifd]}")$([ "${TOTAL[busy_default]}" = timeout ] && echo ' (at least)')"
