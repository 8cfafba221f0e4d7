#!/usr/bin/env bash
# Block and network benchmark of nuage-vmm's virtio devices. On the host, nuage-bench runs
# sequential and random 4 KiB and sequential 1 MiB reads and writes on a 256 MiB raw volume
# file; then a guest (Debian's stock kernel, 2 vCPUs) runs the same tests on that file as
# its virtio disk, with O_DIRECT, and sends one TCP stream over virtio-net to the tap's host
# end inside a network namespace of the run's own. Reports guest/host ratios per test, and
# the TCP stream against the same stream over the host's loopback.
#
# Usage: scripts/bench-io.sh [--seconds N]   (per test, default 3)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
seconds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
out=$NUAGE_ROOT/target/bench-io
"$NUAGE_ROOT/scripts/nested/run.sh" --iobench "$seconds" "$out" > "$out.log" 2>&1 \
    || die "benchmark run failed, see $out.log"
where=$(hardware_kvm && echo "hardware KVM" || echo "nested KVM under QEMU TCG")
python3 - "$out/console.log" "$where" <<'PY'
import re, sys
path, where = sys.argv[1], sys.argv[2]
host, guest, tcp = {}, {}, {}
for line in open(path, errors="replace"):
    line = line.strip().replace("\r", "")
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    if line.startswith("@@ iobench-host blk"):
        host[fields["test"]] = fields
    elif line.startswith("[iobench] NUAGE-BENCH blk"):
        guest[fields["test"]] = fields
    elif line.startswith("@@ iobench-host tcp-recv"):
        tcp["guest"] = fields
    elif line.startswith("@@ iobench-loopback tcp-recv"):
        tcp["loopback"] = fields
if not host or not guest:
    sys.exit("no benchmark results in " + path)
print(f"I/O benchmark on {where}")
print(f"  {'test':14} {'host MiB/s':>11} {'guest MiB/s':>12} {'host IOPS':>10} {'guest IOPS':>11} {'guest/host':>11}")
for test, h in host.items():
    g = guest.get(test)
    if not g:
        print(f"  {test:14} guest result missing")
        continue
    ratio = float(g["mib_s"]) / float(h["mib_s"])
    print(f"  {test:14} {float(h['mib_s']):11.1f} {float(g['mib_s']):12.1f} {float(h['iops']):10.0f} {float(g['iops']):11.0f} {ratio:10.3f}x")
if "guest" in tcp:
    g = float(tcp["guest"]["mib_s"])
    line = f"  TCP guest -> namespace over virtio-net: {g:.1f} MiB/s"
    if "loopback" in tcp:
        lo = float(tcp["loopback"]["mib_s"])
        line += f" (host loopback {lo:.1f} MiB/s, ratio {g / lo:.3f}x)"
    print(line)
else:
    print("  TCP result missing")
PY
