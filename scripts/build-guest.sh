#!/bin/bash
# Build the vmmigrate test guest (DESIGN.md §6, tests/guest/README.md):
#   OUTDIR/vmlinux            uncompressed kernel from Debian's linux-image-*-amd64
#   OUTDIR/initramfs.cpio.gz  busybox-static, virtio disk modules, /init, vmtest
# Silent when the outputs are current; one line on success, one on failure.
set -euo pipefail

die() { echo "build-guest: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: build-guest.sh OUTDIR"
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$top/tests/guest
out=$1
mkdir -p "$out/pkg" || die "cannot create $out"
out=$(cd "$out" && pwd)
log=$out/build.log
sources=("$src/vmtest.c" "$src/init" "$top/scripts/build-guest.sh")

# Tests may build concurrently into one OUTDIR.
exec 9>"$out/.lock"
flock 9

# Runs a noisy command with its output in the log; on failure names it in one line.
step() {
	local what=$1
	shift
	if ! "$@" >>"$log" 2>&1; then
		die "$what failed: $(tail -n 1 "$log") (log: $log)"
	fi
}

# "name version" of the kernel package linux-image-amd64 currently points to.
kernel_ident() {
	local name ver
	name=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[[ -n $name ]] || return 0
	ver=$(apt-cache policy "$name" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
	[[ -n $ver && $ver != "(none)" ]] && echo "$name $ver"
}

stamp=$out/kernel.stamp
if [[ -f $out/vmlinux && -f $out/initramfs.cpio.gz && -f $stamp ]] &&
	[[ -z $(find "${sources[@]}" -newer "$out/initramfs.cpio.gz") ]]; then
	# The candidate kernel changes only with apt's lists, and asking apt costs ~1 s.
	if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newer "$stamp" 2>/dev/null) ]]; then
		exit 0
	fi
	if [[ $(kernel_ident) == "$(cat "$stamp")" ]]; then
		touch "$stamp"
		exit 0
	fi
fi

: >"$log"

# --- kernel package: download (never install) and unpack what we need -----------------
ident=$(kernel_ident)
if [[ -z $ident ]]; then
	step "apt-get update" apt-get update -q
	ident=$(kernel_ident)
	[[ -n $ident ]] || die "no linux-image-*-amd64 known to apt (apt-cache depends linux-image-amd64)"
fi
read -r kpkg kver <<<"$ident"
kabi=${kpkg#linux-image-}
deb=$out/pkg/${kpkg}_${kver//:/%3a}_amd64.deb
if [[ ! -f $deb ]]; then
	rm -f "$out"/pkg/*.deb
	# Root-owned OUTDIR: without this, apt warns that it cannot drop to _apt.
	if ! (cd "$out/pkg" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver") >>"$log" 2>&1; then
		step "apt-get update" apt-get update -q
		(cd "$out/pkg" && step "apt-get download $kpkg" \
			apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver")
	fi
	[[ -f $deb ]] || die "apt-get download $kpkg=$kver did not produce $deb"
fi

tree=$out/pkg/root
rm -rf "$tree"
mkdir -p "$tree"
moddir=lib/modules/$kabi
step "unpacking $deb" tar -x -C "$tree" --wildcards -f <(dpkg-deb --fsys-tarfile "$deb") \
	"./boot/vmlinuz-$kabi" "./boot/config-$kabi" \
	"./$moddir/kernel/drivers/virtio/*" "./$moddir/kernel/drivers/block/virtio_blk.ko*"

# --- vmlinux: find the compressed payload in vmlinuz (like the kernel's extract-vmlinux) --
# Each compressor's magic, and the command that decompresses from stdin.
try_payloads() {
	local img=$1 dst=$2 magic cmd off
	while read -r magic cmd; do
		command -v "${cmd%% *}" >/dev/null || continue
		for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1); do
			# Trailing data after the stream makes decompressors complain: judge the output.
			tail -c "+$((off + 1))" "$img" | $cmd >"$dst" 2>/dev/null || true
			if [[ $(head -c 4 "$dst" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
				return 0
			fi
		done
	done <<-'EOF'
		\x1f\x8b\x08 gzip -dc
		\xfd7zXZ\x00 xz -dc
		BZh bzip2 -dc
		\x5d\x00\x00\x00 xz -dc --format=lzma
		\x89\x4c\x5a lzop -dc
		\x02\x21\x4c\x18 lz4 -dc
		\x28\xb5\x2f\xfd zstd -dc
	EOF
	return 1
}
try_payloads "$tree/boot/vmlinuz-$kabi" "$out/vmlinux.tmp" ||
	die "no ELF kernel found inside $tree/boot/vmlinuz-$kabi"

# --- modules for virtio-blk over virtio-pci, with their dependencies, in load order ------
config=$tree/boot/config-$kabi
declare -A seen=()
order=()
add_module() {
	local name=$1 ko dep
	[[ -z ${seen[$name]:-} ]] || return 0
	seen[$name]=1
	ko=$(find "$tree/$moddir" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) -print -quit)
	[[ -n $ko ]] || die "module $name not found in $deb"
	for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
		add_module "$dep"
	done
	order+=("$ko")
}
for sym in VIRTIO_PCI:virtio_pci VIRTIO_BLK:virtio_blk; do
	case $(sed -n "s/^CONFIG_${sym%%:*}=//p" "$config") in
	y) ;;
	m) add_module "${sym#*:}" ;;
	*) die "kernel $kabi has no CONFIG_${sym%%:*} (see $config)" ;;
	esac
done

# --- initramfs ---------------------------------------------------------------------------
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage"/{bin,dev,proc,sys,lib/modules}
readelf -l /bin/busybox 2>/dev/null | grep -q 'Requesting program interpreter' &&
	die "/bin/busybox is dynamically linked: install busybox-static"
cp /bin/busybox "$stage/bin/busybox" || die "no /bin/busybox: install busybox-static"
for applet in sh mount insmod; do
	ln -s busybox "$stage/bin/$applet"
done
# The kernel opens /dev/console for init before devtmpfs is mounted.
mknod -m 600 "$stage/dev/console" c 5 1 || die "mknod dev/console failed (needs root)"
install -m 755 "$src/init" "$stage/init"
step "compiling vmtest.c" gcc -static -O2 -Wall -Wextra -Werror -pthread -s \
	-o "$stage/bin/vmtest" "$src/vmtest.c"
for ko in "${order[@]}"; do
	base=$(basename "$ko")
	case $base in
	*.ko.xz) xz -dc "$ko" >"$stage/lib/modules/${base%.xz}" ;;
	*.ko.zst) zstd -qdc "$ko" >"$stage/lib/modules/${base%.zst}" ;;
	*.ko.gz) gzip -dc "$ko" >"$stage/lib/modules/${base%.gz}" ;;
	*) cp "$ko" "$stage/lib/modules/" ;;
	esac
	echo "${base%.ko*}.ko" >>"$stage/lib/modules/load-order"
done
touch "$stage/lib/modules/load-order"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$out/initramfs.cpio.gz.tmp" ||
	die "packing the initramfs failed"

mv "$out/vmlinux.tmp" "$out/vmlinux"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "$ident" >"$stamp"
rm -rf "$stage"
echo "guest: built $out (kernel $kabi)"
