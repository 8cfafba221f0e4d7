#!/usr/bin/env bash
# Load balancer benchmark: nuage-lb against HAProxy on the same backends, the same client
# and the same cores, in one run, in network namespaces of the run's own (no VMs).
#
#   client ns (lb_load) ──▶ balancer ns: nuage-lb :8080 and haproxy :8081 ──▶ backends ns
#                                                                     a, b: fast; c: +DELAY ms
#
# For 1, 16 and 128 concurrent connections, each balancer in turn (alternating, RUNS
# rounds): requests/s and p50/p99 latency of every request, nuage/HAProxy ratios
# (HAProxy `balance leastconn`, nuage `least_outstanding_requests`). Then nuage's
# round_robin against least_outstanding_requests: p99 with the slow backend.
#
# Usage: scripts/bench-lb.sh [--seconds N] [--runs R] [--delay-ms D]   (defaults 5, 2, 50)
# Needs root; installs haproxy (Debian's package) if it is not on PATH.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
seconds=5 runs=2 delay=50
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --delay-ms) delay=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (network namespaces)"
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
cd "$NUAGE_ROOT"
cargo build --release --locked -q --bin nuage-lb --example lb_backend --example lb_load
lb_bin=$NUAGE_ROOT/target/release/nuage-lb
backend_bin=$NUAGE_ROOT/target/release/examples/lb_backend
load_bin=$NUAGE_ROOT/target/release/examples/lb_load

out=$(mktemp -d)
tag=nlb$$
back=$tag-back mid=$tag-mid client=$tag-client
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ns in "$back" "$mid" "$client"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$out"
}
trap cleanup EXIT
for ns in "$back" "$mid" "$client"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$mid" link add to-back type veth peer name eth0 netns "$back"
ip -n "$mid" link add to-client type veth peer name eth0 netns "$client"
ip -n "$mid" addr add 10.77.1.1/24 dev to-back
ip -n "$mid" addr add 10.77.2.1/24 dev to-client
ip -n "$back" addr add 10.77.1.11/24 dev eth0
ip -n "$back" addr add 10.77.1.12/24 dev eth0
ip -n "$back" addr add 10.77.1.13/24 dev eth0
ip -n "$client" addr add 10.77.2.2/24 dev eth0
for ns_dev in "$mid to-back" "$mid to-client" "$back eth0" "$client eth0"; do
    set -- $ns_dev
    ip -n "$1" link set "$2" up
done

ip netns exec "$back" "$backend_bin" --listen 10.77.1.11:80 --name a & pids+=($!)
ip netns exec "$back" "$backend_bin" --listen 10.77.1.12:80 --name b & pids+=($!)
ip netns exec "$back" "$backend_bin" --listen 10.77.1.13:80 --name c --delay-ms "$delay" & pids+=($!)

# nuage-lb's configuration, with the algorithm given.
lb_config() {
    cat <<EOF
{"name": "bench", "listeners": [{"address": "10.77.2.1:8080", "protocol": "HTTP", "target_group": "tg"}],
 "target_groups": [{"id": "tg", "protocol": "HTTP", "algorithm": "$1",
   "health_check": {"protocol": "HTTP", "port": null, "path": "/", "matcher": "200", "interval_seconds": 5,
                    "timeout_seconds": 2, "healthy_threshold": 2, "unhealthy_threshold": 2},
   "targets": [{"id": "a", "address": "10.77.1.11:80", "draining": false},
               {"id": "b", "address": "10.77.1.12:80", "draining": false},
               {"id": "c", "address": "10.77.1.13:80", "draining": false}]}]}
EOF
}
lb_config least_outstanding_requests > "$out/lb.json"
ip netns exec "$mid" "$lb_bin" --config "$out/lb.json" --status "$out/status.json" --log-level warn & lb_pid=$!
pids+=($lb_pid)
cat > "$out/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 10.77.2.1:8081
    default_backend backends
backend backends
    balance leastconn
    server a 10.77.1.11:80 check inter 5s
    server b 10.77.1.12:80 check inter 5s
    server c 10.77.1.13:80 check inter 5s
EOF
ip netns exec "$mid" haproxy -f "$out/haproxy.cfg" -db & pids+=($!)

# Both balancers answer, and nuage-lb calls every target healthy, before anything counts.
ready() {
    [ "$(grep -oE '"health": ?"healthy"' "$out/status.json" 2>/dev/null | wc -l)" = 3 ] \
        && ip netns exec "$client" curl -sf -o /dev/null http://10.77.2.1:8080/ \
        && ip netns exec "$client" curl -sf -o /dev/null http://10.77.2.1:8081/
}
for _ in $(seq 100); do ready && break; sleep 0.2; done
ready || die "the balancers are not serving (nuage-lb's targets healthy, both answering)"

# PORT CONNECTIONS: "requests/s p50_ms p99_ms failures" from the benchmark's client
# (examples/lb_load.rs: keep-alive connections, one request in flight each, every latency
# kept). wrk was tried first: its percentiles put a tenth of all requests past 30 ms where
# fewer than 1 in 300 went to the slow backend, for HAProxy and nuage alike.
measure() {
    ip netns exec "$client" "$load_bin" --address "10.77.2.1:$1" --connections "$2" --seconds "$seconds"
}

results=$out/results
for round in $(seq "$runs"); do
    for connections in 1 16 128; do
        # Alternate which goes first, so neither always meets a warmer machine.
        if [ $(( round % 2 )) = 1 ]; then order="8080 8081"; else order="8081 8080"; fi
        for port in $order; do
            name=$([ "$port" = 8080 ] && echo nuage || echo haproxy)
            echo "$name $connections $(measure "$port" "$connections")" >> "$results"
        done
    done
done
# The algorithms, nuage against nuage, with the slow backend in the group.
for round in $(seq "$runs"); do
    for algorithm in round_robin least_outstanding_requests; do
        lb_config "$algorithm" > "$out/lb.json"
        kill -HUP "$lb_pid"
        sleep 0.5
        echo "$algorithm 16 $(measure 8080 16)" >> "$results"
    done
done

python3 - "$results" "$seconds" "$runs" "$delay" <<'PY'
import statistics, sys
path, seconds, runs, delay = sys.argv[1:]
rows = {}
for line in open(path):
    name, connections, rps, p50, p99, failures = line.split()
    rows.setdefault((name, int(connections)), []).append((float(rps), float(p50), float(p99), failures))
median = lambda values: statistics.median(values)
print(f"Load balancer benchmark: {runs} runs of {seconds}s per row (median), backends a, b fast, c +{delay} ms")
print(f"  {'conns':>5} {'':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>8}")
for connections in (1, 16, 128):
    figures = {}
    for name in ("nuage", "haproxy"):
        samples = rows[(name, connections)]
        figures[name] = [median([s[i] for s in samples]) for i in range(3)]
        errors = ",".join(sorted({s[3] for s in samples}))
        print(f"  {connections:>5} {name:8} {figures[name][0]:>9.0f} {figures[name][1]:>8.2f} {figures[name][2]:>8.2f} {errors:>8}")
    n, h = figures["nuage"], figures["haproxy"]
    print(f"  {connections:>5} {'ratio':8} {n[0] / h[0]:>8.2f}x {n[1] / h[1]:>7.2f}x {n[2] / h[2]:>7.2f}x   (nuage/HAProxy)")
rr = median([s[2] for s in rows[("round_robin", 16)]])
lor = median([s[2] for s in rows[("least_outstanding_requests", 16)]])
rr_rps = median([s[0] for s in rows[("round_robin", 16)]])
lor_rps = median([s[0] for s in rows[("least_outstanding_requests", 16)]])
print(f"  nuage, 16 connections: round_robin p99 {rr:.2f} ms ({rr_rps:.0f} req/s), "
      f"least_outstanding_requests p99 {lor:.2f} ms ({lor_rps:.0f} req/s): {lor / rr:.2f}x")
PY
