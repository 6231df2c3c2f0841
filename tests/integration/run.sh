#!/usr/bin/env bash
# Runs every integration scenario (tests/integration/t_*.sh) against real
# QEMU, sshd and corosync on the namespaced testbed. Each scenario brings
# up what it needs and tears it down. Usage: run.sh BUILD_DIR [NAME...]
set -uo pipefail
B=$(cd "${1:-build}" && pwd); shift || true
here=$(cd "$(dirname "$0")" && pwd)
export B
pass=0 fail=0 failed=()
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=("$here"/t_*.sh)
for t in "${scenarios[@]}"; do
  [ -f "$t" ] || t=$here/$t
  name=$(basename "$t" .sh)
  # A clean slate, whatever an earlier (killed) run left behind.
  "$here/../../scripts/testbed" down >/dev/null 2>&1 || true
  rm -rf "${VMM_TEST_RUN:-/run/vmm-tests}"
  start=$(date +%s.%N)
  log=$B/itest-$name.log
  if bash "$t" >"$log" 2>&1; then
    pass=$((pass + 1)); res=ok
  else
    fail=$((fail + 1)); res=FAILED; failed+=("$name")
  fi
  printf 'integration: %-24s %-6s %5.1fs\n' "$name" "$res" "$(echo "$(date +%s.%N) - $start" | bc)"
  if [ $res = FAILED ]; then sed 's/^/    | /' "$log" | tail -25; fi
done
echo "integration: $pass passed, $fail failed"
[ $fail -eq 0 ]
