# tests/lib.sh - shared by integration tests, the demo and the benchmarks.
# Source it with B (the build dir) set. Every helper fails loudly with one
# line naming what it waited for.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${B:-$TOP/build}
VMGUEST=$B/vmguest
TESTBED=$TOP/scripts/testbed
GUEST_DIR=$B/guest
export VMM_PROBE_DIR=${VMM_PROBE_DIR:-$GUEST_DIR}
# Guests under test live here; the testbed's own state is in /run.
RUN=${VMM_TEST_RUN:-/run/vmm-tests}

# RAM 8 KiB short of a round size: QEMU 7.2's TCG migration loses writes
# when RAM is a multiple of 256 KiB (DESIGN.md §6, tests/guest/README.md).
MEM_512M=524280K
MEM_1G=1048568K

die() { echo "FAIL: $*" >&2; exit 1; }
note() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

tb() { "$TESTBED" "$@"; }

# testbed_fresh NODE...: a new testbed of these nodes (its first ones:
# uno due tre), $RUN made, each node's vmmd started and synced.
testbed_fresh() {
  local n
  tb down >/dev/null 2>&1 || true
  tb up "$#"
  mkdir -p "$RUN"
  for n in "$@"; do node_vmmd_start "$n"; done
  node_wait_synced "$@"
}

# testbed_cleanup: the common end of a testbed scenario (trap it on EXIT):
# every QEMU under the nodes' run directories and under $RUN killed by its
# pid, vmmd stopped on each node, the testbed down, $RUN removed.
testbed_cleanup() {
  local p n
  for p in "$TB_STATE"/*/run/*/qemu.pid "$RUN"/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due tre; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}

# guest_start NODE NAME MEM APPEND [extra vmguest args...]
guest_start() {
  local node=$1 name=$2 mem=$3 append=$4; shift 4
  "$VMGUEST" start "$name" --node "$node" --dir "$RUN/$name" --memory "$mem" \
    --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
    --append "console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA $append" "$@"
}
# Boot-time savers measured in tests/guest/README.md (about 0.5 s under TCG).
GUEST_APPEND_EXTRA=${GUEST_APPEND_EXTRA:-init_on_alloc=0 cryptomgr.notests rodata=off}

# count_lines FILE REGEX
count_lines() { grep -cE "$2" "$1" 2>/dev/null || true; }

# wait_console DIR REGEX COUNT TIMEOUT_S: waits until COUNT lines of the
# guest's console match; fails at once on a FAIL line.
wait_console() {
  local dir=$1 re=$2 want=$3 t=$4 log=$1/console.log i
  for ((i = 0; i < t * 10; i++)); do
    if grep -q 'VMTEST FAIL' "$log" 2>/dev/null; then
      die "guest in $dir reported: $(grep -m1 'VMTEST FAIL' "$log")"
    fi
    [ "$(count_lines "$log" "$re")" -ge "$want" ] && return 0
    sleep 0.1
  done
  die "guest in $dir: waited ${t}s for $want lines matching '$re' (console: $(tail -c 300 "$log" 2>/dev/null | tr '\n' '|'))"
}

# last_ok DIR: the counter of the guest's latest OK line (0 if none).
last_ok() {
  local n
  n=$(grep -oE 'VMTEST OK n=[0-9]+' "$1/console.log" 2>/dev/null | tail -1 | grep -oE '[0-9]+$')
  echo "${n:-0}"
}

# pid_of DIR: QEMU's pid from its pid file.
pid_of() { cat "$1/qemu.pid" 2>/dev/null; }

alive() { [ -n "$1" ] && [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# ---- vmmd on testbed nodes --------------------------------------------------
VMMD=$B/vmmd
VMSTORE=$B/vmstore

# vmmd_start NODE: a vmmd in NODE's namespace, in cluster mode with the
# testbed's corosync.conf; its pid in $RUN/NODE/vmmd.pid.
vmmd_start() {
  local n=$1 d=$RUN/$1
  mkdir -p "$d/data"
  cp "${VMM_TESTBED_DIR:-/run/vmm-testbed}/$n/etc/corosync/corosync.conf" "$d/data/corosync.conf"
  ip netns exec "$n" "$VMMD" run --node "$n" --data-dir "$d/data" --socket "$d/vmmd.sock" \
    --corosync-conf "${VMM_TESTBED_DIR:-/run/vmm-testbed}/$n/etc/corosync/corosync.conf" \
    >>"$d/vmmd.log" 2>&1 &
  echo $! >"$d/vmmd.pid"
}

vmmd_stop() { local p; p=$(cat "$RUN/$1/vmmd.pid" 2>/dev/null) && kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; }

# st NODE ARGS...: vmstore against NODE's vmmd.
st() { VMM_SOCKET=$RUN/$1/vmmd.sock "$VMSTORE" "${@:2}"; }

# st_field NODE FIELD: one field of NODE's vmmd status.
st_field() { st "$1" status 2>/dev/null | grep -oE "\"$2\":(\"[^\"]*\"|[a-z0-9]+)" | head -1 | cut -d: -f2 | tr -d '"'; }

# wait_synced NODE... : until each vmmd is synced and quorate (10 s).
wait_synced() {
  local n i
  for n in "$@"; do
    for ((i = 0; i < 100; i++)); do
      [ "$(st_field "$n" state)" = synced ] && [ "$(st_field "$n" quorate)" = true ] && break
      sleep 0.1
    done
    [ $i -lt 100 ] || die "vmmd on $n not synced+quorate: $(st "$n" status 2>&1)"
  done
}

# stores_settled: the distinct "version/checksum" of uno's, due's and
# tre's stores once they agree, or after 5 s (one line: they agree).
stores_settled() {
  local i sums
  for ((i = 0; i < 50; i++)); do
    sums=$(for n in uno due tre; do echo "$(st_field $n version)/$(st_field $n checksum)"; done | sort -u)
    [ "$(wc -l <<<"$sums")" -eq 1 ] && break
    sleep 0.1
  done
  echo "$sums"
}

# ---- whole nodes: vmmd and commands with the node's settings ----------------
# The testbed's sshd gives remote commands (the migration agent) the same
# settings (testbed env NODE), so local and remote halves agree.
TB_STATE=${VMM_TESTBED_DIR:-/run/vmm-testbed}

# node_env NODE: NODE's settings (testbed env) into the array NODE_ENV.
node_env() {
  local line; NODE_ENV=()
  while IFS= read -r line; do line=${line%\'}; NODE_ENV+=("${line/=\'/=}"); done < <(tb env "$1")
}
# on NODE CMD...: CMD in NODE's namespace with NODE's settings.
on() { local n=$1; shift; node_env "$n"; env "${NODE_ENV[@]}" ip netns exec "$n" "$@"; }
# on_exec NODE CMD...: like `on`, but the process becomes CMD itself, so
# `on_exec NODE CMD &` leaves CMD's own pid in $! (to kill it, not a shell).
on_exec() { local n=$1; shift; node_env "$n"; exec env "${NODE_ENV[@]}" ip netns exec "$n" "$@"; }

# node_vmmd_start NODE: vmmd with the testbed's data dir, socket and host key.
node_vmmd_start() {
  local n=$1 d=$TB_STATE/$1/vmm
  mkdir -p "$d" "$TB_STATE/$n/run"
  [ -f "$d/corosync.conf" ] || cp "$TB_STATE/$n/etc/corosync/corosync.conf" "$d/corosync.conf"
  # on_exec: the pid recorded is vmmd's own, not a shell's (a kill -9 of
  # a shell would leave vmmd running beside its restarted self).
  on_exec "$n" "$VMMD" run --node "$n" --data-dir "$d" --socket "$d/vmmd.sock" \
    --corosync-conf "$TB_STATE/$n/etc/corosync/corosync.conf" >>"$d/vmmd.log" 2>&1 &
  echo $! >"$d/vmmd.pid"
}
node_vmmd_stop() { local p; p=$(cat "$TB_STATE/$1/vmm/vmmd.pid" 2>/dev/null) && kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; }
# nst NODE ARGS...: vmstore against NODE's testbed vmmd.
nst() { VMM_SOCKET=$TB_STATE/$1/vmm/vmmd.sock "$VMSTORE" "${@:2}"; }
nst_field() { nst "$1" status 2>/dev/null | grep -oE "\"$2\":(\"[^\"]*\"|[a-z0-9]+)" | head -1 | cut -d: -f2 | tr -d '"'; }
# node_wait_synced NODE...: each testbed vmmd synced, quorate, with its
# node record (and SSH host key) in the store (30 s; else what it says).
node_wait_synced() {
  local n i
  for n in "$@"; do
    for ((i = 0; i < 300; i++)); do
      [ "$(nst_field "$n" state)" = synced ] && [ "$(nst_field "$n" quorate)" = true ] &&
        nst "$n" get "nodes/$n" 2>/dev/null | grep -q ssh_host_key && break
      sleep 0.1
    done
    ((i < 300)) || die "vmmd on $n not synced with its node record after 30 s: $(nst "$n" status 2>&1 | head -c 400); log: $(tail -5 "$TB_STATE/$n/vmm/vmmd.log" 2>/dev/null | tr '\n' '|')"
  done
}

