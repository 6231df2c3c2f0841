#!/usr/bin/env bash
# Builds the Debian package (debian/) with `dpkg-buildpackage -us -uc -b`
# from a copy of this tree, so that the package's `make clean` does not
# touch build/. The copy holds the files git knows or would add (so an
# uncommitted change can be tried), or, outside git, all but build/.
# Output: OUT/vmmigrate_VERSION_ARCH.deb (+ .buildinfo, .changes), the
# build's log in OUT/build.log.
# Usage: mkdeb.sh OUT
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: mkdeb.sh OUT" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
ver=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$top/debian/changelog")
[ -n "$ver" ] || { echo "mkdeb: no version in debian/changelog" >&2; exit 1; }
command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null ||
  { echo "mkdeb: dpkg-dev and debhelper are needed (make deps)" >&2; exit 1; }
src="$out/vmmigrate-$ver"
rm -rf "$src" "$out"/vmmigrate_*.deb "$out"/vmmigrate*.buildinfo "$out"/vmmigrate*.changes
mkdir -p "$src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$top" && git ls-files -co --exclude-standard | while read -r f; do
     [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -C "$src" -xf -
else
  tar -C "$top" --exclude=./build -cf - . | tar -C "$src" -xf -
fi
start=$(date +%s)
echo "deb: building vmmigrate $ver (log: $out/build.log)"
if ! (cd "$src" && DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" \
      dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
  tail -30 "$out/build.log" >&2
  echo "deb: dpkg-buildpackage failed (log: $out/build.log)" >&2
  exit 1
fi
rm -rf "$src"
echo "deb: $(cd "$out" && ls vmmigrate_*.deb) in $(( $(date +%s) - start )) s"
