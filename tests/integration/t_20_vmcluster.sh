#!/usr/bin/env bash
# vmcluster (the pvecm equivalent) on a bare 3-node testbed with one vmmd per
# node: create on uno; add due and tre over ssh (config_version +1 each,
# identical corosync.conf and authkey everywhere, all quorate, membership 3,
# the store replicated); nodes and status; delnode refuses the local node
# and an online one and removes a dead one; expected; bad input fails with
# one line and changes nothing; arguments sent over ssh are quoted, never
# executed.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VMCLUSTER=$B/vmcluster
RUN=$RUN/vmcluster
TB_DIR=${VMM_TESTBED_DIR:-/run/vmm-testbed}
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT
tb down >/dev/null 2>&1 || true
tb up 3 --bare
rm -rf "$RUN"
mkdir -p "$RUN"
export VMM_REMOTE_VMCLUSTER=$VMCLUSTER   # vmcluster on the member, for addnode

# on NODE CMD...: CMD in NODE's namespace with NODE's settings (testbed env).
on() { local n=$1; shift; ( set -a; eval "$(tb env "$n")"; set +a; exec ip netns exec "$n" "$@" ); }
vc() { local n=$1; shift; on "$n" "$VMCLUSTER" "$@"; }
vs() { local n=$1; shift; on "$n" "$VMSTORE" "$@"; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
json_field() { grep -oE "\"$1\":(\"[^\"]*\"|[a-z0-9]+)" | head -1 | cut -d: -f2 | tr -d '"'; }
conf() { echo "$TB_DIR/$1/etc/corosync/corosync.conf"; }
version_of() { vc "$1" status --output json | json_field config_version; }

# expect_fail RC NEEDLE NODE ARGS...: vmcluster on NODE exits RC with one
# stderr line containing NEEDLE.
expect_fail() {
  local want=$1 needle=$2 node=$3 rc=0 err; shift 3
  vc "$node" "$@" >"$RUN/out" 2>"$RUN/err" || rc=$?
  err=$(cat "$RUN/err")
  [ "$rc" = "$want" ] || die "vmcluster $* on $node: exit $rc, want $want ($err)"
  [ "$(wc -l <"$RUN/err")" = 1 ] || die "vmcluster $* on $node: not one line: $err"
  [[ $err == *"$needle"* ]] || die "vmcluster $* on $node: '$err' lacks '$needle'"
}

vmmd_up() {
  local n=$1 i
  on "$n" "$VMMD" run --node "$n" >>"$RUN/vmmd-$n.log" 2>&1 &
  echo $! >"$RUN/vmmd-$n.pid"
  for ((i = 0; i < 100; i++)); do [ -S "$TB_DIR/$n/vmm/vmmd.sock" ] && return 0; sleep 0.05; done
  die "vmmd on $n did not start: $(tail -3 "$RUN/vmmd-$n.log")"
}

# same_conf NODE...: their corosync.conf, vmmd's copy and authkey are identical.
same_conf() {
  local n sums
  sums=$(for n in "$@"; do
    md5sum <"$(conf "$n")"; md5sum <"$TB_DIR/$n/vmm/corosync.conf"
  done | sort -u | wc -l)
  [ "$sums" = 1 ] || die "corosync.conf differs between $*"
  sums=$(for n in "$@"; do md5sum <"$TB_DIR/$n/etc/corosync/authkey"; done | sort -u | wc -l)
  [ "$sums" = 1 ] || die "authkey differs between $*"
  for n in "$@"; do
    [ "$(stat -c %a "$TB_DIR/$n/etc/corosync/authkey")" = 400 ] || die "authkey on $n is not 0400"
  done
}

# members NODE: nodes NODE's corosync sees (from `vmcluster nodes`).
members() { vc "$1" nodes | tail -n +4 | wc -l; }

# wait_members N NODE...: until each NODE sees N members, quorate.
wait_members() {
  local want=$1 n i; shift
  for n in "$@"; do
    for ((i = 0; i < 100; i++)); do
      [ "$(members "$n")" = "$want" ] && vc "$n" status | grep -q '^Quorate: *Yes' && break
      sleep 0.1
    done
    [ $i -lt 100 ] || die "$n does not see $want members, quorate: $(vc "$n" status 2>&1 | tr '\n' '|')"
  done
}

for n in uno due tre; do vmmd_up "$n"; done

# ---- 1. create on uno -----------------------------------------------------
expect_fail 1 "this node is not in a cluster (vmmd runs standalone" uno status
expect_fail 1 "this node is not in a cluster (vmmd runs standalone" uno nodes --output json
expect_fail 1 "this node is not in a cluster (vmmd runs standalone" uno expected 1
expect_fail 2 "invalid cluster name 'bad_name'" uno create bad_name --link0 10.99.1.1 --name uno
expect_fail 2 "invalid cluster name 'averyverylongname'" uno create averyverylongname --link0 10.99.1.1 --name uno
expect_fail 2 "invalid --link0 address '10.99.1.300': not an IPv4 or IPv6 address" uno create vmmtest --link0 10.99.1.300 --name uno
expect_fail 2 "invalid --link0 address '10.99.1.7': not an address of this node" uno create vmmtest --link0 10.99.1.7 --name uno
expect_fail 2 "this node has 2 addresses (10.99.1.1, 10.99.2.1): choose one with --link0" uno create vmmtest --name uno
expect_fail 2 "invalid --link1 priority '256'" uno create vmmtest --link0 10.99.1.1 --link1 10.99.2.1,priority=256 --name uno
expect_fail 2 "invalid node name 'Uno'" uno create vmmtest --link0 10.99.1.1 --name Uno
[ ! -e "$(conf uno)" ] || die "bad input wrote corosync.conf"
t0=$(date +%s%N)
vc uno create vmmtest --link0 10.99.1.1,priority=20 --link1 10.99.2.1,priority=10 --name uno --token 1000
note "create: $(ms "$t0") ms to a quorate one-node cluster"
vc uno status >"$RUN/status"
grep -q '^Name: *vmmtest$' "$RUN/status" || die "status: $(cat "$RUN/status")"
grep -q '^Config Version: *1$' "$RUN/status" || die "status: $(cat "$RUN/status")"
grep -q '^Nodes: *1$' "$RUN/status" || die "status: $(cat "$RUN/status")"
grep -q '^Quorate: *Yes$' "$RUN/status" || die "status: $(cat "$RUN/status")"
grep -q '^Secure auth: *on$' "$RUN/status" || die "status: $(cat "$RUN/status")"
grep -q '^0x00000001 *1 10.99.1.1 (local)$' "$RUN/status" || die "status: $(cat "$RUN/status")"
grep -q 'knet_link_priority: 20' "$(conf uno)" || die "link priority not written"
vs uno get cluster/corosync.conf | cmp -s - "$(conf uno)" || die "store key differs from corosync.conf"
expect_fail 1 "this node is already in a cluster" uno create other --link0 10.99.1.1 --name uno
tb corosync-check uno >/dev/null 2>&1 || die "corosync -t rejects uno's corosync.conf"

# ---- 2. what goes over ssh is quoted, and validated before ----------------
mkdir -p "$RUN/fakessh" "$RUN/odd dir/it's"
cat >"$RUN/fakessh/ssh" <<EOF
#!/bin/sh
for a; do printf '%s\n' "\$a"; done >"$RUN/ssh.args"
for last; do :; done
exec sh -c "\$last"
EOF
cat >"$RUN/odd dir/it's/vmcluster" <<EOF
#!/bin/sh
for a; do printf '%s\n' "\$a"; done >"$RUN/remote.args"
echo "vmcluster: fake member refuses" >&2
exit 2
EOF
chmod +x "$RUN/fakessh/ssh" "$RUN/odd dir/it's/vmcluster"
rc=0
on tre env VMM_SSH="$RUN/fakessh/ssh -F /dev/null" VMM_REMOTE_VMCLUSTER="$RUN/odd dir/it's/vmcluster" \
  "$VMCLUSTER" add uno --name tre --link0 10.99.1.3 --link1 10.99.2.3 --nodeid 7 2>"$RUN/err" || rc=$?
[ $rc = 2 ] && grep -qx "vmcluster: 'uno' did not add node 'tre': fake member refuses" "$RUN/err" ||
  die "fake member: rc $rc, $(cat "$RUN/err")"
printf '%s\n' -o StrictHostKeyChecking=yes -F /dev/null -- uno | cmp -s - <(head -6 "$RUN/ssh.args") ||
  die "ssh argv: $(tr '\n' ' ' <"$RUN/ssh.args")"
printf '%s\n' addnode tre --link0 10.99.1.3 --link1 10.99.2.3 --nodeid 7 --votes 1 | cmp -s - "$RUN/remote.args" ||
  die "remote argv: $(tr '\n' ' ' <"$RUN/remote.args")"
touch "$RUN/canary"
expect_fail 2 "invalid node name 'x;rm -f $RUN/canary'" tre add uno --name "x;rm -f $RUN/canary" --link0 10.99.1.3
expect_fail 2 "invalid node name '\$(rm -f $RUN/canary)'" tre add uno --name "\$(rm -f $RUN/canary)" --link0 10.99.1.3
expect_fail 2 "invalid cluster node 'uno;rm -f $RUN/canary'" tre add "uno;rm -f $RUN/canary" --name tre --link0 10.99.1.3
expect_fail 2 "invalid cluster node '-oProxyCommand=rm'" tre add -oProxyCommand=rm --name tre --link0 10.99.1.3
expect_fail 2 "invalid --link0 address '10.99.1.3 --nodeid 1'" tre add uno --name tre --link0 "10.99.1.3 --nodeid 1"
[ -e "$RUN/canary" ] || die "a hostile argument was executed"
# The member validates what reaches it too (addnode run directly, quoted by us).
tb ssh tre 10.99.1.1 "VMM_SOCKET=$TB_DIR/uno/vmm/vmmd.sock '$VMCLUSTER' addnode 'x;touch $RUN/pwned' --link0 10.99.1.9" \
  2>"$RUN/err" && die "addnode took a hostile name"
grep -q "invalid node name 'x;touch $RUN/pwned'" "$RUN/err" || die "addnode: $(cat "$RUN/err")"
[ ! -e "$RUN/pwned" ] || die "hostile name executed on the member"
[ "$(version_of uno)" = 1 ] || die "bad input changed the cluster"

# ---- 3. add due (via uno), add tre (via due) ------------------------------
t0=$(date +%s%N)
vc due add 10.99.1.1 --name due --link0 10.99.1.2 --link1 10.99.2.2
note "add due: $(ms "$t0") ms until quorate and synced"
for n in uno due; do [ "$(version_of $n)" = 2 ] || die "config version on $n is $(version_of $n), want 2"; done
same_conf uno due
wait_members 2 uno due

# A joining node with guests is refused, and nothing changes.
vs tre put guests/900 "node: tre" >/dev/null
expect_fail 1 "this node holds 1 guest(s) (guests/900)" tre add 10.99.1.2 --name tre --link0 10.99.1.3 --link1 10.99.2.3
vs tre delete guests/900 >/dev/null
# The member refuses clashes; the joiner reports its one line, exit 2.
expect_fail 2 "'10.99.1.2' did not add node 'tre': nodeid 1 of node 'tre' is already used by node 'uno'" \
  tre add 10.99.1.2 --name tre --link0 10.99.1.3 --link1 10.99.2.3 --nodeid 1
expect_fail 2 "'10.99.1.2' did not add node 'tre': node 'tre' has link(s) 0 but the cluster uses link(s) 0,1" \
  tre add 10.99.1.2 --name tre --link0 10.99.1.3
expect_fail 2 "invalid --link1 priority 5: the cluster's link 1 has priority 10" \
  tre add 10.99.1.2 --name tre --link0 10.99.1.3 --link1 10.99.2.3,priority=5
expect_fail 1 "cannot reach '10.99.1.9' over ssh" tre add 10.99.1.9 --name tre --link0 10.99.1.3 --link1 10.99.2.3
[ "$(version_of uno)" = 2 ] && [ ! -e "$(conf tre)" ] || die "a refused add changed something"

t0=$(date +%s%N)
vc tre add 10.99.1.2 --name tre --link0 10.99.1.3 --link1 10.99.2.3
note "add tre: $(ms "$t0") ms until quorate and synced"
for n in uno due tre; do [ "$(version_of $n)" = 3 ] || die "config version on $n is $(version_of $n), want 3"; done
same_conf uno due tre
tb corosync-check tre >/dev/null 2>&1 || die "corosync -t rejects the 3-node corosync.conf"
wait_members 3 uno due tre
t0=$(date +%s%N)
vs uno put test/from-uno hello >/dev/null
for ((i = 0; i < 100; i++)); do [ "$(vs tre get test/from-uno 2>/dev/null)" = hello ] && break; sleep 0.01; done
[ $i -lt 100 ] || die "a write on uno is not visible on tre"
note "store write on uno visible on tre after $(ms "$t0") ms"
for n in uno due tre; do
  [ "$(vs $n status | json_field checksum)" = "$(vs uno status | json_field checksum)" ] || die "stores differ"
done

# ---- 4. nodes and status ---------------------------------------------------
vc due nodes >"$RUN/nodes"
[ "$(tail -n +4 "$RUN/nodes" | wc -l)" = 3 ] || die "nodes: $(cat "$RUN/nodes")"
grep -qE '^ +2 +1 due \(local\)$' "$RUN/nodes" || die "nodes: local not marked: $(cat "$RUN/nodes")"
[ "$(grep -c '(local)' "$RUN/nodes")" = 1 ] || die "nodes: $(cat "$RUN/nodes")"
vc tre status >"$RUN/status"
for l in '^Nodes: *3$' '^Node ID: *0x00000003$' '^Expected votes: *3$' '^Total votes: *3$' '^Quorum: *2$' \
         '^Flags: *Quorate$' '^Config Version: *3$' '^0x00000003 *1 10.99.1.3 \(local\)$'; do
  grep -qE "$l" "$RUN/status" || die "status lacks $l: $(cat "$RUN/status")"
done
[ "$(vc uno nodes --output json | grep -o '"nodeid"' | wc -l)" = 3 ] || die "nodes json"

# ---- 5. delnode ------------------------------------------------------------
expect_fail 1 "node 'tre' (nodeid 3) is online" uno delnode tre
expect_fail 2 "cannot remove node 'uno': it is this node" uno delnode uno
expect_fail 2 "unknown node 'nope' (the cluster's nodes: uno, due, tre)" uno delnode nope
expect_fail 2 "unknown node 'x;y': not a node name" uno delnode 'x;y'
[ "$(version_of uno)" = 3 ] || die "a refused delnode changed the config"
t0=$(date +%s%N)
tb corosync-stop --kill tre
kill "$(cat "$RUN/vmmd-tre.pid")"
for ((i = 0; i < 100; i++)); do [ "$(members uno)" = 2 ] && break; sleep 0.1; done
note "killed tre noticed by uno after $(ms "$t0") ms"
t0=$(date +%s%N)
vc uno delnode tre
note "delnode: $(ms "$t0") ms"
for n in uno due; do
  for ((i = 0; i < 50; i++)); do [ "$(version_of $n)" = 4 ] && break; sleep 0.1; done
  [ "$(version_of $n)" = 4 ] || die "config version on $n is $(version_of $n), want 4"
done
same_conf uno due
! grep -q 'name: tre' "$(conf uno)" || die "tre still in corosync.conf"
[ "$(vc due nodes --output json | grep -o '"nodeid"' | wc -l)" = 2 ] || die "nodes json after delnode"
[ "$(members due)" = 2 ] || die "nodes after delnode: $(vc due nodes)"
vc due status | grep -qE '^Expected votes: *2$' || die "expected votes not 2 after delnode"
expect_fail 2 "unknown node 'tre' (the cluster's nodes: uno, due)" due delnode tre

# ---- 6. expected -------------------------------------------------------------
expect_fail 2 "invalid expected votes '0': must be between 1 and 2" uno expected 0
expect_fail 2 "invalid expected votes '3': must be between 1 and 2" uno expected 3
expect_fail 2 "invalid expected votes 'two': not a number" uno expected two
# Lose due: uno alone is not quorate, writes fail; `expected 1` recovers it.
tb corosync-stop --kill due
kill "$(cat "$RUN/vmmd-due.pid")"
for ((i = 0; i < 100; i++)); do vc uno status | grep -q '^Quorate: *No' && break; sleep 0.1; done
[ $i -lt 100 ] || die "uno still quorate alone"
vs uno put test/alone 1 >/dev/null 2>&1 && die "write accepted without quorum"
vc uno expected 1
for ((i = 0; i < 50; i++)); do vc uno status | grep -q '^Quorate: *Yes' && break; sleep 0.1; done
[ $i -lt 50 ] || die "expected 1 did not make uno quorate"
vs uno put test/alone 1 >/dev/null || die "write refused after expected 1"
note "vmcluster: ok"
