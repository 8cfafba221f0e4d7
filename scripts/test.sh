#!/usr/bin/env bash
# The test command: the package step (scripts/deps.sh), unit tests, tiny-guest tests on this
# host's /dev/kvm, a short fuzzing run of the virtqueue and frame parsers, then the real-KVM
# end-to-end tests with Debian's stock kernel (nested under QEMU where the host has no
# hardware virtualization). Downloads are cached in ~/.cache/nuage.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$NUAGE_ROOT"

[ -c /dev/kvm ] || die "/dev/kvm is missing: nuage needs KVM (software PVM or hardware)"
need_deps

log "unit and tiny-guest tests"
cargo test --locked
log "the package step repairs a QEMU version clash (throwaway root)"
cargo test --locked --test deps -- --ignored
log "fuzzing the guest-facing parsers briefly"
"$NUAGE_ROOT/scripts/fuzz.sh" "${NUAGE_FUZZ_SECONDS:-20}"
log "real-KVM end-to-end tests (stock Debian kernel)"
cargo test --locked --test nested_e2e -- --ignored --test-threads 1
