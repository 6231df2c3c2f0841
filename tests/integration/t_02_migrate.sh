#!/usr/bin/env bash
# (b) A raw QEMU live migration uno -> due over the migration network,
# driven by our QMP client, while the guest rewrites 128 MiB. Afterwards the
# guest on due keeps reporting OK (its own memory check passes) and the
# source QEMU is gone.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT

tb down >/dev/null 2>&1 || true
tb up 3
mkdir -p "$RUN"
mig_ip=$(tb addr due migration)
[[ $mig_ip == 10.99.2.* ]] || die "unexpected migration address '$mig_ip'"
app="vmtest.mode=mem vmtest.mib=128 vmtest.rate=100"
guest_start uno g1 "$MEM_512M" "$app"
wait_console "$RUN/g1" 'VMTEST OK' 3 30
src_pid=$(pid_of "$RUN/g1")
guest_start due g1-in "$MEM_512M" "$app" --incoming
"$VMGUEST" status --dir "$RUN/g1-in" | grep -q '^inmigrate ' || die "target not waiting for migration"
before=$(last_ok "$RUN/g1")
"$VMGUEST" migrate --from "$RUN/g1" --to "$RUN/g1-in" --uri "tcp:$mig_ip:61000" \
  --max-bandwidth unlimited --timeout 120 | tee "$RUN/mig.out"
grep -q '^migrated in ' "$RUN/mig.out" || die "no completion line"
# QEMU 7.2 announces "completed" before it computes the figures: they must
# still be real (a 512 MiB guest cannot move in 0 ms with 0 ms downtime).
grep -qE '^migrated in 0\.00 s|downtime 0 ms' "$RUN/mig.out" && die "final figures missing: $(cat "$RUN/mig.out")"
alive "$src_pid" && die "source QEMU pid $src_pid still alive after migration"
"$VMGUEST" status --dir "$RUN/g1-in" | grep -q '^running ' || die "target not running"
# The guest's counter continues on due: the same guest, not a reboot.
wait_console "$RUN/g1-in" 'VMTEST OK' 3 30
after=$(last_ok "$RUN/g1-in")
[ "$after" -gt "$before" ] || die "OK counter did not continue on due ($before -> $after)"
grep -q 'VMTEST READY' "$RUN/g1-in/console.log" && die "guest rebooted on due"
"$VMGUEST" verify --dir "$RUN/g1-in" | grep -q 'VMTEST VERIFY OK' || die "verify on due failed"
# And the stream went over the migration network: the source connected to due's 10.99.2 address.
"$VMGUEST" stop --dir "$RUN/g1-in"
note "migrate: ok (counter $before -> $after)"
