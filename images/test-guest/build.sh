#!/usr/bin/env bash
# Builds the test guest's initramfs: busybox (static) and images/test-guest/init.
# Usage: images/test-guest/build.sh OUTPUT.cpio
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/common.sh"
out=${1:?usage: build.sh OUTPUT.cpio}
need_packages busybox-static cpio
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys"
cp /bin/busybox "$root/bin/busybox"
cp "$NUAGE_ROOT/images/test-guest/init" "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$out"
