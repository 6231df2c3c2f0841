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

# vmctl: bad input names the value, exits 2 and changes nothing. Cases that
# need the store run against a standalone vmmd of our own (killed by pid).
C="$B/vmctl"
export VMM_SOCKET=$tmp/vmmd.sock VMM_DATA_DIR=$tmp/data VMM_RUN_DIR=$tmp/run VMM_ACCEL=tcg
expect 2 "unknown command 'frob'" "$C" frob
expect 2 "missing option '--memory'" "$C" create 106
expect 2 "invalid VMID 'abc'" "$C" create abc --memory 512
expect 2 "invalid VMID '99': must be 100 to 999999999" "$C" create 99 --memory 512
expect 2 "invalid VMID '0106': leading zero" "$C" config 0106
expect 2 "invalid memory '0'" "$C" create 106 --memory 0
expect 2 "invalid memory '1G'" "$C" create 106 --memory 1G
expect 2 "invalid cores 'two'" "$C" create 106 --memory 512 --cores two
expect 2 "invalid name 'a;b'" "$C" create 106 --memory 512 --name 'a;b'
expect 2 "invalid disk size '5Q'" "$C" create 106 --memory 512 --disk local:5Q
expect 2 "invalid disk size '0'" "$C" create 106 --memory 512 --disk local:0
expect 2 "invalid --disk 'local'" "$C" create 106 --memory 512 --disk local
expect 2 "invalid storage ID 'Local!'" "$C" create 106 --memory 512 --disk 'Local!:1G'
expect 2 "invalid disk option 'format=vmdk' in --disk 'local:1G,format=vmdk'" "$C" create 106 --memory 512 --disk local:1G,format=vmdk
expect 2 "invalid disk option '' in --disk 'local:1G,'" "$C" create 106 --memory 512 --disk 'local:1G,'
expect 2 "cannot use kernel '/nonexistent/vmlinux'" "$C" create 106 --memory 512 --kernel /nonexistent/vmlinux
expect 2 "initrd needs a kernel" "$C" create 106 --memory 512 --initrd "$tmp/kernel"
expect 2 "invalid append 'a\x0ab'" "$C" create 106 --memory 512 --kernel "$tmp/kernel" --append $'a\nb'
expect 2 "invalid output format 'xml'" "$C" list --output xml
expect 2 "nothing to change" "$C" set 106
expect 2 "cannot delete 'virtio0'" "$C" set 106 --delete virtio0
expect 2 "invalid --timeout 'soon'" "$C" shutdown 106 --timeout soon
expect 1 "cannot reach vmmd at '$tmp/vmmd.sock'" "$C" list
"$B/vmmd" run --standalone --node uno --data-dir "$tmp/data" --socket "$tmp/vmmd.sock" \
  >"$tmp/vmmd.log" 2>&1 &
vmmd_pid=$!
trap 'kill "$vmmd_pid" 2>/dev/null; wait "$vmmd_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do [ -S "$tmp/vmmd.sock" ] && break; sleep 0.1; done
# A second vmmd on the same data directory refuses to start, naming the first.
expect 1 "another vmmd (pid $vmmd_pid) runs with data directory '$tmp/data'" \
  "$B/vmmd" run --standalone --node uno --data-dir "$tmp/data" --socket "$tmp/vmmd2.sock"
[ ! -e "$tmp/vmmd2.sock" ] || { echo "cli: FAIL: the refused vmmd made its socket"; fail=$((fail + 1)); }
# Config keys are checked by vmmd before any node sees them: one line
# naming file, line and value; the store does not change.
ver_before=$("$S" status | grep -oE '"version":[0-9]+')
expect 2 "datacenter.cfg:1: invalid CIDR '10.1.2.0/33' in migration network" \
  "$S" put datacenter.cfg 'migration: secure,network=10.1.2.0/33'
expect 2 "datacenter.cfg:2: unknown key 'max_wrokers'" \
  "$S" put datacenter.cfg "$(printf 'migration: insecure\nmax_wrokers: 4')"
expect 2 "storage.cfg:1: unsupported storage type 'zfs'" "$S" put storage.cfg "$(printf 'zfs: tank\n\tpool tank\n')"
[ "$("$S" status | grep -oE '"version":[0-9]+')" = "$ver_before" ] ||
  { echo "cli: FAIL: refused config writes changed the store"; fail=$((fail + 1)); }
# A waiter watching a prefix wakes on a change under it, not on others,
# and times out with exit 1 when nothing changes.
"$S" watch watched/ --timeout 10 >"$tmp/watch.out" 2>&1 &
wpid=$!
sleep 0.3
"$S" put elsewhere/x 1 >/dev/null
"$S" put watched/k 1 >/dev/null
if wait "$wpid" && grep -q '^watched/k ' "$tmp/watch.out"; then pass=$((pass + 1)); else
  echo "cli: FAIL: watch did not report watched/k: $(cat "$tmp/watch.out")"; fail=$((fail + 1)); fi
expect 1 "no change under 'quiet/' within 1 s" "$S" watch quiet/ --timeout 1
# A second storage whose images/ is a file: allocation fails after the first disk.
mkdir -p "$tmp/broken" && touch "$tmp/broken/images"
"$B/vmstore" put storage.cfg "$(printf 'dir: local\n\tpath %s\n\ndir: broken\n\tpath %s\n\ndir: off\n\tpath %s\n\tdisable\n' "$tmp/data" "$tmp/broken" "$tmp")" >/dev/null
"$B/vmstore" create guests/200 $'node: due\nmemory: 256\n' >/dev/null
"$C" create 106 --memory 512 --disk local:1M >/dev/null 2>&1 || { echo "cli: FAIL: vmctl create 106"; fail=$((fail + 1)); }
# format=qcow2 makes a qcow2 image of the size asked, named .qcow2.
"$C" create 108 --memory 512 --disk local:3M,format=qcow2 >/dev/null 2>&1 || { echo "cli: FAIL: vmctl create 108 (qcow2)"; fail=$((fail + 1)); }
if qemu-img info "$tmp/data/images/108/vm-108-disk-0.qcow2" 2>/dev/null | grep -q 'virtual size: 3 MiB (3145728 bytes)' &&
   "$C" config 108 | grep -q 'virtio0: local:108/vm-108-disk-0.qcow2,size=3M'; then pass=$((pass + 1)); else
  echo "cli: FAIL: qcow2 disk of guest 108: $("$C" config 108 2>&1 | grep virtio0)"; fail=$((fail + 1)); fi
before=$("$B/vmstore" list)
expect 2 "VMID 106 already exists" "$C" create 106 --memory 512
expect 2 "VMID 1000000 is outside the range 100..999999" "$C" create 1000000 --memory 512
expect 2 "unknown storage 'nfs' (storages: local, broken, off)" "$C" create 107 --memory 512 --disk nfs:1G
expect 2 "storage 'off' is disabled" "$C" create 107 --memory 512 --disk off:1G
expect 1 "cannot create directory '$tmp/broken/images/107'" "$C" create 107 --memory 512 --disk local:1M --disk broken:1M
expect 2 "guest 107 does not exist" "$C" config 107
expect 2 "guest 107 does not exist" "$C" start 107
expect 2 "guest 107 does not exist" "$C" destroy 107
expect 2 "guest 107 does not exist" "$C" set 107 --name x
expect 2 "guest 200 is owned by due (this is uno)" "$C" start 200
expect 2 "guest 200 is owned by due (this is uno)" "$C" destroy 200
expect 2 "guest 200 is owned by due (this is uno): change memory there" "$C" set 200 --memory 1024
expect 1 "guest 106 is not running" "$C" stop 106
[ "$("$B/vmstore" list)" = "$before" ] || { echo "cli: FAIL: bad vmctl input changed the store"; fail=$((fail + 1)); }
[ ! -e "$tmp/data/images/107" ] || { echo "cli: FAIL: failed vmctl create left $tmp/data/images/107"; fail=$((fail + 1)); }
# vmmigrate: bad input names the value, exits 2 and changes nothing (same
# standalone vmmd, node "uno"; guest 106 exists and is stopped).
M="$B/vmmigrate"
before=$("$B/vmstore" list)
expect 2 "unknown command 'frob'" "$M" frob 106
expect 2 "unknown command 'abc'" "$M" abc due
expect 2 "invalid VMID 'abc'" "$M" migrate abc due
expect 2 "invalid target node name 'a;b'" "$M" 106 'a;b'
expect 2 "missing argument VMID TARGET" "$M" 106
expect 2 "unknown option '--onlien'" "$M" 106 due --onlien
expect 2 "invalid --migration_type 'fast'" "$M" 106 due --migration_type fast
expect 2 "invalid CIDR '10.1.2.0/33'" "$M" 106 due --migration_network 10.1.2.0/33
expect 2 "invalid CIDR '10.1.2.300/24'" "$M" 106 due --migration_network 10.1.2.300/24
expect 2 "invalid bwlimit (KiB/s) 'lots'" "$M" 106 due --bwlimit lots
expect 2 "invalid downtime (ms) '0'" "$M" 106 due --downtime 0
expect 2 "invalid multifd streams '99'" "$M" 106 due --multifd 99
expect 2 "invalid --compress 'lz4'" "$M" 106 due --compress lz4
expect 2 "--compress zstd needs --multifd 2 or more" "$M" 106 due --compress zstd --multifd 1
expect 2 "invalid --timeout-action 'explode'" "$M" 106 due --timeout-action explode
expect 2 "invalid output format 'xml'" "$M" 106 due --output xml
expect 2 "guest 107 does not exist" "$M" 107 due
expect 2 "guest 200 is owned by due (this is uno)" "$M" 200 tre
expect 2 "target node 'uno' is this node" "$M" 106 uno
expect 2 "unknown target node 'quattro'" "$M" 106 quattro
expect 2 "no migration of guest 106 is running" "$M" cancel 106
expect 2 "invalid VMID 'x'" "$M" status x
expect 2 "invalid node name 'a;b'" "$M" drain 'a;b'
expect 2 "unknown node 'quattro'" "$M" drain quattro
expect 2 "invalid --to 'uno,nix': no node 'nix' in the cluster" "$M" drain uno --to uno,nix
expect 2 "invalid max-workers '0'" "$M" drain uno --max-workers 0
expect 2 "invalid output format 'yaml'" "$M" drain uno --output yaml
expect 2 "unknown option '--froce-leave'" "$M" drain uno --froce-leave
expect 2 "invalid node name '../x'" "$M" undrain ../x
expect 2 "unknown node 'quattro'" "$M" undrain quattro
expect 2 "invalid VMID 'abc'" "$M" log abc
expect 2 "invalid VMID '0106': leading zero" "$M" log 0106
expect 2 "no migration of guest 106 was started on this node" "$M" log 106
expect 2 "unknown option '--al'" "$M" log 106 --al
[ "$("$B/vmstore" list)" = "$before" ] || { echo "cli: FAIL: bad vmmigrate input changed the store"; fail=$((fail + 1)); }
# vmrepl: the same rules (guest 106 on uno, stopped; no jobs yet).
R="$B/vmrepl"
expect 2 "unknown command 'frob'" "$R" frob
expect 2 "invalid job id '106'" "$R" create 106 due
expect 2 "invalid job id '106-x'" "$R" create 106-x due
expect 2 "invalid schedule 'mon..fry 8:00': unknown weekday 'fry'" "$R" create 106-0 due --schedule 'mon..fry 8:00'
expect 2 "invalid schedule '25:00'" "$R" create 106-0 due --schedule '25:00'
expect 2 "unknown target node 'quattro'" "$R" create 106-0 quattro
expect 2 "guest 107 does not exist" "$R" create 107-0 due
expect 2 "invalid rate (MB/s) 'fast'" "$R" create 106-0 due --rate fast
expect 2 "unknown option '--shedule'" "$R" create 106-0 due --shedule '*/5'
expect 2 "no replication job 106-3" "$R" update 106-3 --rate 5
expect 2 "no replication job 106-3" "$R" delete 106-3
expect 2 "no replication job 106-3" "$R" schedule-now 106-3
expect 2 "invalid output format 'xml'" "$R" list --output xml
[ "$("$B/vmstore" list)" = "$before" ] || { echo "cli: FAIL: bad vmrepl input changed the store"; fail=$((fail + 1)); }
# Hostile input: huge values, control characters and shell syntax still
# give one short line naming the value (cut after 128 bytes), exit 2, and
# change nothing.
long=$(head -c 5000 /dev/zero | tr '\0' a)
cut128="'$(head -c 128 /dev/zero | tr '\0' a)...'"
expect 2 "invalid name 'aaaa"  "$C" create 107 --memory 512 --name "$long"
expect 2 "invalid name 'a\x0ab'" "$C" create 107 --memory 512 --name $'a\nb'
expect 2 "invalid output format $cut128" "$C" list --output "$long"
expect 2 "invalid VMID 'aaaa" "$C" config "$long"
expect 2 "invalid target node name $cut128" "$M" 106 "$long"
expect 2 "invalid node name $cut128" "$M" drain "$long"
expect 2 "invalid CIDR 'aaaa" "$M" 106 due --migration_network "$long"
expect 2 "invalid bwlimit (KiB/s) '99999999999999999999'" "$M" 106 due --bwlimit 99999999999999999999
expect 2 "invalid bwlimit (KiB/s) '-5'" "$M" 106 due --bwlimit -5
expect 2 "invalid target node name '\$(touch $tmp/pwned)'" "$M" 106 "\$(touch $tmp/pwned)"
expect 2 "invalid schedule 'x" "$R" create 106-0 due --schedule "x$long"
expect 2 "invalid comment: longer than 255 bytes" "$R" create 106-0 due --comment "$long"
expect 2 "invalid key 'aaaa" "$S" get "$long"
"$C" create 107 --memory 512 --name "$long" 2>"$tmp/err"
if [ "$(wc -c <"$tmp/err")" -lt 400 ]; then pass=$((pass + 1)); else
  echo "cli: FAIL: a 5000-byte name gave a $(wc -c <"$tmp/err")-byte error line"; fail=$((fail + 1)); fi
[ ! -e "$tmp/pwned" ] || { echo "cli: FAIL: shell syntax in an argument ran"; fail=$((fail + 1)); }
[ "$("$B/vmstore" list)" = "$before" ] || { echo "cli: FAIL: hostile input changed the store"; fail=$((fail + 1)); }
kill "$vmmd_pid"; wait "$vmmd_pid" 2>/dev/null

echo "cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
