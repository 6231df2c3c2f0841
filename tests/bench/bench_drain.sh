#!/usr/bin/env bash
# vmmigrate drain of 4 idle 1 GiB guests from uno to due and tre with 1, 2
# and 4 workers, against the sum of the same guests' single migrations
# (vmmigrate VMID due, one after the other) measured in this run.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib_bench.sh"
RUN=/run/vmm-bench-drain
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
NET=10.99.2.0/24
TYPE=${DRAIN_TYPE:-insecure}
cleanup() {
  local p
  for p in "$TB_STATE"/*/run/*/qemu.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  for n in uno due tre; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT
tb down >/dev/null 2>&1 || true
tb up 3 >/dev/null
mkdir -p "$RUN"
for n in uno due tre; do node_vmmd_start $n; done
node_wait_synced uno due tre
GUESTS="931 932 933 934"
for v in $GUESTS; do
  on uno "$VMCTL" create "$v" --memory 1024 --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
    --append "console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.mode=idle" >/dev/null 2>>"$RUN/bench.log"
  on uno "$VMCTL" start "$v" >/dev/null 2>>"$RUN/bench.log"
done
for v in $GUESTS; do wait_console "$TB_STATE/uno/run/$v" 'VMTEST OK' 2 90; done
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# Baseline: one migration after the other, each timed, then back untimed.
sum=0
for v in $GUESTS; do
  t0=$(date +%s%N)
  on uno "$VMMIGRATE" "$v" due --online --migration_type "$TYPE" --migration_network "$NET" \
    >/dev/null 2>>"$RUN/bench.log" || die "single migration of $v failed"
  sum=$((sum + $(ms "$t0")))
done
for v in $GUESTS; do
  on due "$VMMIGRATE" "$v" uno --online --migration_type "$TYPE" --migration_network "$NET" \
    >/dev/null 2>>"$RUN/bench.log" || die "migration of $v back failed"
done

declare -A WALL
for w in 1 2 4; do
  t0=$(date +%s%N)
  on uno "$VMMIGRATE" drain uno --max-workers "$w" --migration_type "$TYPE" --migration_network "$NET" \
    >"$RUN/drain-$w.out" 2>>"$RUN/bench.log" || die "drain with $w workers: $(tail -3 "$RUN/drain-$w.out")"
  WALL[$w]=$(ms "$t0")
  on uno "$VMMIGRATE" undrain uno --return --max-workers 4 >/dev/null 2>>"$RUN/bench.log" ||
    die "undrain after $w workers failed"
done
for v in $GUESTS; do
  "$VMGUEST" verify --dir "$TB_STATE/uno/run/$v" >/dev/null || die "guest $v: check failed after the drains"
done

echo "bench: drain of 4 idle 1 GiB guests ($TYPE), uno -> due, tre"
printf '%-44s %9s  %s\n' case wall_ms "vs the sum of single migrations"
printf '%-44s %9s  %s\n' "4 single migrations, one after the other" "$sum" baseline
for w in 1 2 4; do
  printf '%-44s %9s  %s\n' "drain, $w worker(s)" "${WALL[$w]}" "$(ratio "$sum" "${WALL[$w]}") faster"
done
