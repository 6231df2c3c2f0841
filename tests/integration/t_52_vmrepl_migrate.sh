#!/usr/bin/env bash
# A migration to the replica's node sends only the delta, and the job turns
# around. Guest 185 on uno writes stamped blocks to a local 256 MiB disk
# (96 MiB of it random data first); job 185-0 replicates it to due.
#  - a sync that fails (replica immutable) aborts the migration before it
#    began: the guest runs on uno, the job records the failure;
#  - online uno -> due: a sync before the transfer and a last one at the
#    switchover (guest paused) move about what the guest wrote, far less
#    than the full sync did; the guest runs on due on its replica with its
#    own checks (memory, every block it wrote) passing;
#  - the job now replicates due -> uno: uno's old disk is the replica (same
#    generation), due's disk is a plain volume, the block hashes went to
#    due, so the next sync from due compares hashes instead of sending all;
#    with the guest paused the replica on uno equals due's disk;
#  - offline back due -> uno (guest stopped): the replica is brought up to
#    date and becomes the disk, byte for byte the one due had; the job turns
#    around again.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMID=185 JOB=185-0
source "$(dirname "$0")/lib_repl.sh"
NET=10.99.2.0/24

trap testbed_cleanup EXIT

vol() { echo "$TB_STATE/$1/vmm/images/185/vm-185-disk-0.raw"; }
# wire_bytes FILE: bytes on the wire of every sync a migration logged.
wire_bytes() {
  grep -oE 'incremental sync, [0-9]+ bytes of data, [0-9]+ on the wire' "$1" |
    awk '{ s += $7 } END { print s + 0 }'
}

testbed_fresh uno due tre
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
ctl uno create 185 --name rm --memory 256 --disk local:256M --kernel "$GUEST_DIR/vmlinux" \
  --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=32 vmtest.rate=1" >/dev/null
# Data a full copy would have to carry (the guest writes from 128 MiB on).
dd if=/dev/urandom of="$(vol uno)" bs=1M count=96 conv=notrunc status=none
ctl uno start 185 >/dev/null
wait_console "$(rundir uno 185)" 'VMTEST OK' 2 60

repl uno create 185-0 due --schedule yearly >/dev/null
b0=$(blocks uno)
repl uno schedule-now 185-0 >/dev/null
wait_gen 1
full=$(sfield bytes)
[ "$full" -gt $((96 << 20)) ] || die "the full sync sent only $full bytes"

# 0. A sync that fails (the replica cannot be written: immutable) aborts the
# migration before it began: the guest runs on, the failure is recorded.
chattr +i "$(vol due)"
rc=0; mig uno 185 due --online --with-local-disks --migration_network "$NET" >"$RUN/fail.out" 2>&1 || rc=$?
chattr -i "$(vol due)"
[ "$rc" = 1 ] || die "migration onto a broken replica: rc $rc: $(tail -3 "$RUN/fail.out")"
grep -q 'aborted before it began (replication job 185-0)' "$RUN/fail.out" || die "refusal: $(tail -3 "$RUN/fail.out")"
ctl uno config 185 | grep -qx 'node: uno' || die "the failed migration moved the guest"
intact uno "after the failed sync"
[ "$(sfield state)" = error ] && [ "$(sfield fail_count)" = 1 ] || die "failure not recorded: $(state)"
nst uno list migrations/ | grep -q . && die "record left: $(nst uno list migrations/)"
note "a failed sync aborts the migration: $(grep -o 'aborted before.*' "$RUN/fail.out" | head -c 200)"

# 1. Online to the replica's node: only the delta.
mig uno 185 due --online --with-local-disks --migration_network "$NET" >"$RUN/hop1.out" 2>&1 ||
  die "hop 1: $(tail -5 "$RUN/hop1.out")"
grep -q 'replication job 185-0 keeps replicas on due: only the delta' "$RUN/hop1.out" ||
  die "hop 1 did not use the replica: $(head -5 "$RUN/hop1.out")"
grep -q 'last replication sync (job 185-0), guest paused' "$RUN/hop1.out" || die "hop 1: no last sync"
[ "$(grep -c 'incremental sync' "$RUN/hop1.out")" = 2 ] || die "hop 1: not two incremental syncs: $(grep 'sync' "$RUN/hop1.out")"
grep -q 'mirrored' "$RUN/hop1.out" && die "hop 1 mirrored a disk: $(grep mirrored "$RUN/hop1.out")"
intact due "hop 1"
# Everything the guest wrote since the full sync began, at most, moved:
# the counter runs on in the guest across the migration.
delta=$(wire_bytes "$RUN/hop1.out")
written=$(( ($(blocks due) - b0 + 256) * 4096 ))
[ "$delta" -le $((written * 3 / 2)) ] || die "hop 1 sent $delta bytes of disk; the guest wrote about $written"
[ "$delta" -lt $((full / 2)) ] || die "hop 1 sent $delta bytes of disk; the full sync sent $full"
[ -n "$(pid_of "$(rundir uno 185)")" ] && alive "$(pid_of "$(rundir uno 185)")" && die "hop 1: QEMU left on uno"
# The job turned around.
repl due list | grep -qE '^185-0 +uno ' || die "hop 1: job not turned: $(repl due list)"
[ "$(sfield target)" = uno ] || die "hop 1: state target: $(state)"
g=$(sfield gen)
[ -e "$(vol uno).repl" ] || die "hop 1: uno's old disk is not a replica"
grep -q "\"gen\":$g," "$(vol uno).repl" || die "hop 1: replica generation: $(cat "$(vol uno).repl") vs $g"
[ -e "$(vol due).repl" ] && die "hop 1: due's disk still has replica side files"
[ -s "$TB_STATE/due/vmm/repl/185-0/drive0.manifest" ] || die "hop 1: no block hashes on due"
note "hop 1 uno -> due: $delta bytes of disk on the wire for about $written written (full sync: $full), generation $g; $(grep -oE 'downtime [0-9]+ ms' "$RUN/hop1.out" | head -1)"

# Where the downtime went (the last sync's steps, source and target side).
grep -E 'last replication sync|dirty extent|incremental sync|done in|switchover|downtime' "$RUN/hop1.out" | tail -8 || true
grep -h 'received in' "$TB_STATE/due/vmm/repl/agent.log" 2>/dev/null | tail -2 || true

# 2. The next sync runs from due and compares hashes; paused, the replica equals the disk.
"$VMGUEST" qmp --dir "$(rundir due 185)" stop >/dev/null
repl due run --id 185-0 >/dev/null || die "sync from due: $(repl due log 185-0 | tail -3)"
wait_gen $((g + 1))
repl due log 185-0 | grep -q 'comparing block hashes' || die "not by hashes: $(repl due log 185-0)"
# What the guest rewrote since hop 1's pause (seconds of it, each 4 KiB
# write making a 64 KiB hash block differ: ~10 MB here, more on a loaded
# machine): a quarter of the full sync bounds it with room to spare.
[ "$(sfield bytes)" -lt $((full / 4)) ] || die "the sync from due sent $(sfield bytes) bytes (full sync: $full)"
[ "$(sha256sum <"$(vol due)")" = "$(sha256sum <"$(vol uno)")" ] || die "replica on uno differs from due's disk"
"$VMGUEST" qmp --dir "$(rundir due 185)" cont >/dev/null
intact due "sync from due"
note "sync due -> uno by block hashes: $(sfield bytes) bytes"

# 3. Offline back to uno: the replica catches up and becomes the disk.
sleep 2
ctl due stop 185 >/dev/null
sum=$(sha256sum <"$(vol due)")
mig due 185 uno >"$RUN/hop2.out" 2>&1 || die "hop 2: $(tail -5 "$RUN/hop2.out")"
grep -q 'only the delta' "$RUN/hop2.out" || die "hop 2 did not use the replica"
ctl uno config 185 | grep -qx 'node: uno' || die "hop 2: not on uno"
[ "$(sha256sum <"$(vol uno)")" = "$sum" ] || die "hop 2: uno's disk differs from due's"
[ -e "$(vol uno).repl" ] && die "hop 2: uno's disk still has replica side files"
grep -q '"gen"' "$(vol due).repl" || die "hop 2: due's old disk is not a replica"
repl uno list | grep -qE '^185-0 +due ' || die "hop 2: job not turned: $(repl uno list)"
ctl uno start 185 >/dev/null
wait_console "$(rundir uno 185)" 'VMTEST OK' 1 60
repl uno run --id 185-0 >/dev/null || die "sync after hop 2: $(repl uno log 185-0 | tail -3)"
repl uno log 185-0 | grep -q 'sending it whole' && die "sync after hop 2 sent everything"
note "hop 2 due -> uno offline: $(wire_bytes "$RUN/hop2.out") bytes; job back to due"
