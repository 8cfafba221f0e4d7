#!/usr/bin/env bash
# Boot benchmark: time from nuage-vmm's start to the guest's init marker, and the VMM's
# resident memory beyond guest RAM, over several boots of Debian's stock kernels (the cloud
# and the generic flavour, as ELF vmlinux and as bzImage, 1 and 2 vCPUs, 128 MiB), reported
# as median and spread, with a per-phase profile from the guest's own kernel log (named
# milestones and the largest gaps) and, for nuage-vmm's first boot of each configuration,
# its exit statistics. With --other-vmm, another VMM binary (for example a Firecracker you
# built yourself) boots the same ELF kernels and initramfs in the same run, alternating with
# nuage-vmm, and the two are reported side by side as ratios. nuage-vmm also boots the ELF
# kernels with --no-seccomp and jailed (--jail, as nuaged runs it), alternating, and the
# report gives what the filters and the jail cost. With --baseline-vmm, a nuage-vmm built from
# another commit boots the ELF kernels too, alternating, for what a change gains.
# With --ssh, the benchmark is time to SSH instead: nuaged's RunInstances to the guest's SSH
# banner for the Debian 12 cloud disk (images/debian-cloud, systemd and cloud-init), beside
# the busybox test image's (and its time to the init marker), alternating.
#
# Usage: scripts/bench-boot.sh [--runs N] [--other-vmm PATH] [--baseline-vmm PATH]
#                              [--flavour cloud|generic] [--ssh]
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
runs=7 vmms=() only=() mode=--bench
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --other-vmm) vmms+=(--other-vmm "$2"); shift 2 ;;
        --baseline-vmm) vmms+=(--baseline-vmm "$2"); shift 2 ;;
        --flavour) only=(--only "$2"); shift 2 ;;
        --ssh) mode=--sshbench; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
out=$NUAGE_ROOT/target/bench-boot
where=$(hardware_kvm && echo "hardware KVM" || echo "nested KVM under QEMU TCG")
if [ "$mode" = --sshbench ]; then
    out=$NUAGE_ROOT/target/bench-ssh
    "$NUAGE_ROOT/scripts/nested/run.sh" --sshbench "$runs" "$out" > "$out.log" 2>&1 \
        || die "benchmark run failed, see $out.log"
    python3 - "$out/console.log" "$where" <<'PY'
import statistics, sys
path, where = sys.argv[1], sys.argv[2]
runs = {}
for line in open(path, errors="replace"):
    line = line.strip()
    if line.startswith("@@ sshbench "):
        f = dict(kv.split("=", 1) for kv in line[len("@@ sshbench "):].split() if "=" in kv)
        runs.setdefault(f["image"], []).append(f)
if not runs:
    sys.exit("no benchmark results in " + path)
print(f"time to SSH on {where}: nuaged's RunInstances to the guest's SSH banner (t.micro, 512 MiB)")
medians = {}
for image, results in sorted(runs.items()):
    ok = [r for r in results if "ssh_s" in r]
    print(f"  {image}: boots={len(ok)} failed={len(results) - len(ok)}")
    if not ok:
        continue
    ssh = sorted(float(r["ssh_s"]) for r in ok)
    medians[image] = statistics.median(ssh)
    line = f"    RunInstances -> SSH banner: median {medians[image]:.1f} s (min {ssh[0]:.1f}, max {ssh[-1]:.1f})"
    init = sorted(float(r["init_s"]) for r in ok if "init_s" in r)
    if init:
        line += f"; -> init marker: median {statistics.median(init):.1f} s"
    print(line)
if "debian" in medians and "busybox" in medians:
    print(f"  debian/busybox: {medians['debian'] / medians['busybox']:.1f}x")
PY
    exit 0
fi
"$NUAGE_ROOT/scripts/nested/run.sh" --bench "$runs" "${vmms[@]}" "${only[@]}" "$out" > "$out.log" 2>&1 \
    || die "benchmark run failed, see $out.log"
python3 - "$out/console.log" "$where" <<'PY'
import re, statistics, sys
path, where = sys.argv[1], sys.argv[2]
runs, gaps, stats = {}, {}, {}
config = ""
LABEL = ("kind", "flavour", "format", "vcpus")
def fields_of(text):
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
for line in open(path, errors="replace"):
    line = line.strip()
    if line.startswith("@@ bench-config"):
        config = line[len("@@ bench-config "):]
    elif line.startswith("@@ bench-gap "):
        head, _, text = line[len("@@ bench-gap "):].partition(" after=")
        f = fields_of(head)
        gap = head.split()[-1]
        key = tuple(f[k] for k in LABEL)
        if f["run"] == "1":
            gaps.setdefault(key, []).append((float(gap), text))
    elif line.startswith("@@ bench-stats "):
        head, _, text = line[len("@@ bench-stats "):].partition(" | ")
        f = fields_of(head)
        stats.setdefault(tuple(f[k] for k in LABEL), []).append(text)
    elif line.startswith("@@ bench "):
        f = fields_of(line[len("@@ bench "):])
        runs.setdefault(tuple(f[k] for k in LABEL), []).append(f)
if not runs:
    sys.exit("no benchmark results in " + path)
def name(key):
    kind, flavour, fmt, vcpus = key
    vmm = {"nuage": "nuage-vmm", "unfiltered": "nuage-vmm --no-seccomp", "jailed": "nuage-vmm --jail",
           "baseline": "baseline nuage-vmm"}.get(kind, "other VMM")
    return f"{vmm} {flavour} {fmt} {vcpus} vCPU"
print(f"boot benchmark on {where} ({config}); times from VMM start to the guest's init marker")
medians = {}
phase_names = ["smp_up", "acpi_interpreter", "kvm_clock", "rtc", "kernel_done", "run_init", "last"]
for key in sorted(runs):
    results = runs[key]
    ok = [r for r in results if "boot_ms" in r]
    print(f"  {name(key)}: boots={len(ok)} failed={len(results) - len(ok)}")
    if not ok:
        continue
    boot = sorted(int(r["boot_ms"]) / 1000 for r in ok)
    rss = sorted(int(r["overhead_kb"]) / 1024 for r in ok)
    medians[key] = (statistics.median(boot), statistics.median(rss))
    print(f"    start -> init marker: median {medians[key][0]:.2f} s (min {boot[0]:.2f}, max {boot[-1]:.2f}); "
          f"memory beyond guest RAM: median {medians[key][1]:.1f} MiB")
    setup = sorted(float(r["setup_ms"]) for r in ok if "setup_ms" in r)
    if setup:
        print(f"    nuage-vmm's own part (start -> vCPUs starting): median {statistics.median(setup):.1f} ms "
              f"(min {setup[0]:.1f}, max {setup[-1]:.1f})")
    relay = sorted(int(r["relay_rss_kb"]) / 1024 for r in ok if "relay_rss_kb" in r)
    if relay:
        print(f"    the jail's relay process: resident median {statistics.median(relay):.1f} MiB")
    phases = []
    for p in phase_names:
        values = [float(r[p]) for r in ok if r.get(p) not in (None, "0")]
        if values:
            phases.append(f"{p} {statistics.median(values):.2f}")
    if phases:
        print("    guest log (median s): " + ", ".join(phases))
    for gap, text in sorted(gaps.get(key, []), reverse=True)[:5]:
        print(f"    gap {gap:.3f} s after: {text}")
    for text in stats.get(key, [])[:12]:
        print(f"    | {text}")
print("  ratios (medians):")
for key, (boot, rss) in sorted(medians.items()):
    kind, flavour, fmt, vcpus = key
    if kind != "nuage":
        continue
    unfiltered = medians.get(("unfiltered", flavour, "elf", vcpus))
    if fmt == "elf" and unfiltered:
        print(f"    {flavour} ELF {vcpus} vCPU: with/without seccomp boot {boot / unfiltered[0]:.2f}x, "
              f"memory {rss / unfiltered[1]:.2f}x")
    jailed = medians.get(("jailed", flavour, "elf", vcpus))
    if fmt == "elf" and jailed:
        print(f"    {flavour} ELF {vcpus} vCPU: jailed/unjailed boot {jailed[0] / boot:.3f}x, "
              f"memory {jailed[1] / rss:.2f}x")
        # The jail acts only before the vCPUs start: its cost is the difference in the
        # VMM's own part, which the guest's boot (noisy under emulation) does not blur.
        own = {k: statistics.median(float(r["setup_ms"]) for r in runs[k] if "setup_ms" in r)
               for k in (key, ("jailed", flavour, "elf", vcpus)) if any("setup_ms" in r for r in runs[k])}
        if len(own) == 2:
            plain, jail = own[key], own[("jailed", flavour, "elf", vcpus)]
            print(f"    {flavour} ELF {vcpus} vCPU: the jail adds {jail - plain:.1f} ms before the vCPUs start "
                  f"({plain:.1f} -> {jail:.1f} ms), {(jail - plain) / (boot * 1000) * 100:.2f}% of the boot")
    baseline = medians.get(("baseline", flavour, "elf", vcpus))
    if fmt == "elf" and baseline:
        print(f"    {flavour} ELF {vcpus} vCPU: nuage/baseline boot {boot / baseline[0]:.2f}x, "
              f"memory {rss / baseline[1]:.2f}x")
    other = medians.get(("other", flavour, "elf", vcpus))
    if fmt == "elf" and other:
        print(f"    {flavour} ELF {vcpus} vCPU: nuage/other boot {boot / other[0]:.2f}x, memory {rss / other[1]:.2f}x")
        # The most a faster nuage-vmm start could gain: its boots less its own part (start to
        # vCPUs starting), against the other VMM's whole boots, its own part included.
        guest = [(int(r["boot_ms"]) - float(r["setup_ms"])) / 1000 for r in runs[key]
                 if "boot_ms" in r and "setup_ms" in r]
        if guest:
            print(f"    {flavour} ELF {vcpus} vCPU: nuage less its own part/other "
                  f"{statistics.median(guest) / other[0]:.2f}x (the bound on what nuage-vmm's start can gain)")
    elf = medians.get(("nuage", flavour, "elf", vcpus))
    if fmt == "bzimage" and elf:
        print(f"    {flavour} {vcpus} vCPU: nuage bzImage/ELF boot {boot / elf[0]:.2f}x")
PY
