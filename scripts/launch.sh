#!/usr/bin/env bash
# The main job, until the nuaged daemon exists: boot the default guest (Debian's stock cloud
# kernel with the test initramfs, 2 vCPUs, 256 MiB) with nuage-vmm and show its console.
# Runs on this host's KVM when it has hardware virtualization, else nested under QEMU.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
need_packages busybox-static cpio lz4
exec "$NUAGE_ROOT/scripts/nested/run.sh" --demo "${1:-$NUAGE_ROOT/target/launch}"
