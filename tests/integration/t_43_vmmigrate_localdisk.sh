#!/usr/bin/env bash
# Live migration with local disks (vmmigrate --online --with-local-disks).
# A guest writes stamped blocks to a local 2 GiB disk (and dirties RAM)
# throughout; it moves uno -> due (insecure) and due -> tre (secure, into
# another storage with --targetstorage): after each hop its own disk and
# memory checks pass on the target (`verify` reads back every block it ever
# wrote), the store names the new node and storage, and the source volume
# is gone. A mixed guest (one shared, one local disk) moves its local disk
# only. Faults during the disk copy and during the RAM phase (target QEMU
# killed, migration link cut, worker killed): the guest keeps running on
# its source disk with its checks passing, the target's new volume is gone.
# A thin 8 GiB disk moves in a fraction of the time a full 1 GiB one takes.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
SHARED=$RUN/shared
ALT=$RUN/alt
NET=10.99.2.0/24

cleanup() {
  local p
  ip -n vmm-sw link set due-m up 2>/dev/null || true
  for p in "$TB_STATE"/*/run/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due tre; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT

ctl() { on "$1" "$VMCTL" "${@:2}"; }
mig() { on "$1" "$VMMIGRATE" "${@:2}"; }
rundir() { echo "$TB_STATE/$1/run/$2"; }
vol() { echo "$TB_STATE/$1/vmm/images/$2/vm-$2-disk-$3.raw"; }   # NODE VMID N: on 'local'

# intact NODE VMID WHAT: runs there, counting on, memory and disk verified.
intact() {
  local n=$1 vmid=$2 what=$3 dir before
  dir=$(rundir "$n" "$vmid")
  ctl "$n" status "$vmid" --output json | grep -q '"qmpstatus":"running"' ||
    die "$what: guest $vmid not running on $n"
  before=$(last_ok "$dir")
  wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 2 ))" 60
  [ "$(last_ok "$dir")" -gt "$before" ] || die "$what: guest $vmid stopped checking itself"
  "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || die "$what: verify on $n failed"
  for m in uno due tre; do
    ctl $m config "$vmid" | grep -qx "node: $n" || die "$what: $m's store does not name $n"
  done
  nst uno list migrations/ | grep -q . && die "$what: record left: $(nst uno list migrations/)"
  true
}
no_qemu() {  # no_qemu NODE VMID WHAT
  local p
  p=$(pid_of "$(rundir "$1" "$2")") || true
  alive "$p" && die "$3: a QEMU ($p) is left on $1"
  true
}

tb down >/dev/null 2>&1 || true
tb up 3
mkdir -p "$RUN" "$SHARED" "$ALT"
for n in uno due tre; do node_vmmd_start $n; done
node_wait_synced uno due tre
nst uno put storage.cfg "$(printf 'dir: shared\n\tpath %s\n\tshared 1\n\tcontent images\n\ndir: alt\n\tpath %s\n\tnodes tre\n\tcontent images\n' "$SHARED" "$ALT")" >/dev/null

app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
ctl uno create 170 --name ld --memory 512 --disk local:2G \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=64 vmtest.rate=8" >/dev/null
ctl uno start 170 >/dev/null
wait_console "$(rundir uno 170)" 'VMTEST OK' 4 60

# 0. Without --with-local-disks a running guest with a local disk is refused.
mig uno 170 due --online --migration_network "$NET" >/dev/null 2>"$RUN/err" && die "moved without --with-local-disks"
grep -q "needs --with-local-disks" "$RUN/err" || die "refusal: $(cat "$RUN/err")"

# 1. uno -> due, insecure, disk copied while the guest writes to it.
src=$(vol uno 170 0)
mig uno 170 due --online --with-local-disks --migration_type insecure --migration_network "$NET" \
  --output json >"$RUN/hop1.json" 2>"$RUN/hop1.err" || die "hop 1: $(tail -3 "$RUN/hop1.err")"
grep -q '"event":"done".*"disks":1' "$RUN/hop1.json" || die "hop 1: no done event with a disk"
grep -q '"disks":\[{' "$RUN/hop1.json" || die "hop 1: no per-disk progress"
[ -e "$src" ] && die "hop 1: the source volume $src is still there"
[ -e "$(vol due 170 0)" ] || die "hop 1: no volume on due"
no_qemu uno 170 "hop 1"
intact due 170 "hop 1"
note "local disk: uno -> due insecure: $(grep -oE '"(total_ms|downtime_ms|disk_bytes)":[0-9]+' "$RUN/hop1.json" | tr '\n' ' ')"

# 2. due -> tre, secure, into storage alt (tre only).
mig due 170 tre --online --with-local-disks --targetstorage alt --migration_network "$NET" \
  >"$RUN/hop2.out" 2>&1 || die "hop 2: $(tail -3 "$RUN/hop2.out")"
grep -q "1 local disk(s) of 2.00 GiB mirrored" "$RUN/hop2.out" || die "hop 2 summary: $(tail -1 "$RUN/hop2.out")"
[ -e "$ALT/images/170/vm-170-disk-0.raw" ] || die "hop 2: not in storage alt"
[ -e "$(vol due 170 0)" ] && die "hop 2: the source volume on due is still there"
ctl tre config 170 | grep -q '^virtio0: alt:170/vm-170-disk-0.raw' || die "hop 2: config: $(ctl tre config 170 | grep virtio0)"
intact tre 170 "hop 2"

# 3. Faults, each guest moving from tre to uno. 170 (2 GiB disk on alt)
# has its copy held to 24 MiB/s, so a fault hits mid-copy; 171 (a 64 MiB
# local disk, RAM rewritten fast) spends its time in the RAM phase.
ctl tre create 171 --name ram --memory 512 --disk local:64M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=128 vmtest.rate=0" >/dev/null
ctl tre start 171 >/dev/null
wait_console "$(rundir tre 171)" 'VMTEST OK' 2 60
# start_slow VMID PHASE TYPE BWLIMIT: background migration tre -> uno;
# returns once it is in PHASE (mirror: copying the disk; ram: RAM moving).
start_slow() {
  local vmid=$1 want=$2 type=$3 bw=$4 i
  mig tre "$vmid" uno --online --with-local-disks --targetstorage local --migration_type "$type" \
    --migration_network "$NET" --bwlimit "$bw" --multifd 1 --output json \
    >"$RUN/slow.json" 2>"$RUN/slow.err" &
  mpid=$!
  for ((i = 0; i < 600; i++)); do
    case $want in
      mirror) grep -q '"disk_done":[1-9]' "$RUN/slow.json" 2>/dev/null && break ;;
      ram) grep -q '"remaining":[1-9]' "$RUN/slow.json" 2>/dev/null && break ;;
    esac
    sleep 0.1
  done
  ((i < 600)) || die "migration of $vmid never reached $want: $(tail -3 "$RUN/slow.err")"
  sleep 1
}
# finish_slow VMID NEEDLE WHAT: it failed naming NEEDLE, all is as before.
finish_slow() {
  local vmid=$1 rc=0
  wait "$mpid" || rc=$?
  [ "$rc" -ne 0 ] || die "$3: migration succeeded despite the fault"
  grep -qF -- "$2" "$RUN/slow.err" || die "$3: expected '$2' in: $(tail -3 "$RUN/slow.err")"
  [ -e "$(vol uno "$vmid" 0)" ] && die "$3: the new volume on uno is left"
  no_qemu uno "$vmid" "$3"
  intact tre "$vmid" "$3"
  note "local disk fault: $3: guest $vmid intact on tre"
}
start_slow 170 mirror insecure 24576
kill -9 "$(pid_of "$(rundir uno 170)")"
finish_slow 170 "aborted" "target QEMU killed during the disk copy"
start_slow 170 mirror secure 24576
ip -n vmm-sw link set uno-m down
finish_slow 170 "aborted" "link cut during the disk copy"
ip -n vmm-sw link set uno-m up
start_slow 171 ram insecure 16384
kill -9 "$(pid_of "$(rundir uno 171)")"
finish_slow 171 "aborted" "target QEMU killed during the RAM phase"
start_slow 171 ram secure 16384
ip -n vmm-sw link set uno-m down
finish_slow 171 "aborted" "link cut during the RAM phase"
ip -n vmm-sw link set uno-m up
[ -e "$(vol tre 171 0)" ] || die "171's source volume is gone"
ctl tre stop 171 >/dev/null
[ -e "$ALT/images/170/vm-170-disk-0.raw" ] || die "170's source volume is gone"

# The worker killed mid-copy: the agent removes what it made, vmmd on tre
# (or the next vmmigrate) cleans the source, and the guest moves.
start_slow 170 mirror insecure 24576
kill -9 "$(nst uno get migrations/170 | grep -oE '"pid":[0-9]+' | cut -d: -f2)"
wait "$mpid" 2>/dev/null || true
for ((i = 0; i < 100; i++)); do [ -e "$(vol uno 170 0)" ] || break; sleep 0.1; done
[ -e "$(vol uno 170 0)" ] && die "worker killed: the new volume on uno is left"
mig tre 170 uno --online --with-local-disks --targetstorage local --migration_network "$NET" \
  >"$RUN/rerun.out" 2>&1 || die "rerun after the killed worker: $(tail -3 "$RUN/rerun.out")"
# vmmd on tre cleans up within a second or two; else the rerun does.
grep -q 'guest 170: cleaning up after a crashed migration' "$RUN/rerun.out" "$TB_STATE/tre/vmm/vmmd.log" ||
  die "no cleanup: $(cat "$RUN/rerun.out")"
[ -e "$ALT/images/170/vm-170-disk-0.raw" ] && die "rerun: the source volume in alt is left"
intact uno 170 "worker killed, rerun"
ctl uno config 170 | grep -q '^virtio0: local:' || die "rerun: storage not local again"
ctl uno stop 170 >/dev/null

# 4. A mixed guest: its shared disk stays, its local one moves.
ctl uno create 172 --name mixed --memory 256 --disk shared:64M --disk local:64M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=disk vmtest.rate=4" >/dev/null
ctl uno start 172 >/dev/null
wait_console "$(rundir uno 172)" 'VMTEST OK' 2 60
shared_before=$(stat -c %i "$SHARED/images/172/vm-172-disk-0.raw")
mig uno 172 due --online --with-local-disks --migration_network "$NET" >"$RUN/mixed.out" 2>&1 ||
  die "mixed guest: $(tail -3 "$RUN/mixed.out")"
grep -q "1 local disk(s)" "$RUN/mixed.out" || die "mixed: not one local disk: $(tail -1 "$RUN/mixed.out")"
[ "$(stat -c %i "$SHARED/images/172/vm-172-disk-0.raw")" = "$shared_before" ] || die "mixed: the shared disk was copied"
[ -e "$(vol due 172 0)" ] && [ ! -e "$(vol uno 172 0)" ] || die "mixed: the local disk did not move"
intact due 172 "mixed guest"
ctl due stop 172 >/dev/null

# 5. Thin vs full: an 8 GiB disk that is all zeros against a 1 GiB disk
# written full (the guest then idles): the thin one must go faster.
ctl uno create 173 --name thin --memory 256 --disk local:8G \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=idle" >/dev/null
ctl uno create 174 --name full --memory 256 --disk local:1G \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=idle" >/dev/null
head -c 1073741824 /dev/urandom >"$(vol uno 174 0)"
ctl uno start 173 >/dev/null; ctl uno start 174 >/dev/null
wait_console "$(rundir uno 173)" 'VMTEST OK' 1 60
wait_console "$(rundir uno 174)" 'VMTEST OK' 1 60
sum=$(sha256sum <"$(vol uno 174 0)")
tms() { grep -oE '"total_ms":[0-9]+' "$1" | cut -d: -f2; }
mig uno 173 due --online --with-local-disks --migration_type insecure --migration_network "$NET" \
  --output json >"$RUN/thin.json" 2>&1 || die "thin: $(tail -2 "$RUN/thin.json")"
mig uno 174 due --online --with-local-disks --migration_type insecure --migration_network "$NET" \
  --output json >"$RUN/full.json" 2>&1 || die "full: $(tail -2 "$RUN/full.json")"
thin=$(tms "$RUN/thin.json"); full=$(tms "$RUN/full.json")
[ "$thin" -lt "$full" ] || die "thin 8 GiB took ${thin} ms, full 1 GiB ${full} ms"
[ "$(du -k "$(vol due 173 0)" | cut -f1)" -lt 65536 ] || die "the thin disk arrived fat: $(du -h "$(vol due 173 0)")"
ctl due stop 174 >/dev/null
[ "$(sha256sum <"$(vol due 174 0)")" = "$sum" ] || die "the full disk differs after the move"
note "thin 8 GiB: ${thin} ms; full 1 GiB: ${full} ms (insecure)"
