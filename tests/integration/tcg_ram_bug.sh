#!/usr/bin/env bash
# Why every busy test guest has RAM 8 KiB short of a round size.
#
# QEMU 7.2 under TCG loses guest writes during migration when guest RAM is a
# multiple of 256 KiB (fixed upstream in QEMU 9.0, commit 03bfc2188f,
# "physmem: Fix migration dirty bitmap coherency with TCG memory access").
# This runs N busy migrations (ping-pong uno <-> due) with RAM 1 GiB and
# with RAM 1 GiB - 8 KiB, and counts runs whose guest found stale pages.
# The -8 KiB runs must all verify; the round-size runs show the bug (it is
# probabilistic, so their failures are reported, not required).
# Not part of `make check` (it takes minutes): `make check-tcg-bug`.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
N=${N:-8}
RUN=/run/vmm-tcgbug
trap 'tb down >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT
tb down >/dev/null 2>&1 || true
tb up 2 >/dev/null
mkdir -p "$RUN"

# series MEM: prints the number of migrations after which the guest was damaged.
series() {
  local mem=$1 tag=$2 cur=uno other=due dir bad=0 i
  dir=$RUN/$tag-0
  guest_start "$cur" "$tag-0" "$mem" "vmtest.mode=mem vmtest.mib=256 vmtest.rate=0" >/dev/null 2>&1
  wait_console "$dir" 'VMTEST OK' 2 40
  for ((i = 1; i <= N; i++)); do
    local next=$RUN/$tag-$i
    guest_start "$other" "$tag-$i" "$mem" "vmtest.mode=mem vmtest.mib=256 vmtest.rate=0" --incoming >/dev/null 2>&1
    "$VMGUEST" migrate --from "$dir" --to "$next" --uri "tcp:$(tb addr "$other" migration):61000" \
      --max-bandwidth unlimited --timeout 120 >/dev/null
    dir=$next; local t=$cur; cur=$other; other=$t
    sleep 1
    if ! "$VMGUEST" verify --dir "$dir" >/dev/null 2>&1 || grep -q 'VMTEST FAIL' "$dir/console.log"; then
      bad=$((bad + 1))
      # A damaged guest cannot be trusted further: start a fresh one.
      "$VMGUEST" stop --dir "$dir" >/dev/null 2>&1 || true
      dir=$RUN/$tag-$i-fresh
      guest_start "$cur" "$tag-$i-fresh" "$mem" "vmtest.mode=mem vmtest.mib=256 vmtest.rate=0" >/dev/null 2>&1
      wait_console "$dir" 'VMTEST OK' 2 40
    fi
  done
  "$VMGUEST" stop --dir "$dir" >/dev/null 2>&1 || true
  echo "$bad"
}
round=$(series 1G round)
short=$(series "$MEM_1G" short)
printf '%-26s %s\n' "RAM 1 GiB (round)" "$round of $N migrations damaged the guest"
printf '%-26s %s\n' "RAM 1 GiB - 8 KiB" "$short of $N migrations damaged the guest"
[ "$short" -eq 0 ] || die "guest damaged with RAM 8 KiB short of 1 GiB: that is not the TCG bug"
