# lib_repl.sh - helpers of the vmrepl scenarios (t_50, t_52, t_53), sourced
# after ../lib.sh with VMID (the guest) and JOB (its replication job) set:
# the commands on a node, the job's state in the store, the guest's own
# progress and checks, and a replica booted to scan itself.
ctl() { on "$1" "$B/vmctl" "${@:2}"; }
repl() { on "$1" "$B/vmrepl" "${@:2}"; }
mig() { on "$1" "$B/vmmigrate" "${@:2}"; }
rundir() { echo "$TB_STATE/$1/run/$2"; }
state() { nst uno get "replication/state/$JOB" 2>/dev/null; }
sfield() { state | grep -oE "\"$1\":(\"[^\"]*\"|[0-9]+)" | cut -d: -f2- | tr -d '"'; }
# wait_gen G: the job's state is ok at generation G (60 s).
wait_gen() {
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(sfield gen)" = "$1" ] && [ "$(sfield state)" = ok ] && return 0
    sleep 0.1
  done
  die "job $JOB not at generation $1: $(state)"
}
# blocks [NODE]: how many blocks the guest has written (its console says).
blocks() { grep -oE 'VMTEST OK .*blocks=[0-9]+' "$(rundir "${1:-uno}" "$VMID")/console.log" | tail -1 | grep -oE '[0-9]+$'; }
intact() {  # intact NODE WHAT: running, counting on, memory and disk verified
  local dir before
  dir=$(rundir "$1" "$VMID")
  ctl "$1" status "$VMID" | grep -qx 'status: running' || die "$2: guest not running on $1"
  before=$(last_ok "$dir")
  wait_console "$dir" 'VMTEST OK' "$(( $(count_lines "$dir/console.log" 'VMTEST OK') + 2 ))" 60
  [ "$(last_ok "$dir")" -gt "$before" ] || die "$2: the guest stopped checking itself"
  "$VMGUEST" verify --dir "$dir" | grep -q 'VMTEST VERIFY OK' || die "$2: verify on $1 failed"
}
# scan_replica FILE NODE: a copy of the replica boots on NODE, and the test
# guest finds every block it wrote whole and self-consistent.
scan_replica() {
  local copy="$RUN/replica-copy.${1##*.}"
  cp --sparse=always "$1" "$copy"
  guest_start "$2" scan "$MEM_512M" "vmtest.mode=diskscan vmtest.disk=/dev/vda" --disk "$copy" >/dev/null
  wait_console "$RUN/scan" 'VMTEST SCAN' 1 90
  grep -q 'VMTEST SCAN OK written=[1-9]' "$RUN/scan/console.log" ||
    die "replica scan: $(grep 'VMTEST SCAN' "$RUN/scan/console.log")"
  "$VMGUEST" stop --dir "$RUN/scan" >/dev/null 2>&1 || true
}
