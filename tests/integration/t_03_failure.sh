#!/usr/bin/env bash
# Failure paths of the raw migration leave the source running as before:
# a target that is not listening (wrong address), and a target killed
# mid-transfer. Bad input changes nothing.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT

tb down >/dev/null 2>&1 || true
tb up 2
mkdir -p "$RUN"
app="vmtest.mode=mem vmtest.mib=128 vmtest.rate=0"
guest_start uno f1 "$MEM_512M" "$app"
wait_console "$RUN/f1" 'VMTEST OK' 2 30

# 1. Target QEMU dies in the middle of the transfer (slow bandwidth keeps it in flight).
guest_start due f1-in "$MEM_512M" "$app" --incoming
( sleep 1.5; kill -9 "$(pid_of "$RUN/f1-in")" ) &
killer=$!
if "$VMGUEST" migrate --from "$RUN/f1" --to "$RUN/f1-in" --uri "tcp:$(tb addr due migration):61001" \
     --max-bandwidth 20M --timeout 60 2>"$RUN/err"; then
  die "migration to a killed target succeeded"
fi
wait $killer
echo "error was: $(cat "$RUN/err")"
[ "$(wc -l < "$RUN/err")" -eq 1 ] || die "expected a one-line error, got: $(cat "$RUN/err")"
"$VMGUEST" status --dir "$RUN/f1" | grep -q '^running ' || die "source not running after failed migration"
n=$(last_ok "$RUN/f1"); wait_console "$RUN/f1" "VMTEST OK n=$((n + 2))\b" 1 20
"$VMGUEST" verify --dir "$RUN/f1" | grep -q 'VMTEST VERIFY OK' || die "source memory check failed after rollback"

# 2. The URI names an address that is not the target node's (uno's own):
#    the target cannot listen there; refused at once, source untouched.
guest_start due f1-in2 "$MEM_512M" "$app" --incoming
if "$VMGUEST" migrate --from "$RUN/f1" --to "$RUN/f1-in2" --uri "tcp:$(tb addr uno migration):61002" \
     --timeout 30 2>"$RUN/err"; then
  die "migration to an address of another node succeeded"
fi
echo "error was: $(cat "$RUN/err")"
grep -q "Cannot assign requested address" "$RUN/err" || die "unclear error: $(cat "$RUN/err")"
"$VMGUEST" status --dir "$RUN/f1" | grep -q '^running ' || die "source not running after refused migration"

# 3. Bad input: one line naming the value, exit 2, source untouched.
for args in "--uri ftp://x" "--uri tcp:1.2.3.4:5 --max-bandwidth 5Q" "--uri tcp:1.2.3.4:5 --multifd 99" \
            "--uri tcp:1.2.3.4:5 --timeout 0"; do
  # shellcheck disable=SC2086
  rc=0; "$VMGUEST" migrate --from "$RUN/f1" --to "$RUN/f1-in2" $args 2>"$RUN/err" || rc=$?
  [ $rc -eq 2 ] || die "exit $rc (want 2) for '$args'"
  [ "$(wc -l < "$RUN/err")" -eq 1 ] || die "not one line for '$args': $(cat "$RUN/err")"
  echo "bad input '$args' -> $(cat "$RUN/err")"
done
"$VMGUEST" status --dir "$RUN/f1" | grep -q '^running ' || die "source changed by bad input"
"$VMGUEST" stop --dir "$RUN/f1"
note "failure paths: ok"
