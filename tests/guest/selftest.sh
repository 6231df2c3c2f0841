#!/bin/bash
# Self-check of the test guest under TCG: boots it in each mode with the
# launcher's QEMU command line (plus the recommended append extras), checks the
# console contract (README.md), asks for a verification over the command port,
# and proves the checks can fail.
# usage: selftest.sh OUTDIR    (OUTDIR from scripts/build-guest.sh)
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: selftest.sh OUTDIR" >&2; exit 2; }
out=$(cd "$1" && pwd)
[[ -f $out/vmlinux && -f $out/initramfs.cpio.gz ]] || { echo "selftest: FAIL no guest in $out" >&2; exit 1; }
tmp=$(mktemp -d /tmp/vmtest-selftest.XXXXXX)
qpid=
scenario=setup
t_start=$SECONDS

stop_qemu() {
	if [[ -n $qpid ]]; then
		kill "$qpid" 2>/dev/null || true
		wait "$qpid" 2>/dev/null || true
		qpid=
	fi
}
trap stop_qemu EXIT

fail() {
	stop_qemu
	echo "selftest: FAIL $scenario: $* (console: $tmp/$scenario.log)"
	exit 1
}

# boot NAME APPEND...: start the guest exactly as the launcher does, console in NAME.log.
boot() {
	scenario=$1
	shift
	rm -f "$tmp/cmd.sock" "$tmp/qmp.sock"
	qemu-system-x86_64 -machine pc -cpu qemu64 -accel tcg -nodefaults -display none \
		-m 1048568K -smp 1 -kernel "$out/vmlinux" -initrd "$out/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1 init_on_alloc=0 cryptomgr.notests rodata=off $*" \
		-chardev "file,id=con0,path=$tmp/$scenario.log" -serial chardev:con0 \
		-chardev "socket,id=cmd0,path=$tmp/cmd.sock,server=on,wait=off" -serial chardev:cmd0 \
		-drive "if=none,id=d0,file=$tmp/disk.img,format=raw,cache=none" \
		-device virtio-blk-pci,drive=d0 -no-reboot \
		-qmp "unix:$tmp/qmp.sock,server=on,wait=off" >"$tmp/$scenario.qemu" 2>&1 &
	qpid=$!
}

# Console lines of ours, without the \r the kernel's own lines carry.
lines() { tr -d '\r' 2>/dev/null <"$tmp/$scenario.log" | grep -a '^VMTEST ' || true; }

# wait_for REGEX COUNT SECONDS: until COUNT console lines match.
wait_for() {
	local deadline=$((SECONDS + $3))
	while (($(lines | grep -cE "$1" || true) < $2)); do
		((SECONDS < deadline)) || fail "no $2 line(s) matching '$1' within $3 s"
		kill -0 "$qpid" 2>/dev/null || fail "QEMU exited: $(tail -n 1 "$tmp/$scenario.qemu")"
		sleep 0.1
	done
}

# send WORD: send it on the command port, print the guest's answer there.
send() {
	python3 - "$tmp/cmd.sock" "$1" <<-'EOF'
		import socket, sys, time
		s = socket.socket(socket.AF_UNIX)
		s.connect(sys.argv[1])
		s.settimeout(1)
		s.sendall(sys.argv[2].encode() + b"\n")
		buf, end = b"", time.monotonic() + 30
		while time.monotonic() < end:
		    try:
		        data = s.recv(4096)
		    except socket.timeout:
		        continue
		    if not data:
		        break
		    buf += data
		    for line in buf.split(b"\n")[:-1]:
		        if line.startswith(b"VMTEST "):
		            print(line.decode().strip())
		            sys.exit(0)
		sys.exit(1)
	EOF
}

# Heartbeats must count 1, 2, 3 ... with no gap and no repeat.
check_beats() {
	local bad
	bad=$(lines | sed -n 's/^VMTEST \(OK\|FAIL total\) n=\([0-9]*\) .*/\2/p' |
		awk 'NR != $1 { print "heartbeat " NR " has n=" $1; exit }')
	[[ -z $bad ]] || fail "$bad"
}

# A healthy run: READY, 3 beats, verify OK (answer in $reply), PONG, no FAIL anywhere.
healthy() {
	wait_for '^VMTEST READY ' 1 30
	wait_for '^VMTEST OK n=' 3 15
	reply=$(send verify) || fail "no answer to verify"
	[[ $reply == "VMTEST VERIFY OK pages="*" blocks="* ]] || fail "verify answered: $reply"
	wait_for "^$reply\$" 1 5        # the answer is on the console too
	[[ $(send ping) == "VMTEST PONG n="* ]] || fail "no PONG"
	! lines | grep -q '^VMTEST FAIL' || fail "$(lines | grep -m1 '^VMTEST FAIL')"
	check_beats
	stop_qemu
}

# wait_pages N: until a heartbeat reports at least N pages stamped.
wait_pages() {
	local deadline=$((SECONDS + 30)) p
	while :; do
		p=$(lines | sed -n 's/^VMTEST \(OK\|FAIL total\) n=.* pages=\([0-9]*\) .*/\2/p' | tail -n 1)
		((${p:-0} >= $1)) && return
		((SECONDS < deadline)) || fail "fewer than $1 pages stamped after 30 s"
		sleep 0.1
	done
}

truncate -s 64M "$tmp/disk.img"

boot mem vmtest.mode=mem vmtest.mib=256
healthy
[[ $reply == *"pages=65536 blocks=0" ]] || fail "mem verify covered too little: $reply"

boot disk vmtest.mode=disk vmtest.disk=/dev/vda vmtest.rate=8
wait_for '^VMTEST OK n=.* blocks=[1-9]' 1 30     # some blocks written before verifying
healthy
[[ $reply == *"pages=0 blocks="[1-9]* ]] || fail "disk verify covered no block: $reply"

# Damage on purpose, right after their first write: block 0 (the disk writer's
# first) and page 2048 (the middle one); plus a bad key.  At 4 MiB/s page 2048 is
# stamped at ~2 s and re-checked by the writer at ~6 s; block 0 is rewritten at ~16 s.
boot corrupt vmtest.mode=mem+disk vmtest.mib=16 vmtest.rate=4 vmtest.selftest_corrupt=1 vmtest.mib=x
wait_for '^VMTEST FAIL badarg vmtest.mib=x$' 1 30
wait_for '^VMTEST READY ' 1 30
wait_pages 2100
reply=$(send verify) || fail "no answer to verify"
[[ $reply == "VMTEST VERIFY FAIL "*" bad=2 "* ]] || fail "verify after corruption answered: $reply"
wait_for '^VMTEST FAIL disk block=0 expected=[0-9a-f]{16} got=[0-9a-f]{16} ' 1 5
wait_for '^VMTEST FAIL mem page=2048 expected=[0-9a-f]{16} got=[0-9a-f]{16} ' 1 5
wait_for '^VMTEST FAIL mem page=2048 ' 2 15      # and the writer's own check, a pass later
wait_for '^VMTEST FAIL total n=' 2 5
check_beats
stop_qemu

boot probe vmtest.mode=probe
for ((i = 0; i < 300; i++)); do
	kill -0 "$qpid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$qpid" 2>/dev/null && fail "guest did not power off"
wait "$qpid" || true
qpid=
[[ $(lines) == "VMTEST READY mode=probe" ]] || fail "probe printed: $(lines | head -n 1)"

[[ -n ${VMTEST_KEEP:-} ]] || rm -rf "$tmp"
echo "selftest: PASS mem, disk, corrupt, probe in $((SECONDS - t_start)) s"
