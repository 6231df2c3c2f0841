#!/usr/bin/env bash
# vmmigrate on 3 nodes. A busy guest (rewriting RAM and its shared disk) and
# a nearly idle one go round uno -> due -> tre -> uno online, insecure and
# secure, over the migration network picked by CIDR: on every hop the
# guest's own check passes, its counter continues (no reboot), the store
# names the new owner on every node, the old QEMU is gone and no record is
# left. Then offline: a stopped guest on shared storage moves by ownership
# only; one on local storage is copied (checksums equal, source volume
# gone) and boots on the target.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
SHARED=$RUN/shared
NET=10.99.2.0/24

cleanup() {
  local p
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
owner_everywhere() {  # owner_everywhere VMID NODE
  local n
  for n in uno due tre; do
    ctl $n config "$1" | grep -qx "node: $2" || die "guest $1: $n's store says $(ctl $n config "$1" | grep '^node:')"
  done
}
no_record() { nst uno list migrations/ | grep -q . && die "migration record left: $(nst uno list migrations/)"; true; }

# check_hop VMID FROM TO OLD_PID BEFORE: the guest runs on TO and checks itself.
check_hop() {
  local vmid=$1 from=$2 to=$3 old=$4 before=$5 dir after
  dir=$(rundir "$to" "$vmid")
  alive "$old" && die "guest $vmid: old QEMU $old on $from still alive"
  ctl "$to" status "$vmid" | grep -qx 'status: running' || die "guest $vmid not running on $to"
  owner_everywhere "$vmid" "$to"
  wait_console "$dir" 'VMTEST OK' 2 40
  after=$(last_ok "$dir")
  [ "$after" -gt "$before" ] || die "guest $vmid: OK counter did not continue on $to ($before -> $after)"
  grep -q 'VMTEST READY' "$dir/console.log" && die "guest $vmid rebooted on $to"
  "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || die "guest $vmid: verify on $to failed"
  no_record
}

tb down >/dev/null 2>&1 || true
tb up 3
mkdir -p "$RUN" "$SHARED"
for n in uno due tre; do node_vmmd_start $n; done
node_wait_synced uno due tre
nst uno put storage.cfg "$(printf 'dir: shared\n\tpath %s\n\tshared 1\n\tcontent images\n' "$SHARED")" >/dev/null

app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda"
ctl uno create 140 --name busy --memory 512 --disk shared:32M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=256 vmtest.rate=0" >/dev/null
ctl uno create 141 --name idle --memory 512 --disk shared:16M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=mem+disk vmtest.mib=16 vmtest.rate=1" >/dev/null
ctl uno start 140 >/dev/null
ctl uno start 141 >/dev/null
wait_console "$(rundir uno 140)" 'VMTEST OK' 2 60
wait_console "$(rundir uno 141)" 'VMTEST OK' 2 60

# 1. Round trip, both guests, alternating insecure and secure.
hop() {  # hop VMID FROM TO TYPE
  local vmid=$1 from=$2 to=$3 type=$4 old before out=$RUN/mig-$1-$2-$3.out
  old=$(pid_of "$(rundir "$from" "$vmid")")
  before=$(last_ok "$(rundir "$from" "$vmid")")
  mig "$from" "$vmid" "$to" --online --migration_type "$type" --migration_network "$NET" \
    >"$out" 2>"$out.err" || die "vmmigrate $vmid $from->$to ($type): $(tail -3 "$out.err")"
  grep -qE "^migrated guest $vmid to $to in [0-9.]+ s \($type via 10\.99\.2\.[0-9]+\): downtime [0-9]+ ms" "$out" ||
    die "no summary for $vmid $from->$to: $(cat "$out")"
  check_hop "$vmid" "$from" "$to" "$old" "$before"
  note "vmmigrate: $vmid $from -> $to $type: $(grep -oE 'in [0-9.]+ s|downtime [0-9]+ ms|[0-9]+ passes' "$out" | tr '\n' ' ')"
}
hop 140 uno due insecure
hop 141 uno due secure
hop 140 due tre secure
hop 141 due tre insecure
hop 140 tre uno insecure
hop 141 tre uno secure

# Task logs: each migration's lines stay on its source node, ending in its
# outcome (140's newest on due is its hop to tre).
mig due log 140 >"$RUN/task.log" 2>&1 || die "vmmigrate log 140 on due: $(cat "$RUN/task.log")"
[ "$(tail -1 "$RUN/task.log")" = "TASK OK" ] || die "task log of 140 on due: $(tail -3 "$RUN/task.log")"
grep -q 'guest 140 to tre' "$RUN/task.log" || die "task log of 140 on due is not its hop to tre: $(cat "$RUN/task.log")"
mig due log 140 --all | grep -c '^TASK OK$' | grep -qx 1 || die "due kept other migrations of 140: $(mig due log 140 --all)"

# The data went to the migration network: the summary names due's 10.99.2 address.
grep -q "via $(tb addr due migration)" "$RUN/mig-140-uno-due.out" || die "not over due's migration address"

# 2. JSON events for scripts: phases, progress, one done line.
mig uno 141 due --online --migration_network "$NET" --output json >"$RUN/json.out" 2>"$RUN/json.err" ||
  die "json migration: $(cat "$RUN/json.err")"
grep -q '"event":"phase","phase":"transfer"' "$RUN/json.out" || die "no transfer phase event"
grep -q '"event":"phase","phase":"switchover"' "$RUN/json.out" || die "no switchover event"
[ "$(grep -c '"event":"done"' "$RUN/json.out")" = 1 ] || die "not one done event: $(cat "$RUN/json.out")"
owner_everywhere 141 due

# 3. Offline: shared disks move by ownership only; local disks are copied.
ctl due stop 141 >/dev/null
mig due 141 tre >"$RUN/off1.out" 2>&1 || die "offline shared: $(cat "$RUN/off1.out")"
grep -q 'moved guest 141 to tre .*0 disk(s)' "$RUN/off1.out" || die "offline shared summary: $(cat "$RUN/off1.out")"
owner_everywhere 141 tre
ctl uno create 142 --name cold --memory 256 --disk local:96M \
  --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "$app vmtest.mode=disk vmtest.rate=0" >/dev/null
src_vol=$TB_STATE/uno/vmm/images/142/vm-142-disk-0.raw
ctl uno start 142 >/dev/null
wait_console "$(rundir uno 142)" 'VMTEST OK' 1 60   # a full pass written
ctl uno stop 142 >/dev/null
sum=$(sha256sum <"$src_vol")
mig uno 142 due --migration_type insecure --migration_network "$NET" >"$RUN/off2.out" 2>&1 ||
  die "offline local: $(cat "$RUN/off2.out")"
grep -q 'moved guest 142 to due .*1 disk(s)' "$RUN/off2.out" || die "offline local summary: $(cat "$RUN/off2.out")"
dst_vol=$TB_STATE/due/vmm/images/142/vm-142-disk-0.raw
[ "$(sha256sum <"$dst_vol")" = "$sum" ] || die "volume differs after the offline copy"
[ -e "$src_vol" ] && die "source volume $src_vol left behind"
owner_everywhere 142 due
# Secure copy back, then the guest boots from its moved disk.
sum=$(sha256sum <"$dst_vol")
mig due 142 uno --migration_type secure >"$RUN/off3.out" 2>&1 || die "offline secure: $(cat "$RUN/off3.out")"
[ "$(sha256sum <"$src_vol")" = "$sum" ] || die "volume differs after the secure copy"
[ -e "$dst_vol" ] && die "volume left on due"
ctl uno start 142 >/dev/null
wait_console "$(rundir uno 142)" 'VMTEST OK' 1 60
ctl uno stop 142 >/dev/null
no_record
note "vmmigrate: offline shared and local (insecure, secure) ok"
