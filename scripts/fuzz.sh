#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a short while; the corpus
# grows in $NUAGE_CACHE/fuzz/ between runs. cargo-fuzz needs nightly flags: stable rustc
# accepts them with RUSTC_BOOTSTRAP=1. A crash fails the script and leaves its input in
# fuzz/artifacts/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (default 20)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
seconds=${1:-20}
need_deps  # g++: libFuzzer is C++
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd "$NUAGE_ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none >/dev/null 2>&1 || cargo fuzz build -s none
for target in $(cargo fuzz list); do
    corpus="$NUAGE_CACHE/fuzz/$target"
    mkdir -p "$corpus"
    log "fuzzing $target for ${seconds}s"
    status=0
    cargo fuzz run -s none "$target" "$corpus" -- -max_total_time="$seconds" >"$corpus.log" 2>&1 || status=$?
    grep -E '^Done' "$corpus.log" >&2 || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$corpus.log" >&2
        die "fuzz target $target failed (input in fuzz/artifacts/$target)"
    fi
done
