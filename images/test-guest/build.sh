#!/usr/bin/env bash
# Builds the test guest's initramfs: busybox (static), images/test-guest/init, the I/O
# benchmark nuage-bench, the vsock probe nuage-vsock and, when a
# kernel's module tree is given, the virtio modules /init loads (stock distribution kernels
# build virtio as modules).
# Usage: images/test-guest/build.sh OUTPUT.cpio [KERNEL_MODULES_DIR]
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/common.sh"
out=${1:?usage: build.sh OUTPUT.cpio [KERNEL_MODULES_DIR]}
modules=${2:-}
need_packages busybox-static cpio
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/modules"
cp /bin/busybox "$root/bin/busybox"
cp "$NUAGE_ROOT/images/test-guest/init" "$root/init"
for tool in $TEST_GUEST_TOOLS; do
    cp "$(test_guest_tool $tool)" "$root/bin/$tool"
done
if [ -n "$modules" ]; then
    # In dependency order: /init loads them as listed.
    for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_mmio \
             drivers/block/virtio_blk net/core/failover drivers/net/net_failover drivers/net/virtio_net \
             drivers/char/hw_random/virtio-rng \
             net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common \
             net/vmw_vsock/vmw_vsock_virtio_transport; do
        cp "$modules/kernel/$m.ko" "$root/modules/"
        echo "${m##*/}" >> "$root/modules/order"
    done
fi
(cd "$root" && find . | cpio -o -H newc --quiet) > "$out"
