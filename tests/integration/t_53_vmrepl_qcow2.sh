#!/usr/bin/env bash
# vmrepl with a qcow2 disk. Guest 186 on uno runs on a 256 MiB qcow2 volume
# (vmctl --disk local:256M,format=qcow2) and writes stamped blocks to it;
# job 186-0 replicates it to due, where the replica is a qcow2 image too
# (written through qemu-nbd). Equality is of the guest's view (qemu-img
# compare), not of the files, which differ in layout.
#  - first sync full, the replica a qcow2 image; paused, it equals the source;
#  - an incremental sync (QEMU's persistent dirty bitmap) moves about what
#    the guest wrote; a copy of the replica boots and passes the guest's own
#    block scan;
#  - stopped: a sync by block hashes read through qemu-nbd; then nothing to
#    send; started again, the bitmap survived the restart (persistent on
#    qcow2), so the sync reads only dirty extents;
#  - online to due: only the delta moves, the guest runs on its replica with
#    its checks passing, the job turns around; paused, due's disk and the
#    new replica on uno are the same disk to a guest.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMID=186 JOB=186-0
source "$(dirname "$0")/lib_repl.sh"
NET=10.99.2.0/24

trap testbed_cleanup EXIT

vol() { echo "$TB_STATE/$1/vmm/images/186/vm-186-disk-0.qcow2"; }
# same_disk A B WHAT: the two qcow2 images read the same to a guest (-U: a
# paused or stopped guest's image, flushed by QEMU at its stop).
same_disk() {
  qemu-img compare -U -q -f qcow2 -F qcow2 "$1" "$2" || die "$3: $(qemu-img compare -U -f qcow2 -F qcow2 "$1" "$2" 2>&1 | head -2)"
}
is_qcow2() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' ')" = 514649fb ] || die "$1 is not a qcow2 image"; }

testbed_fresh uno due tre
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
ctl uno create 186 --name q2 --memory 256 --disk local:256M,format=qcow2 \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=32 vmtest.rate=2" >/dev/null
is_qcow2 "$(vol uno)"
ctl uno start 186 >/dev/null
wait_console "$(rundir uno 186)" 'VMTEST OK' 2 60

# 1. Full, then paused: the replica is a qcow2 image equal to the source.
repl uno create 186-0 due --schedule yearly >/dev/null
repl uno schedule-now 186-0 >/dev/null
wait_gen 1
is_qcow2 "$(vol due)"
full=$(sfield bytes)
"$VMGUEST" qmp --dir "$(rundir uno 186)" stop >/dev/null
repl uno run --id 186-0 >/dev/null || die "paused run: $(repl uno log 186-0 | tail -3)"
same_disk "$(vol uno)" "$(vol due)" "replica differs from the paused source"
"$VMGUEST" qmp --dir "$(rundir uno 186)" cont >/dev/null
wait_gen 2
note "qcow2 replica equals the paused source at generation 2 (full sync $full bytes)"

# 2. Incremental from the dirty bitmap: about what the guest wrote.
b0=$(blocks uno)
sleep 4
b1=$(blocks uno)
repl uno run --id 186-0 >/dev/null || die "incremental run failed"
wait_gen 3
incr=$(sfield bytes)
written=$(( (b1 - b0 + 1024) * 4096 ))
[ "$incr" -le $((written * 3 / 2)) ] || die "incremental sync sent $incr bytes; the guest wrote about $written"
repl uno log 186-0 | tail -3 | grep -q 'incremental sync' || die "not incremental: $(repl uno log 186-0 | tail -3)"
note "incremental $incr bytes for about $written written"

# 3. A copy of the replica boots and scans every block the guest wrote.
scan_replica "$(vol due)" due

# 4. Stopped: block hashes through qemu-nbd; in step, nothing to send.
ctl uno stop 186 >/dev/null
repl uno run --id 186-0 >/dev/null || die "run of the stopped guest: $(repl uno log 186-0 | tail -3)"
wait_gen 4
repl uno log 186-0 | tail -4 | grep -q 'comparing block hashes' || die "no hash compare: $(repl uno log 186-0 | tail -4)"
same_disk "$(vol uno)" "$(vol due)" "replica differs from the stopped source"
repl uno run --id 186-0 >/dev/null || die "second run of the stopped guest failed"
wait_gen 5
[ "$(sfield bytes)" -lt 4096 ] || die "an unchanged stopped guest sent $(sfield bytes) bytes"
pgrep -f "qemu-nbd .*vm-186-disk-0" >/dev/null && die "a qemu-nbd was left running: $(pgrep -af "qemu-nbd .*vm-186")"

# 5. Started again: the persistent bitmap survived; only dirty extents go.
ctl uno start 186 >/dev/null
wait_console "$(rundir uno 186)" 'VMTEST OK' 2 60
repl uno run --id 186-0 >/dev/null || die "run after the restart failed"
wait_gen 6
repl uno log 186-0 | tail -3 | grep -q 'dirty extent(s) since the last sync' ||
  die "the bitmap did not survive the restart: $(repl uno log 186-0 | tail -4)"
note "after a restart: $(sfield bytes) bytes from the persistent bitmap"

# 6. Online to due: the delta only; the job turns around.
mig uno 186 due --online --with-local-disks --migration_network "$NET" >"$RUN/hop.out" 2>&1 ||
  die "migration: $(tail -5 "$RUN/hop.out")"
grep -q 'replication job 186-0 keeps replicas on due: only the delta' "$RUN/hop.out" ||
  die "the migration did not use the replica: $(head -5 "$RUN/hop.out")"
grep -q 'mirrored' "$RUN/hop.out" && die "a disk was mirrored: $(grep mirrored "$RUN/hop.out")"
intact due "after the migration"
repl due list | grep -qE '^186-0 +uno ' || die "job not turned: $(repl due list)"
[ -e "$(vol uno).repl" ] || die "uno's old disk is not a replica"
g=$(sfield gen)
"$VMGUEST" qmp --dir "$(rundir due 186)" stop >/dev/null
repl due run --id 186-0 >/dev/null || die "sync from due: $(repl due log 186-0 | tail -3)"
wait_gen $((g + 1))
same_disk "$(vol due)" "$(vol uno)" "the replica on uno differs from due's disk"
"$VMGUEST" qmp --dir "$(rundir due 186)" cont >/dev/null
intact due "after the sync from due"
note "migrated to the replica: $(grep -oE 'downtime [0-9]+ ms' "$RUN/hop.out" | head -1); sync back by $(repl due log 186-0 | grep -oE 'comparing block hashes|dirty extent' | tail -1)"

# 7. Online to tre, which has no replica: the qcow2 disk is mirrored into a
# new qcow2 image of the same virtual size there (made by qemu-img).
mig due 186 tre --online --with-local-disks --migration_network "$NET" >"$RUN/hop2.out" 2>&1 ||
  die "migration to tre: $(tail -5 "$RUN/hop2.out")"
grep -q 'local disk(s) of .* mirrored' "$RUN/hop2.out" || die "not mirrored: $(tail -3 "$RUN/hop2.out")"
intact tre "after the mirror to tre"
is_qcow2 "$(vol tre)"
qemu-img info -U --output=json "$(vol tre)" | grep -q '"virtual-size": 268435456' ||
  die "tre's volume: $(qemu-img info -U "$(vol tre)" | head -3)"
[ -e "$(vol due)" ] && die "due's disk left behind after the migration away"
note "mirrored to tre into a new qcow2 image"
