#!/usr/bin/env bash
# Installs the Debian packages vmmigrate builds and tests with, if any is
# missing. Quiet and quick (one dpkg-query) when all are present.
set -euo pipefail

PKGS=(
  gcc make pkg-config clang libclang-rt-14-dev valgrind sqlite3 bc
  libjson-c-dev libcmocka-dev libssh2-1-dev libssl-dev libzstd-dev liburing-dev libsqlite3-dev libnbd-dev
  corosync libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev libcorosync-common-dev
  libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
  qemu-system-x86 qemu-utils openssh-server openssh-client rsync
  busybox-static cpio iproute2 tini procps kmod
  dpkg-dev debhelper lintian debootstrap man-db groff-base bsdextrautils
)

declare -A have=()
while read -r pkg status; do
  [ "$status" = "installed" ] && have[${pkg%%:*}]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PKGS[@]}" 2>/dev/null || true)
missing=()
for p in "${PKGS[@]}"; do [ -n "${have[$p]:-}" ] || missing+=("$p"); done
# libvirt's embedded QEMU driver (the migration's CPU check) needs the user
# that libvirt-daemon-system would create; we do not install that package.
ensure_user() {
  getent passwd libvirt-qemu >/dev/null && return 0
  [ "$(id -u)" -eq 0 ] || { echo "deps: user libvirt-qemu missing; run as root" >&2; exit 1; }
  useradd --system --user-group --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin libvirt-qemu
}
[ ${#missing[@]} -eq 0 ] && { ensure_user; exit 0; }

[ "$(id -u)" -eq 0 ] || { echo "deps: missing packages (${missing[*]}); run as root" >&2; exit 1; }
echo "deps: installing ${missing[*]}"
# Packages must not start their services (sshd, corosync, libvirtd) in the
# root namespace: the testbed starts its own per node.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 0755 "$policy"; made_policy=1
fi
trap '[ $made_policy -eq 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/vmm-deps.log 2>&1; then
  apt-get update -q >>/tmp/vmm-deps.log 2>&1 || true
  apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/vmm-deps.log 2>&1 || {
    echo "deps: apt-get install failed for: ${missing[*]} (log: /tmp/vmm-deps.log)" >&2; exit 1; }
fi
ensure_user
