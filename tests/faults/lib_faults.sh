# lib_faults.sh - the faults both matrices inject (run.sh: migration,
# repl.sh: replication) and what heals them; sourced after ../lib.sh.
#
# fault_inject FAULT SRC DST: one of the faults below, now. What heals it
# later (a daemon restarted as systemd would, a link back up) runs in the
# background; its pids go to FAULT_PIDS. A fault that could not be put in
# place says why in FAULT_FAILED (the cell then fails: a fault that never
# happened proves nothing). Returns 1 for a fault it does not know (the
# matrix's own: a worker, a QEMU, a full disk).
#   ssh            every SSH session into DST (sshd's children) killed -9
#   src-vmmd, dst-vmmd         vmmd killed -9, restarted 2 s later
#   src-corosync, dst-corosync corosync killed -9, restarted 5 s later
#   link           DST's migration link down for 20 s
#   flaky          DST's migration link, both ways, shaped to 40 Mbit/s with a
#                  16 KiB queue for 15 s: tail drops (loss) and queueing delay
#                  (this machine's kernel has no sch_netem; tbf it has)
#   quorum         corosync killed -9 on every node but SRC, restarted 6 s later
fault_inject() {
  local f=$1 src=$2 dst=$3 p
  case $f in
  ssh) pkill -9 -P "$(cut -d' ' -f1 "$TB_STATE/$dst/pid.sshd")" ;;
  src-vmmd|dst-vmmd)
    [ "$f" = src-vmmd ] && p=$src || p=$dst
    kill -9 "$(cat "$TB_STATE/$p/vmm/vmmd.pid")"
    wait "$(cat "$TB_STATE/$p/vmm/vmmd.pid")" 2>/dev/null  # ours: no "Killed" line
    ( sleep 2; node_vmmd_start "$p" ) & FAULT_PIDS+=($!) ;;
  src-corosync|dst-corosync)
    [ "$f" = src-corosync ] && p=$src || p=$dst
    tb corosync-stop --kill "$p" >/dev/null
    ( sleep 5; tb corosync-start "$p" >/dev/null ) & FAULT_PIDS+=($!) ;;
  link) ip -n vmm-sw link set "$dst-m" down
    ( sleep 20; ip -n vmm-sw link set "$dst-m" up ) & FAULT_PIDS+=($!) ;;
  flaky)
    tc -n vmm-sw qdisc add dev "$dst-m" root tbf rate 40mbit burst 16kb limit 16kb &&
      tc -n "$dst" qdisc add dev migr0 root tbf rate 40mbit burst 16kb limit 16kb ||
      FAULT_FAILED="tc could not shape $dst's link"
    ( sleep 15; tc -n vmm-sw qdisc del dev "$dst-m" root; tc -n "$dst" qdisc del dev migr0 root ) 2>/dev/null &
    FAULT_PIDS+=($!) ;;
  quorum) for p in uno due tre; do
      [ "$p" = "$src" ] || tb corosync-stop --kill "$p" >/dev/null
    done
    ( sleep 6; for p in uno due tre; do [ "$p" = "$src" ] || tb corosync-start "$p" >/dev/null; done ) &
    FAULT_PIDS+=($!) ;;
  *) return 1 ;;
  esac
}

# fault_heal: links up and clean, corosync and vmmd running on every node,
# the stores synced and quorate.
fault_heal() {
  local n
  for n in uno due tre; do
    ip -n vmm-sw link set "$n-m" up 2>/dev/null || true
    tc -n "$n" qdisc del dev migr0 root 2>/dev/null || true
    tc -n vmm-sw qdisc del dev "$n-m" root 2>/dev/null || true
    tb corosync-start "$n" >/dev/null 2>&1 || true   # refused if it runs
    alive "$(cat "$TB_STATE/$n/vmm/vmmd.pid" 2>/dev/null)" || node_vmmd_start "$n"
  done
  tb wait --timeout 30 >/dev/null 2>&1 || true
  node_wait_synced uno due tre
}

# in_ns NODE CMD...: CMD in the mount namespace of NODE's sshd, where the
# agents (sshd's children) live: `ip netns exec` gives each process
# started through it a mount namespace of its own, and a mount in ours
# would not reach an agent.
in_ns() { nsenter -t "$(cut -d' ' -f1 "$TB_STATE/$1/pid.sshd")" -m "${@:2}"; }

# fault_full_mount NODE DIR MB: DIR on NODE becomes an ext4 of MB MiB (in
# sshd's mount namespace), holding what DIR held (tmpfs would not do: QEMU
# opens volumes with O_DIRECT). FULL_NODE/FULL_DIR say where; FULL_IMG is
# the image.
fault_full_mount() {
  local n=$1 d=$2 mb=$3 t
  FULL_IMG=$RUN/full.img
  mkdir -p "$d"
  truncate -s "${mb}M" "$FULL_IMG"
  mkfs.ext4 -q -F "$FULL_IMG"
  t=$(mktemp -d "$RUN/full.XXXX")
  mount -o loop "$FULL_IMG" "$t"
  cp -a --sparse=always "$d/." "$t/"
  umount "$t"; rmdir "$t"
  in_ns "$n" mount -o loop "$FULL_IMG" "$d"
  FULL_NODE=$n FULL_DIR=$d
}
# fault_full_fill KEEP_KB: the full disk keeps only KEEP_KB free.
fault_full_fill() {
  local free
  free=$(in_ns "$FULL_NODE" df -k --output=avail "$FULL_DIR" | tail -1)
  ((free > $1)) && in_ns "$FULL_NODE" fallocate -l "$(( (free - $1) * 1024 ))" "$FULL_DIR/filler"
  return 0
}
# fault_full_umount: the full disk goes (what it hid is back).
fault_full_umount() {
  [ -n "${FULL_NODE:-}" ] || return 0
  in_ns "$FULL_NODE" umount "$FULL_DIR" 2>/dev/null || true   # a subshell's may have
  rm -f "$FULL_IMG"
  FULL_NODE= FULL_DIR=
}

# fault_cleanup: what a matrix leaves at its exit: no full disk, links up
# and unshaped, no guest, no vmmd, no testbed.
fault_cleanup() {
  local p n
  fault_full_umount
  for n in uno due tre; do
    ip -n vmm-sw link set "$n-m" up 2>/dev/null || true
    tc -n "$n" qdisc del dev migr0 root 2>/dev/null || true
    tc -n vmm-sw qdisc del dev "$n-m" root 2>/dev/null || true
  done
  for p in "$TB_STATE"/*/run/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due tre; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
}

# fault_cluster_up: a fresh 3-node testbed with vmmd synced everywhere,
# and an empty RUN (RUN/cells for the cells' outputs).
fault_cluster_up() {
  local n
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
  tb up 3 >/dev/null
  mkdir -p "$RUN/cells"
  for n in uno due tre; do node_vmmd_start $n; done
  node_wait_synced uno due tre
}

# fault_matrix NAME SET ONLY SKIP HEADER: runs `cell MODE FAULT PHASE` for
# each cell of the set (quick: $QUICK; full: $MODES_FULL x $FAULT_PHASES
# but those matching the regex SKIP) that matches the regex ONLY; the
# table (HEADER, then a line per cell from `cell`) goes to $TABLE and
# $RESULTS. Fails if a cell did.
fault_matrix() {
  local name=$1 set=$2 only=$3 skip=$4 cells=() m fp f ph phs c fails=0 ncells=0
  if [ "$set" = quick ]; then
    cells=($QUICK)
  else
    for m in $MODES_FULL; do
      for fp in $FAULT_PHASES; do
        f=${fp%%:*}
        [[ $m/$f =~ $skip ]] && continue
        IFS=, read -ra phs <<<"${fp#*:}"
        for ph in "${phs[@]}"; do cells+=("$m/$f/$ph"); done
      done
    done
  fi
  echo "$5" | tee "$TABLE"
  for c in "${cells[@]}"; do
    [[ $c =~ $only ]] || continue
    IFS=/ read -r m f ph <<<"$c"
    ncells=$((ncells + 1))
    cell "$m" "$f" "$ph" || fails=$((fails + 1))
  done
  echo "$name: $ncells cells, $fails failed"
  cp "$TABLE" "$RESULTS" 2>/dev/null || true
  [ $fails -eq 0 ]
}
