#!/usr/bin/env bash
# (c) testbed down leaves nothing behind: namespaces, processes (sshd,
# corosync, guests still running on nodes), mounts, /dev/shm leftovers, its
# state dir. Running it twice is fine.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT

tb down >/dev/null 2>&1 || true
shm_before=$(ls /dev/shm | sort)
tb up 3
state=${VMM_TESTBED_DIR:-/run/vmm-testbed}
mkdir -p "$RUN"
guest_start tre orphan "$MEM_512M" "vmtest.mode=idle" >/dev/null
qpid=$(pid_of "$RUN/orphan")
# Every process of the nodes: sshd, corosync, and the guest left running.
pids=$(for n in uno due tre; do ip netns pids "$n"; done)
grep -qw "$qpid" <<<"$pids" || die "guest pid $qpid not found in tre's namespace"
[ "$(wc -w <<<"$pids")" -ge 7 ] || die "expected sshd+corosync on 3 nodes and a guest, got: $pids"
# A killed corosync leaves its qb-* files in /dev/shm: down must clear them too.
tb corosync-stop due --kill
tb down
tb down   # twice is fine
for p in $pids; do alive "$p" && die "pid $p ($(tr '\0' ' ' < /proc/$p/cmdline)) still alive after down"; done
for ns in uno due tre vmm-sw; do ip netns list | grep -qw "$ns" && die "namespace $ns left behind"; done
grep -q vmm-testbed /proc/mounts && die "mounts left behind: $(grep vmm-testbed /proc/mounts)"
[ ! -e "$state" ] || die "state dir $state left behind"
shm_after=$(ls /dev/shm | sort)
[ "$shm_before" = "$shm_after" ] || die "/dev/shm changed: $(diff <(echo "$shm_before") <(echo "$shm_after") | tr '\n' ' ')"
note "down: clean"
