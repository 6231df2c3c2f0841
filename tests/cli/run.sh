#!/usr/bin/env bash
# Bad input to every command gives one line on stderr naming the bad value
# and a non-zero exit, changes nothing, and leaks nothing (valgrind).
# Usage: run.sh BUILD_DIR
set -uo pipefail
B=$(cd "${1:-build}" && pwd)
TOP=$(cd "$(dirname "$0")/../.." && pwd)
V="$B/vmguest"
tmp=$(mktemp -d /tmp/vmm-cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
touch "$tmp/kernel"
pass=0 fail=0
VALGRIND=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99)
command -v valgrind >/dev/null || VALGRIND=()

# expect WANT_RC NEEDLE CMD...: stderr is one line containing NEEDLE.
# Our binaries run under valgrind; scripts (expect_script) do not.
expect() { run_expect 1 "$@"; }
expect_script() { run_expect 0 "$@"; }
run_expect() {
  local vg=$1 want=$2 needle=$3; shift 3
  local rc out
  if [ "$vg" = 1 ]; then "${VALGRIND[@]}" "$@" >/dev/null 2>"$tmp/err"; rc=$?
  else "$@" >/dev/null 2>"$tmp/err"; rc=$?; fi
  # valgrind's own reports are lines starting with ==PID==
  out=$(grep -v '^==[0-9]*==' "$tmp/err")
  if [ $rc -eq 99 ]; then
    echo "cli: LEAK/ERROR under valgrind: $*"; sed 's/^/    /' "$tmp/err" | head -20; fail=$((fail + 1)); return
  fi
  if [ $rc -ne "$want" ] || [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] || [[ $out != *"$needle"* ]]; then
    echo "cli: FAIL (rc $rc, want $want, needle '$needle'): $*"; echo "    stderr: $out"; fail=$((fail + 1)); return
  fi
  pass=$((pass + 1))
}

expect 2 "unknown command 'frob'" "$V" frob
expect 2 "unknown option '--memroy'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --memroy 1G
expect 2 "missing option '--kernel'" "$V" start g --dir "$tmp/g"
expect 2 "missing argument NAME" "$V" start --dir "$tmp/g" --kernel "$tmp/kernel"
expect 2 "cannot use kernel '/nonexistent/vmlinux'" "$V" start g --dir "$tmp/g" --kernel /nonexistent/vmlinux
expect 2 "cannot use initrd '/nonexistent/initrd'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --initrd /nonexistent/initrd
expect 2 "cannot use disk '/nonexistent.img'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --disk /nonexistent.img
expect 2 "unknown node 'nosuchnode'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --node nosuchnode
expect 2 "invalid node name '../etc'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --node ../etc
expect 2 "invalid memory size '12x'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --memory 12x
expect 2 "invalid memory size '8'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --memory 8
expect 2 "invalid memory size '16777217B': must be a multiple of 4 KiB" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --memory 16777217B
expect 2 "invalid memory size '99999999999999T'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --memory 99999999999999T
expect 2 "invalid cpus '0'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --cpus 0
expect 2 "invalid cpus 'two'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --cpus two
expect 2 "invalid accelerator 'hvf'" "$V" start g --dir "$tmp/g" --kernel "$tmp/kernel" --accel hvf
expect 2 "invalid guest name 'a;rm -rf /'" "$V" start 'a;rm -rf /' --dir "$tmp/g" --kernel "$tmp/kernel"
expect 2 "no guest running in '$tmp/none'" "$V" stop --dir "$tmp/none"
expect 2 "invalid --timeout 'soon'" "$V" stop --dir "$tmp/none" --timeout soon
expect 2 "no guest running in '$tmp/none'" "$V" status --dir "$tmp/none"
expect 2 "invalid output format 'xml'" "$V" status --dir "$tmp/none" --output xml
expect 2 "invalid JSON arguments '{bad'" "$V" qmp --dir "$tmp/none" query-status '{bad'
expect 2 "invalid migration URI 'ftp://x'" "$V" migrate --from "$tmp/a" --to "$tmp/b" --uri ftp://x
expect 2 "invalid max-bandwidth '5Q'" "$V" migrate --from "$tmp/a" --to "$tmp/b" --uri tcp:127.0.0.1:1 --max-bandwidth 5Q
expect 2 "invalid multifd channels '99'" "$V" migrate --from "$tmp/a" --to "$tmp/b" --uri tcp:127.0.0.1:1 --multifd 99
expect 2 "invalid downtime '-5'" "$V" migrate --from "$tmp/a" --to "$tmp/b" --uri tcp:127.0.0.1:1 --downtime -5
expect 2 "no guest running in '$tmp/a'" "$V" migrate --from "$tmp/a" --to "$tmp/b" --uri tcp:127.0.0.1:1
expect 1 "cannot reach the guest's command channel" "$V" verify --dir "$tmp/none"
[ ! -e "$tmp/g" ] || { echo "cli: FAIL: bad input created $tmp/g"; fail=$((fail + 1)); }

# vmmd and vmstore: bad keys are refused before any daemon is asked.
S="$B/vmstore"
expect 2 "invalid key '../etc/passwd'" "$S" get ../etc/passwd --socket "$tmp/none.sock"
expect 2 "invalid key 'a//b'" "$S" put a//b v --socket "$tmp/none.sock"
expect 2 "invalid key 'semi;colon'" "$S" delete 'semi;colon' --socket "$tmp/none.sock"
expect 2 "invalid --ttl '0'" "$S" lock locks/x --ttl 0 --socket "$tmp/none.sock"
expect 2 "invalid --if-version 'x'" "$S" put k v --if-version x --socket "$tmp/none.sock"
expect 1 "cannot reach vmmd at '$tmp/none.sock'" "$S" get k --socket "$tmp/none.sock"
expect 2 "invalid node name 'Bad Name'" "$B/vmmd" run --node 'Bad Name' --data-dir "$tmp/d" --socket "$tmp/s"
expect 2 "unknown option '--sokcet'" "$B/vmmd" run --sokcet x

# The testbed script follows the same rules.
expect_script 2 "'0'" "$TOP/scripts/testbed" up 0
expect_script 2 "'12'" "$TOP/scripts/testbed" up 12
expect_script 2 "'x'" "$TOP/scripts/testbed" up x
expect_script 2 "nosuch" "$TOP/scripts/testbed" exec nosuch true
expect_script 2 "'frob'" "$TOP/scripts/testbed" frob

# The guest build names a missing output dir argument.
expect_script 2 "usage" "$TOP/scripts/build-guest.sh"

echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
