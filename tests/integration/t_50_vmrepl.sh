#!/usr/bin/env bash
# vmrepl on 3 nodes. Guest 180 on uno writes stamped blocks to a local
# 256 MiB disk; job 180-0 replicates it to due.
#  - bad input: one line naming the value, nothing changed;
#  - the scheduler runs a job asked with schedule-now; status shows it;
#  - after a sync taken with the guest paused, the replica on due equals the
#    source byte for byte; a replica of the running guest boots and passes
#    the guest's own block scan (every block whole and self-consistent);
#  - an incremental sync moves about what changed, far less than the disk;
#  - a stopped guest syncs by block hashes: nothing changed, nothing sent;
#  - the target down: the run fails, fail_count, error and the 5-minute retry
#    are recorded; with the target back it recovers;
#  - a migration waits for a running sync of the guest.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMID=180 JOB=180-0
source "$(dirname "$0")/lib_repl.sh"
NET=10.99.2.0/24

cleanup() {
  ip -n vmm-sw link set due-c up 2>/dev/null || true
  ip -n vmm-sw link set due-m up 2>/dev/null || true
  testbed_cleanup
}
trap cleanup EXIT

SRC=$TB_STATE/uno/vmm/images/180/vm-180-disk-0.raw
REP=$TB_STATE/due/vmm/images/180/vm-180-disk-0.raw
expect_bad() {  # expect_bad NEEDLE ARGS...: vmrepl on uno fails with rc 2, one line naming NEEDLE
  local needle=$1 rc=0; shift
  repl uno "$@" >/dev/null 2>"$RUN/err" || rc=$?
  [ "$rc" = 2 ] || die "vmrepl $*: rc $rc ($(cat "$RUN/err"))"
  [ "$(grep -vc ' info: ' "$RUN/err")" = 1 ] || die "vmrepl $*: not one line: $(cat "$RUN/err")"
  grep -qF -- "$needle" "$RUN/err" || die "vmrepl $*: expected '$needle': $(cat "$RUN/err")"
}

testbed_fresh uno due tre
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
ctl uno create 180 --name rep --memory 256 --disk local:256M --kernel "$GUEST_DIR/vmlinux" \
  --initrd "$GUEST_DIR/initramfs.cpio.gz" --append "$app vmtest.mode=disk vmtest.rate=2" >/dev/null
ctl uno start 180 >/dev/null
wait_console "$(rundir uno 180)" 'VMTEST OK' 2 60

# 1. Bad input.
cfg_before=$(nst uno get replication.cfg 2>/dev/null || true)
expect_bad "invalid schedule 'mon..fry 8:00': unknown weekday 'fry'" create 180-0 due --schedule 'mon..fry 8:00'
expect_bad "invalid schedule '*/61'" create 180-0 due --schedule '*/61'
expect_bad "invalid job id '180'" create 180 due
expect_bad "invalid job id '0180-0'" create 0180-0 due
expect_bad "unknown target node 'quattro'" create 180-0 quattro
expect_bad "target node 'uno' is where guest 180 runs" create 180-0 uno
expect_bad "guest 181 does not exist" create 181-0 due
expect_bad "invalid rate (MB/s) 'fast'" create 180-0 due --rate fast
[ "$(nst uno get replication.cfg 2>/dev/null || true)" = "$cfg_before" ] || die "bad input changed replication.cfg"

# 2. The job; the scheduler runs it when asked.
repl uno create 180-0 due --schedule yearly --comment 'test job' >/dev/null   # the scheduler runs it only when asked here
expect_bad "guest 180 already replicates to due (job 180-0)" create 180-1 due
repl due list | grep -qE '^180-0 +due +yearly ' || die "list: $(repl due list)"
repl tre schedule-now 180-0 >/dev/null
wait_gen 1
repl due status | grep -qE '^180-0 +yes +due +[0-9-]+_[0-9:]+ .* 0 ok$' || die "status: $(repl due status)"
full=$(sfield bytes)

# 3. Point in time: the guest paused, the replica equals the source.
"$VMGUEST" qmp --dir "$(rundir uno 180)" stop >/dev/null
repl uno run --id 180-0 >/dev/null || die "run while paused failed: $(repl uno log 180-0 | tail -3)"
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$REP")" ] || die "replica differs from the paused source"
"$VMGUEST" qmp --dir "$(rundir uno 180)" cont >/dev/null
wait_gen 2
note "replica equals the paused source at generation 2"

# 4. Incremental while the guest writes 2 MiB/s: about what changed moves
# (the guest's block counter says how much it wrote since the last sync).
b0=$(blocks)
sleep 4
b1=$(blocks)
repl uno run --id 180-0 >/dev/null || die "incremental run failed"
wait_gen 3
incr=$(sfield bytes)
written=$(( (b1 - b0 + 1024) * 4096 ))   # + the beat between the last count and the run
[ "$incr" -le $((written * 3 / 2)) ] || die "incremental sync sent $incr bytes; the guest wrote about $written"
repl uno log 180-0 | grep -q 'incremental sync' || die "not incremental: $(repl uno log 180-0)"
note "first sync $full bytes, incremental $incr bytes for about $written bytes written"

# 5. The replica of the running guest boots and checks every block itself.
scan_replica "$REP" due

# 6. A stopped guest: block hashes; once in step, nothing changed, nothing sent.
ctl uno stop 180 >/dev/null
repl uno run --id 180-0 >/dev/null || die "run of the stopped guest failed"
wait_gen 4
repl uno log 180-0 | grep -q 'comparing block hashes' || die "no hash compare: $(repl uno log 180-0)"
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$REP")" ] || die "replica differs from the stopped source"
repl uno run --id 180-0 >/dev/null || die "second run of the stopped guest failed"
wait_gen 5
[ "$(sfield bytes)" -lt 4096 ] || die "an unchanged stopped guest sent $(sfield bytes) bytes"
ctl uno start 180 >/dev/null
wait_console "$(rundir uno 180)" 'VMTEST OK' 2 60

# 7. The target down: failure recorded, retry in 5 minutes; back: recovers.
ip -n vmm-sw link set due-c down; ip -n vmm-sw link set due-m down
rc=0; repl uno run --id 180-0 >/dev/null 2>"$RUN/err" || rc=$?
[ "$rc" = 1 ] || die "run with the target down: rc $rc"
[ "$(sfield state)" = error ] && [ "$(sfield fail_count)" = 1 ] || die "failure not recorded: $(state)"
[ -n "$(sfield error)" ] || die "no error recorded"
last_try=$(sfield last_try)
next=$(repl uno status --output json | grep -oE '"next_sync":[0-9]+' | cut -d: -f2)
[ "$next" = $((last_try + 300)) ] || die "next try $next, want last try + 300 ($last_try)"
ip -n vmm-sw link set due-c up; ip -n vmm-sw link set due-m up
node_wait_synced uno due tre
repl uno schedule-now 180-0 >/dev/null
wait_gen 6
[ "$(sfield fail_count)" = 0 ] || die "fail_count not reset: $(state)"

# 8. A migration of the guest waits for its running sync (rate-limited here).
repl uno update 180-0 --rate 1 >/dev/null
ctl uno stop 180 >/dev/null
dd if=/dev/urandom of="$SRC" bs=1M count=24 conv=notrunc status=none
ctl uno start 180 >/dev/null
wait_console "$(rundir uno 180)" 'VMTEST OK' 1 60
repl uno run --id 180-0 >"$RUN/slow.out" 2>&1 &
rpid=$!
for ((i = 0; i < 100; i++)); do [ "$(sfield state)" = syncing ] && break; sleep 0.1; done
[ "$(sfield state)" = syncing ] || die "the slow sync did not start: $(state)"
mig uno 180 tre --online --with-local-disks --migration_network "$NET" >"$RUN/mig.out" 2>&1 ||
  die "migration during a sync: $(tail -3 "$RUN/mig.out")"
grep -q 'waiting for replication job 180-0' "$RUN/mig.out" || die "the migration did not wait: $(head -3 "$RUN/mig.out")"
wait "$rpid" || die "the sync failed under the waiting migration: $(tail -3 "$RUN/slow.out")"
ctl tre status 180 | grep -qx 'status: running' || die "guest not on tre"
note "migration waited for the running sync"
