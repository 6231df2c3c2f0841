#!/usr/bin/env bash
# The package as an operator gets it. Installs DEB_DIR's vmmigrate_*.deb
# with apt (and so its dependencies) into a fresh Debian 12 chroot, then:
#  - the files are where the FHS and Debian put them, the postinst made no
#    cluster, the unit and the environment file are in place;
#  - `vmmigrate --help` runs from /usr/sbin; `vmcluster status` fails
#    clearly without vmmd (exit 1) and, with the installed vmmd running
#    standalone on its default paths, says there is no cluster (exit 1);
#    `vmctl list` works; the completion loads;
#  - every man page renders with `man -l` without a warning, every program
#    in /usr/sbin has one, and every command and option its --help shows
#    is in it;
#  - lintian reports no errors;
#  - the package purges cleanly.
# The chroot's base system and apt's downloads are cached in $VMM_PKG_CACHE
# (default /var/cache/vmmigrate-ci) so that a second run is quick; a fresh
# machine builds the cache with debootstrap. Mounts live in a private mount
# namespace: nothing stays mounted when the script ends, however it ends.
# Usage: run.sh DEB_DIR   (root; `make pkg-check` builds the package first)
# Logs: DEB_DIR/pkg-install.log (apt, dpkg), DEB_DIR/lintian.log.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: run.sh DEB_DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "pkg: needs root (debootstrap, chroot)" >&2; exit 1; }
DEB_DIR=$(cd "$1" && pwd)
debs=("$DEB_DIR"/vmmigrate_*.deb)
[ -f "${debs[0]}" ] || { echo "pkg: no vmmigrate_*.deb in '$DEB_DIR' (make deb)" >&2; exit 2; }
DEB=${debs[0]}
CACHE=${VMM_PKG_CACHE:-/var/cache/vmmigrate-ci}
MIRROR=${VMM_PKG_MIRROR:-http://deb.debian.org/debian}
SECURITY=${VMM_PKG_SECURITY:-http://deb.debian.org/debian-security}
SUITE=bookworm
start=$(date +%s)
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "pkg: FAIL: $*"; fail=$((fail + 1)); }

mkdir -p "$CACHE/archives/partial"
exec 9>"$CACHE/lock"
flock 9 # one run at a time uses the cache
base="$CACHE/$SUITE-minbase.tar"
if [ ! -s "$base" ]; then
  echo "pkg: building the $SUITE base system (once; cached in $base)"
  tmpbase=$(mktemp -d "$CACHE/base.XXXXXX")
  if ! debootstrap --variant=minbase --cache-dir="$CACHE/archives" "$SUITE" "$tmpbase" "$MIRROR" \
       >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log"; rm -rf "$tmpbase"
    echo "pkg: debootstrap failed (log: $CACHE/debootstrap.log)" >&2; exit 1
  fi
  tar -C "$tmpbase" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$tmpbase"
fi

root=$(mktemp -d /tmp/vmm-pkg.XXXXXX)
# VMM_PKG_KEEP=1 keeps the chroot for a look after a failure.
trap '[ -n "${VMM_PKG_KEEP:-}" ] && echo "pkg: chroot kept in $root" || rm -rf "$root"' EXIT
tar -C "$root" -xf "$base"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
SOURCES
# Like a node being set up: no service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$DEB" "$root/tmp/"
echo "pkg: installing $(basename "$DEB") with its dependencies into a fresh $SUITE chroot"

# Inside a private mount namespace: /proc, /dev and the apt cache are
# mounted for the chroot only and vanish with the namespace.
unshare --mount --propagation private bash -s "$root" "$CACHE" "$(basename "$DEB")" \
  >"$DEB_DIR/pkg-install.log" 2>&1 <<'INNER' || {
set -euo pipefail
root=$1 cache=$2 deb=$3
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$cache/archives" "$root/var/cache/apt/archives"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
chroot "$root" apt-get update -q
chroot "$root" apt-get install -y -q --no-install-recommends "/tmp/$deb"
INNER
  tail -30 "$DEB_DIR/pkg-install.log"; echo "pkg: install failed (log: $DEB_DIR/pkg-install.log)" >&2; exit 1; }
echo "pkg: installed in $(( $(date +%s) - start )) s"

# Runs a command in the chroot (with /proc; no services of the host).
in_root() {
  unshare --mount --propagation private bash -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' \
    "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"
}

# --- layout: FHS paths, conffile, unit, nothing cluster-like made ---------
for f in /usr/sbin/vmmd /usr/sbin/vmmigrate /usr/sbin/vmrepl /usr/sbin/vmcluster /usr/sbin/vmctl \
         /usr/sbin/vmstore /usr/sbin/vmguest /etc/vmmigrate/vmmd.env /lib/systemd/system/vmmd.service \
         /usr/share/bash-completion/completions/vmmigrate /usr/share/doc/vmmigrate/copyright; do
  [ -e "$root$f" ] && ok || bad "$f is not installed"
done
grep -qx 'ExecStart=/usr/sbin/vmmd run $VMMD_OPTS' "$root/lib/systemd/system/vmmd.service" &&
  grep -qx 'Type=notify' "$root/lib/systemd/system/vmmd.service" && ok ||
  bad "vmmd.service does not start /usr/sbin/vmmd as Type=notify"
grep -qx /etc/vmmigrate/vmmd.env "$root/var/lib/dpkg/info/vmmigrate.conffiles" && ok ||
  bad "/etc/vmmigrate/vmmd.env is not a conffile"
# Without systemd in the chroot deb-systemd-helper records the enable
# (no symlinks: ssh and corosync get none either); systemd applies it.
[ -e "$root/var/lib/systemd/deb-systemd-helper-enabled/vmmd.service.dsh-also" ] && ok ||
  bad "vmmd.service is not enabled"
[ ! -e "$root/var/lib/vmmigrate/corosync.conf" ] && [ ! -e "$root/var/lib/vmmigrate/config.db" ] && ok ||
  bad "installing made cluster state in /var/lib/vmmigrate"
in_root getent passwd libvirt-qemu >/dev/null && ok || bad "postinst did not create the libvirt-qemu user"

# --- the commands from /usr/sbin ------------------------------------------
# expect_run WANT_RC NEEDLE CMD...: stdout+stderr contains NEEDLE.
expect_run() {
  local want=$1 needle=$2 rc=0 out; shift 2
  out=$(in_root "$@" 2>&1) || rc=$?
  if [ "$rc" -ne "$want" ] || [[ $out != *"$needle"* ]]; then
    bad "'$*' (rc $rc, want $want, needle '$needle'): $(printf '%s' "$out" | head -3)"
  else ok; fi
}
expect_run 0 "usage: vmmigrate COMMAND [options]" /usr/sbin/vmmigrate --help
expect_run 0 "usage: vmmigrate migrate VMID TARGET [options]" /usr/sbin/vmmigrate migrate --help
expect_run 1 "vmcluster: cannot reach vmmd at '/run/vmmigrate/vmmd.sock'" /usr/sbin/vmcluster status
expect_run 2 "vmmigrate: invalid VMID 'abc'" /usr/sbin/vmmigrate log abc
# The installed vmmd on its default (FHS) paths, standalone, then stopped.
unshare --mount --propagation private bash -c 'mount -t proc proc "$0/proc" && mount -t tmpfs tmpfs "$0/run" || exit 1
  chroot "$0" env -i PATH=/usr/sbin:/usr/bin LC_ALL=C.UTF-8 /usr/sbin/vmmd run --node pkgtest \
    >"$0/tmp/vmmd.log" 2>&1 9>&- &
  pid=$!
  trap "kill $pid 2>/dev/null" EXIT
  for _ in $(seq 50); do [ -S "$0/run/vmmigrate/vmmd.sock" ] && break; sleep 0.1; done
  chroot "$0" env -i PATH=/usr/sbin:/usr/bin /usr/sbin/vmcluster status >"$0/tmp/status.out" 2>&1; echo $? >"$0/tmp/status.rc"
  chroot "$0" env -i PATH=/usr/sbin:/usr/bin /usr/sbin/vmctl list >"$0/tmp/list.out" 2>&1; echo $? >"$0/tmp/list.rc"
  stat -c %a "$0/run/vmmigrate" >"$0/tmp/run.mode" 2>&1
  kill "$pid"; wait "$pid"; echo $? >"$0/tmp/vmmd.rc"' "$root" || true
[ "$(cat "$root/tmp/status.rc")" = 1 ] &&
  grep -q "vmcluster: this node is not in a cluster (vmmd runs standalone" "$root/tmp/status.out" && ok ||
  bad "vmcluster status with vmmd: rc $(cat "$root/tmp/status.rc"): $(cat "$root/tmp/status.out")"
[ "$(cat "$root/tmp/list.rc")" = 0 ] && grep -q '^VMID  NAME  NODE' "$root/tmp/list.out" && ok ||
  bad "vmctl list: rc $(cat "$root/tmp/list.rc"): $(cat "$root/tmp/list.out")"
[ "$(cat "$root/tmp/vmmd.rc")" = 0 ] && [ -s "$root/var/lib/vmmigrate/config.db" ] &&
  [ "$(stat -c %a "$root/var/lib/vmmigrate")" = 700 ] && ok ||
  bad "vmmd on /var/lib/vmmigrate: rc $(cat "$root/tmp/vmmd.rc"): $(tail -3 "$root/tmp/vmmd.log")"
[ "$(cat "$root/tmp/run.mode")" = 700 ] && ok || bad "/run/vmmigrate: mode $(cat "$root/tmp/run.mode")"
in_root bash -c 'source /usr/share/bash-completion/completions/vmctl && complete -p vmrepl' >/dev/null 2>&1 && ok ||
  bad "the bash completion does not load"

# --- man pages --------------------------------------------------------------
mapfile -t pages < <(in_root dpkg -L vmmigrate | grep '^/usr/share/man/man[1-9]/.*\.gz$')
[ ${#pages[@]} -ge 11 ] && ok || bad "only ${#pages[@]} man pages installed"
for p in "${pages[@]}"; do
  # As lintian renders them: any groff or man warning fails.
  w=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$root$p" 2>&1 >/dev/null) || true
  [ -z "$w" ] && ok || bad "man -l $p: $w"
done
for bin in "$root"/usr/sbin/vm*; do
  prog=${bin##*/}
  page="$root/usr/share/man/man8/$prog.8.gz"
  [ -f "$page" ] || { bad "no man page for /usr/sbin/$prog"; continue; }
  text=$(MANWIDTH=2000 LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null | col -b)
  cmds=$(in_root "/usr/sbin/$prog" --help | sed -n '/^commands:/,/^Run /{/^  /s/^  \([^ ]*\).*/\1/p}')
  [ -n "$cmds" ] || bad "$prog --help lists no commands"
  for c in $cmds; do
    grep -q "^ *$prog $c\b" <<<"$text" && ok || bad "$prog.8 lacks the command '$c'"
    for o in $(in_root "/usr/sbin/$prog" "$c" --help | grep -o '^  --[a-z0-9_-]*'); do
      grep -qe "$o\b" <<<"$text" && ok || bad "$prog.8 lacks '$o' of '$prog $c --help'"
    done
  done
done

# --- lintian ----------------------------------------------------------------
changes=("$DEB_DIR"/vmmigrate_*.changes)
if lintian --fail-on error "$DEB" ${changes[0]:+"${changes[0]}"} >"$DEB_DIR/lintian.log" 2>&1; then ok; else
  bad "lintian reports errors: $(grep '^E:' "$DEB_DIR/lintian.log" | head -5)"; fi
sed -n 's/^\([EW]\): /pkg: lintian \1: /p' "$DEB_DIR/lintian.log"

# --- purge --------------------------------------------------------------------
if unshare --mount --propagation private bash -c 'mount -t proc proc "$0/proc" &&
     chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg --purge vmmigrate' "$root" \
     >>"$DEB_DIR/pkg-install.log" 2>&1 && [ ! -e "$root/usr/sbin/vmmd" ] &&
     [ ! -e "$root/etc/vmmigrate/vmmd.env" ]; then ok; else bad "dpkg --purge vmmigrate failed"; fi

echo "pkg: $pass passed, $fail failed in $(( $(date +%s) - start )) s"
[ $fail -eq 0 ]
