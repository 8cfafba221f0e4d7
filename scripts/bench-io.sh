#!/usr/bin/env bash
# Block and network benchmark of nuage-vmm's virtio devices. On the host, nuage-bench runs
# sequential and random 4 KiB (queue depth 1), random 4 KiB at queue depth 32 and sequential
# 1 MiB reads and writes on a 256 MiB raw volume file; then a guest (Debian's stock kernel,
# 2 vCPUs) runs the same tests on that file as its virtio disk, with O_DIRECT, and sends one
# TCP stream over virtio-net to the tap's host end inside a network namespace of the run's
# own. With --other-vmm, another VMM (Firecracker's configuration format) runs the same
# guest on the same file and tap in the same run, and the report gives nuage/other ratios:
# under nested emulation, VMM against VMM on the same path is the honest comparison.
# nuage-vmm also runs the guest without its seccomp filters and in its jail (as nuaged runs
# it), for what each costs. Every VMM runs the guest once in each of three rounds, in an
# order rotated every round, and the report gives medians (and each round's figure), and
# how many interrupts the guest took per block request and per MiB sent (its
# /proc/interrupts): what notification suppression saved, which throughput only hints at.
#
# With --baseline-vmm, a nuage-vmm built from another commit runs the guest instead of the
# unfiltered and jailed ones, for what a change gains.
# Usage: scripts/bench-io.sh [--seconds N] [--other-vmm PATH] [--baseline-vmm PATH]
#        (N seconds per test, default 3)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
seconds=3 vmms=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --other-vmm) vmms+=(--other-vmm "$2"); shift 2 ;;
        --baseline-vmm) vmms+=(--baseline-vmm "$2"); shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
out=$NUAGE_ROOT/target/bench-io
"$NUAGE_ROOT/scripts/nested/run.sh" --iobench "$seconds" "${vmms[@]}" "$out" > "$out.log" 2>&1 \
    || die "benchmark run failed, see $out.log"
where=$(hardware_kvm && echo "hardware KVM" || echo "nested KVM under QEMU TCG")
python3 - "$out/console.log" "$where" <<'PY'
import re, statistics, sys
path, where = sys.argv[1], sys.argv[2]
KINDS = ("nuage", "unfiltered", "jailed", "baseline", "other")
# Each VMM's results, one list per test over the rounds.
host, guests, tcp, rounds = {}, {kind: {} for kind in KINDS}, {kind: [] for kind in KINDS}, "?"
guest_blk = re.compile(r"^\[iobench-(\w+)-(\d+)\] NUAGE-BENCH blk ")
guest_tcp = re.compile(r"^@@ iobench-(\w+)-(\d+)-host tcp-recv ")
guest_irqs = re.compile(r"^\[iobench-(\w+)-(\d+)\] NUAGE-BENCH irqs ")
# Interrupts each device raised, per block request and per MiB sent, one value per round.
irqs = {kind: {"blk": [], "net": []} for kind in KINDS}
for line in open(path, errors="replace"):
    line = line.strip().replace("\r", "")
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if line.startswith("@@ iobench-config"):
        rounds = fields["rounds"]
    elif line.startswith("@@ iobench-host blk"):
        host[fields["test"]] = float(fields["mib_s"])
    elif line.startswith("@@ iobench-loopback tcp-recv"):
        host["tcp"] = float(fields["mib_s"])
    elif (m := guest_blk.match(line)) and m.group(1) in guests:
        guests[m.group(1)].setdefault(fields["test"], []).append(float(fields["mib_s"]))
    elif (m := guest_tcp.match(line)) and m.group(1) in tcp:
        tcp[m.group(1)].append(float(fields["mib_s"]))
    elif (m := guest_irqs.match(line)) and m.group(1) in irqs:
        per = float(fields.get("requests") or fields.get("mib") or 0)
        if per:
            irqs[m.group(1)][fields["device"]].append(int(fields["interrupts"]) / per)
for kind in KINDS:
    if tcp[kind]:
        guests[kind]["tcp"] = tcp[kind]
if not host or not guests["nuage"]:
    sys.exit("no benchmark results in " + path)
median = {kind: {test: statistics.median(v) for test, v in tests.items()} for kind, tests in guests.items()}
# Beside the host: nuage-vmm without its seccomp filters, in its jail, and the other VMM,
# where they ran.
peers = [kind for kind in KINDS[1:] if guests[kind]]
print(f"I/O benchmark on {where}, MiB/s, medians of {rounds} rounds, each VMM once a round in a "
      "rotated order ('unfiltered': nuage-vmm --no-seccomp; 'jailed': nuage-vmm --jail, so "
      "nuage/jailed above 1 is what the jail costs)")
head = f"  {'test':20} {'host':>9} {'nuage':>9} {'nuage/host':>11}"
for kind in peers:
    head += f" {kind:>10} {'nuage/' + kind:>17}"
print(head)
def row(test, name):
    cell = lambda v: f"{v:9.1f}" if v is not None else f"{'-':>9}"
    ratio = lambda a, b: f"{a / b:.3f}x" if a is not None and b else "-"
    n = median["nuage"].get(test)
    text = f"  {name:20} {cell(host.get(test))} {cell(n)} {ratio(n, host.get(test)):>11}"
    for kind in peers:
        text += f" {cell(median[kind].get(test)):>10} {ratio(n, median[kind].get(test)):>17}"
    print(text)
for test in host:
    row(test, "tcp guest->namespace" if test == "tcp" else test)
print("  (the TCP row's host column is the same stream over the host's loopback)")
print("  interrupts the guest took (its /proc/interrupts), medians of the rounds:")
for kind in ("nuage",) + tuple(peers):
    blk, net = irqs[kind]["blk"], irqs[kind]["net"]
    if blk or net:
        cell = lambda v, unit: f"{statistics.median(v):8.3f} per {unit}" if v else f"{'-':>8} per {unit}"
        print(f"    {kind:10} block {cell(blk, 'request')}   network {cell(net, 'MiB sent')}")
print("  each round, MiB/s:")
for kind in ("nuage",) + tuple(peers):
    for test, values in guests[kind].items():
        print(f"    {kind:10} {test:20} " + " ".join(f"{v:8.1f}" for v in values))
PY
