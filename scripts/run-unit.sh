#!/usr/bin/env bash
# Runs each unit test binary (ASan/UBSan builds); fails if any fails.
set -uo pipefail
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=0
for t in "$@"; do
  if ! "$t"; then echo "unit: FAILED $t" >&2; failed=1; fi
done
exit $failed
