#!/usr/bin/env bash
# make demo: bring up the embedded 3-node test cluster on this machine (sshd,
# corosync and vmmd per node), start a busy guest on uno and live-migrate it
# to due with `vmmigrate --online` (secure mode, over the migration network
# chosen by CIDR) with a progress line; the guest proves its own memory
# intact afterwards and the cluster store names its new node everywhere.
# KEEP=1 leaves it all running.
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
source "$(dirname "$0")/../tests/lib.sh"
VMCTL=$B/vmctl
NET=10.99.2.0/24
cleanup() {
  [ "${KEEP:-0}" = 1 ] && { echo "KEEP=1: testbed, vmmd and guest left running (scripts/testbed down ends them)"; return; }
  local p
  for p in "$TB_STATE"/*/run/*/qemu.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  for n in uno due tre; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Three nodes (network namespaces uno, due, tre), each with sshd and corosync"
tb down >/dev/null 2>&1 || true
tb up 3
tb status

step "2. vmmd on every node: the replicated cluster store on corosync, quorate"
for n in uno due tre; do node_vmmd_start $n; done
node_wait_synced uno due tre
on uno "$B/vmcluster" status

step "3. Guest 106 on uno: 1 GiB RAM, rewriting 256 MiB of it as fast as it can"
on uno "$VMCTL" create 106 --name demo --memory 1024 --kernel "$GUEST_DIR/vmlinux" \
  --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.mode=mem vmtest.mib=256 vmtest.rate=0"
on uno "$VMCTL" start 106
dir=$TB_STATE/uno/run/106
wait_console "$dir" 'VMTEST OK' 2 60
grep -m1 'VMTEST READY' "$dir/console.log"
tail -1 "$dir/console.log"
before=$(last_ok "$dir")

step "4. vmmigrate 106 due --online --migration_network $NET"
on uno "$B/vmmigrate" 106 due --online --migration_network "$NET"

step "5. Guest 106 on due: running, counting on, its memory check passes"
dir=$TB_STATE/due/run/106
on due "$VMCTL" status 106
wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 2 ))" 30
echo "OK counter: $before on uno before the move, $(last_ok "$dir") on due now"
"$VMGUEST" verify --dir "$dir"
echo "the cluster store, as tre sees it:"
on tre "$VMCTL" list
[ -e "$TB_STATE/uno/run/106/qemu.pid" ] && { echo "source QEMU still present"; exit 1; }
echo "source QEMU on uno: gone"
step "Done: guest 106 now runs on due with its memory intact."
