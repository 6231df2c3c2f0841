#!/usr/bin/env bash
# Replicated config store on the 3-node testbed, each figure beside a
# baseline from the same run:
#  - write latency (p50/p99) and writes/s through corosync vs a standalone
#    vmmd (the same SQLite writes without replication);
#  - writes/s with all three nodes writing at once;
#  - loading a store of 10,000 guest configs vs the sqlite3 CLI reading it;
#  - a rejoining node catching up with 10,000 changes vs copying the db file.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
RUN=/run/vmm-bench-store
SB=$B/store_bench
trap 'tb down >/dev/null 2>&1 || true; [ -n "${SP:-}" ] && kill "$SP" 2>/dev/null; rm -rf "$RUN"' EXIT
tb down >/dev/null 2>&1 || true
mkdir -p "$RUN/solo"
N=${STORE_N:-2000}

kv() { grep -oE "$2=[0-9.]+" <<<"$1" | cut -d= -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

# Baseline: standalone vmmd (no replication), same client, same writes.
"$VMMD" run --standalone --node solo --data-dir "$RUN/solo/data" --socket "$RUN/solo/vmmd.sock" 2>/dev/null &
SP=$!
sleep 0.3
solo=$("$SB" write "$RUN/solo/vmmd.sock" "$N" bench)
kill "$SP"; wait "$SP" 2>/dev/null || true; SP=

tb up 3 >/dev/null
for n in uno due tre; do vmmd_start $n; done
wait_synced uno due tre
one=$("$SB" write "$RUN/uno/vmmd.sock" "$N" bench)
pids=()
for n in uno due tre; do "$SB" write "$RUN/$n/vmmd.sock" "$N" "par/$n" >"$RUN/$n.par" & pids+=($!); done
wait "${pids[@]}"
par_rate=$(cat "$RUN"/*.par | awk -F'writes_per_s=' '{s += $2} END {printf "%.0f", s}')

# 10,000 guest configs: fill, then time loading the store and the CLI baseline.
"$SB" fill "$RUN/uno/vmmd.sock" 10000 guests >/dev/null
load=$("$SB" load "$RUN/due/data/config.db")
t0=$(date +%s%N); sqlite3 "$RUN/due/data/config.db" 'SELECT * FROM entries' >/dev/null
sqlite_ms=$(awk -v d=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", d / 1e6 }')

# Catch-up: tre goes away, 10,000 changes happen, tre comes back.
tb corosync-stop --kill tre >/dev/null
vmmd_stop tre
sleep 4.5
"$SB" fill "$RUN/uno/vmmd.sock" 10000 guests >/dev/null
t0=$(date +%s%N)
tb corosync-start tre >/dev/null
vmmd_start tre
want=$(st_field uno checksum)
for ((i = 0; i < 600; i++)); do
  [ "$(st_field tre checksum 2>/dev/null)" = "$want" ] && [ "$(st_field tre state 2>/dev/null)" = synced ] && break
  sleep 0.05
done
catch_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $i -lt 600 ] || die "tre did not catch up"
t0=$(date +%s%N); cp "$RUN/uno/data/config.db" "$RUN/copy.db"; sync "$RUN/copy.db"
cp_ms=$(awk -v d=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.1f", d / 1e6 }')

echo "bench: replicated store, 3 nodes, $N sequential writes of 64 B (vs standalone vmmd)"
printf '%-44s %12s %12s %s\n' case p50_us p99_us "writes/s (ratio to baseline)"
printf '%-44s %12s %12s %s\n' "standalone vmmd (baseline)" "$(kv "$solo" p50_us)" "$(kv "$solo" p99_us)" "$(kv "$solo" writes_per_s)"
printf '%-44s %12s %12s %s\n' "3 nodes, one writer" "$(kv "$one" p50_us)" "$(kv "$one" p99_us)" "$(kv "$one" writes_per_s) ($(ratio "$(kv "$one" writes_per_s)" "$(kv "$solo" writes_per_s)"))"
printf '%-44s %12s %12s %s\n' "3 nodes, three writers (sum)" - - "$par_rate ($(ratio "$par_rate" "$(kv "$solo" writes_per_s)"))"
printf '%-44s %s ms (sqlite3 CLI reading it: %s ms, %s)\n' "load a store of 10,000 guest configs" "$(kv "$load" load_ms)" "$sqlite_ms" "$(ratio "$(kv "$load" load_ms)" "$sqlite_ms")"
printf '%-44s %s ms (cp of the db file: %s ms)\n' "rejoining node catches up 10,000 changes" "$catch_ms" "$cp_ms"
