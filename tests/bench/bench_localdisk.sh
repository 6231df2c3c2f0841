#!/usr/bin/env bash
# Live migration with local disks (vmmigrate --with-local-disks) on the
# 2-node testbed, each figure beside a baseline from the same run:
#  - the disk phase's throughput for a 1 GiB disk full of random data
#    against plain TCP on the migration network (one stream) and against
#    QEMU's own mirror to an NBD export, started by hand over QMP;
#  - an 8 GiB disk that is all zeros against that full 1 GiB one;
#  - write-blocking against background mirrors while the guest writes.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib_bench.sh"
RUN=/run/vmm-bench-disk
RUNS=${RUNS:-3}
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
NET=10.99.2.0/24
SINK=
cleanup() {
  local p
  [ -n "$SINK" ] && kill "$SINK" 2>/dev/null
  for p in "$TB_STATE"/*/run/*/qemu.pid "$RUN"/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT
tb down >/dev/null 2>&1 || true
tb up 2 >/dev/null
mkdir -p "$RUN"
for n in uno due; do node_vmmd_start $n; done
node_wait_synced uno due
APP="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
DUE_M=$(tb addr due migration)
owner() { on uno "$VMCTL" config "$1" | sed -n 's/^node: //p'; }
vol() { echo "$TB_STATE/$1/vmm/images/$2/vm-$2-disk-0.raw"; }

# The network alone: 1 GiB over one TCP stream.
ip netns exec due "$B/tp_bench" sink "$DUE_M" 5001 & SINK=$!
sleep 0.3
tcp=$(ip netns exec uno "$B/tp_bench" tcp "$DUE_M" 5001 1024 1 | grep -oE 'mb_per_s=[0-9]+' | cut -d= -f2)
kill "$SINK"; SINK=

# QEMU's own mirror, by hand: a source QEMU with the 1 GiB disk on uno, a
# target QEMU with an empty one on due serving it over NBD; mirror to ready.
head -c 1073741824 /dev/urandom >"$RUN/full.raw"
truncate -s 1G "$RUN/empty.raw"
qmp() { "$VMGUEST" qmp --dir "$1" "${@:2}" >/dev/null; }
hand_mirror() {
  local t0 t1 st
  guest_start uno hsrc "$MEM_512M" "vmtest.mode=idle" --disk "$RUN/full.raw" >/dev/null 2>&1
  guest_start due hdst "$MEM_512M" "vmtest.mode=idle" --disk "$RUN/empty.raw" --incoming >/dev/null 2>&1
  qmp "$RUN/hdst" nbd-server-start "{\"addr\":{\"type\":\"inet\",\"data\":{\"host\":\"$DUE_M\",\"port\":\"10809\"}}}"
  qmp "$RUN/hdst" block-export-add '{"type":"nbd","id":"e0","node-name":"disk0","writable":true,"name":"d0"}'
  qmp "$RUN/hsrc" blockdev-add "{\"driver\":\"nbd\",\"node-name\":\"t0\",\"server\":{\"type\":\"inet\",\"host\":\"$DUE_M\",\"port\":\"10809\"},\"export\":\"d0\"}"
  t0=$(date +%s%N)
  qmp "$RUN/hsrc" blockdev-mirror '{"job-id":"m0","device":"drive0","target":"t0","sync":"full"}'
  while :; do
    st=$("$VMGUEST" qmp --dir "$RUN/hsrc" query-block-jobs)
    grep -q '"ready": true' <<<"$st" && break
    sleep 0.05
  done
  t1=$(date +%s%N)
  "$VMGUEST" stop --dir "$RUN/hsrc" >/dev/null; "$VMGUEST" stop --dir "$RUN/hdst" >/dev/null
  rm -rf "$RUN/hsrc" "$RUN/hdst"
  truncate -s 0 "$RUN/empty.raw"; truncate -s 1G "$RUN/empty.raw"
  echo $(( (t1 - t0) / 1000000 ))
}
hand=$(for ((i = 0; i < RUNS; i++)); do hand_mirror; done | median)

# disk_ms JSON: how long the mirror phase took (first disk progress to in sync).
disk_ms() {
  grep '"disk_total"' "$1" | grep -oE '"elapsed_ms":[0-9]+' | cut -d: -f2 |
    awk 'NR == 1 {a = $1} {b = $1} END {print b - a}'
}
# vmm_disk VMID SIZE FILL RUNS ARGS...: a guest with a local disk of SIZE
# (FILL: full = random data, thin = zeros) ping-pongs; prints
# "total disk_phase downtime disk_bytes" per run.
vmm_disk() {
  local vmid=$1 size=$2 fill=$3 runs=$4 mode=$5; shift 5
  local i src dst out=$RUN/$vmid.json
  on uno "$VMCTL" create "$vmid" --memory 256 --disk "local:$size" --kernel "$GUEST_DIR/vmlinux" \
    --initrd "$GUEST_DIR/initramfs.cpio.gz" --append "$APP $mode" >/dev/null 2>>"$RUN/bench.log"
  [ "$fill" = full ] && head -c "$(stat -c %s "$(vol uno "$vmid")")" /dev/urandom >"$(vol uno "$vmid")"
  on uno "$VMCTL" start "$vmid" >/dev/null 2>>"$RUN/bench.log"
  wait_console "$TB_STATE/uno/run/$vmid" 'VMTEST OK' 2 90
  for ((i = 1; i <= runs; i++)); do
    src=$(owner "$vmid"); dst=$([ "$src" = uno ] && echo due || echo uno)
    if ! on "$src" "$VMMIGRATE" "$vmid" "$dst" --online --with-local-disks --migration_network "$NET" \
      --output json "$@" >"$out" 2>>"$RUN/bench.log"; then
      echo "fail - - -"   # background mirrors of a busy writer never get in sync
      continue
    fi
    echo "$(field "$(grep '"event":"done"' "$out")" total_ms) $(disk_ms "$out")" \
         "$(field "$(grep '"event":"done"' "$out")" downtime_ms) $(field "$(grep '"event":"done"' "$out")" disk_bytes)"
    wait_console "$TB_STATE/$dst/run/$vmid" 'VMTEST OK' 1 60
  done
  src=$(owner "$vmid")
  "$VMGUEST" verify --dir "$TB_STATE/$src/run/$vmid" >/dev/null || die "guest $vmid: check failed after the runs"
  on "$src" "$VMCTL" stop "$vmid" >/dev/null 2>&1
  on "$src" "$VMCTL" destroy "$vmid" >/dev/null 2>&1
}
declare -A TOT DISK DOWN
measure() {
  local key=$1 rows; shift
  rows=$(vmm_disk "$@")
  if grep -q '^fail' <<<"$rows"; then TOT[$key]=fail; else TOT[$key]=$(col "$rows" 1); fi
  DISK[$key]=$(col "$rows" 2); DOWN[$key]=$(col "$rows" 3)
}
IDLE="vmtest.mode=idle"
WRITER="vmtest.mode=disk vmtest.rate=4"
echo "bench: live migration with local disks, TCG guests, $RUNS runs each (median)"
measure full_ins 921 1G full "$RUNS" "$IDLE" --migration_type insecure
measure full_sec 922 1G full "$RUNS" "$IDLE" --migration_type secure
measure thin_ins 923 8G thin "$RUNS" "$IDLE" --migration_type insecure
measure wb 924 1G thin "$RUNS" "$WRITER" --migration_type insecure --mirror-mode write-blocking
measure bg 925 1G thin 1 "$WRITER" --migration_type insecure --mirror-mode background

mbs() { [[ $1 =~ ^[0-9]+$ && $1 -gt 0 ]] && awk -v ms="$1" 'BEGIN { printf "%.0f", 1073.741824 / (ms / 1000) }' || echo -; }
printf '\n%-46s %9s %9s %9s %8s  %s\n' case total_ms disk_ms down_ms MB/s "vs baseline"
printf '%-46s %9s %9s %9s %8s  %s\n' "TCP, one stream, 1 GiB (network alone)" - - - "$tcp" baseline
printf '%-46s %9s %9s %9s %8s  %s\n' "QEMU mirror by hand, 1 GiB random, NBD/TCP" - "$hand" - "$(mbs "$hand")" "$(ratio "$(mbs "$hand")" "$tcp") of TCP"
for k in full_ins full_sec; do
  printf '%-46s %9s %9s %9s %8s  %s\n' "vmmigrate 1 GiB random disk, ${k#full_}" "${TOT[$k]}" "${DISK[$k]}" "${DOWN[$k]}" \
    "$(mbs "${DISK[$k]}")" "disk phase $(ratio "$hand" "${DISK[$k]}") of the hand mirror's speed"
done
printf '%-46s %9s %9s %9s %8s  %s\n' "vmmigrate 8 GiB thin disk, insecure" "${TOT[thin_ins]}" "${DISK[thin_ins]}" "${DOWN[thin_ins]}" - \
  "total $(ratio "${TOT[thin_ins]}" "${TOT[full_ins]}") of the full 1 GiB's"
printf '%-46s %9s %9s %9s %8s  %s\n' "guest writing 4 MiB/s, write-blocking" "${TOT[wb]}" "${DISK[wb]}" "${DOWN[wb]}" - baseline
if [ "${TOT[bg]}" = fail ]; then
  printf '%-46s %9s %9s %9s %8s  %s\n' "guest writing 4 MiB/s, background" fail - - - \
    "never in sync: refused after 60 s without progress"
else
  printf '%-46s %9s %9s %9s %8s  %s\n' "guest writing 4 MiB/s, background" "${TOT[bg]}" "${DISK[bg]}" "${DOWN[bg]}" - \
    "total $(ratio "${TOT[bg]}" "${TOT[wb]}"), downtime $(ratio "${DOWN[bg]}" "${DOWN[wb]}") of write-blocking"
fi
