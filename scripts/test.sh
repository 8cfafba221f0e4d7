#!/usr/bin/env bash
# The test command: the package step (scripts/deps.sh), the lint gate (rustfmt, clippy with
# warnings as errors, with and without the daemon feature), unit tests, tiny-guest tests on this
# host's /dev/kvm, a short fuzzing run of the virtqueue and frame parsers, then the real-KVM
# end-to-end tests with Debian's stock kernel (nested under QEMU where the host has no
# hardware virtualization). Downloads are cached in ~/.cache/nuage.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$NUAGE_ROOT"

[ -c /dev/kvm ] || die "/dev/kvm is missing: nuage needs KVM (software PVM or hardware)"
need_deps

log "lint gate: cargo fmt --check, cargo clippy -D warnings"
# cargo subcommand, rustup component, Debian package
for tool in "fmt rustfmt rustfmt" "clippy clippy rust-clippy"; do
    set -- $tool
    cargo "$1" --version >/dev/null 2>&1 && continue
    command -v rustup >/dev/null && rustup component add "$2" >/dev/null 2>&1 && continue
    die "cargo $1 is missing (rustup component $2, or Debian package $3)"
done
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --no-default-features -- -D warnings

log "unit and tiny-guest tests"
cargo test --locked
log "the package step repairs a QEMU version clash (throwaway root)"
cargo test --locked --test deps -- --ignored
log "fuzzing the guest-facing parsers briefly"
"$NUAGE_ROOT/scripts/fuzz.sh" "${NUAGE_FUZZ_SECONDS:-20}"
log "real-KVM end-to-end tests (stock Debian kernel): the scenario groups side by side, then their checks"
# The harness's own failure (an L1 that never finished) shows as the checks' failure.
nested=$NUAGE_ROOT/target/nested-e2e-groups
"$NUAGE_ROOT/scripts/nested/run.sh" --groups "main asg env cloud" "$nested" || true
NUAGE_NESTED_OUT=$nested cargo test --locked --test nested_e2e -- --ignored --test-threads 1
