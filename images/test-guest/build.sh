#!/usr/bin/env bash
# Builds the test guest's initramfs: busybox (static), images/test-guest/init, the I/O
# benchmark nuage-bench, the vsock probe nuage-vsock, dropbear (the SSH server, with its
# libraries) and, when a
# kernel's module tree is given, the virtio modules /init loads (stock distribution kernels
# build virtio as modules).
# Usage: images/test-guest/build.sh OUTPUT.cpio [KERNEL_MODULES_DIR]
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/common.sh"
out=${1:?usage: build.sh OUTPUT.cpio [KERNEL_MODULES_DIR]}
modules=${2:-}
need_deps
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/modules"
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$NUAGE_ROOT/images/test-guest/init" "$root/init"
stage_programs "$root" dropbear dropbearkey
for tool in $TEST_GUEST_TOOLS; do
    cp "$(test_guest_tool $tool)" "$root/bin/$tool"
done
if [ -n "$modules" ]; then
    stage_kernel_modules "$modules" "$root/modules" \
        virtio_mmio virtio_blk virtio_net virtio-rng vmw_vsock_virtio_transport vfat nls_cp437 nls_ascii
fi
(cd "$root" && find . | cpio -o -H newc --quiet) > "$out"
