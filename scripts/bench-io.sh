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
# it), for what each costs.
#
# Usage: scripts/bench-io.sh [--seconds N] [--other-vmm PATH]   (N per test, default 3)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
seconds=3 other=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --other-vmm) other=(--other-vmm "$2"); shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
out=$NUAGE_ROOT/target/bench-io
"$NUAGE_ROOT/scripts/nested/run.sh" --iobench "$seconds" "${other[@]}" "$out" > "$out.log" 2>&1 \
    || die "benchmark run failed, see $out.log"
where=$(hardware_kvm && echo "hardware KVM" || echo "nested KVM under QEMU TCG")
python3 - "$out/console.log" "$where" <<'PY'
import sys
path, where = sys.argv[1], sys.argv[2]
host, guests, tcp = {}, {"nuage": {}, "unfiltered": {}, "jailed": {}, "other": {}}, {}
for line in open(path, errors="replace"):
    line = line.strip().replace("\r", "")
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if line.startswith("@@ iobench-host blk"):
        host[fields["test"]] = float(fields["mib_s"])
    elif line.startswith("[iobench] NUAGE-BENCH blk"):
        guests["nuage"][fields["test"]] = float(fields["mib_s"])
    elif line.startswith("[iobench-other] NUAGE-BENCH blk"):
        guests["other"][fields["test"]] = float(fields["mib_s"])
    elif line.startswith("[iobench-unfiltered] NUAGE-BENCH blk"):
        guests["unfiltered"][fields["test"]] = float(fields["mib_s"])
    elif line.startswith("[iobench-jailed] NUAGE-BENCH blk"):
        guests["jailed"][fields["test"]] = float(fields["mib_s"])
    elif line.startswith("@@ iobench-jailed-host tcp-recv"):
        tcp["jailed"] = float(fields["mib_s"])
    elif line.startswith("@@ iobench-unfiltered-host tcp-recv"):
        tcp["unfiltered"] = float(fields["mib_s"])
    elif line.startswith("@@ iobench-host tcp-recv"):
        tcp["nuage"] = float(fields["mib_s"])
    elif line.startswith("@@ iobench-other-host tcp-recv"):
        tcp["other"] = float(fields["mib_s"])
    elif line.startswith("@@ iobench-loopback tcp-recv"):
        tcp["loopback"] = float(fields["mib_s"])
if not host or not guests["nuage"]:
    sys.exit("no benchmark results in " + path)
# Beside the host: nuage-vmm without its seccomp filters, in its jail, and the other VMM,
# where they ran.
peers = [kind for kind in ("unfiltered", "jailed", "other") if guests[kind]]
print(f"I/O benchmark on {where}, MiB/s ('unfiltered': nuage-vmm --no-seccomp; "
      "'jailed': nuage-vmm --jail, so nuage/jailed above 1 is what the jail costs)")
head = f"  {'test':20} {'host':>9} {'nuage':>9} {'nuage/host':>11}"
for kind in peers:
    head += f" {kind:>10} {'nuage/' + kind:>17}"
print(head)
def row(test, h, n, by_peer):
    cell = lambda v: f"{v:9.1f}" if v is not None else f"{'-':>9}"
    ratio = lambda a, b: f"{a / b:.3f}x" if a is not None and b else "-"
    text = f"  {test:20} {cell(h)} {cell(n)} {ratio(n, h):>11}"
    for kind in peers:
        text += f" {cell(by_peer[kind]):>10} {ratio(n, by_peer[kind]):>17}"
    print(text)
for test, h in host.items():
    row(test, h, guests["nuage"].get(test), {kind: guests[kind].get(test) for kind in peers})
row("tcp guest->namespace", tcp.get("loopback"), tcp.get("nuage"), {kind: tcp.get(kind) for kind in peers})
print("  (the TCP row's host column is the same stream over the host's loopback)")
PY
