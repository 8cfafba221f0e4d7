#!/usr/bin/env bash
# The main job: start nuaged on its embedded defaults, register the default image (Debian's
# stock cloud kernel, the test initramfs, an ext4 root disk), launch an instance of it with
# `nuage run-instances`, and show its console and life cycle until the guest powers off.
# Runs on this host's KVM when it has hardware virtualization, else nested under QEMU.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
need_deps
exec "$NUAGE_ROOT/scripts/nested/run.sh" --demo "${1:-$NUAGE_ROOT/target/launch}"
