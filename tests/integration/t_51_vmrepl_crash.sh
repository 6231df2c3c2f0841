#!/usr/bin/env bash
# Replication crash consistency: 20 times, a sync of guest 185 (uno -> due)
# is killed -9 at a random moment of its length, the sender (the vmrepl worker on uno) or
# the receiver (the vmrepl agent on due) in turn. The guest is paused for
# each sync, so the new point in time is known exactly: after each kill the
# replica, once recovered, must be byte for byte the previous point in time
# or the new one - never a mix - and its generation must say which. Then a
# sync runs to completion and the replica equals the source.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMCTL=$B/vmctl
VMREPL=$B/vmrepl
ROUNDS=${REPL_CRASH_ROUNDS:-20}

cleanup() {
  local p
  for p in "$TB_STATE"/*/run/*/qemu.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for n in uno due; do node_vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT

ctl() { on "$1" "$VMCTL" "${@:2}"; }
repl() { on "$1" "$VMREPL" "${@:2}"; }
DIR=$TB_STATE/uno/run/185
SRC=$TB_STATE/uno/vmm/images/185/vm-185-disk-0.raw
REP=$TB_STATE/due/vmm/images/185/vm-185-disk-0.raw
gen() { on due "$VMREPL" _replica "$REP" | grep -oE 'gen=[0-9]+' | cut -d= -f2; }

tb down >/dev/null 2>&1 || true
tb up 2
mkdir -p "$RUN"
for n in uno due; do node_vmmd_start $n; done
node_wait_synced uno due
ctl uno create 185 --name crash --memory 256 --disk local:128M --kernel "$GUEST_DIR/vmlinux" \
  --initrd "$GUEST_DIR/initramfs.cpio.gz" \
  --append "console=ttyS0 quiet panic=-1 $GUEST_APPEND_EXTRA vmtest.disk=/dev/vda vmtest.mode=disk vmtest.rate=8" >/dev/null
ctl uno start 185 >/dev/null
wait_console "$DIR" 'VMTEST OK' 2 60
repl uno create 185-0 due --schedule yearly --rate 20 >/dev/null   # 20 MB/s: kills land mid-stream
repl uno run --id 185-0 >/dev/null || die "first sync failed"

# The kills land anywhere in a run, up to its end: its length, measured
# once undisturbed (the handshake alone is ~0.4 s, the data ~0.2 s).
sleep 0.5
"$VMGUEST" qmp --dir "$DIR" stop >/dev/null
t0=$(date +%s%3N)
repl uno run --id 185-0 >/dev/null || die "the timing run failed"
RUN_MS=$(( $(date +%s%3N) - t0 ))
"$VMGUEST" qmp --dir "$DIR" cont >/dev/null

kills_old=0 kills_new=0
for ((r = 1; r <= ROUNDS; r++)); do
  sleep 0.5                     # the guest writes a little more
  "$VMGUEST" qmp --dir "$DIR" stop >/dev/null
  g0=$(gen); old=$(sha256sum <"$REP"); new=$(sha256sum <"$SRC")
  [ -n "${REPL_CRASH_DEBUG:-}" ] && cp --sparse=always "$REP" "$RUN/old.raw"
  [ "$old" != "$new" ] || die "round $r: nothing changed since the last sync"
  : >"$RUN/run.err"
  on_exec uno "$VMREPL" run --id 185-0 >/dev/null 2>"$RUN/run.err" &
  wpid=$!
  ms=$(( 50 + RANDOM % (RUN_MS + 100) ))
  sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
  if ((r % 2)); then
    victim=$wpid; who=sender
  else
    victim=$(grep -oE 'target agent pid [0-9]+' "$RUN/run.err" | grep -oE '[0-9]+$' || true)
    who=receiver
    [ -n "$victim" ] || { victim=$wpid; who=sender; }
  fi
  kill -9 "$victim" 2>/dev/null || true
  wait "$wpid" 2>/dev/null || true
  # The receiver outlives a killed sender until it notices; let it end
  # (a replica is the agent's while it runs).
  agent=$(grep -oE 'target agent pid [0-9]+' "$RUN/run.err" | grep -oE '[0-9]+$' || true)
  for ((i = 0; i < 100; i++)); do alive "$agent" || break; sleep 0.1; done
  alive "$agent" && die "round $r: the agent $agent did not end after the sender died"
  g1=$(gen); now=$(sha256sum <"$REP")
  if [ "$now" = "$old" ]; then
    [ "$g1" = "$g0" ] || die "round $r ($who killed): old data under generation $g1 (was $g0)"
    kills_old=$((kills_old + 1))
  elif [ "$now" = "$new" ]; then
    [ "$g1" = $((g0 + 1)) ] || die "round $r ($who killed): new data under generation $g1 (was $g0)"
    kills_new=$((kills_new + 1))
  else
    if [ -n "${REPL_CRASH_DEBUG:-}" ]; then
      cat "$RUN/run.err" >&2
      echo "differing bytes vs old: $(cmp -l "$RUN/old.raw" "$REP" | wc -l), vs source: $(cmp -l "$SRC" "$REP" | wc -l)" >&2
      cmp -l "$SRC" "$REP" | head -3 >&2
      ls -la "$(dirname "$REP")" >&2
      tail -30 "$TB_STATE/due/vmm/repl/agent.log" >&2
    fi
    die "round $r ($who killed): the replica is neither the old nor the new point in time (gen $g0 -> $g1)"
  fi
  "$VMGUEST" qmp --dir "$DIR" cont >/dev/null
done
note "$ROUNDS kills within a run of $RUN_MS ms: replica old $kills_old times, new $kills_new times, never a mix"

# The next run succeeds, and the replica is the source again.
"$VMGUEST" qmp --dir "$DIR" stop >/dev/null
repl uno run --id 185-0 >/dev/null 2>"$RUN/final.err" || die "the run after the kills failed: $(tail -3 "$RUN/final.err")"
[ "$(sha256sum <"$SRC")" = "$(sha256sum <"$REP")" ] || die "replica differs from the source after the final run"
"$VMGUEST" qmp --dir "$DIR" cont >/dev/null
wait_console "$DIR" 'VMTEST OK' "$(( $(count_lines "$DIR/console.log" 'VMTEST OK') + 2 ))" 30
"$VMGUEST" verify --dir "$DIR" | grep -q 'VMTEST VERIFY OK' || die "the guest's own check failed"
