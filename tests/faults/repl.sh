#!/usr/bin/env bash
# The fault matrix of replication: for each mode (a running guest read
# through its dirty bitmap, or a stopped one compared by block hashes;
# secure or insecure data), each fault and each phase of a sync, one run of
# `vmrepl run` with the fault injected there, then the invariants:
#   - the replica is the previous point in time or the new one, never a
#     mix, and its generation says which;
#   - the job's state says what happened: ok with the new generation when
#     the run said so (exit 0), else error with fail_count and a reason -
#     never left `syncing` - and every node's store says the same;
#   - no guest lock, no agent, no fleecing node, block job, NBD export or
#     overlay in the guest's QEMU, no side file of an update left once the
#     next run is done;
#   - the next run succeeds and the replica equals the source byte for
#     byte; a running guest's own memory and disk checks pass throughout.
# The guest is paused around each run so that the new point in time is
# known exactly (its QEMU still serves the sync through fleecing).
# Prints a table fault x phase x outcome (docs/RELIABILITY.md has the last).
#
# Usage: repl.sh BUILD_DIR [quick|full] [CELL-REGEX]
#   A cell is named MODE/FAULT/PHASE, e.g. running-secure/agent/stream.
#   Phases: open (session up, the point in time taken, nothing sent),
#   stream (data on the wire), applied (the target has the new generation,
#   the source has not recorded it).
set -uo pipefail
B=$(cd "${1:-build}" && pwd)
SET=${2:-quick}
ONLY=${3:-.}
export B
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib_faults.sh"
RUN=${RUN}/faults-repl
VMCTL=$B/vmctl
VMREPL=$B/vmrepl
NET=10.99.2.0/24
TABLE=$RUN/table.txt
RESULTS=${FAULTS_RESULTS:-$B/faults-repl-table.txt}
SRC=uno DST=due

ctl() { on "$1" "$VMCTL" "${@:2}"; }
repl() { on "$1" "$VMREPL" "${@:2}"; }
rundir() { echo "$TB_STATE/$1/run/$2"; }
vol() { echo "$TB_STATE/$1/vmm/images/$2/vm-$2-disk-0.raw"; }

MODES_FULL="running-secure stopped-insecure running-insecure"
FAULT_PHASES="worker:open,stream,applied agent:open,stream,applied src-qemu:open,stream,applied
ssh:open,stream,applied src-vmmd:open,stream,applied dst-vmmd:open,stream,applied
src-corosync:stream,applied dst-corosync:stream,applied link:stream flaky:stream full:stream
quorum:open,stream,applied"
# The quick set (make check): what t_51's kill rounds do not cover.
QUICK="running-secure/dst-vmmd/stream stopped-insecure/full/stream running-insecure/link/stream"

trap fault_cleanup EXIT

# ---- the cluster, its two guests and their jobs -------------------------------
fault_cluster_up
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
# 180 runs, rewriting its 128 MiB disk in scattered 4 KiB blocks at 4 MiB/s
# (a sync of ~20 MB per cell); 181 never runs: its disk changes under dd
# (~50 MB per cell). Each cell caps its job's rate so that its run lasts
# 3-5 s.
ctl $SRC create 180 --name rr --memory 256 --disk local:128M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=16 vmtest.rate=4" >/dev/null
ctl $SRC create 181 --name rs --memory 256 --disk local:128M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" --append "$app" >/dev/null
dd if=/dev/urandom of="$(vol $SRC 181)" bs=1M count=128 conv=notrunc status=none
ctl $SRC start 180 >/dev/null
wait_console "$(rundir $SRC 180)" 'VMTEST OK' 2 90
for v in 180 181; do
  repl $SRC create "$v-0" $DST --schedule yearly >/dev/null
  repl $SRC run --id "$v-0" >/dev/null 2>"$RUN/first-$v.err" || { cat "$RUN/first-$v.err"; die "first sync of $v failed"; }
done
sleep 1   # the agents settle their last update after the session
# What a settled replica directory holds: nothing else may stay.
for v in 180 181; do
  ls -A "$(dirname "$(vol $DST $v)")" >"$RUN/files-$v"
done

state() { nst "${2:-uno}" get "replication/state/$1" 2>/dev/null; }
sfield() { state "$1" "${3:-uno}" | grep -oE "\"$2\":(\"[^\"]*\"|-?[0-9]+)" | cut -d: -f2- | tr -d '"'; }
# The replica as the agent sees it (sshd's mount namespace, where a full
# disk is mounted), after recovering what an interrupted update left.
repgen() { in_ns $DST "$VMREPL" _replica "$(vol $DST "$1")" | grep -oE 'gen=[0-9]+' | cut -d= -f2; }
repsha() { in_ns $DST sha256sum "$(vol $DST "$1")" | cut -d' ' -f1; }
srcsha() { sha256sum "$(vol $SRC "$1")" | cut -d' ' -f1; }
qmp() { "$VMGUEST" qmp --dir "$(rundir $SRC 180)" "$@"; }

# change MODE: what the next sync must carry, and the guest paused for it.
change() {
  local dir i
  if [ "${1%%-*}" = running ]; then
    dir=$(rundir $SRC 180)
    if ! alive "$(pid_of "$dir")"; then   # a fault killed it: a fresh boot
      ctl $SRC start 180 >/dev/null && ( wait_console "$dir" 'VMTEST OK' 2 90 ) || return 1
    fi
    ( wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 1 ))" 60 ) || return 1
    sleep 3   # ~20 MB written since the last sync
    qmp stop >/dev/null
  else   # 1024 random 64 KiB blocks of 181's disk
    for ((i = 0; i < 1024; i++)); do echo $((RANDOM % 2048)); done |
      while read -r b; do
        dd if=/dev/urandom of="$(vol $SRC 181)" bs=64K seek="$b" count=1 conv=notrunc status=none
      done
  fi
}

# leftovers VMID: what a run may not leave behind, on either side.
leftovers() {
  local v=$1 n
  nst uno get "locks/guest/$v" 2>/dev/null | grep -q '"owner"' && { echo "guest lock: $(nst uno get "locks/guest/$v")"; return; }
  n=$(diff <(ls -A "$(dirname "$(vol $DST "$v")")") "$RUN/files-$v" | sed -n 's/^< //p' | tr '\n' ' ')
  [ -z "$n" ] || { echo "replica files on $DST: $n"; return; }
  if [ "$v" = 180 ]; then
    qmp query-block-jobs | grep -q '"device"' && { echo "block job: $(qmp query-block-jobs)"; return; }
    qmp query-block-exports | grep -q '"id"' && { echo "NBD export: $(qmp query-block-exports)"; return; }
    qmp query-named-block-nodes | grep -q '"node-name": *"vmmf' && { echo "fleecing node left"; return; }
    ls "$(rundir $SRC 180)/fleece"/*.qcow2 >/dev/null 2>&1 && { echo "fleecing overlay left"; return; }
  fi
  return 0
}

# check MODE VMID RC: the invariants; prints the outcome.
check() {
  local mode=$1 v=$2 rc=$3 job=$2-0 i st g1 now n left
  for ((i = 0; i < 300; i++)); do
    st=$(sfield "$job" state)
    [ "$st" != syncing ] && [ -n "$st" ] && break
    sleep 0.1
  done
  [ "$st" = syncing ] && { echo "FAIL state left syncing: $(state "$job")"; return 1; }
  g1=$(repgen "$v"); now=$(repsha "$v")
  if [ "$OLD" = "$NEW" ]; then
    # A guest booted again rewrites its first pass as the last boot did:
    # the data may not change, the generation does or not.
    [ "$now" = "$OLD" ] || { echo "FAIL the replica is not the source (no change, gen $G0 -> $g1)"; return 1; }
    [ "$g1" = "$G0" ] && RES="replica old (same data)" || RES="replica new (same data)"
    [ "$g1" = "$G0" ] || [ "$g1" = $((G0 + 1)) ] || { echo "FAIL generation $g1 after $G0"; return 1; }
  elif [ "$now" = "$OLD" ]; then
    [ "$g1" = "$G0" ] || { echo "FAIL old data under generation $g1 (was $G0)"; return 1; }
    RES="replica old"
  elif [ "$now" = "$NEW" ]; then
    [ "$g1" = $((G0 + 1)) ] || { echo "FAIL new data under generation $g1 (was $G0)"; return 1; }
    RES="replica new"
  else
    echo "FAIL the replica is neither the old nor the new point in time (gen $G0 -> $g1)"; return 1
  fi
  if [ "$rc" = 0 ]; then
    [ "${RES#replica new}" != "$RES" ] || { echo "FAIL exit 0 but $RES"; return 1; }
    [ "$st" = ok ] && [ "$(sfield "$job" gen)" = "$g1" ] ||
      { echo "FAIL exit 0 but state $(state "$job")"; return 1; }
  else
    [ "$st" = error ] && [ "$(sfield "$job" fail_count)" -gt 0 ] && [ -n "$(sfield "$job" error)" ] ||
      { echo "FAIL exit $rc but state $(state "$job")"; return 1; }
  fi
  for n in due tre; do
    [ "$(sfield "$job" state "$n")" = "$st" ] && [ "$(sfield "$job" gen "$n")" = "$(sfield "$job" gen)" ] ||
      { echo "FAIL stores disagree on the job ($n: $(state "$job" "$n"))"; return 1; }
  done
  [ -z "$FULL_LEFT" ] || { echo "FAIL left on the full disk: $FULL_LEFT"; return 1; }
  fault_full_umount
  # The next run, undisturbed, makes the replica the source again (a
  # killed guest is booted again, and paused, first).
  if [ "$v" = 180 ] && ! alive "$(pid_of "$(rundir $SRC 180)")"; then
    change "$mode" || { echo "FAIL the guest booted again does not check itself"; return 1; }
  fi
  repl $SRC update "$job" --rate 1000 >/dev/null
  repl $SRC run --id "$job" >/dev/null 2>"$RUN/next.err" ||
    { echo "FAIL the next run failed: $(tail -1 "$RUN/next.err")"; return 1; }
  [ "$(repsha "$v")" = "$(srcsha "$v")" ] || { echo "FAIL replica differs from the source after the next run"; return 1; }
  sleep 0.5   # the agent settles after its session
  left=$(leftovers "$v")
  [ -z "$left" ] || { echo "FAIL left: $left"; return 1; }
  if [ "$v" = 180 ]; then
    qmp cont >/dev/null
    local dir before
    dir=$(rundir $SRC 180)
    before=$(last_ok "$dir")
    ( wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 1 ))" 60 ) &&
      [ "$(last_ok "$dir")" -gt "$before" ] || { echo "FAIL guest stopped checking itself"; return 1; }
    "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || { echo "FAIL the guest's verify"; return 1; }
  fi
  echo "$RES, next run ok"
}

# cell MODE FAULT PHASE
cell() {
  local mode=$1 f=$2 ph=$3 v job out i hit t0 rc agent wpid res line delay rate
  case $mode in running-*) v=180 ;; *) v=181 ;; esac
  job=$v-0
  nst uno put datacenter.cfg "migration: ${mode#*-},network=$NET" >/dev/null ||
    { echo "cannot set datacenter.cfg"; return 1; }
  FULL_LEFT= FAULT_PIDS=() FAULT_FAILED=
  # The run of the cell lasts 3-5 s (the next one goes unlimited).
  [ $v = 180 ] && rate=5 || rate=12
  repl $SRC update "$job" --rate $rate >/dev/null
  change "$mode" || { echo "$mode/$f/$ph: FAIL the guest does not check itself"; qmp cont >/dev/null 2>&1; return 1; }
  if [ "$f" = full ]; then   # room for the replica and 8 MiB, ~100 MB to apply
    fault_full_mount $DST "$(dirname "$(vol $DST $v)")" 160
    fault_full_fill 8192
  fi
  G0=$(repgen "$v"); OLD=$(repsha "$v"); NEW=$(srcsha "$v")
  out=$RUN/cells/$mode.$f.$ph.err
  case $ph in
    open) line='lingering 3000 ms at repl-open' delay=repl-open:3000 ;;
    stream) line='lingering 1 ms at repl-stream' delay=repl-stream:1 ;;
    applied) line='lingering 3000 ms at repl-applied' delay=repl-applied:3000 ;;
  esac
  t0=$(date +%s)
  VMM_TEST_PHASE_DELAY=$delay on_exec $SRC "$VMREPL" run --id "$job" >/dev/null 2>"$out" &
  wpid=$!
  hit=no
  for ((i = 0; i < 3000; i++)); do
    grep -q "$line" "$out" 2>/dev/null && { hit=yes; break; }
    alive "$wpid" || break
    sleep 0.01
  done
  agent=$(grep -oE 'target agent pid [0-9]+' "$out" | grep -oE '[0-9]+$' || true)
  if [ $hit = yes ]; then
    [ "$ph" = stream ] && sleep 1
    case $f in
      worker) kill -9 "$wpid" ;;
      agent) kill -9 "$agent" ;;
      src-qemu) kill -9 "$(pid_of "$(rundir $SRC 180)")" ;;
      full) : ;;
      *) fault_inject "$f" $SRC $DST ;;
    esac
  fi
  for ((i = 0; i < 2400; i++)); do alive "$wpid" || break; sleep 0.1; done
  alive "$wpid" && { kill -9 "$wpid"; echo "FAIL vmrepl run hung for 240 s" >>"$out"; }
  wait "$wpid" 2>/dev/null; rc=$?
  [ "${#FAULT_PIDS[@]}" -eq 0 ] || wait "${FAULT_PIDS[@]}" 2>/dev/null
  # The agent outlives a dead sender until it notices (its replica is its
  # own while it runs).
  for ((i = 0; i < 300; i++)); do alive "$agent" || break; sleep 0.1; done
  if alive "$agent"; then
    res="FAIL the agent $agent outlived the run by 30 s"
  else
    fault_heal
    if [ -n "${FULL_NODE:-}" ]; then   # a side file left on the full disk
      FULL_LEFT=$(diff <(in_ns $DST ls -A "$FULL_DIR" | grep -vxe filler -e lost+found) "$RUN/files-$v" | sed -n 's/^< //p' | tr '\n' ' ')
      [ -z "$FULL_LEFT" ] || { repgen "$v" >/dev/null;   # recovery may remove them
        FULL_LEFT=$(diff <(in_ns $DST ls -A "$FULL_DIR" | grep -vxe filler -e lost+found) "$RUN/files-$v" | sed -n 's/^< //p' | tr '\n' ' '); }
    fi
    res=$(check "$mode" "$v" "$rc")
    fault_full_umount   # check's own (a subshell's) did not reach these variables
  fi
  case $f/$rc/$res in
    worker/*|*/*/FAIL*) ;;
    */0/*) ;;
    *) grep -q 'vmrepl: ' "$out" || res="FAIL exit $rc without an error line: $res" ;;
  esac
  res="$res (exit $rc)"
  [ -z "$FAULT_FAILED" ] || res="FAIL the fault did not happen: $FAULT_FAILED; $res"
  [ $hit = yes ] || res="$res (phase not seen: fault skipped)"
  printf '%-17s %-13s %-8s %4ss  %s\n' "$mode" "$f" "$ph" "$(( $(date +%s) - t0 ))" "$res" | tee -a "$TABLE"
  case $res in FAIL*)
    sed 's/^/      | /' "$out" | tail -6
    for n in uno due tre; do cp "$TB_STATE/$n/vmm/vmmd.log" "$RUN/cells/$mode.$f.$ph.vmmd-$n.log" 2>/dev/null; done
    cp "$TB_STATE/$DST/vmm/repl/agent.log" "$RUN/cells/$mode.$f.$ph.agent.log" 2>/dev/null
    # What a failed check left is healed as far as it goes, for the next cell.
    fault_full_umount
    [ "$v" = 180 ] && qmp cont >/dev/null 2>&1
    return 1 ;;
  esac
  return 0
}

fault_matrix faults-repl "$SET" "$ONLY" '^stopped-.*/src-qemu$' \
  "$(printf '%-17s %-13s %-8s %5s  %s' MODE FAULT PHASE TIME OUTCOME)"
