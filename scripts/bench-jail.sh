#!/usr/bin/env bash
# Jail benchmark: what `nuage-vmm --jail` (as nuaged runs every VMM) adds to a boot. A tiny
# guest that powers off at once boots RUNS times jailed and RUNS times unjailed, alternating,
# on this host's /dev/kvm; the report gives the medians of nuage-vmm's own part of a boot
# (start to vCPUs starting, where the jail does all its work) and of the whole run, and the
# difference. Set it beside scripts/bench-boot.sh's boot times for the share of a real boot.
#
# Usage: scripts/bench-jail.sh [--runs RUNS]   (default 30; needs root)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=30
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (the jail needs it)"
[ -c /dev/kvm ] || die "/dev/kvm is missing"
cd "$NUAGE_ROOT"
cargo build --release --locked -q --bin nuage-vmm --example bench_jail
"$NUAGE_ROOT/target/release/examples/bench_jail" "$NUAGE_ROOT/target/release/nuage-vmm" "$runs"
