#!/usr/bin/env bash
# make demo: bring up the embedded 3-node test cluster on this machine and
# live-migrate a busy guest from uno to due with visible progress; the guest
# proves its own memory intact afterwards. KEEP=1 leaves it all running.
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
source "$(dirname "$0")/../tests/lib.sh"
RUN=/run/vmm-demo
cleanup() {
  [ "${KEEP:-0}" = 1 ] && { echo "KEEP=1: testbed and guest left running (scripts/testbed down ends them)"; return; }
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Three nodes (network namespaces uno, due, tre), each with sshd and corosync"
tb down >/dev/null 2>&1 || true
tb up 3
tb status
step "2. corosync membership and quorum, as seen from uno"
tb exec uno corosync-quorumtool -s | sed -n '/Quorum information/,$p'

step "3. Start guest 106 on uno: 1 GiB RAM (minus 8 KiB, see DESIGN.md §6), rewriting 256 MiB"
mkdir -p "$RUN"
RUN=$RUN guest_start uno vm106 "$MEM_1G" "vmtest.mode=mem vmtest.mib=256 vmtest.rate=0"
RUN=$RUN wait_console "$RUN/vm106" 'VMTEST OK' 2 30
grep -m1 'VMTEST READY' "$RUN/vm106/console.log"
tail -1 "$RUN/vm106/console.log"

step "4. Target QEMU on due waits for the stream on the migration network"
RUN=$RUN guest_start due vm106-due "$MEM_1G" "vmtest.mode=mem vmtest.mib=256 vmtest.rate=0" --incoming
uri="tcp:$(tb addr due migration):61000"

step "5. Live migration uno -> due over $uri"
before=$(RUN=$RUN last_ok "$RUN/vm106")
"$VMGUEST" migrate --from "$RUN/vm106" --to "$RUN/vm106-due" --uri "$uri" --max-bandwidth unlimited

step "6. The guest on due: running, counting on, and its memory check passes"
"$VMGUEST" status --dir "$RUN/vm106-due"
RUN=$RUN wait_console "$RUN/vm106-due" "VMTEST OK" 2 30
after=$(RUN=$RUN last_ok "$RUN/vm106-due")
echo "OK counter: $before on uno before the move, $after on due now"
"$VMGUEST" verify --dir "$RUN/vm106-due"
if [ -e "$RUN/vm106/qemu.pid" ]; then echo "source QEMU still present"; exit 1; fi
echo "source QEMU on uno: gone"
step "Done: guest 106 now runs on due with its memory intact."
