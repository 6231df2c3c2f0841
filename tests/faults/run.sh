#!/usr/bin/env bash
# The fault matrix of online migration: for each mode (shared or local
# disks, secure or insecure), each fault and each phase, one migration
# with the fault injected in that phase, then the invariants every
# operator relies on:
#   - the guest runs on exactly one node, not paused, its own memory and
#     disk checks passing (when the source QEMU itself was killed: it runs
#     nowhere, the failure is reported, and nothing else breaks);
#   - every node's store names the node that really runs it;
#   - no migration record, no guest lock left (vmmd recovers after a dead
#     worker within seconds);
#   - no stray QEMU, QMP socket, block job or volume on any other node.
# Prints a table fault x phase x outcome (docs/RELIABILITY.md has the last).
#
# Usage: run.sh BUILD_DIR [quick|full] [CELL-REGEX]
#   quick: the cells `make check` runs; full: every cell (`make check-full`).
#   A cell is named MODE/FAULT/PHASE, e.g. shared-secure/src-vmmd/transfer.
set -uo pipefail
B=$(cd "${1:-build}" && pwd)
SET=${2:-quick}
ONLY=${3:-.}
export B
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib_faults.sh"
RUN=${RUN}/faults
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
SHARED=$RUN/shared
NET=10.99.2.0/24
TABLE=$RUN/table.txt
RESULTS=${FAULTS_RESULTS:-$B/faults-table.txt}

ctl() { on "$1" "$VMCTL" "${@:2}"; }
mig() { on "$1" "$VMMIGRATE" "${@:2}"; }
rundir() { echo "$TB_STATE/$1/run/$2"; }
localdir() { echo "$TB_STATE/$1/vmm/images/$2"; }

MODES_FULL="shared-insecure shared-secure local-insecure local-secure"
# Each fault with the phases where it means something: the start (before
# the target QEMU is up), the transfer (RAM, and the disks' copy), the
# switchover (both QEMUs paused, the owner about to move), moved (the store
# names the target, which is not resumed yet). A flaky link
# and a full disk are states, not instants: transfer only.
FAULT_PHASES="worker:start,transfer,switchover,moved dst-qemu:start,transfer,switchover,moved
src-qemu:start,transfer,switchover,moved ssh:start,transfer,switchover,moved
src-vmmd:start,transfer,switchover dst-vmmd:start,transfer,switchover
src-corosync:transfer,switchover dst-corosync:transfer,switchover
link:transfer,switchover flaky:transfer full:transfer quorum:transfer,switchover"
# The quick set: faults that no scenario of tests/integration covers, one
# phase each, chosen to keep `make check` short.
QUICK="shared-secure/src-vmmd/transfer shared-insecure/dst-corosync/transfer
local-insecure/full/transfer shared-insecure/src-qemu/transfer"

trap fault_cleanup EXIT

# ---- the cluster and its two guests -----------------------------------------
fault_cluster_up
mkdir -p "$SHARED"
nst uno put storage.cfg "$(printf 'dir: shared\n\tpath %s\n\tshared 1\n\tcontent images\n' "$SHARED")" >/dev/null
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda vmtest.mode=mem+disk"
# 170: shared disk, RAM rewritten steadily (the RAM phase takes ~10 s at
# the bandwidth below). 171: a local 256 MiB disk the guest writes to
# (the copy takes ~10 s, then the RAM).
ctl uno create 170 --name fs --memory 256 --disk shared:16M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mib=64 vmtest.rate=4" >/dev/null
ctl uno create 171 --name fl --memory 256 --disk local:256M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mib=32 vmtest.rate=4" >/dev/null
for v in 170 171; do ctl uno start $v >/dev/null; done
for v in 170 171; do wait_console "$(rundir uno $v)" 'VMTEST OK' 2 90; done

# owner VMID: the node the store names (uno's view).
owner() { nst uno get "guests/$1" 2>/dev/null | sed -n 's/^node: //p' | head -1; }
next_node() { case $1 in uno) echo due ;; due) echo tre ;; *) echo uno ;; esac; }
record() { nst "$1" get "migrations/$2" 2>/dev/null; }
phase_of() { record "$1" "$2" | grep -oE '"phase":"[a-z_-]+"' | cut -d'"' -f4; }

# heal: whatever a fault stopped runs again, links and disks are back.
heal() {
  # what the failed copy left on the full disk would be hidden below
  if [ -n "${FULL_NODE:-}" ]; then
    in_ns "$FULL_NODE" ls "$FULL_DIR" | grep -q '\.raw$' &&
      FULL_LEFT="$(in_ns "$FULL_NODE" ls "$FULL_DIR" | tr '\n' ' ')"
    fault_full_umount
  fi
  fault_heal
}

# inject FAULT SRC DST VMID: the fault, now (lib_faults.sh has the ones
# replication shares).
inject() {
  local f=$1 src=$2 dst=$3 vmid=$4 p
  FAULT_PIDS=() FAULT_FAILED=
  case $f in
  worker) p=$(record "$src" "$vmid" | grep -oE '"pid":[0-9]+' | cut -d: -f2)
    [ -n "$p" ] && kill -9 "$p" ;;
  dst-qemu) # in the start phase the target's QEMU may be on its way
    for ((p = 0; p < 100; p++)); do alive "$(pid_of "$(rundir "$dst" "$vmid")")" && break; sleep 0.1; done
    kill -9 "$(pid_of "$(rundir "$dst" "$vmid")")" ;;
  src-qemu) kill -9 "$(pid_of "$(rundir "$src" "$vmid")")" ;;
  full) : ;;  # in place before the migration (prepare)
  *) fault_inject "$f" "$src" "$dst" ;;
  esac
}

# prepare FAULT SRC DST VMID: what must be in place before the migration:
# for "full", the target's image directory on a small ext4 with room for
# a quarter of what the guest's volume holds.
prepare() {
  local used
  if [ "$1" = full ]; then
    used=$(du -k "$(localdir "$2" "$4")" | tail -1 | cut -f1)
    fault_full_mount "$3" "$(localdir "$3" "$4")" 64
    fault_full_fill $((used / 4))
  fi
}

# check VMID SRC DST FAULT: the invariants; prints the outcome.
check() {
  local vmid=$1 src=$2 dst=$3 f=$4 own n p runs=() dir before i
  for ((i = 0; i < 300; i++)); do record "$src" "$vmid" >/dev/null || break; sleep 0.1; done
  ((i < 300)) || { echo "FAIL record left: $(record "$src" "$vmid")"; return 1; }
  own=$(owner "$vmid")
  for n in uno due tre; do
    [ "$(nst "$n" get "guests/$vmid" 2>/dev/null | sed -n 's/^node: //p' | head -1)" = "$own" ] ||
      { echo "FAIL stores disagree on the owner ($n)"; return 1; }
  done
  for n in uno due tre; do
    p=$(pid_of "$(rundir "$n" "$vmid")") || true
    alive "$p" && runs+=("$n")
  done
  nst uno get "locks/guest/$vmid" 2>/dev/null | grep -q '"owner"' &&
    { echo "FAIL guest lock left: $(nst uno get "locks/guest/$vmid")"; return 1; }
  for n in uno due tre; do
    [ "$n" = "$own" ] && continue
    ls "$(rundir "$n" "$vmid")"/*.sock >/dev/null 2>&1 &&
      { echo "FAIL sockets left on $n: $(ls "$(rundir "$n" "$vmid")" | tr "\n" " ")"; return 1; }
    if [ "$vmid" = 171 ] && ls "$(localdir "$n" "$vmid")"/*.raw >/dev/null 2>&1; then
      echo "FAIL volume left on $n: $(ls "$(localdir "$n" "$vmid")")"; return 1
    fi
  done
  if [ "${#runs[@]}" -eq 0 ] && [ "$f" = src-qemu ]; then
    echo "source QEMU killed: reported, owner $own"
    return 0
  fi
  [ "${#runs[@]}" -eq 1 ] || { echo "FAIL runs on ${#runs[@]} nodes: ${runs[*]:-none}"; return 1; }
  [ "${runs[0]}" = "$own" ] || { echo "FAIL runs on ${runs[0]}, store says $own"; return 1; }
  dir=$(rundir "$own" "$vmid")
  for ((i = 0; i < 100; i++)); do
    ctl "$own" status "$vmid" --output json | grep -q '"qmpstatus":"running"' && break
    sleep 0.1
  done
  ((i < 100)) || { echo "FAIL not running on $own: $(ctl "$own" status "$vmid" --output json)"; return 1; }
  "$VMGUEST" qmp --dir "$dir" query-block-jobs | grep -q '"device"' &&
    { echo "FAIL block job left on $own"; return 1; }
  before=$(last_ok "$dir")
  ( wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 1 ))" 60 ) ||
    { echo "FAIL guest stopped checking itself"; return 1; }
  [ "$(last_ok "$dir")" -gt "$before" ] || { echo "FAIL guest stopped checking itself"; return 1; }
  "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || { echo "FAIL verify on $own"; return 1; }
  if [ "$own" = "$src" ]; then echo "rolled back, runs on $own"; else echo "completed, runs on $own"; fi
}

# cell MODE FAULT PHASE
cell() {
  local mode=$1 f=$2 ph=$3 vmid src dst args=() mpid i hit t0 tm out res delay bw p rc n
  case $mode in shared-*) vmid=170 ;; *) vmid=171; args+=(--with-local-disks) ;; esac
  src=$(owner "$vmid"); dst=$(next_node "$src")
  # A guest whose QEMU a fault killed starts again where it is owned.
  if ! alive "$(pid_of "$(rundir "$src" "$vmid")")"; then
    ctl "$src" start "$vmid" >/dev/null && wait_console "$(rundir "$src" "$vmid")" 'VMTEST OK' 2 90
  fi
  prepare "$f" "$src" "$dst" "$vmid"
  out=$RUN/cells/$mode.$f.$ph.out
  t0=$(date +%s)
  bw=24576
  # The worker lingers in the short phases (test knob of mig_job.c), so
  # that the fault lands there: at the start before the target QEMU is
  # up, in the switchover with source and target both paused.
  case $ph in
    start) delay=start-target:1500 ;;
    switchover) delay=switchover:3000 ;;
    moved) delay=owner-moved:3000 ;;
    *) delay= ;;
  esac
  VMM_TEST_PHASE_DELAY=$delay mig "$src" "$vmid" "$dst" --online "${args[@]}" \
    --migration_type "${mode#*-}" --migration_network "$NET" --bwlimit "$bw" --multifd 1 >"$out" 2>&1 &
  mpid=$!
  hit=no FAULT_PIDS=() FULL_LEFT= FAULT_FAILED=
  for ((i = 0; i < 3000; i++)); do
    p=$(phase_of "$src" "$vmid")
    case $ph/$p in
      start/start-target|transfer/transfer|switchover/switchover) hit=yes; break ;;
      moved/switchover) # the owner moves right after the check
        for ((i = 0; i < 100; i++)); do
          [ "$(owner "$vmid")" = "$dst" ] && { hit=yes; break; }
          sleep 0.05
        done
        break ;;
    esac
    alive "$mpid" || break
    sleep 0.01
  done
  [ "$ph" = transfer ] && [ $hit = yes ] && sleep 2
  [ $hit = yes ] && inject "$f" "$src" "$dst" "$vmid"
  for ((i = 0; i < 2400; i++)); do alive "$mpid" || break; sleep 0.1; done
  alive "$mpid" && { kill -9 "$mpid"; echo "FAIL migration hung for 240 s"; }
  wait "$mpid" 2>/dev/null; rc=$?
  tm=$(( $(date +%s) - t0 ))
  # Not a bare wait: the vmmds run in the background too.
  [ "${#FAULT_PIDS[@]}" -eq 0 ] || wait "${FAULT_PIDS[@]}" 2>/dev/null
  heal
  res=$(check "$vmid" "$src" "$dst" "$f")
  [ -z "$FULL_LEFT" ] || res="FAIL volume left on the full disk of $dst: $FULL_LEFT"
  # What the operator was told must match what happened (a killed worker
  # tells nothing).
  case $f/$rc/$res in
    worker/*|*/*/FAIL*) ;;
    */0/completed*) ;;
    */0/*) res="FAIL exit 0 but: $res" ;;
    */*/completed*) res="FAIL exit $rc but: $res" ;;
    *) grep -q 'vmmigrate: ' "$out" || res="FAIL exit $rc without an error line: $res" ;;
  esac
  res="$res (exit $rc)"
  [ -z "$FAULT_FAILED" ] || res="FAIL the fault did not happen: $FAULT_FAILED; $res"
  [ $hit = yes ] || res="$res (phase not seen: fault skipped)"
  printf '%-16s %-13s %-11s %4ss %4ss  %s\n' "$mode" "$f" "$ph" "$tm" "$(( $(date +%s) - t0 ))" "$res" | tee -a "$TABLE"
  case $res in FAIL*)
    sed 's/^/      | /' "$out" | tail -6
    for n in uno due tre; do cp "$TB_STATE/$n/vmm/vmmd.log" "$RUN/cells/$mode.$f.$ph.vmmd-$n.log" 2>/dev/null; done
    return 1 ;;
  esac
  return 0
}

fault_matrix faults "$SET" "$ONLY" '^shared-.*/full$' \
  "$(printf '%-16s %-13s %-11s %5s %5s  %s' MODE FAULT PHASE MIGR TOTAL OUTCOME)"
