#!/usr/bin/env bash
# vmmigrate drain / undrain on 3 nodes. Four guests on uno (two busy, one
# with a shared disk) are drained with 2 workers: all end on due and tre,
# two each, balanced by memory, every guest's own check passing; uno is
# in maintenance: a guest start or a migration to it is refused. undrain
# --return, run from another node, brings them back. A guest too big for
# any other node is named and the drain changes nothing, unless
# --force-leave moves the others. A drain killed -9 midway, rerun,
# finishes: no guest lost or running twice.
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
owner() { ctl uno config "$1" | sed -n 's/^node: //p'; }
GUESTS="140 141 142 143"

# where_ok VMID: runs on exactly its owner node, checking itself.
where_ok() {
  local vmid=$1 n own count=0 dir
  own=$(owner "$vmid")
  for n in uno due tre; do
    if [ -f "$(rundir $n "$vmid")/qemu.pid" ] && alive "$(pid_of "$(rundir $n "$vmid")")"; then
      count=$((count + 1))
      [ "$n" = "$own" ] || die "guest $vmid runs on $n, the store says $own"
    fi
  done
  [ "$count" = 1 ] || die "guest $vmid runs on $count nodes"
  dir=$(rundir "$own" "$vmid")
  wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 1 ))" 40
  "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || die "guest $vmid: verify on $own failed"
}
maint() { nst uno get "nodes/$1" | grep -q '"maintenance":true'; }

tb down >/dev/null 2>&1 || true
tb up 3
mkdir -p "$RUN" "$SHARED"
for n in uno due tre; do node_vmmd_start $n; done
node_wait_synced uno due tre
nst uno put storage.cfg "$(printf 'dir: shared\n\tpath %s\n\tshared 1\n\tcontent images\n' "$SHARED")" >/dev/null
app="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA"
mk() {  # mk VMID MiB APPEND [disk]
  ctl uno create "$1" --memory "$2" --kernel "$GUEST_DIR/vmlinux" --initrd "$GUEST_DIR/initramfs.cpio.gz" \
    --append "$app $3" ${4:+--disk "$4"} >/dev/null
  ctl uno start "$1" >/dev/null
}
mk 140 1024 "vmtest.mode=mem vmtest.mib=128 vmtest.rate=0"
mk 141 512 "vmtest.mode=mem vmtest.mib=64 vmtest.rate=0"
mk 142 512 "vmtest.mode=mem+disk vmtest.mib=16 vmtest.rate=1 vmtest.disk=/dev/vda" shared:16M
mk 143 256 "vmtest.mode=idle"
for v in $GUESTS; do wait_console "$(rundir uno $v)" 'VMTEST OK' 2 90; done

# 1. Drain with 2 workers.
mig uno drain uno --max-workers 2 --migration_network "$NET" >"$RUN/drain.out" 2>&1 ||
  die "drain: $(tail -5 "$RUN/drain.out")"
grep -q 'drain uno: 4 guest(s) moved, 0 failed, 0 left' "$RUN/drain.out" || die "drain summary: $(tail -3 "$RUN/drain.out")"
for v in $GUESTS; do where_ok $v; done
for v in $GUESTS; do [ "$(owner $v)" != uno ] || die "guest $v still on uno"; done
n_due=$(for v in $GUESTS; do owner $v; done | grep -c due || true)
[ "$n_due" = 2 ] || die "not balanced: $n_due of 4 on due ($(for v in $GUESTS; do echo -n "$v:$(owner $v) "; done))"
[ "$(owner 140)" != "$(owner 141)" ] && [ "$(owner 140)" != "$(owner 142)" ] ||
  die "the 1 GiB guest shares its node with a 512 MiB one: not balanced by memory"
maint uno || die "uno is not in maintenance"
note "drain: $(for v in $GUESTS; do echo -n "$v->$(owner $v) "; done)"

# 2. Nothing lands on uno now.
ctl uno create 149 --memory 128 --kernel "$GUEST_DIR/vmlinux" >/dev/null
ctl uno start 149 >/dev/null 2>"$RUN/err" && die "a guest started on uno in maintenance"
grep -q "node uno is in maintenance" "$RUN/err" || die "start refusal: $(cat "$RUN/err")"
ctl uno destroy 149 >/dev/null
o=$(owner 143)
mig "$o" 143 uno --online --migration_network "$NET" >/dev/null 2>"$RUN/err" && die "migrated to uno in maintenance"
grep -q "target node 'uno' is in maintenance" "$RUN/err" || die "migration refusal: $(cat "$RUN/err")"

# 3. undrain --return, from due: workers run on due and tre.
mig due undrain uno --return --max-workers 2 >"$RUN/undrain.out" 2>&1 || die "undrain: $(tail -5 "$RUN/undrain.out")"
grep -q 'undrain uno: 4 guest(s) back, 0 failed' "$RUN/undrain.out" || die "undrain summary: $(tail -3 "$RUN/undrain.out")"
maint uno && die "uno still in maintenance"
for v in $GUESTS; do [ "$(owner $v)" = uno ] || die "guest $v not back on uno"; where_ok $v; done
nst uno get drain/uno >/dev/null 2>&1 && die "the drain record is left"

# 4. A guest too big for any other node: named, nothing changes; then
# --force-leave moves the others.
mk 150 23000 "vmtest.mode=idle"
rc=0; mig uno drain uno --migration_network "$NET" >"$RUN/big.out" 2>"$RUN/big.err" || rc=$?
[ "$rc" = 1 ] || die "drain with a too big guest: rc $rc"
grep -q '150 .* stays: no node has the memory' "$RUN/big.out" || die "the big guest is not named: $(cat "$RUN/big.out")"
grep -q '1 guest(s) cannot leave uno' "$RUN/big.err" || die "refusal: $(cat "$RUN/big.err")"
maint uno && die "a refused drain set the maintenance flag"
for v in $GUESTS; do [ "$(owner $v)" = uno ] || die "a refused drain moved guest $v"; done
mig uno drain uno --force-leave --max-workers 4 --migration_network "$NET" >"$RUN/force.out" 2>&1 ||
  die "drain --force-leave: $(tail -5 "$RUN/force.out")"
grep -q 'drain uno: 4 guest(s) moved, 0 failed, 1 left' "$RUN/force.out" || die "force summary: $(tail -3 "$RUN/force.out")"
[ "$(owner 150)" = uno ] || die "the big guest moved"
ctl uno stop 150 >/dev/null; ctl uno destroy 150 >/dev/null
mig uno undrain uno --return >"$RUN/undrain2.out" 2>&1 || die "undrain 2: $(tail -3 "$RUN/undrain2.out")"
for v in $GUESTS; do [ "$(owner $v)" = uno ] || die "guest $v not back after undrain 2"; done

# 5. The drain killed -9 midway, then rerun: it waits for the migration in
# flight and finishes the rest; every guest once, intact.
on_exec uno "$VMMIGRATE" drain uno --max-workers 1 --migration_network "$NET" --bwlimit 65536 \
  --output json >"$RUN/killed.json" 2>&1 &
dpid=$!
for ((i = 0; i < 300; i++)); do grep -q '"event":"guest"' "$RUN/killed.json" && break; sleep 0.1; done
sleep 1
kill -9 "$dpid"; wait "$dpid" 2>/dev/null || true
mig uno drain uno --max-workers 2 --migration_network "$NET" >"$RUN/rerun.out" 2>&1 ||
  die "rerun: $(tail -5 "$RUN/rerun.out")"
grep -q 'drain uno: .* 0 failed, 0 left' "$RUN/rerun.out" || die "rerun summary: $(tail -3 "$RUN/rerun.out")"
for v in $GUESTS; do [ "$(owner $v)" != uno ] || die "guest $v still on uno after the rerun"; where_ok $v; done
nst uno list migrations/ | grep -q . && die "migration records left: $(nst uno list migrations/)"
note "drain killed and rerun: $(for v in $GUESTS; do echo -n "$v->$(owner $v) "; done)"
