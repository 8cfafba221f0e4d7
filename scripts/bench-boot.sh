#!/usr/bin/env bash
# Boot benchmark: time from nuage-vmm's start to the guest's init marker, and the VMM's
# resident memory beyond guest RAM, over several boots of Debian's stock kernel (1 vCPU,
# 128 MiB), reported as median and spread. With --other-vmm, another VMM binary (for example
# a Firecracker release you downloaded yourself) boots the same ELF vmlinux and initramfs in
# the same run, alternating with nuage-vmm, and the two are reported side by side as ratios.
#
# Usage: scripts/bench-boot.sh [--runs N] [--other-vmm PATH]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=7 other=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --other-vmm) other=(--other-vmm "$2"); shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
out=$NUAGE_ROOT/target/bench-boot
"$NUAGE_ROOT/scripts/nested/run.sh" --bench "$runs" "${other[@]}" "$out" > "$out.log" 2>&1 \
    || die "benchmark run failed, see $out.log"
where=$(hardware_kvm && echo "hardware KVM" || echo "nested KVM under QEMU TCG")
python3 - "$out/console.log" "$where" <<'PY'
import re, statistics, sys
path, where = sys.argv[1], sys.argv[2]
runs = {}
config = ""
for line in open(path, errors="replace"):
    line = line.strip()
    if line.startswith("@@ bench-config"):
        config = line[len("@@ bench-config "):]
    m = re.match(r"@@ bench kind=(\w+) run=(\d+) (.*)", line)
    if m:
        fields = dict(kv.split("=") for kv in m.group(3).split() if "=" in kv)
        runs.setdefault(m.group(1), []).append(fields)
if not runs:
    sys.exit("no benchmark results in " + path)
print(f"boot benchmark on {where} ({config})")
summary = {}
for kind, results in runs.items():
    ok = [r for r in results if "boot_ms" in r]
    failed = len(results) - len(ok)
    boot = sorted(int(r["boot_ms"]) for r in ok)
    rss = sorted(int(r["overhead_kb"]) / 1024 for r in ok)
    if not ok:
        print(f"  {kind}: all {failed} runs failed")
        continue
    summary[kind] = (statistics.median(boot), statistics.median(rss))
    name = "nuage-vmm" if kind == "nuage" else "other VMM"
    print(f"  {name:10} boots={len(ok)} failed={failed}")
    print(f"    start -> init marker: median {statistics.median(boot)/1000:.2f} s, min {boot[0]/1000:.2f} s, max {boot[-1]/1000:.2f} s")
    print(f"    RSS beyond guest RAM: median {statistics.median(rss):.1f} MiB, min {rss[0]:.1f} MiB, max {rss[-1]:.1f} MiB")
if "nuage" in summary and "other" in summary:
    (nb, nr), (ob, orss) = summary["nuage"], summary["other"]
    print(f"  ratio nuage/other: boot time {nb/ob:.2f}x, VMM memory {nr/orss:.2f}x")
PY
