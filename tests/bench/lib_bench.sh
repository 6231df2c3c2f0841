# tests/bench/lib_bench.sh - helpers shared by the benchmarks (source it
# after tests/lib.sh).

# field JSON KEY: a number from one of our one-line JSON events.
field() { grep -oE "\"$2\":[0-9.]+" <<<"$1" | head -1 | cut -d: -f2; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else print a[int((NR+1)/2)]}'; }
# ratio A B: A / B as "1.23x", "-" unless both are numbers.
ratio() {
  [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] || { echo "-"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'
}
# col ROWS N: the median of column N of whitespace-separated rows (skips "-"
# and empty lines).
col() { awk -v n="$2" 'NF && $n != "-" {print $n}' <<<"$1" | median; }

# raw_case NAME MEM APPEND RUNS TIMEOUT MIGRATE-ARGS...: one vmguest-driven
# QEMU ping-ponging between uno and due; prints "total down mbps passes"
# per run ("timeout - - -" when it did not complete). The guest's memory
# check must pass after the runs.
raw_case() {
  local name=$1 mem=$2 app=$3 runs=$4 timeout=$5; shift 5
  local cur=uno other=due dir="$RUN/$name-0" i out
  guest_start "$cur" "$name-0" "$mem" "$app" >/dev/null 2>>"$RUN/bench.log"
  wait_console "$dir" 'VMTEST OK' 2 60
  for ((i = 1; i <= runs; i++)); do
    local next="$RUN/$name-$i"
    guest_start "$other" "$name-$i" "$mem" "$app" --incoming >/dev/null 2>>"$RUN/bench.log"
    if out=$("$VMGUEST" migrate --from "$dir" --to "$next" --output json --timeout "$timeout" \
              --uri "tcp:$(tb addr "$other" migration):61000" "$@" 2>>"$RUN/bench.log" | tail -1) &&
       grep -q '"event":"done"' <<<"$out"; then
      echo "$(field "$out" total_ms) $(field "$out" downtime_ms) $(field "$out" mbps) $(field "$out" passes)"
      dir=$next; local t=$cur; cur=$other; other=$t
      wait_console "$dir" 'VMTEST OK' 1 30
    else
      echo "timeout - - -"
      "$VMGUEST" stop --dir "$next" >/dev/null 2>&1 || true
    fi
  done
  "$VMGUEST" verify --dir "$dir" >/dev/null || die "$name: guest memory check failed after the runs"
  "$VMGUEST" stop --dir "$dir" >/dev/null
}
