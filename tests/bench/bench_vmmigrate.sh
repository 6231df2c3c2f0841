#!/usr/bin/env bash
# vmmigrate against raw QEMU on the 2-node testbed (uno <-> due over the
# migration network), each figure beside a baseline measured in this run:
#  - idle 1 GiB and 4 GiB guests: raw QEMU at its defaults and tuned by
#    hand (bandwidth unlimited) vs vmmigrate insecure and secure;
#  - a busy guest rewriting 256 MiB as fast as it can (sparse pages, as the
#    test guest's default, and incompressible pages): raw QEMU's defaults
#    do not converge, vmmigrate's must;
#  - the transports alone: one TCP stream, libssh2 sessions (our secure
#    path), OpenSSH.
# Each vmmigrate sample is a whole `vmmigrate VMID TARGET --online`
# command (checks, SSH, target start, migration, switchover); "migration"
# is QEMU's own part, comparable to the raw figures.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/lib_bench.sh"
RUN=/run/vmm-bench-mig
RUNS=${RUNS:-3}
VMCTL=$B/vmctl
VMMIGRATE=$B/vmmigrate
NET=10.99.2.0/24
MEM_4G=4194296K
SINKS=()
cleanup() {
  local p
  for p in "${SINKS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "$TB_STATE"/*/run/*/qemu.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  for n in uno due; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT
tb down >/dev/null 2>&1 || true
tb up 2 >/dev/null
mkdir -p "$RUN"
for n in uno due; do node_vmmd_start $n; done
node_wait_synced uno due
APP="console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA"

owner() { on uno "$VMCTL" config "$1" | sed -n 's/^node: //p'; }

# vmm_case VMID MIB APPEND RUNS ARGS...: a vmctl guest ping-pongs with
# vmmigrate; prints "wall migration downtime sent passes" per run.
vmm_case() {
  local vmid=$1 mib=$2 app=$3 runs=$4; shift 4
  local i src dst out
  on uno "$VMCTL" create "$vmid" --memory "$mib" --kernel "$GUEST_DIR/vmlinux" \
    --initrd "$GUEST_DIR/initramfs.cpio.gz" --append "$APP $app" >/dev/null 2>>"$RUN/bench.log"
  on uno "$VMCTL" start "$vmid" >/dev/null 2>>"$RUN/bench.log"
  wait_console "$TB_STATE/uno/run/$vmid" 'VMTEST OK' 2 90
  for ((i = 1; i <= runs; i++)); do
    src=$(owner "$vmid"); dst=$([ "$src" = uno ] && echo due || echo uno)
    out=$(on "$src" "$VMMIGRATE" "$vmid" "$dst" --online --migration_network "$NET" --output json \
          --timeout 120 "$@" 2>>"$RUN/bench.log" | tail -1)
    grep -q '"event":"done"' <<<"$out" || die "vmmigrate $vmid $src->$dst $*: $out"
    echo "$(field "$out" total_ms) $(field "$out" migration_ms) $(field "$out" downtime_ms)" \
         "$(field "$out" transferred) $(field "$out" passes)"
    wait_console "$TB_STATE/$dst/run/$vmid" 'VMTEST OK' 1 30
  done
  src=$(owner "$vmid")
  "$VMGUEST" verify --dir "$TB_STATE/$src/run/$vmid" >/dev/null ||
    die "guest $vmid: memory check failed after the runs"
  on "$src" "$VMCTL" stop "$vmid" >/dev/null 2>&1
  on "$src" "$VMCTL" destroy "$vmid" >/dev/null 2>&1
}

declare -A WALL MIG DOWN SENT PASSES
# measure_raw KEY NAME MEM APPEND RUNS TIMEOUT ARGS...
measure_raw() {
  local key=$1 rows; shift
  rows=$(raw_case "$@")
  if grep -q timeout <<<"$rows"; then MIG[$key]=timeout; else MIG[$key]=$(col "$rows" 1); fi
  WALL[$key]=-; DOWN[$key]=$(col "$rows" 2); PASSES[$key]=$(col "$rows" 4); SENT[$key]=-
}
# measure_vmm KEY VMID MIB APPEND RUNS ARGS...
measure_vmm() {
  local key=$1 rows; shift
  rows=$(vmm_case "$@")
  WALL[$key]=$(col "$rows" 1); MIG[$key]=$(col "$rows" 2); DOWN[$key]=$(col "$rows" 3)
  SENT[$key]=$(col "$rows" 4); PASSES[$key]=$(col "$rows" 5)
}

IDLE="vmtest.mode=idle"
BUSY="vmtest.mode=mem vmtest.mib=256 vmtest.rate=0"
FULL="$BUSY vmtest.fill=full"
echo "bench: vmmigrate vs raw QEMU, TCG guests, $RUNS runs each (median)"
measure_raw idle1_default idle1d "$MEM_1G" "$IDLE" "$RUNS" 120 --max-bandwidth 128M
measure_raw idle1_raw idle1r "$MEM_1G" "$IDLE" "$RUNS" 120 --max-bandwidth unlimited
measure_vmm idle1_ins 901 1024 "$IDLE" "$RUNS" --migration_type insecure
measure_vmm idle1_sec 902 1024 "$IDLE" "$RUNS" --migration_type secure
measure_raw idle4_raw idle4r "$MEM_4G" "$IDLE" "$RUNS" 120 --max-bandwidth unlimited
measure_vmm idle4_ins 903 4096 "$IDLE" "$RUNS" --migration_type insecure
measure_vmm idle4_sec 904 4096 "$IDLE" "$RUNS" --migration_type secure
measure_raw busy_default busyd "$MEM_1G" "$BUSY" 1 30 --max-bandwidth 128M
measure_raw busy_raw busyr "$MEM_1G" "$BUSY" "$RUNS" 120 --max-bandwidth unlimited
measure_vmm busy_ins 905 1024 "$BUSY" "$RUNS" --migration_type insecure
measure_vmm busy_sec 906 1024 "$BUSY" "$RUNS" --migration_type secure
measure_raw full_raw fullr "$MEM_1G" "$FULL" "$RUNS" 120 --max-bandwidth unlimited
measure_vmm full_ins 907 1024 "$FULL" "$RUNS" --migration_type insecure
measure_vmm full_sec 908 1024 "$FULL" "$RUNS" --migration_type secure

gb() { [[ $1 =~ ^[0-9]+$ ]] && awk -v b="$1" 'BEGIN { printf "%.2f", b / 1e9 }' || echo -; }
printf '\n%-44s %9s %9s %9s %8s %6s  %s\n' case wall_ms mig_ms down_ms sent_GB passes "vs baseline"
row() {
  printf '%-44s %9s %9s %9s %8s %6s  %s\n' "$1" "${WALL[$2]}" "${MIG[$2]}" "${DOWN[$2]}" \
    "$(gb "${SENT[$2]}")" "${PASSES[$2]}" "$3"
}
vs() { echo "migration $(ratio "${MIG[$2]}" "${MIG[$1]}") of $1"; }
row "idle 1G raw QEMU, default 128 MiB/s" idle1_default "-"
row "idle 1G raw QEMU, tuned (unlimited)" idle1_raw "baseline"
row "idle 1G vmmigrate insecure" idle1_ins "$(vs idle1_raw idle1_ins)"
row "idle 1G vmmigrate secure" idle1_sec "$(vs idle1_raw idle1_sec)"
row "idle 4G raw QEMU, tuned (unlimited)" idle4_raw "baseline"
row "idle 4G vmmigrate insecure" idle4_ins "$(vs idle4_raw idle4_ins)"
row "idle 4G vmmigrate secure" idle4_sec "$(vs idle4_raw idle4_sec)"
row "busy 256M raw QEMU, defaults" busy_default "$([ "${MIG[busy_default]}" = timeout ] && echo 'did not converge in 30 s' || echo -)"
row "busy 256M raw QEMU, tuned (unlimited)" busy_raw "baseline"
row "busy 256M vmmigrate insecure" busy_ins "$(vs busy_raw busy_ins)"
row "busy 256M vmmigrate secure" busy_sec "$(vs busy_raw busy_sec)"
row "busy 256M incompressible raw QEMU, tuned" full_raw "baseline"
row "busy 256M incompressible vmmigrate insecure" full_ins "$(vs full_raw full_ins)"
row "busy 256M incompressible vmmigrate secure" full_sec "$(vs full_raw full_sec)"
rate() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f", b / t / 1000 }' || echo -; }
for c in busy full; do
  ri=$(rate "${SENT[${c}_ins]}" "${MIG[${c}_ins]}"); rs=$(rate "${SENT[${c}_sec]}" "${MIG[${c}_sec]}")
  echo "RAM throughput ($c): insecure $ri MB/s, secure $rs MB/s: secure $(ratio "$rs" "$ri") of insecure;" \
       "time secure $(ratio "${MIG[${c}_ins]}" "${MIG[${c}_sec]}") of insecure's speed"
done

# The transports alone, 1 GiB each (2 GiB for TCP), no guest running.
ip netns exec due "$B/tp_bench" sink "$(tb addr due migration)" 5001 & SINKS+=($!)
ip netns exec due "$B/tp_bench" sink 127.0.0.1 5002 & SINKS+=($!)
sleep 0.3
tput() { grep -oE 'mb_per_s=[0-9]+' <<<"$1" | cut -d= -f2; }
HK=$TB_STATE/due/ssh_host_ed25519_key.pub KEY=$TB_STATE/ssh/id_ed25519
tcp1=$(tput "$(ip netns exec uno "$B/tp_bench" tcp "$(tb addr due migration)" 5001 2048 1)")
ssh1=$(tput "$(ip netns exec uno "$B/tp_bench" ssh "$(tb addr due migration)" "$HK" "$KEY" 5002 1024 1)")
ssh2=$(tput "$(ip netns exec uno "$B/tp_bench" ssh "$(tb addr due migration)" "$HK" "$KEY" 5002 1024 2)")
t0=$(date +%s%N)
ip netns exec uno sh -c "head -c 1073741824 /dev/zero | ssh -F $TB_STATE/ssh/config -c aes128-gcm@openssh.com $(tb addr due migration) 'cat >/dev/null'"
ossh=$(awk -v ns=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.0f", 1073741824 / (ns / 1e9) / 1e6 }')
printf '\n%-44s %10s  %s\n' transport MB/s "vs one TCP stream"
printf '%-44s %10s  %s\n' "TCP, one stream" "$tcp1" baseline
printf '%-44s %10s  %s\n' "libssh2 aes128-ctr, 1 session" "$ssh1" "$(ratio "$ssh1" "$tcp1")"
printf '%-44s %10s  %s\n' "libssh2 aes128-ctr, 2 sessions" "$ssh2" "$(ratio "$ssh2" "$tcp1")"
printf '%-44s %10s  %s\n' "OpenSSH aes128-gcm, 1 session" "$ossh" "$(ratio "$ossh" "$tcp1")"
