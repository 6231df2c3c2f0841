#!/usr/bin/env bash
# Crash consistency of the cluster store: three nodes write all the time;
# each round kills -9 one node's vmmd at a random moment (mid-write,
# mid-sync, right after its restart) and restarts it. After every round:
#   - every vmmd opens its store again and syncs;
#   - all three stores are identical (version and checksum);
#   - every write a client saw acknowledged is there, with its value, on
#     every node (an acknowledged write survives any single crash).
# Usage: store_crash.sh BUILD_DIR   (STORE_CRASH_ROUNDS, default 10)
set -uo pipefail
B=$(cd "${1:-build}" && pwd)
export B
source "$(dirname "$0")/../lib.sh"
RUN=${RUN}/store-crash
ROUNDS=${STORE_CRASH_ROUNDS:-10}

writers=()
cleanup() {
  local p
  for p in "${writers[@]}"; do kill "$p" 2>/dev/null; done
  for n in uno due tre; do vmmd_stop $n; done
  tb down >/dev/null 2>&1 || true
}
trap cleanup EXIT
tb down >/dev/null 2>&1 || true
rm -rf "$RUN"; mkdir -p "$RUN"
tb up 3 >/dev/null
for n in uno due tre; do vmmd_start $n; done
wait_synced uno due tre

# writer NODE: puts keys w/NODE/I forever; logs each acknowledged one.
writer() {
  local n=$1 i=0
  while :; do
    i=$((i + 1))
    st "$n" put "w/$n/$i" "v$i" >/dev/null 2>&1 && echo "w/$n/$i v$i" >>"$RUN/acked.$n"
    sleep 0.0$((RANDOM % 5))
  done
}
for n in uno due tre; do writer $n & writers+=($!); done

t0=$(date +%s)
for ((r = 1; r <= ROUNDS; r++)); do
  victim=$(printf 'uno\ndue\ntre\n' | shuf -n1)
  sleep "$((RANDOM % 2)).$((RANDOM % 10))"
  kill -9 "$(cat "$RUN/$victim/vmmd.pid")" 2>/dev/null
  wait "$(cat "$RUN/$victim/vmmd.pid")" 2>/dev/null
  sleep 0.$((RANDOM % 10))
  vmmd_start "$victim"
  # Now and then a second blow right after the restart, mid-sync.
  if ((RANDOM % 3 == 0)); then
    sleep 0.0$((RANDOM % 10))
    kill -9 "$(cat "$RUN/$victim/vmmd.pid")" 2>/dev/null
    wait "$(cat "$RUN/$victim/vmmd.pid")" 2>/dev/null
    vmmd_start "$victim"
  fi
  wait_synced uno due tre
done
for p in "${writers[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
writers=()
wait_synced uno due tre
# The last writes come round; then all stores must be the same.
sums=$(stores_settled)
[ "$(wc -l <<<"$sums")" -eq 1 ] || die "stores differ after $ROUNDS crashes: $sums"
acked=$(cat "$RUN"/acked.* | wc -l)
[ "$acked" -gt 0 ] || die "no write was acknowledged"
cut -d' ' -f1 "$RUN"/acked.* | sort >"$RUN/keys.acked"
for n in uno due tre; do
  st "$n" list w/ | cut -d' ' -f1 | sort >"$RUN/keys.$n" || die "cannot list $n's store"
  lost=$(comm -23 "$RUN/keys.acked" "$RUN/keys.$n" | head -3)
  [ -z "$lost" ] || die "$n lost acknowledged writes: $lost"
  # values: a sample (the identical checksums cover the rest)
  while read -r key val; do
    [ "$(st "$n" get "$key")" = "$val" ] || die "$n: $key is '$(st "$n" get "$key")', acknowledged as '$val'"
  done < <(cat "$RUN"/acked.* | shuf -n 20)
done
note "store: $ROUNDS vmmd kills in $(( $(date +%s) - t0 )) s, $acked acknowledged writes, none lost, stores identical ($sums)"
