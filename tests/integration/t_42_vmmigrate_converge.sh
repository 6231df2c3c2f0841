#!/usr/bin/env bash
# A guest dirtying memory faster than the migration link carries it
# converges with vmmigrate's defaults. The link into due is shaped to
# 800 Mbit/s (100 MB/s, tc tbf on the switch port); the guest rewrites
# 256 MiB of half-random pages (~2x compressible, fresh every pass) as fast
# as it can, several times the link's rate. QEMU at its own settings never
# completes this (downtime 300 ms allows ~30 MB left at 100 MB/s); the
# engine's auto-converge throttle and downtime ramp must get it across, in
# insecure mode (nothing compresses) and secure mode, with the guest's own
# check passing on due and on the way back.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
NET=10.99.2.0/24

cleanup() {
  local p
  ip netns exec vmm-sw tc qdisc del dev due-m root 2>/dev/null || true
  ip netns exec vmm-sw tc qdisc del dev uno-m root 2>/dev/null || true
  for p in "$TB_STATE"/*/run/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT

ctl() { on "$1" "$VMCTL" "${@:2}"; }
rundir() { echo "$TB_STATE/$1/run/$2"; }

tb down >/dev/null 2>&1 || true
tb up 2
mkdir -p "$RUN"
for n in uno due; do node_vmmd_start $n; done
node_wait_synced uno due
ctl uno create 160 --name hot --memory 1024 --kernel "$GUEST_DIR/vmlinux" \
  --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.mode=mem vmtest.mib=256 vmtest.rate=0 vmtest.fill=half" >/dev/null
ctl uno start 160 >/dev/null
wait_console "$(rundir uno 160)" 'VMTEST OK' 3 60

# The guest's write rate, from two heartbeats: pages stamped per second.
rate_mb() {
  local log=$1/console.log a b
  a=$(grep -oE 'VMTEST OK n=[0-9]+ .*pages=[0-9]+ .*ms=[0-9]+' "$log" | tail -2 | head -1)
  b=$(grep -oE 'VMTEST OK n=[0-9]+ .*pages=[0-9]+ .*ms=[0-9]+' "$log" | tail -1)
  awk -v a="$a" -v b="$b" 'BEGIN {
    match(a, /pages=[0-9]+/); pa = substr(a, RSTART + 6, RLENGTH - 6)
    match(a, /ms=[0-9]+/); ta = substr(a, RSTART + 3, RLENGTH - 3)
    match(b, /pages=[0-9]+/); pb = substr(b, RSTART + 6, RLENGTH - 6)
    match(b, /ms=[0-9]+/); tb = substr(b, RSTART + 3, RLENGTH - 3)
    if (tb > ta) printf "%d", (pb - pa) * 4096 / (tb - ta) / 1000; else print 0 }'
}
dirty=$(rate_mb "$(rundir uno 160)")
[ "$dirty" -gt 300 ] || die "the guest dirties only $dirty MB/s: not faster than a 100 MB/s link"
note "guest dirties $dirty MB/s of pages; link 100 MB/s"

# hop FROM TO TYPE: migrate with defaults over the shaped link; the guest
# must arrive intact, having been throttled on the way.
hop() {
  local from=$1 to=$2 type=$3 out=$RUN/hop-$1-$3.json before dir
  before=$(last_ok "$(rundir "$from" 160)")
  ip netns exec vmm-sw tc qdisc replace dev "$to-m" root tbf rate 800mbit burst 256kb latency 50ms
  on "$from" "$VMMIGRATE" 160 "$to" --online --migration_type "$type" --migration_network "$NET" \
    --timeout 240 --output json >"$out" 2>"$out.err" ||
    die "$type migration over the slow link failed: $(tail -3 "$out.err")"
  ip netns exec vmm-sw tc qdisc del dev "$to-m" root
  grep -q '"event":"done"' "$out" || die "no done event: $(tail -2 "$out")"
  grep -qE '"throttle_pct":[1-9]' "$out" || die "the guest was never throttled: $(grep progress "$out" | tail -2)"
  dir=$(rundir "$to" 160)
  wait_console "$dir" 'VMTEST OK' 2 60
  [ "$(last_ok "$dir")" -gt "$before" ] || die "the guest's counter did not continue on $to"
  "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || die "verify on $to failed"
  note "converged $from -> $to ($type): $(grep '"event":"done"' "$out" | grep -oE '"(migration_ms|downtime_ms|passes|transferred)":[0-9]+' | tr '\n' ' ')"
}
hop uno due insecure
hop due uno secure
