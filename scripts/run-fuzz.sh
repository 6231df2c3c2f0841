#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time on its seed corpus
# (tests/fuzz/corpus/<name>/); new inputs go to corpus/<name>/ and crashes to
# crash-<name>-* next to the target (build/fuzz/, or $B/fuzz/).
# Usage: run-fuzz.sh SECONDS TARGET...
set -euo pipefail
secs=$1; shift
for t in "$@"; do
  name=$(basename "$t"); name=${name#fuzz_}
  dir=$(dirname "$t")
  work=$dir/corpus/$name
  mkdir -p "$work"
  echo "fuzz: $name for ${secs}s"
  "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$dir/crash-$name-" "$work" "tests/fuzz/corpus/$name" 2>&1 | \
       grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|#[0-9]+ *DONE)' || true
  if ls "$dir/crash-$name"-* >/dev/null 2>&1; then
    echo "fuzz: $name found a crash: $(ls "$dir/crash-$name"-*)" >&2; exit 1
  fi
done
