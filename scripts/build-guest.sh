#!/bin/bash
# Build the vmmigrate test guest (DESIGN.md §6, tests/guest/README.md):
#   OUTDIR/vmlinux            uncompressed kernel from Debian's linux-image-*-amd64
#   OUTDIR/initramfs.cpio.gz  busybox-static, virtio disk modules, /init, vmtest
# Silent when the outputs are current; one line on success, one on failure.
# The kernel package is downloaded into OUTDIR/pkg, never installed.
set -eEuo pipefail

die() {
	echo "build-guest: $*" >&2
	exit 1
}
# Anything failing without its own message still gets one line naming it (once:
# subshells leave the naming to the shell that started them).
trap '((BASH_SUBSHELL == 0)) || exit 1; die "failed at line $LINENO: $BASH_COMMAND"' ERR

[[ $# -eq 1 ]] || { echo "build-guest: usage: build-guest.sh OUTDIR" >&2; exit 2; }
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$top/tests/guest
out=$1
mkdir -p "$out/pkg" 2>/dev/null || die "cannot create $out/pkg"
out=$(cd "$out" && pwd)
log=$out/build.log
stamp=$out/kernel.stamp # "package version" the outputs were built from
tree=$out/pkg/root      # the parts of the package we use
sources=("$src/vmtest.c" "$src/init" "$top/scripts/build-guest.sh")

# Tests may build concurrently into one OUTDIR.
exec 9>"$out/.lock"
flock 9

# Runs a noisy command with its output in the log; on failure names it in one line,
# with the tool's first error (gcc's last line is only a caret).
step() {
	local what=$1 mark
	shift
	mark=$(wc -l <"$log")
	"$@" >>"$log" 2>&1 && return 0
	die "$what failed: $(tail -n "+$((mark + 1))" "$log" | grep -m 1 -E 'error|E:' ||
		tail -n 1 "$log") (log: $log)"
}

# "package version" of the kernel linux-image-amd64 currently points to, or nothing.
apt_kernel() {
	local name ver
	name=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
	[[ -n $name ]] || return 0
	ver=$(apt-cache policy "$name" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }') || true
	if [[ -n $ver && $ver != "(none)" ]]; then
		echo "$name $ver"
	fi
}

# The candidate kernel changes only with apt's lists; asking apt costs ~1.5 s.
lists_changed() {
	[[ ! -f $stamp ]] ||
		[[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newer "$stamp" 2>/dev/null) ]]
}

have_outputs=false
if [[ -f $out/vmlinux && -f $out/initramfs.cpio.gz && -f $stamp && -d $tree/boot ]]; then
	have_outputs=true
fi
sources_changed=true
if $have_outputs && [[ -z $(find "${sources[@]}" -newer "$out/initramfs.cpio.gz") ]]; then
	sources_changed=false
fi
if ! $sources_changed && ! lists_changed; then
	exit 0
fi

: >"$log"
if lists_changed; then
	ident=$(apt_kernel)
	if [[ -z $ident ]]; then
		step "apt-get update" apt-get update -q
		ident=$(apt_kernel)
		[[ -n $ident ]] || die "apt knows no linux-image-*-amd64 (apt-cache depends linux-image-amd64)"
	fi
else
	ident=$(cat "$stamp")
fi
if ! $sources_changed && [[ $ident == "$(cat "$stamp")" ]]; then
	touch "$stamp"
	exit 0
fi
read -r kpkg kver <<<"$ident"
kabi=${kpkg#linux-image-}
moddir=lib/modules/$kabi

# --- kernel: download, unpack what we use, extract vmlinux --------------------------------

# Like the kernel's scripts/extract-vmlinux: try every compressor's magic in vmlinuz.
extract_vmlinux() {
	local img=$1 dst=$2 magic cmd off
	while read -r magic cmd; do
		command -v "${cmd%% *}" >/dev/null || continue
		for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1 || true); do
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

if ! $have_outputs || [[ $ident != "$(cat "$stamp")" ]]; then
	deb=$out/pkg/${kpkg}_${kver//:/%3a}_amd64.deb
	if [[ ! -f $deb ]]; then
		rm -f "$out"/pkg/*.deb
		# -o Sandbox: apt cannot drop to user _apt in a root-owned OUTDIR, and would warn.
		get=(apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver")
		if ! (cd "$out/pkg" && "${get[@]}") >>"$log" 2>&1; then
			step "apt-get update" apt-get update -q
			(cd "$out/pkg" && "${get[@]}") >>"$log" 2>&1 ||
				die "apt-get download $kpkg=$kver failed: $(tail -n 1 "$log")"
		fi
		[[ -f $deb ]] || die "apt-get download $kpkg=$kver did not produce $deb"
	fi
	rm -rf "$tree"
	mkdir -p "$tree"
	step "unpacking $deb" tar -x -C "$tree" --wildcards -f <(dpkg-deb --fsys-tarfile "$deb") \
		"./boot/vmlinuz-$kabi" "./boot/config-$kabi" \
		"./$moddir/kernel/drivers/virtio/*" "./$moddir/kernel/drivers/block/virtio_blk.ko*"
	extract_vmlinux "$tree/boot/vmlinuz-$kabi" "$out/vmlinux.tmp" ||
		die "no ELF kernel found inside $tree/boot/vmlinuz-$kabi"
	mv "$out/vmlinux.tmp" "$out/vmlinux"
fi

# --- modules for virtio-blk over virtio-pci, with their dependencies, in load order -------
declare -A seen=()
modules=()
add_module() {
	local name=$1 ko dep
	[[ -z ${seen[$name]:-} ]] || return 0
	seen[$name]=1
	ko=$(find "$tree/$moddir" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) -print -quit)
	[[ -n $ko ]] || die "module $name not found in $kpkg"
	for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
		add_module "$dep"
	done
	modules+=("$ko")
}
for sym in VIRTIO_PCI:virtio_pci VIRTIO_BLK:virtio_blk; do
	case $(sed -n "s/^CONFIG_${sym%%:*}=//p" "$tree/boot/config-$kabi") in
	y) ;; # built in
	m) add_module "${sym#*:}" ;;
	*) die "kernel $kabi lacks CONFIG_${sym%%:*}" ;;
	esac
done

# --- initramfs ----------------------------------------------------------------------------
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage"/{bin,dev,proc,sys,lib/modules}
[[ -f /bin/busybox ]] || die "no /bin/busybox: install busybox-static"
if readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter'; then
	die "/bin/busybox is dynamically linked: install busybox-static"
fi
cp /bin/busybox "$stage/bin/busybox"
for applet in sh mount insmod; do
	ln -s busybox "$stage/bin/$applet"
done
# The kernel opens /dev/console for init before anything mounts devtmpfs.
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || die "mknod dev/console failed (needs root)"
install -m 755 "$src/init" "$stage/init"
step "compiling vmtest.c" gcc -static -O2 -Wall -Wextra -Werror -pthread -s \
	-o "$stage/bin/vmtest" "$src/vmtest.c"
: >"$stage/lib/modules/load-order"
for ko in "${modules[@]}"; do
	base=$(basename "$ko")
	case $base in
	*.ko.xz) xz -dc "$ko" >"$stage/lib/modules/${base%.xz}" ;;
	*.ko.zst) zstd -qdc "$ko" >"$stage/lib/modules/${base%.zst}" ;;
	*.ko.gz) gzip -dc "$ko" >"$stage/lib/modules/${base%.gz}" ;;
	*) cp "$ko" "$stage/lib/modules/" ;;
	esac
	echo "${base%.ko*}.ko" >>"$stage/lib/modules/load-order"
done
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
rm -rf "$stage"
echo "$ident" >"$stamp"
echo "guest: built $out (kernel $kabi)"
