#!/usr/bin/env bash
# (a) Testbed up; the test guest boots on `uno` through our launcher and
# QMP client and reports OK; its memory and disk patterns verify; it stops.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT

tb down >/dev/null 2>&1 || true
tb up 3
tb status >/dev/null || die "testbed status is not healthy after up"
mkdir -p "$RUN"
truncate -s 64M "$RUN/disk-boot.img"
out=$(guest_start uno boot "$MEM_512M" "vmtest.mode=mem+disk vmtest.mib=64 vmtest.rate=64 vmtest.disk=/dev/vda" \
      --disk "$RUN/disk-boot.img")
echo "$out"
grep -q 'accel tcg' <<<"$out" || die "expected TCG on this machine: $out"
pid=$(pid_of "$RUN/boot")
# The guest runs inside uno's network namespace, not ours.
[ "$(readlink /proc/"$pid"/ns/net)" = "$(ip netns exec uno readlink /proc/self/ns/net)" ] ||
  die "QEMU pid $pid is not in uno's network namespace"
wait_console "$RUN/boot" 'VMTEST READY' 1 20
wait_console "$RUN/boot" 'VMTEST OK' 3 20
"$VMGUEST" status --dir "$RUN/boot" | grep -q '^running ' || die "guest not running"
"$VMGUEST" verify --dir "$RUN/boot" | grep -q 'VMTEST VERIFY OK' || die "verify failed"
"$VMGUEST" stop --dir "$RUN/boot"
alive "$pid" && die "QEMU pid $pid still alive after stop"
[ ! -e "$RUN/boot/qmp.sock" ] || die "qmp.sock left behind after stop"
# Stopping again is a clear error, not a crash.
if "$VMGUEST" stop --dir "$RUN/boot" 2>"$RUN/err"; then die "second stop succeeded"; fi
grep -q "no guest running in '$RUN/boot'" "$RUN/err" || die "unclear error: $(cat "$RUN/err")"
note "boot: ok"
