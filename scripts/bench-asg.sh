#!/usr/bin/env bash
# Auto Scaling benchmark, on real KVM (nested under QEMU where the host has none): a group
# of two instances behind a load balancer, RUNS rounds of
# - an instance's VMM killed → its replacement passing the balancer's health check;
# - load from the LAN side above the group's ALBRequestCountPerTarget target → the new
#   instance serving (healthy in the target group);
# then an instance refresh under a client loop. Prints each round and the medians.
#
# Usage: scripts/bench-asg.sh [--runs R] [OUTDIR]   (default 3 rounds, a temporary OUTDIR)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=3 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$out" ] || out=$(mktemp -d)
mkdir -p "$out"
"$NUAGE_ROOT/scripts/nested/run.sh" --asgbench "$runs" "$out" >"$out/run.log" 2>&1 || {
    tail -n 40 "$out/run.log"
    die "the nested run failed (log: $out/run.log)"
}
console=$out/console.log
grep -q '^@@ asg-refresh' "$console" || die "the scenario did not finish (console: $console)"
grep -E '^@@ asg-(replace|scale|refresh)' "$console"
# median FIELD LINE-KIND: the median of FIELD over the rounds' LINE-KIND lines.
median() {
    grep "^@@ $2 " "$console" | tr ' ' '\n' | sed -n "s/^$1=//p" | sort -n \
        | awk '{ v[NR] = $1 } END { if (NR == 0) print "none"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "rounds=$runs failure_to_replacement_healthy_median_s=$(median replaced_s asg-replace) load_to_new_instance_serving_median_s=$(median scale_out_s asg-scale) scale_in_after_load_median_s=$(median scale_in_s asg-scale)"
