#!/usr/bin/env bash
# Runs nuage-vmm's real-KVM scenarios (or its boot benchmark) with Debian's stock cloud
# kernel as the guest. Where the host has hardware virtualization they run directly;
# otherwise inside an L1 that QEMU emulates (TCG) with AMD SVM, whose own stock kernel
# loads kvm_amd: real KVM semantics on a host without VT-x/AMD-V.
#
# Usage: scripts/nested/run.sh [--demo | --bench RUNS | --iobench SECONDS |
#                              --sshbench RUNS | --asgbench RUNS]
#                              [--only SCENARIO | --groups "main asg ..."] [--vmm-log FILTER]
#                              [--other-vmm PATH] [--baseline-vmm PATH] OUTDIR
# The benchmarks run --other-vmm (Firecracker's configuration format) and --baseline-vmm (a
# nuage-vmm built from another commit) beside this tree's nuage-vmm.
# Writes OUTDIR/console.log (everything printed, result lines start with "@@ ").
# --groups runs several scenario groups, each on an L1 of its own, as many at a time as the
# host has cores (NUAGE_L1_PARALLEL): "main" is every scenario that runs with the others,
# any other name a scenario run alone (as --only NAME). Group G's console is
# OUTDIR/console-G.log, main's OUTDIR/console.log.
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"

mode=test runs=5 other="" baseline="" out="" only="" groups="" vmmlog=warn
while [ $# -gt 0 ]; do
    case "$1" in
        --bench) mode=bench runs=$2; shift 2 ;;
        --demo) mode=demo; shift ;;
        --iobench) mode=iobench runs=$2; shift 2 ;;
        --sshbench) mode=sshbench runs=$2; shift 2 ;;
        --asgbench) mode=asgbench runs=$2; shift 2 ;;
        --other-vmm) other=$(realpath "$2"); shift 2 ;;
        --baseline-vmm) baseline=$(realpath "$2"); shift 2 ;;
        --only) only=$2; shift 2 ;;
        --groups) groups=$2; shift 2 ;;
        --vmm-log) vmmlog=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) out=$1; shift ;;
    esac
done
[ -n "$out" ] || die "usage: $0 [--bench RUNS] [--other-vmm PATH] OUTDIR"
[ -z "$other" ] || [ -x "$other" ] || die "--other-vmm $other is not an executable"
[ -z "$baseline" ] || [ -x "$baseline" ] || die "--baseline-vmm $baseline is not an executable"
[ -z "$groups" ] || { [ "$mode" = test ] && [ -z "$only" ]; } || die "--groups goes with the tests alone, not with --only"
# A single run is one group, main or the scenario named by --only, whose console is
# OUTDIR/console.log.
single=no
[ -n "$groups" ] || { single=yes; groups=${only:-main}; }
wants_cloud=no
for group in $groups; do [ "$group" = cloud ] && wants_cloud=yes; done
mkdir -p "$out"
out=$(realpath "$out")
# Nothing of an earlier run may pass for this one's.
rm -f "$out"/console*.log

need_deps
kernel_root=$(debian_kernel)
vmlinuz=$(ls "$kernel_root"/boot/vmlinuz-*)
kver=${vmlinuz##*/vmlinuz-}

stage=$out/stage
rm -rf "$stage" && mkdir -p "$stage/payload" "$stage/modules" "$stage/bin"
static=$(build_static_binaries)
cp "$static/nuage-vmm" "$static/nuaged" "$static/nuage" "$static/nuage-lb" "$static/store" "$static/net" "$stage/payload/"
cp "$vmlinuz" "$stage/payload/vmlinuz"
extract_vmlinux "$vmlinuz" "$NUAGE_CACHE/kernel/vmlinux-$kver"
cp "$NUAGE_CACHE/kernel/vmlinux-$kver" "$stage/payload/vmlinux"
"$NUAGE_ROOT/images/test-guest/build.sh" "$stage/payload/guest.cpio" "$kernel_root/lib/modules/$kver"
for tool in $TEST_GUEST_TOOLS; do
    cp "$(test_guest_tool $tool)" "$stage/payload/$tool"
done
# The ext4 root disk of the disks scenario, made without mounting anything.
mkdir -p "$stage/rootfs/etc"
echo "nuage-root-$kver" > "$stage/rootfs/etc/nuage-marker"
mkfs.ext4 -q -F -L nuage-root -d "$stage/rootfs" "$stage/payload/root.ext4" 24M >/dev/null
rm -rf "$stage/rootfs"
# The cloud scenario's Debian disk, as the distribution ships its packages (cached), kept
# apart: only the L1 that runs that scenario (alone, or the SSH benchmark) carries it.
cloud_stage=$out/cloud-stage
rm -rf "$cloud_stage"
if [ "$mode" = sshbench ] || { [ "$mode" = test ] && [ "$wants_cloud" = yes ]; }; then
    mkdir -p "$cloud_stage/payload"
    "$NUAGE_ROOT/images/debian-cloud/build.sh" "$cloud_stage/payload/debian.qcow2"
fi
# A self-signed certificate for the daemon scenario's API over TCP (its own client CA too):
# the guests there must not reach that port.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=nuaged \
    -keyout "$stage/payload/tls.key" -out "$stage/payload/tls.pem" 2>/dev/null
[ -z "$other" ] || cp "$other" "$stage/payload/other-vmm"
[ -z "$baseline" ] || cp "$baseline" "$stage/payload/baseline-vmm"
# The boot benchmark also boots Debian's generic flavour (it probes more than the cloud one),
# with an initramfs carrying that kernel's modules.
if [ "$mode" = bench ]; then
    generic_root=$(debian_kernel linux-image-amd64)
    generic=$(ls "$generic_root"/boot/vmlinuz-*)
    generic_ver=${generic##*/vmlinuz-}
    cp "$generic" "$stage/payload/vmlinuz-generic"
    extract_vmlinux "$generic" "$NUAGE_CACHE/kernel/vmlinux-$generic_ver"
    cp "$NUAGE_CACHE/kernel/vmlinux-$generic_ver" "$stage/payload/vmlinux-generic"
    "$NUAGE_ROOT/images/test-guest/build.sh" "$stage/payload/guest-generic.cpio" "$generic_root/lib/modules/$generic_ver"
fi
cp -r "$NUAGE_ROOT/examples/hello-app" "$stage/payload/hello-app"
cp "$NUAGE_ROOT/scripts/nested/run-scenarios.sh" "$stage/run-scenarios.sh"

# console_of GROUP: where a group's console goes.
console_of() {
    if [ "$single" = yes ] || [ "$1" = main ]; then echo "$out/console.log"; else echo "$out/console-$1.log"; fi
}
# only_of GROUP: the scenario a group's run is limited to (none for main).
only_of() {
    if [ "$1" = main ]; then echo ""; else echo "$1"; fi
}

if hardware_kvm; then
    log "hardware KVM present: running directly on this host, one group after another"
    [ ! -d "$cloud_stage/payload" ] || cp "$cloud_stage/payload/debian.qcow2" "$stage/payload/"
    for group in $groups; do
        rm -rf "$out/work" && mkdir -p "$out/work"
        NUAGE_PAYLOAD=$stage/payload NUAGE_WORK=$out/work NUAGE_MODE=$mode NUAGE_RUNS=$runs \
            NUAGE_ONLY=$(only_of "$group") NUAGE_VMM_LOG=$vmmlog \
            sh "$stage/run-scenarios.sh" | tee "$(console_of "$group")"
    done
    exit 0
fi

log "no hardware virtualization: running nested under QEMU TCG with emulated SVM"
# KVM, taps, and what the network plane's bridges, veth "LAN" and nftables table need;
# with iproute2, nft and the ssh client themselves, the decompressors nuaged unpacks
# Debian's kernels with (LZ4 for the cloud flavour, XZ for the generic one), qemu-img (a
# qcow2 cloud disk is checked and converted) and debugfs (its /boot is read).
stage_kernel_modules "$kernel_root/lib/modules/$kver" "$stage/modules" \
    kvm-amd tun bridge veth nft_chain_nat nft_nat nft_masq nft_ct
stage_programs "$stage" ip nft ssh lz4 xz qemu-img debugfs
cp "$(command -v busybox)" "$stage/bin/busybox"
cp "$NUAGE_ROOT/scripts/nested/l1-init" "$stage/init"
# Uncompressed: decompressing tens of MB under software emulation costs more than reading them.
(cd "$stage" && find . | cpio -o -H newc --quiet) > "$out/l1.cpio"
# The L1 that needs the cloud disk gets it as a second archive after the first (the kernel
# unpacks concatenated archives); the others do without its hundreds of MB.
if [ -d "$cloud_stage/payload" ]; then
    { cat "$out/l1.cpio"; (cd "$cloud_stage" && echo ./payload/debian.qcow2 | cpio -o -H newc --quiet); } \
        > "$out/l1-cloud.cpio"
fi

# run_l1 LOG ONLY ARCHIVE LABEL: boots the L1 from ARCHIVE, which runs the scenarios
# (limited to ONLY), streaming its console to LOG and to stdout (each line after LABEL
# where several run at once). The L1 prints a heartbeat every 30 s; one silent for
# NUAGE_L1_STALL seconds (180) has wedged (nested SVM under TCG: its vCPU spins, nothing
# is printed) and is stopped, rather than holding the run until the overall NUAGE_L1_TIMEOUT. (At 120 s, five L1s in a
# row were stopped as a Debian guest booted; whether some would have gone on is not known.)
run_l1() {
    local log=$1 only=$2 archive=$3 label=$4 stall=${NUAGE_L1_STALL:-180} quiet=0 size last=-1
    # Made before the tailer starts: the L1's own redirection opens it only once it runs.
    : >"$log"
    timeout "${NUAGE_L1_TIMEOUT:-1500}" qemu-system-x86_64 \
        -accel tcg,thread=multi -cpu EPYC,+svm -smp "${NUAGE_L1_CPUS:-1}" -m 3072 \
        -nographic -no-reboot -monitor none \
        -kernel "$vmlinuz" -initrd "$archive" \
        -append "console=ttyS0 rdinit=/init panic=-1 quiet nuage.mode=$mode nuage.runs=$runs nuage.only=$only nuage.vmmlog=$vmmlog" \
        </dev/null >"$log" 2>&1 &
    local l1=$!
    tail -n +1 -f --pid="$l1" "$log" | sed -u "s/^/$label/" &
    local tailer=$!
    while kill -0 "$l1" 2>/dev/null; do
        sleep 5
        size=$(stat -c %s "$log")
        if [ "$size" = "$last" ]; then quiet=$((quiet + 5)); else quiet=0 last=$size; fi
        if [ "$quiet" -ge "$stall" ]; then
            log "${label}the L1 machine printed nothing for ${stall}s: stopping it"
            kill "$l1" 2>/dev/null || true
            break
        fi
    done
    wait "$l1" || true
    wait "$tailer" || true
}

# The emulated L1 machine itself has been seen to reset or wedge (nested SVM under TCG),
# ending the run early, most often while guests start. With two L1 vCPUs about half the
# runs wedged; with one (the default since) one run in five did, and the scenarios take
# about as long: most guests have one vCPU. A Debian guest with systemd (the cloud
# scenario) wedged it in about one boot in four. Such a run is started again, up to
# NUAGE_L1_ATTEMPTS (5) times in all, its log kept aside as console.attemptN.log; the
# scenarios' own failures are not retried.
# run_group GROUP LABEL: runs a group's L1 until its scenarios finish, or NUAGE_L1_ATTEMPTS
# (5) times.
run_group() {
    local group=$1 label=$2 log archive=$out/l1.cpio attempts=${NUAGE_L1_ATTEMPTS:-5}
    log=$(console_of "$group")
    # The cloud scenario and the SSH benchmark boot the cloud disk; the boot benchmark's
    # --only cloud names a kernel flavour, not that scenario.
    if [ "$mode" = sshbench ] || { [ "$mode" = test ] && [ "$group" = cloud ]; }; then
        archive=$out/l1-cloud.cpio
    fi
    for attempt in $(seq "$attempts"); do
        run_l1 "$log" "$(only_of "$group")" "$archive" "$label"
        grep -q "@@ scenarios-done" "$log" && break
        [ "$attempt" -eq "$attempts" ] && break
        mv "$log" "${log%.log}.attempt$attempt.log"
        log "${label}the L1 machine stopped before the scenarios finished (log: ${log%.log}.attempt$attempt.log); running them once more"
    done
}

# Several groups: each L1 is single-threaded, so as many at a time as there are cores.
if [ "$single" = yes ]; then
    run_group "$groups" ""
else
    parallel=${NUAGE_L1_PARALLEL:-$(nproc)}
    log "scenario groups $groups: $parallel L1 machines at a time"
    running=0
    for group in $groups; do
        if [ "$running" -ge "$parallel" ]; then
            wait -n || true
            running=$((running - 1))
        fi
        run_group "$group" "[$group] " &
        running=$((running + 1))
    done
    wait
fi
