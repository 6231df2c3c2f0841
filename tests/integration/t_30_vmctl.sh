#!/usr/bin/env bash
# vmctl on 3 nodes: a guest created on uno is visible from due and tre, runs
# only on uno (in uno's namespace, RAM 8 KiB short of its size under TCG),
# passes its own memory/disk check, shuts down/stops, and is destroyed with
# its volume. The same VMID created from uno and due at once: exactly one
# wins and the loser leaves nothing behind. A lock held by another node
# makes vmctl wait.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
RUN=${RUN}/vmctl
VMCTL=$B/vmctl

# ctl NODE ARGS...: vmctl on NODE (its vmmd, its run dir, its default
# storage "local" = its data dir, so each node has local storage of its own).
ctl() {
  VMM_SOCKET=$RUN/$1/vmmd.sock VMM_DATA_DIR=$RUN/$1/data VMM_RUN_DIR=$RUN/$1/guests \
    ip netns exec "$1" "$VMCTL" "${@:2}"
}
# expect_fail RC NEEDLE NODE ARGS...: vmctl fails with RC and one line naming NEEDLE.
expect_fail() {
  local want=$1 needle=$2 rc=0; shift 2
  ctl "$@" >/dev/null 2>"$RUN/err" || rc=$?
  [ "$rc" -eq "$want" ] || die "vmctl ${*:2} on $1: rc $rc, want $want ($(cat "$RUN/err"))"
  [ "$(grep -vc ' info: ' "$RUN/err")" -eq 1 ] || die "vmctl ${*:2}: not one line: $(cat "$RUN/err")"
  grep -qF "$needle" "$RUN/err" || die "vmctl ${*:2}: expected '$needle', got: $(cat "$RUN/err")"
}
cleanup() {
  local p
  for p in "$RUN"/*/guests/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due tre; do vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT

tb down >/dev/null 2>&1 || true
tb up 3
mkdir -p "$RUN"
for n in uno due tre; do vmmd_start $n; done
wait_synced uno due tre

# 1. Create on uno; everyone sees it, owned by uno.
[ "$(ctl uno nextid)" = 100 ] || die "nextid on an empty cluster: $(ctl uno nextid)"
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.mode=mem+disk vmtest.mib=64 vmtest.rate=32 vmtest.disk=/dev/vda"
ctl uno create 130 --name vmt --memory 512 --disk local:64M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" --append "$app"
vol=$RUN/uno/data/images/130/vm-130-disk-0.raw
[ "$(stat -c %s "$vol")" = $((64 << 20)) ] || die "volume $vol missing or wrong size"
[ "$(stat -c %b "$vol")" -lt 64 ] || die "volume $vol is not sparse"
for n in due tre; do
  ctl $n list | grep -qE '^ *130 +vmt +uno +- +512M$' || die "list on $n: $(ctl $n list)"
done
ctl uno list | grep -qE '^ *130 +vmt +uno +stopped +512M$' || die "list on uno: $(ctl uno list)"
ctl due list --output json | grep -q '"vmid":130,"name":"vmt","node":"uno","status":null' ||
  die "list json on due: $(ctl due list --output json)"
ctl tre config 130 | grep -qx 'node: uno' || die "config on tre: $(ctl tre config 130)"
ctl tre config 130 | grep -qx 'virtio0: local:130/vm-130-disk-0.raw,size=64M' || die "config disk"
[ "$(ctl due nextid)" = 100 ] || die "nextid counts 130 as taken below it"
expect_fail 2 "VMID 130 already exists" due create 130 --memory 256

# 2. It starts only on its owner, inside uno's namespace.
expect_fail 2 "guest 130 is owned by uno (this is due)" due start 130
ctl uno start 130 | tee "$RUN/start.out"
grep -q 'started guest 130 on uno' "$RUN/start.out" || die "no start line"
dir=$RUN/uno/guests/130
pid=$(pid_of "$dir")
[ "$(readlink /proc/"$pid"/ns/net)" = "$(ip netns exec uno readlink /proc/self/ns/net)" ] ||
  die "QEMU pid $pid is not in uno's namespace"
tr '\0' ' ' </proc/"$pid"/cmdline | grep -q -- '-m 524280K' || die "RAM not 8 KiB short under TCG"
expect_fail 1 "guest 130 is already running (pid $pid)" uno start 130
wait_console "$dir" 'VMTEST READY' 1 30
wait_console "$dir" 'VMTEST OK' 3 20
ctl uno status 130 | grep -qx 'status: running' || die "status on uno: $(ctl uno status 130)"
ctl uno status 130 --output json | grep -q "\"status\":\"running\",\"pid\":$pid,\"qmpstatus\":\"running\"" ||
  die "status json: $(ctl uno status 130 --output json)"
ctl due status 130 | grep -qx 'status: unknown' || die "status on due: $(ctl due status 130)"

# 3. While it runs: no hardware change, no destroy; a rename from another node is fine.
expect_fail 1 "guest 130 is running (pid $pid): stop it to change memory" uno set 130 --memory 1024
expect_fail 2 "guest 130 is owned by uno (this is due): change memory there" due set 130 --memory 1024
expect_fail 1 "guest 130 is running (pid $pid): stop it first" uno destroy 130
expect_fail 2 "guest 130 is owned by uno" due destroy 130
ctl due set 130 --name vmt2 >/dev/null
ctl uno config 130 | grep -qx 'name: vmt2' || die "rename from due not seen on uno"
"$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || die "guest's memory/disk check failed"

# 4. Shutdown (the test guest ignores the power button: stopped after the timeout).
expect_fail 2 "guest 130 is owned by uno" due shutdown 130
ctl uno shutdown 130 --timeout 2 | grep -q 'guest 130 did not power off within 2 s: stopped it' ||
  die "shutdown"
alive "$pid" && die "QEMU pid $pid alive after shutdown"
ctl uno status 130 | grep -qx 'status: stopped' || die "status after shutdown"
ctl uno start 130 >/dev/null
pid=$(pid_of "$dir")
ctl uno stop 130 | grep -q "stopped guest 130 (pid $pid)" || die "stop"
alive "$pid" && die "QEMU pid $pid alive after stop"
expect_fail 1 "guest 130 is not running" uno stop 130
ctl uno set 130 --memory 1024 --cores 2 >/dev/null
ctl tre config 130 --output json | grep -q '"memory":1024,"cores":2' || die "set not seen on tre"

# 5. Destroy: volume and record go, everywhere.
ctl uno destroy 130 --purge >/dev/null
[ ! -e "$vol" ] || die "volume $vol left after destroy"
[ ! -e "$dir" ] || die "run dir $dir left after destroy --purge"
for n in uno due tre; do
  ctl $n list | grep -qE '^ *130 ' && die "130 still listed on $n"
done
expect_fail 2 "guest 130 does not exist" due config 130

# 6. One VMID created on uno and due at once: exactly one wins; the loser
#    allocated nothing (each node's "local" is its own data dir).
for vmid in 140 141 142; do
  # Own pids, not a bare wait (the vmmds run in the background); set -e
  # must not end the losing subshell before it records its status.
  ( rc=0; ctl uno create $vmid --memory 256 --disk local:16M >"$RUN/c.uno" 2>&1 || rc=$?; echo $rc >"$RUN/rc.uno" ) &
  p1=$!
  ( rc=0; ctl due create $vmid --memory 256 --disk local:16M >"$RUN/c.due" 2>&1 || rc=$?; echo $rc >"$RUN/rc.due" ) &
  wait $p1 $!
  rcs="$(cat "$RUN/rc.uno") $(cat "$RUN/rc.due")"
  case $rcs in
    "0 2") win=uno lose=due ;;
    "2 0") win=due lose=uno ;;
    *) die "concurrent create of $vmid: rcs $rcs: $(cat "$RUN/c.uno" "$RUN/c.due")" ;;
  esac
  grep -q "VMID $vmid already exists" "$RUN/c.$lose" || die "loser $lose: $(cat "$RUN/c.$lose")"
  ctl tre config $vmid | grep -qx "node: $win" || die "$vmid not owned by winner $win"
  [ -e "$RUN/$win/data/images/$vmid/vm-$vmid-disk-0.raw" ] || die "winner's volume missing"
  [ ! -e "$RUN/$lose/data/images/$vmid" ] || die "loser $lose left $RUN/$lose/data/images/$vmid"
  note "concurrent create of $vmid: $win won"
  ctl "$win" destroy $vmid >/dev/null
done

# 7. A guest lock held by another node: vmctl waits for it (3 s ttl) and then proceeds.
st tre lock locks/guest/150 --ttl 3 >/dev/null
t0=$(date +%s%N)
ctl uno create 150 --memory 256 >/dev/null
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -ge 1500 ] || die "create 150 did not wait for tre's lock (${ms} ms)"
st tre lock locks/guest/150 --ttl 30 >/dev/null
expect_fail 1 "guest 150 is locked by tre" uno destroy 150
st tre unlock locks/guest/150 >/dev/null
ctl uno destroy 150 >/dev/null
[ -z "$(st uno list locks/)" ] || die "locks left in the store: $(st uno list locks/)"
note "vmctl: ok"
