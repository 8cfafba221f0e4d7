#!/bin/sh
# Runs nuage's real-KVM scenarios against the files in $NUAGE_PAYLOAD, printing guest
# consoles prefixed with "[name] " and one result line per scenario starting with "@@ ".
# Runs inside the nested L1 (busybox sh) or directly on a host with hardware KVM.
#
#   NUAGE_PAYLOAD  directory with nuage-vmm, nuaged, nuage, store, net, vmlinuz, vmlinux,
#                  guest.cpio, root.ext4, nuage-bench, nuage-vsock [, other-vmm]
#   NUAGE_WORK     scratch directory
#   NUAGE_MODE     "test" (default), "bench" (boot), "iobench" (block and network), or
#                  "demo" (nuaged on its defaults launches one instance of the default image)
#   NUAGE_RUNS     benchmark runs per VMM (bench mode), seconds per test (iobench mode)
#   NUAGE_ONLY     run only the scenario of this name (test mode)
#   NUAGE_VMM_LOG  nuage-vmm --log-level filter (default warn)
set -u
P=$NUAGE_PAYLOAD
W=$NUAGE_WORK
VMM=$P/nuage-vmm
# The benchmarks' jailed VMM: as nuaged runs it, as the first of nuaged's jail users.
JAIL_UID=1900000000
mkdir -p "$W/jail-root"
JAIL="--jail $W/jail-root --uid $JAIL_UID --gid $JAIL_UID"
GUEST_TIMEOUT=${NUAGE_GUEST_TIMEOUT:-300}
BASE_CMDLINE="console=ttyS0 panic=-1 quiet"
# The L1 keeps iproute2 in /usr/local/sbin: the busybox applet lacks veth peer names and
# brief output, and busybox's shell prefers its applets to PATH, hence the function.
[ -x /usr/local/sbin/ip ] && ip() { /usr/local/sbin/ip "$@"; }

# Uptime in centiseconds, read without forking (times are taken from the host side of the
# VMM: guest clocks run slow under emulation).
now_cs() {
    read -r up _ < /proc/uptime
    frac=${up#*.}
    echo $(( ${up%.*} * 100 + ${frac#0} ))
}

seconds() { echo "$(( $1 / 100 )).$(( $1 % 100 / 10 ))$(( $1 % 10 ))"; }

# Kills $1 after $2 seconds unless it is gone; prints the watchdog's pid.
watchdog() {
    ( sleep "$2"; kill -KILL "$1" 2>/dev/null ) >/dev/null 2>&1 &
    echo $!
}

# wait_for_line FILE TEXT: waits until FILE holds TEXT (up to the guest timeout).
wait_for_line() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -gt "$GUEST_TIMEOUT" ] && return 1
        sleep 1
    done
}

# Whether scenario $1 runs: all do by default; NUAGE_ONLY=NAME selects NAME and the
# scenarios named NAME-something.
selected() { [ -z "${NUAGE_ONLY:-}" ] || [ "$NUAGE_ONLY" = "$1" ] || [ "$NUAGE_ONLY" = "${1%%-*}" ]; }

# fetch URL: one request's answer, or "failed:N" (N: wget's or timeout's exit status)
# when it got none. The bound is for a request that hangs (busybox 1.35's wget crashes with
# -T, so timeout bounds it). It is generous: in CI four L1s share two cores, and twice a
# request through the balancer was counted failed at 5 s while the cloud L1 uploaded its disk.
REQUEST_TIMEOUT=20
fetch() {
    body=$(busybox timeout "$REQUEST_TIMEOUT" busybox wget -q -O - "$1" 2>/dev/null)
    status=$?
    body=$(printf '%s' "$body" | tr -d '\r\n')
    if [ -n "$body" ]; then echo "$body"; else echo "failed:$status"; fi
}

# fetch_n N URL: N requests to URL, one line per answer (fetch's).
fetch_n() {
    n=0
    while [ "$n" -lt "$1" ]; do
        fetch "$2"
        n=$((n + 1))
    done
}

# requests URL FILE PAUSE: requests to URL, one line per answer (fetch's) in FILE, PAUSE
# seconds apart, until $W/stop exists.
requests() {
    while [ ! -f "$W/stop" ]; do
        fetch "$1" >> "$2"
        sleep "$3"
    done
}

# count_failed FILE: prints each failed request that requests logged in FILE as a
# "[client]" line, and sets $failed to how many there were.
count_failed() {
    grep '^failed' "$1" | sed 's/^/[client] /'
    failed=$(grep -c '^failed' "$1" || true)
}

# run_guest NAME VCPUS MEMORY_MIB ACTION [KERNEL [EXTRA VMM ARGUMENTS...]]
run_guest() {
    name=$1 vcpus=$2 mem=$3 action=$4 kernel=${5:-$P/vmlinuz}
    shift 4
    [ $# -gt 0 ] && shift
    selected "$name" || return 0
    console=$W/$name.console
    epoch_start=$(date +%s)
    t0=$(now_cs)
    "$VMM" --kernel "$kernel" --initrd "${INITRD:-$P/guest.cpio}" --vcpus "$vcpus" --memory "$mem" "$@" \
        --cmdline "$BASE_CMDLINE nuage.action=$action" --console-log "$console" --log-level "${NUAGE_VMM_LOG:-warn}" 2>"$W/$name.stderr" &
    pid=$!
    dog=$(watchdog "$pid" "$GUEST_TIMEOUT")
    if [ "$action" = wait ] || [ -n "${DURING:-}" ]; then
        wait_for_line "$console" NUAGE-INIT-MARKER && ${DURING:-true} && kill -TERM "$pid"
    fi
    wait "$pid"
    status=$?
    t1=$(now_cs)
    kill "$dog" 2>/dev/null
    sed "s/^/[$name] /" "$console" 2>/dev/null
    sed "s/^/[$name] /" "$W/$name.stderr"
    echo "@@ $name status=$status vcpus=$vcpus memory_mib=$mem seconds=$(seconds $((t1 - t0))) epoch_start=$epoch_start epoch_end=$(date +%s)"
}

# Allocated 512-byte blocks of file $1.
allocated_blocks() { stat -c %b "$1"; }

# Boots the guest with an ext4 root disk, a raw data volume and a read-only volume, then
# checks on this host, in the files, what the guest wrote, discarded and could not write.
disks_scenario() {
    selected disks || return 0
    cp "$P/root.ext4" "$W/root.ext4"
    rm -f "$W/data.img" && truncate -s 16M "$W/data.img"
    dd if=/dev/urandom of="$W/data.img" bs=1M seek=8 count=4 conv=notrunc 2>/dev/null
    dd if=/dev/urandom of="$W/ro.img" bs=1M count=1 2>/dev/null
    ro_before=$(md5sum < "$W/ro.img")
    blocks_before=$(allocated_blocks "$W/data.img")
    run_guest disks 2 256 disk-io "$P/vmlinuz" \
        --disk "path=$W/root.ext4,id=vol-root" --disk "path=$W/data.img,id=vol-data" \
        --disk "path=$W/ro.img,id=vol-ro,readonly=on"
    file=$(tar -xOf "$W/data.img" hello.txt 2>/dev/null | tr ' ' _)
    nonzero=$(dd if="$W/data.img" bs=1M skip=8 count=4 2>/dev/null | tr -d '\000' | wc -c)
    ro_same=no
    [ "$(md5sum < "$W/ro.img")" = "$ro_before" ] && ro_same=yes
    echo "@@ disks-host file=${file:-none} discarded_nonzero_bytes=$nonzero blocks_before=$blocks_before blocks_after=$(allocated_blocks "$W/data.img") ro_unchanged=$ro_same"
}

# Host side of the net scenario, run while the guest is up: gives the tap the host
# address, waits for the guest, then pings its address and the one it tried to spoof.
net_host_checks() {
    ip addr add 10.0.7.1/24 dev nt0 && ip link set nt0 up
    wait_for_line "$console" NUAGE-NET-READY || return 0
    guest=fail spoofed=fail
    ping -c 3 -W 3 10.0.7.2 >/dev/null 2>&1 && guest=ok
    ping -c 2 -W 2 10.0.7.99 >/dev/null 2>&1 && spoofed=ok
    echo "@@ net-host ping_guest=$guest ping_spoofed=$spoofed"
}

# Boots a guest on a tap inside a network namespace of its own: the test's traffic never
# leaves it.
net_scenario() {
    selected net || return 0
    unshare -n sh "$0" net-namespace
}

# The network plane end to end, inside a namespace of its own that stands for the host,
# with a second namespace behind a veth pair for the LAN: `net` (examples/net.rs) makes a
# subnet, attaches two instances and points an Elastic IP at the first; the two guests
# ping each other by their static addresses, and the LAN reaches the first through the
# Elastic IP until it is disassociated. Detaching removes the taps.
plane_scenario() {
    selected plane || return 0
    unshare -n sh "$0" plane-namespace
}

# Host side of the plane scenario while both guests run.
plane_host_checks() {
    wait_for_line "$W/plane-b.console" NUAGE-PEER-READY
    wait_for_line "$console" NUAGE-PEER-READY || return 0
    lan_ping() { nsenter -t "$lan" -n ping -c 2 -W 2 "$1" >/dev/null 2>&1 && echo ok || echo fail; }
    via_eip=$(lan_ping 192.168.50.10)
    $NET disassociate-address "$eip" || echo "@@ plane-host disassociate=failed"
    after=$(lan_ping 192.168.50.10)
    echo "@@ plane-host eip_ping=$via_eip eip_ping_after_disassociate=$after"
    echo done > "$W/plane.done"
}

# Guest B's side: it runs until the checks are done.
plane_b_lingers() { wait_for_line "$W/plane.done" done; }
# the VMM's socket, and report what the host service on port 5000 received.
vsock_host_checks() {
    wait_for_line "$console" NUAGE-VSOCK-DONE || return 0
    # Bounded: a guest that never answers must fail the scenario, not stall the harness.
    reached=$(timeout 60 "$P/nuage-vsock" uds-connect "$W/vsock.sock" 52 ping-from-host 2>&1)
    ( sleep 60; kill "$vsock_server" 2>/dev/null ) &
    wait "$vsock_server"
    echo "@@ vsock-host $reached $(cat "$W/vsock-served.out")"
}

vsock_scenario() {
    selected vsock || return 0
    rm -f "$W"/vsock.sock*
    "$P/nuage-vsock" uds-serve "$W/vsock.sock_5000" > "$W/vsock-served.out" 2>&1 &
    vsock_server=$!
    DURING=vsock_host_checks run_guest vsock 1 128 vsock "$P/vmlinuz" --vsock "cid=3,uds=$W/vsock.sock"
}

# Storage end to end: register the ext4 root disk as an image, boot a guest (kernel and
# initrd from the image) on a copy-on-write clone of it that writes a file, snapshot the
# volume, make a new volume from the snapshot, and boot a second guest that reads the file.
store_scenario() {
    selected store || return 0
    S=$W/store
    rm -rf "$S"
    image=$("$P/store" "$S" register-image "$P/root.ext4" raw "$P/vmlinuz" "$P/guest.cpio") || return 0
    kernel=$("$P/store" "$S" image-file "$image" kernel)
    initrd=$("$P/store" "$S" image-file "$image" initrd)
    vol1=$("$P/store" "$S" create-volume image "$image" 67108864)
    INITRD=$initrd run_guest store-write 1 128 store-write "$kernel" --disk "$(root_disk "$vol1")"
    snap=$("$P/store" "$S" snapshot "$vol1")
    vol2=$("$P/store" "$S" create-volume snapshot "$snap")
    INITRD=$initrd run_guest store-read 1 128 store-read "$kernel" --disk "$(root_disk "$vol2")"
    live_snapshot_scenario "$image"
    echo "@@ store-host image=$image vol1=$vol1 snapshot=$snap vol2=$vol2 snapshot_bytes=$(stat -c %s "$S/snapshots/$snap.qcow2") image_bytes=$(stat -c %s "$P/root.ext4")"
}

# Host side of the live snapshot: once the guest has written its first file, snapshot the
# volume through the VMM's control socket, then tell the guest to go on.
live_host_side() {
    wait_for_line "$console" NUAGE-LIVE-READY || return 0
    live_snap=$("$P/store" "$S" snapshot "$live_vol" "$W/vmm.sock" vol-root 2>&1)
    printf go | dd of="$W/signal.img" conv=notrunc 2>/dev/null
    wait_for_line "$console" NUAGE-LIVE-DONE
    echo "@@ store-live-host snapshot=$live_snap"
}

# The --disk argument that makes store volume $1 the guest's root disk.
root_disk() {
    echo "path=$("$P/store" "$S" volume-path "$1"),format=qcow2,id=vol-root"
}

# A volume snapshotted while its guest writes: the snapshot holds the first file only,
# the volume both. Uses the image $1 and the kernel and initrd store_scenario looked up.
live_snapshot_scenario() {
    live_vol=$("$P/store" "$S" create-volume image "$1" 67108864)
    rm -f "$W/signal.img" && truncate -s 4096 "$W/signal.img"
    INITRD=$initrd DURING=live_host_side run_guest store-live 1 128 store-live "$kernel" \
        --disk "$(root_disk "$live_vol")" --disk "path=$W/signal.img,id=vol-signal" --api-socket "$W/vmm.sock"
    from_snap=$("$P/store" "$S" create-volume snapshot "$live_snap")
    INITRD=$initrd run_guest store-check-snapshot 1 128 store-check "$kernel" --disk "$(root_disk "$from_snap")"
    INITRD=$initrd run_guest store-check-volume 1 128 store-check "$kernel" --disk "$(root_disk "$live_vol")"
}

# Host side of the I/O benchmark while the guest runs: receive its TCP stream.
iobench_host_side() {
    ip addr add 10.0.7.1/24 dev nt0 && ip link set nt0 up
    "$P/nuage-bench" tcp-recv 5001 > "$W/tcp-recv.out" &
    receiver=$!
    wait_for_line "$console" NUAGE-BENCH-DONE
    # The stream has ended once the guest is done; a receiver still waiting never got one.
    ( sleep 10; kill "$receiver" 2>/dev/null ) &
    wait "$receiver"
    sed "s/^/@@ $name-host /" "$W/tcp-recv.out"
}

# The I/O benchmark's guest under the other VMM (Firecracker's configuration format): the
# same kernel, initramfs, disk file and tap; its console lines are prefixed [$name].
iobench_other_vmm() {
    name=$1 console=$W/$1.console
    cat >"$W/other-io.json" <<JSON
{"boot-source": {"kernel_image_path": "$P/vmlinux", "initrd_path": "$P/guest.cpio",
                 "boot_args": "$BASE_CMDLINE nuage.action=bench-io"},
 "drives": [{"drive_id": "vol-bench", "path_on_host": "$W/bench.img", "is_root_device": false, "is_read_only": false}],
 "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "nt0", "guest_mac": "52:54:00:00:07:02"}],
 "machine-config": {"vcpu_count": 2, "mem_size_mib": 512}}
JSON
    "$P/other-vmm" --no-api --config-file "$W/other-io.json" >"$console" 2>&1 &
    pid=$!
    dog=$(watchdog "$pid" "$GUEST_TIMEOUT")
    wait_for_line "$console" NUAGE-INIT-MARKER && iobench_host_side
    kill -TERM "$pid" 2>/dev/null
    ( sleep 3; kill -KILL "$pid" 2>/dev/null ) &
    wait "$pid"
    kill "$dog" 2>/dev/null
    sed "s/^/[$name] /" "$console"
    ip link del nt0 2>/dev/null || true
}

# iobench_variant VARIANT ROUND: the I/O benchmark's guest once, as "iobench-VARIANT-ROUND":
# under nuage-vmm (nuage), nuage-vmm without its seccomp filters (unfiltered), nuage-vmm in
# its jail (jailed; it cannot create a tap, so it attaches to one made for its user), the
# baseline nuage-vmm (baseline) or the other VMM (other).
iobench_variant() {
    name=iobench-$1-$2
    vmm=$VMM
    case "$1" in
        other) iobench_other_vmm "$name"; return ;;
        baseline) filters="" vmm=$P/baseline-vmm ;;
        unfiltered) filters=--no-seccomp ;;
        jailed) filters=$JAIL && ip tuntap add nt0 mode tap vnet_hdr user "$JAIL_UID" group "$JAIL_UID" ;;
        *) filters="" ;;
    esac
    saved=$VMM VMM=$vmm
    DURING=iobench_host_side run_guest "$name" 2 512 bench-io "$P/vmlinux" $filters \
        --disk "path=$W/bench.img,id=vol-bench" --net "tap=nt0,mac=52:54:00:00:07:02,ip=10.0.7.2"
    VMM=$saved
    ip link del nt0 2>/dev/null || true
}

# Rounds of the I/O benchmark: every VMM runs once a round, each round in an order rotated
# by one, so that none always runs first (on a cold disk file and page cache) or after the
# same neighbour; the report takes each test's median over the rounds.
IO_ROUNDS=3

if [ "${1:-}" = iobench-namespace ]; then
    ip link set lo up
    rm -f "$W/bench.img" && truncate -s 256M "$W/bench.img"
    "$P/nuage-bench" blk "$W/bench.img" "${NUAGE_RUNS:-3}" | sed 's/^/@@ iobench-host /'
    # Reference: the same stream over loopback, host to host.
    "$P/nuage-bench" tcp-recv 5002 | sed 's/^/@@ iobench-loopback /' &
    sleep 1
    "$P/nuage-bench" tcp-send 127.0.0.1:5002 256 > /dev/null
    wait
    BASE_CMDLINE="$BASE_CMDLINE nuage.seconds=${NUAGE_RUNS:-3}"
    # Every VMM boots the same ELF kernel on the same file and tap.
    # With a baseline nuage-vmm the run is about a change: that VMM takes the place of the
    # runs without filters and in the jail.
    variants="nuage"
    [ -x "$P/other-vmm" ] && variants="$variants other"
    if [ -x "$P/baseline-vmm" ]; then variants="$variants baseline"; else variants="$variants unfiltered jailed"; fi
    echo "@@ iobench-config rounds=$IO_ROUNDS variants=$(echo $variants | tr ' ' ,)"
    round=1
    while [ "$round" -le "$IO_ROUNDS" ]; do
        for variant in $variants; do iobench_variant "$variant" "$round"; done
        # The next round starts one further along.
        variants="$(echo $variants | cut -d' ' -f2-) ${variants%% *}"
        round=$((round + 1))
    done
    exit 0
fi

if [ "${1:-}" = net-namespace ]; then
    ip link set lo up
    DURING=net_host_checks run_guest net 1 128 net "$P/vmlinuz" \
        --net "tap=nt0,mac=52:54:00:00:07:02,ip=10.0.7.2"
    exit 0
fi

if [ "${1:-}" = plane-namespace ]; then
    ip link set lo up
    unshare -n sleep "$GUEST_TIMEOUT" &
    lan=$!
    while [ "$(readlink /proc/$lan/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.1; done
    ip link add uplink type veth peer name lan0
    ip link set lan0 netns "$lan"
    ip addr add 192.168.50.1/24 dev uplink && ip link set uplink up
    nsenter -t "$lan" -n sh -c 'ip link set lo up && ip addr add 192.168.50.2/24 dev lan0 && ip link set lan0 up'
    NET="$P/net $W/plane --uplink uplink --pool 192.168.50.10"
    subnet=$($NET create-subnet 10.0.9.0/24)
    set -- $($NET attach "$subnet" i-planea)
    net_a=$1 ip_a=$2
    set -- $($NET attach "$subnet" i-planeb)
    net_b=$1 ip_b=$2
    addr_a=${ip_a#ip=} addr_b=${ip_b#ip=}
    addr_a=${addr_a%%:*} addr_b=${addr_b%%:*}
    rm -f "$W/plane.done"
    set -- $($NET allocate-address)
    eip=$1
    $NET associate-address "$eip" "$addr_a"
    echo "@@ plane-setup subnet=$subnet a=$net_a b=$net_b eip=$eip"
    (BASE_CMDLINE="$BASE_CMDLINE $ip_b nuage.peer=$addr_a" DURING=plane_b_lingers run_guest plane-b 1 128 peer "$P/vmlinuz" --net "$net_b") &
    guest_b=$!
    BASE_CMDLINE="$BASE_CMDLINE $ip_a nuage.peer=$addr_b" DURING=plane_host_checks \
        run_guest plane-a 1 128 peer "$P/vmlinuz" --net "$net_a"
    wait "$guest_b"
    $NET detach "$subnet" i-planea && $NET detach "$subnet" i-planeb
    echo "@@ plane-teardown taps_left=$(ip -o link show | grep -c ntap-)"
    kill "$lan"
    exit 0
fi

# The JSON string values of key $1 in what `nuage --output json` printed on stdin.
json_values() { grep -o "\"$1\": \"[^\"]*\"" | cut -d'"' -f4; }

# alone SCENARIO: runs SCENARIO (its "SCENARIO-namespace" part) in a network namespace of
# its own, only when it is the one asked for (--only SCENARIO).
alone() {
    [ "${NUAGE_ONLY:-}" = "$1" ] || return 0
    unshare -n sh "$0" "$1-namespace"
}

# own_nuaged: loopback up, and nuaged started on this run's own state directory.
own_nuaged() {
    ip link set lo up
    start_nuaged --state-dir "$W/nuaged" --socket "$W/nuaged.sock" --vmm "$VMM"
}

# wait_until SECONDS COMMAND...: polls COMMAND twice a second until it succeeds.
wait_until() {
    limit=$(( $1 * 2 )); shift
    n=0
    until "$@" || [ "$n" -ge "$limit" ]; do sleep 0.5; n=$((n + 1)); done
}

# start_nuaged [NUAGED FLAGS...]: starts nuaged (on its embedded defaults unless flags say
# otherwise), waits for its socket and defines nuage() to call it; $nuaged is its pid.
start_nuaged() {
    "$P/nuaged" --log-level warn "$@" 2>"$W/nuaged.log" &
    nuaged=$!
    socket=/run/nuage/nuaged.sock prev=""
    for arg in "$@"; do
        [ "$prev" = --socket ] && socket=$arg
        prev=$arg
    done
    i=0
    while [ ! -S "$socket" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    nuage() { "$P/nuage" --endpoint "$socket" "$@"; }
}

# register_default_image ACTION: registers the default image (the stock kernel, the test
# initramfs, the ext4 root disk) whose guests do ACTION; prints its id.
register_default_image() {
    nuage --output json register-image --name default --disk "$P/root.ext4" --kernel "$P/vmlinuz" \
        --initrd "$P/guest.cpio" --kernel-cmdline "panic=-1 quiet nuage.action=$1" | json_values image_id
}

# stop_nuaged: stops nuaged and prints its log.
stop_nuaged() {
    kill "$nuaged"
    wait "$nuaged"
    sed "s/^/[nuaged] /" "$W/nuaged.log"
}

# daemon_launch COUNT: the main job. nuaged on its embedded defaults registers the default
# image and launches COUNT instances of it, whose guests power off; waits until each is
# stopped and prints an "@@ daemon-instance" line per instance with its console's verdict,
# then terminates them and prints "@@ daemon-host".
daemon_launch() {
    count=$1
    start_nuaged
    image=$(register_default_image poweroff)
    ids=$(nuage --output json run-instances --image-id "$image" --count "$count" | json_values instance_id)
    nuage describe-instances
    for id in $ids; do
        i=0
        until nuage --output json describe-instances --instance-ids "$id" | grep -q '"state": "stopped"'; do
            [ "$i" -ge "$GUEST_TIMEOUT" ] && break
            sleep 1
            i=$((i + 1))
        done
        state=$(nuage --output json describe-instances --instance-ids "$id" | json_values state)
        marker=$(nuage get-console-output --instance-id "$id" | grep -c NUAGE-INIT-MARKER)
        nuage get-console-output --instance-id "$id" | sed "s/^/[$id] /"
        echo "@@ daemon-instance id=$id state=$state init_marker=$marker"
    done
    nuage describe-instances
    # shellcheck disable=SC2086
    nuage terminate-instances --instance-ids $ids
    left=$(nuage --output json describe-instances --states running stopped | json_values instance_id | wc -l)
    echo "@@ daemon-host image=$image instances=$(echo $ids | wc -w) not_terminated=$left"
    stop_nuaged
}

# wait_console ID TEXT COUNT: waits until instance ID's console shows TEXT COUNT times.
wait_console() {
    i=0
    until [ "$(nuage get-console-output --instance-id "$1" | grep -c "$2")" -ge "$3" ]; do
        [ "$i" -ge "$GUEST_TIMEOUT" ] && return 1
        sleep 1
        i=$((i + 1))
    done
}

# ssh_to KEY ADDRESS COMMAND: runs COMMAND as $SSH_USER (default root) on ADDRESS,
# authenticated by KEY only.
ssh_to() {
    ssh -i "$1" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=30 -o LogLevel=ERROR "${SSH_USER:-root}@$2" "$3"
}

# The metadata service through busybox nc in HTTP/1.0, for guests without curl: defines
# imds METHOD PATH [HEADER], which sets $code and $body.
IMDS_NC='imds() { { printf "%s %s HTTP/1.0\r\n" "$1" "$2"; [ -n "$3" ] && printf "%s\r\n" "$3"; printf "\r\n"; } | nc -w 5 169.254.169.254 80 | tr -d "\r" > /root/imds; code=$(head -1 /root/imds | cut -d" " -f2); body=$(sed "1,/^$/d" /root/imds); }'


# A distribution's cloud disk as users get it (images/debian-cloud: Debian 12, systemd,
# stock cloud-init, openssh-server), registered as it is (its /boot gives kernel and
# initrd), in a network namespace of its own with a LAN for an Elastic IP: cloud-init
# configures the guest from its config drive (hostname, the key pair for user debian, a
# #! user-data script, the static address), SSH works as debian, and inside the guest curl
# reads the metadata service with a token (instance-id, local-ipv4, public-ipv4 once an
# Elastic IP is associated); a token of another instance (a busybox guest's) is refused.
# Minutes of systemd and cloud-init under nested emulation: it runs in an L1 run of its
# own (`--only cloud`), never with the others.
cloud_scenario() {
    [ "${NUAGE_ONLY:-}" = cloud ] || return 0
    [ -f "$P/debian.qcow2" ] || { echo "@@ cloud-guest skipped=no-image"; return 0; }
    unshare -n sh "$0" cloud-namespace
}

if [ "${1:-}" = cloud-namespace ]; then
    ip link set lo up
    ip link add uplink type veth peer name lan0
    ip link set uplink up && ip link set lan0 up
    start_nuaged --state-dir "$W/cloud" --socket "$W/cloud.sock" --vmm "$VMM" \
        --uplink uplink --address-pool 192.168.99.10
    subnet=$(nuage --output json create-subnet --cidr-block 10.0.32.0/24 | json_values subnet_id)
    nuage create-key-pair --key-name ci --key-type ed25519 >"$W/cloud.pem"
    chmod 600 "$W/cloud.pem"
    t0=$(now_cs)
    image=$(nuage --output json register-image --name debian-12 --disk "$P/debian.qcow2" --disk-format qcow2 \
        | json_values image_id)
    register_s=$(seconds $(( $(now_cs) - t0 )))
    cmdline=$(nuage --output json describe-images --image-ids "$image" | json_values kernel_cmdline)
    # User data as users combine a #cloud-config and a #! script: MIME multipart.
    printf '%s\n' 'Content-Type: multipart/mixed; boundary="nuage"' 'MIME-Version: 1.0' '' '--nuage' \
        'Content-Type: text/cloud-config' '' '#cloud-config' 'write_files:' '  - path: /var/tmp/nuage-cloud-config' \
        '    content: "cloud-config applied"' '--nuage' 'Content-Type: text/x-shellscript' '' '#!/bin/sh' \
        'echo "user data ran as $(id -un)" > /var/tmp/nuage-user-data' '--nuage--' >"$W/cloud-user-data"
    t0=$(now_cs)
    id=$(nuage --output json run-instances --image-id "$image" --instance-type t.micro --subnet-id "$subnet" \
        --key-name ci --user-data "file://$W/cloud-user-data" | json_values instance_id)
    address=$(nuage --output json describe-instances --instance-ids "$id" | json_values private_ip_address)
    # RunInstances to a shell as the default user: cloud-init has made the user, put the key
    # there and generated the host keys by then.
    ssh_ready=no i=0
    while [ "$i" -lt "$GUEST_TIMEOUT" ]; do
        SSH_USER=debian ssh_to "$W/cloud.pem" "$address" true >/dev/null 2>&1 && { ssh_ready=yes; break; }
        sleep 5
        i=$((i + 5))
    done
    ssh_s=$(seconds $(( $(now_cs) - t0 )))
    as_debian() { SSH_USER=debian ssh_to "$W/cloud.pem" "$address" "$1" 2>&1 | tr -d '\r'; }
    status=$(as_debian "cloud-init status --wait" | sed -n 's/^status: //p' | tail -1)
    cloud_init_s=$(seconds $(( $(now_cs) - t0 )))
    hostname=$(as_debian hostname)
    user_data=$(as_debian "cat /var/tmp/nuage-user-data" | tr ' ' _)
    cloud_config=$(as_debian "cat /var/tmp/nuage-cloud-config" | tr ' ' _)
    datasource=$(as_debian "cloud-init query platform" | tr ' ' _)
    pid1=$(as_debian "cat /proc/1/comm")
    allocation=$(nuage --output json allocate-address | json_values allocation_id)
    nuage associate-address --allocation-id "$allocation" --instance-id "$id" >/dev/null
    # A busybox instance beside it, whose token the Debian guest then tries.
    other_image=$(register_default_image ssh)
    other=$(nuage --output json run-instances --image-id "$other_image" --subnet-id "$subnet" --key-name ci \
        | json_values instance_id)
    other_address=$(nuage --output json describe-instances --instance-ids "$other" | json_values private_ip_address)
    wait_console "$other" NUAGE-SSH-READY 1
    foreign_token=$(ssh_to "$W/cloud.pem" "$other_address" "$IMDS_NC"'
imds PUT /latest/api/token "X-aws-ec2-metadata-token-ttl-seconds: 60"; echo "$body"' 2>/dev/null | tr -d '\r')
    imds=$(as_debian '
body() { curl -s -H "X-aws-ec2-metadata-token: $1" "http://169.254.169.254/latest/meta-data/$2"; }
code() { curl -s -o /dev/null -w %{http_code} -H "X-aws-ec2-metadata-token: $1" "http://169.254.169.254/latest/meta-data/$2"; }
t=$(curl -s -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token)
echo "id=$(body "$t" instance-id) ipv4=$(body "$t" local-ipv4) public=$(body "$t" public-ipv4)"
echo "v1=$(curl -s -o /dev/null -w %{http_code} http://169.254.169.254/latest/meta-data/instance-id)"
echo "foreign=$(code '"$foreign_token"' instance-id)"' | tr '\n' ' ')
    # What cloud-init did, and the guest's routes, for whoever reads a failure.
    as_debian "cloud-init status --long; ip route; sudo ls /var/lib/cloud/instance/scripts; sudo head -c 120 /var/lib/cloud/instance/user-data.txt; echo; sudo grep -E 'WARNING|ERROR|Traceback|scripts.user|part-001' /var/log/cloud-init.log | head -n 20" \
        | sed "s/^/[cloud-init] /"
    echo "@@ cloud-guest instance=$id address=$address cmdline=$(echo "$cmdline" | tr ' ' ,) register_s=$register_s ssh_ready=$ssh_ready ssh_s=$ssh_s cloud_init=${status:-none} cloud_init_s=$cloud_init_s hostname=$hostname user_data=${user_data:-none} cloud_config=${cloud_config:-none} platform=${datasource:-none} pid1=$pid1 $imds"
    nuage get-console-output --instance-id "$id" | tail -n 40 | sed "s/^/[$id] /"
    nuage terminate-instances --instance-ids "$id" "$other" >/dev/null
    stop_nuaged
    exit 0
fi

# wait_banner ADDRESS: waits until ADDRESS:22 sends an SSH banner (up to GUEST_TIMEOUT s).
wait_banner() {
    i=0
    while [ "$i" -lt "$((GUEST_TIMEOUT * 2))" ]; do
        case "$(nc -w 2 "$1" 22 </dev/null 2>/dev/null | head -c 4)" in SSH-) return 0 ;; esac
        sleep 0.5
        i=$((i + 1))
    done
    return 1
}

# Time to SSH: RunInstances to the guest's SSH banner, for the Debian cloud disk and for
# the busybox test image (with its time to the init marker), alternating, NUAGE_RUNS times.
if [ "${1:-}" = sshbench-namespace ]; then
    ip link set lo up
    start_nuaged --state-dir "$W/sshbench" --socket "$W/sshbench.sock" --vmm "$VMM"
    subnet=$(nuage --output json create-subnet --cidr-block 10.0.33.0/24 | json_values subnet_id)
    nuage create-key-pair --key-name ci --key-type ed25519 >/dev/null
    debian=$(nuage --output json register-image --name debian-12 --disk "$P/debian.qcow2" --disk-format qcow2 \
        | json_values image_id)
    busybox=$(register_default_image ssh)
    echo "@@ sshbench-config runs=${NUAGE_RUNS:-5}"
    r=1
    while [ "$r" -le "${NUAGE_RUNS:-5}" ]; do
        for kind in debian busybox; do
            eval image=\$$kind
            t0=$(now_cs)
            id=$(nuage --output json run-instances --image-id "$image" --instance-type t.micro --subnet-id "$subnet" \
                --key-name ci | json_values instance_id)
            launched=$(( $(now_cs) - t0 ))
            address=$(nuage --output json describe-instances --instance-ids "$id" | json_values private_ip_address)
            init=""
            if [ "$kind" = busybox ] && wait_console "$id" NUAGE-INIT-MARKER 1; then
                init="init_s=$(seconds $(( $(now_cs) - t0 )))"
            fi
            result=failed
            wait_banner "$address" && result="ssh_s=$(seconds $(( $(now_cs) - t0 )))"
            echo "@@ sshbench image=$kind run=$r run_instances_s=$(seconds "$launched") $result $init"
            nuage terminate-instances --instance-ids "$id" >/dev/null
        done
        r=$((r + 1))
    done
    stop_nuaged
    exit 0
fi

# The daemon end to end, in a network namespace of its own (the "LAN" the SSH client is
# on): nuaged makes a subnet and an ed25519 key pair and launches two instances of the
# default image with the key and user data. Each guest configures its leased address,
# installs the key from its config drive and serves SSH. Over SSH with the private key,
# one instance writes a file to its root volume; after a stop and a start it has the same
# address and the file. From inside, the guest reaches its gateway with ICMP but none of
# the host's ports there (the API over TCP, the metrics page, any other listener), which the
# host itself reaches. Terminating cleans up taps and drives.
daemon_scenario() {
    selected daemon || return 0
    unshare -n sh "$0" daemon-namespace
}

if [ "${1:-}" = daemon-namespace ]; then
    ip link set lo up
    start_nuaged --state-dir "$W/nuaged" --socket "$W/nuaged.sock" --vmm "$VMM" \
        --tcp-listen 0.0.0.0:7443 --tls-cert "$P/tls.pem" --tls-key "$P/tls.key" --tls-client-ca "$P/tls.pem" \
        --metrics-address 0.0.0.0:9464
    busybox nc -ll -p 7000 -e true 2>/dev/null &
    listener=$!
    subnet=$(nuage --output json create-subnet --cidr-block 10.0.31.0/24 | json_values subnet_id)
    nuage create-key-pair --key-name ci --key-type ed25519 >"$W/ci.pem"
    nuage create-key-pair --key-name other --key-type ed25519 >"$W/other.pem"
    chmod 600 "$W/ci.pem" "$W/other.pem"
    image=$(register_default_image ssh)
    ids=$(nuage --output json run-instances --image-id "$image" --count 2 --subnet-id "$subnet" \
        --key-name ci --user-data nuage-user-data | json_values instance_id)
    for id in $ids; do
        ready=no
        wait_console "$id" NUAGE-SSH-READY 1 && ready=yes
        state=$(nuage --output json describe-instances --instance-ids "$id" | json_values state)
        address=$(nuage --output json describe-instances --instance-ids "$id" | json_values private_ip_address)
        cidata=$(nuage get-console-output --instance-id "$id" | sed -n 's/.*NUAGE-CIDATA //p' | tr -d '\r' | tr ' ' ,)
        echo "@@ daemon-instance id=$id state=$state address=${address:-none} ssh_ready=$ready cidata=${cidata:-none}"
    done
    first=$(echo $ids | cut -d' ' -f1)
    address=$(nuage --output json describe-instances --instance-ids "$first" | json_values private_ip_address)
    token=written-over-ssh-$(cut -c1-8 /proc/sys/kernel/random/uuid)
    out=$(ssh_to "$W/ci.pem" "$address" \
        "hostname; mount -t ext4 /dev/vda /mnt && echo $token > /mnt/ssh-data && umount /mnt && sync && echo stored" 2>&1)
    echo "$out" | sed 's/^/[ssh] /'
    login=fail; [ "$(echo "$out" | head -1)" = "$first" ] && login=ok
    stored=fail; echo "$out" | grep -qx stored && stored=ok
    wrong_key=accepted
    ssh_to "$W/other.pem" "$address" true >/dev/null 2>&1 || wrong_key=refused
    gateway=10.0.31.1
    probes="ping -c 1 -W 3 $gateway >/dev/null 2>&1 && echo icmp=ok || echo icmp=fail"
    for port in 7443 9464 7000; do
        host_side=closed
        busybox nc -w 3 "$gateway" "$port" </dev/null >/dev/null 2>&1 && host_side=open
        probes="$probes; nc -w 3 $gateway $port </dev/null >/dev/null 2>&1 && echo $port=open || echo $port=closed"
        echo "@@ daemon-port port=$port from_host=$host_side"
    done
    from_guest=$(ssh_to "$W/ci.pem" "$address" "$probes" 2>&1 | tr -d '\r' | tr '\n' ' ')
    echo "@@ daemon-guest-reach $from_guest"
    # The metadata service from inside real guests, in HTTP/1.0 through busybox nc: the
    # first instance's token opens its own data, a read without one is refused (tokens are
    # required by default), and the second instance cannot use the first one's token.
    imds=$IMDS_NC
    mine=$(ssh_to "$W/ci.pem" "$address" "$imds"'
imds PUT /latest/api/token "X-aws-ec2-metadata-token-ttl-seconds: 60"; t=$body; echo token=$code
h="X-aws-ec2-metadata-token: $t"
imds GET /latest/meta-data/instance-id; echo v1=$code
imds GET /latest/meta-data/instance-id "$h"; echo id=$body
imds GET /latest/meta-data/local-ipv4 "$h"; echo ipv4=$body
imds GET /latest/meta-data/public-keys/0/openssh-key "$h"; [ "$body" = "$(cat /root/.ssh/authorized_keys)" ] && echo key=same || echo key=other
imds GET /latest/user-data "$h"; echo user_data=$body
echo "$t" > /root/imds-token' 2>&1 | tr '\n' ' ')
    stolen=$(ssh_to "$W/ci.pem" "$address" "cat /root/imds-token" 2>/dev/null)
    second=$(echo $ids | cut -d' ' -f2)
    second_address=$(nuage --output json describe-instances --instance-ids "$second" | json_values private_ip_address)
    theirs=$(ssh_to "$W/ci.pem" "$second_address" "$imds"'
imds GET /latest/meta-data/instance-id "X-aws-ec2-metadata-token: '"$stolen"'"; echo foreign=$code' 2>&1 | tr '\n' ' ')
    echo "@@ daemon-imds instance=$first $mine $theirs"
    # The VMM runs jailed and confined: its own user, PID namespace and root, its threads'
    # seccomp filters and its cgroup's limits (issue 16). The pid file names its relay.
    relay=$(cat "$W/nuaged/instances/$first/pid")
    pid=$(cut -d' ' -f1 "/proc/$relay/task/$relay/children")
    jail="uid=$(awk '/^Uid:/ {print $2}' /proc/"$pid"/status) relay_uid=$(awk '/^Uid:/ {print $2}' /proc/"$relay"/status)"
    jail="$jail nspid=$(awk '/^NSpid:/ {print $NF}' /proc/"$pid"/status) root_top=$(ls -A /proc/"$pid"/root | tr '\n' ,)"
    cg=/sys/fs/cgroup/instances/$first
    in_cgroup=no; grep -qx "$pid" "$cg/cgroup.procs" 2>/dev/null && in_cgroup=yes
    filtered=$(cat /proc/"$pid"/task/*/status | awk '/^Seccomp:/ {n[$2]++} END {for (s in n) printf "%s:%d,", s, n[s]}')
    cap_eff=$(awk '/^CapEff:/ {print $2}' /proc/"$pid"/status)
    cap_bnd=$(awk '/^CapBnd:/ {print $2}' /proc/"$pid"/status)
    echo "@@ daemon-confined $jail seccomp=${filtered%,} cap_eff=$cap_eff cap_bnd=$cap_bnd in_cgroup=$in_cgroup cpu_max=$(tr ' ' / < "$cg/cpu.max") memory_max=$(cat "$cg/memory.max") pids_max=$(cat "$cg/pids.max") memory_peak=$(cat "$cg/memory.peak" 2>/dev/null || echo none) memory_now=$(cat "$cg/memory.current")"
    # A load balancer in front of both instances (issue 18): each guest serves its own id
    # (its hostname) with busybox httpd; requests from this namespace, the LAN side, reach
    # both; with the first instance stopped, all reach the second at once; started and
    # serving again, it is back in rotation once its health checks pass.
    serve_id() {
        ssh_to "$W/ci.pem" "$1" "mkdir -p /www && hostname > /www/index.html && busybox httpd -p 80 -h /www" \
            >/dev/null 2>&1
    }
    serve_id "$address"
    serve_id "$second_address"
    lb=$(nuage --output json elbv2 create-load-balancer --name web | json_values load_balancer_arn)
    tg=$(nuage --output json elbv2 create-target-group --name web-80 --protocol HTTP --port 80 \
        --health-check-interval-seconds 5 --health-check-timeout-seconds 2 --healthy-threshold-count 2 \
        | json_values target_group_arn)
    nuage elbv2 register-targets --target-group-arn "$tg" --targets "Id=$first" "Id=$second"
    nuage elbv2 create-listener --load-balancer-arn "$lb" --protocol HTTP --port 8080 \
        --default-actions "Type=forward,TargetGroupArn=$tg" >/dev/null
    # answers N: the distinct bodies of N requests through the balancer, sorted.
    answers() { fetch_n "$1" http://127.0.0.1:8080/ | sort -u | tr '\n' ,; }
    # wait_healthy N: waits (up to a minute) until N targets are healthy.
    wait_healthy() {
        n=0
        while [ "$(nuage --output json elbv2 describe-target-health --target-group-arn "$tg" \
            | json_values state | grep -c '^healthy$')" != "$1" ] && [ "$n" -lt 120 ]; do
            sleep 0.5
            n=$((n + 1))
        done
    }
    wait_healthy 2
    lb_both=$(answers 10)
    # For whoever reads a failure: what the balancer saw and said.
    nuage elbv2 describe-target-health --target-group-arn "$tg" | sed 's/^/[elb] /'
    busybox timeout 5 busybox wget -S -O - http://127.0.0.1:8080/ 2>&1 | head -n 8 | sed 's/^/[elb] /'
    cat "$W"/nuaged/balancers/*/lb.log 2>&1 | tail -n 20 | sed 's/^/[nuage-lb] /'
    ls -l "$P/nuage-lb" 2>&1 | sed 's/^/[elb] /'
    tail -n 5 "$W/nuaged.log" | sed 's/^/[nuaged] /'
    t0=$(now_cs)
    nuage stop-instances --instance-ids "$first"
    stop_s=$(seconds $(( $(now_cs) - t0 )))
    lb_after_stop=$(answers 6)
    graceful=no
    nuage get-console-output --instance-id "$first" | grep -q NUAGE-CTRL-ALT-DEL && graceful=yes
    nuage start-instances --instance-ids "$first"
    restarted=no
    wait_console "$first" NUAGE-SSH-READY 2 && restarted=yes
    after=$(nuage --output json describe-instances --instance-ids "$first" | json_values private_ip_address)
    serve_id "$after"
    wait_healthy 2
    lb_back=$(answers 10)
    lb_pid=$(cat "$W"/nuaged/balancers/*/pid)
    nuage elbv2 delete-load-balancer --load-balancer-arn "$lb"
    n=0
    while [ -d "/proc/$lb_pid" ] && [ "$n" -lt 50 ]; do sleep 0.2; n=$((n + 1)); done
    lb_left=0; [ -d "/proc/$lb_pid" ] && lb_left=1
    echo "@@ daemon-elb second=$second both=$lb_both after_stop=$lb_after_stop back=$lb_back lb_pid=${lb_pid:-none} lb_left=$lb_left"
    nuage elbv2 delete-target-group --target-group-arn "$tg"
    kept=$(ssh_to "$W/ci.pem" "$after" "mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/ssh-data; umount /mnt" 2>&1)
    echo "$kept" | sed 's/^/[ssh] /'
    data_kept=no; [ "$kept" = "$token" ] && data_kept=yes
    echo "@@ daemon-ssh login=$login stored=$stored wrong_key=$wrong_key graceful_stop=$graceful stop_s=$stop_s restarted=$restarted address=$address address_after=${after:-none} data_kept=$data_kept"
    for id in $ids; do nuage get-console-output --instance-id "$id" | sed "s/^/[$id] /"; done
    # shellcheck disable=SC2086
    nuage terminate-instances --instance-ids $ids
    left=$(nuage --output json describe-instances --states pending running stopping stopped | json_values instance_id | wc -l)
    taps=$(ip -br link | grep -c ntap-)
    drives=$(ls "$W"/nuaged/instances/*/cidata.img 2>/dev/null | wc -l)
    # The kernel the image boots: "vmlinux" where registration unpacked the bzImage.
    booted=$(sed -n 's/.*"kernel": *"\([^"]*\)".*/\1/p' "$W/nuaged/store/images/$image/image.json")
    echo "@@ daemon-host image=$image instances=$(echo $ids | wc -w) not_terminated=$left taps_left=$taps drives_left=$drives booted_kernel=${booted:-none}"
    kill "$listener" 2>/dev/null
    stop_nuaged
    exit 0
fi

# The Auto Scaling scenario (issue 19), run only when asked for alone (--only asg, or the
# asgbench mode): a group of two instances of a launch template behind a load balancer,
# each serving its id from its user data's script. Each round kills one's VMM (the group
# replaces it: "replaced_s", failure to the replacement passing the balancer's health
# check), then loads the balancer from this namespace, the LAN side, above the group's
# ALBRequestCountPerTarget target (it grows to its max: "scale_out_s", load start to the new
# instance serving) and stops (it shrinks to its min after the cooldown). Last, an instance
# refresh onto a new version under a client loop: no request may fail.
if [ "${1:-}" = asg-namespace ]; then
    own_nuaged
    json_numbers() { grep -o "\"$1\": [0-9]*" | awk '{print $2}'; }
    subnet=$(nuage --output json create-subnet --cidr-block 10.0.32.0/24 | json_values subnet_id)
    image=$(register_default_image ssh)
    # serve VERSION: user data whose script serves "<hostname> <VERSION>" on port 80.
    serve() {
        printf '#!/bin/sh\nmkdir -p /www && echo "$(hostname) %s" > /www/index.html && busybox httpd -p 80 -h /www\n' "$1" \
            | base64 -w 0
    }
    template_data() {
        echo "{\"ImageId\":\"$image\",\"SubnetId\":\"$subnet\",\"UserData\":\"$(serve "$1")\"}"
    }
    lb=$(nuage --output json elbv2 create-load-balancer --name asg | json_values load_balancer_arn)
    tg=$(nuage --output json elbv2 create-target-group --name asg-80 --protocol HTTP --port 80 \
        --health-check-interval-seconds 5 --health-check-timeout-seconds 2 --healthy-threshold-count 2 \
        --unhealthy-threshold-count 2 | json_values target_group_arn)
    [ -n "$tg" ] || { echo "@@ asg-start failed=no-target-group"; stop_nuaged; exit 0; }
    # Draining lets what an instance serves finish before it goes.
    nuage elbv2 modify-target-group-attributes --target-group-arn "$tg" \
        --attributes Key=deregistration_delay.timeout_seconds,Value=3 >/dev/null
    nuage elbv2 create-listener --load-balancer-arn "$lb" --protocol HTTP --port 8080 \
        --default-actions "Type=forward,TargetGroupArn=$tg" >/dev/null
    nuage create-launch-template --launch-template-name asg --launch-template-data "$(template_data v1)" >/dev/null
    nuage autoscaling create-auto-scaling-group --auto-scaling-group-name asg \
        --launch-template 'LaunchTemplateName=asg,Version=1' --min-size 2 --max-size 3 \
        --target-group-arns "$tg" --health-check-type ELB --health-check-grace-period 120 \
        --default-instance-warmup 5 >/dev/null
    members() {
        nuage --output json describe-instances --filters Name=tag:aws:autoscaling:groupName,Values=asg \
            --states pending running | json_values instance_id | sort
    }
    healthy() {
        nuage --output json elbv2 describe-target-health --target-group-arn "$tg" | json_values state | grep -c '^healthy$'
    }
    desired() { nuage --output json autoscaling describe-auto-scaling-groups | json_numbers desired_capacity; }
    balancer=http://127.0.0.1:8080/
    # load_for PAUSE: starts requests in the background; $loader is its pid.
    load_for() { rm -f "$W/stop" "$W/load"; requests "$balancer" "$W/load" "$1" & loader=$!; }
    stop_load() { touch "$W/stop"; wait "$loader" 2>/dev/null; }
    two_healthy() { [ "$(healthy)" = 2 ] && [ "$(members | wc -l)" = 2 ]; }
    wait_until 300 two_healthy
    echo "@@ asg-start members=$(members | tr '\n' ,) healthy=$(healthy)"
    rounds=${NUAGE_RUNS:-1}
    [ "${NUAGE_MODE:-test}" = asgbench ] || rounds=1
    round=1
    while [ "$round" -le "$rounds" ]; do
        victim=$(members | head -n 1)
        t0=$(now_cs)
        kill -9 "$(cat "$W/nuaged/instances/$victim/pid")"
        victim_gone() { ! members | grep -qx "$victim"; }
        wait_until 120 victim_gone
        wait_until 300 two_healthy
        replaced_s=$(seconds $(( $(now_cs) - t0 )))
        rm -f "$W/stop"; requests "$balancer" "$W/after-kill" 0 & sampler=$!
        sleep 3; touch "$W/stop"; wait "$sampler"
        served=$(cut -d' ' -f1 "$W/after-kill" | sort -u | tr '\n' ,)
        rm -f "$W/after-kill"
        echo "@@ asg-replace round=$round victim=$victim members=$(members | tr '\n' ,) served=$served replaced_s=$replaced_s"

        nuage autoscaling put-scaling-policy --auto-scaling-group-name asg --policy-name requests \
            --target-tracking-configuration "{\"PredefinedMetricSpecification\":{\"PredefinedMetricType\":\"ALBRequestCountPerTarget\",\"ResourceLabel\":\"$tg\"},\"TargetValue\":60}" \
            --estimated-instance-warmup 5 --cooldown 15 >/dev/null
        t0=$(now_cs)
        load_for 0.1
        three_healthy() { [ "$(healthy)" = 3 ]; }
        wait_until 300 three_healthy
        scale_out_s=$(seconds $(( $(now_cs) - t0 )))
        grown=$(desired)
        stop_load
        rate=$(( $(wc -l < "$W/load") * 6000 / ($(now_cs) - t0 + 1) ))
        t0=$(now_cs)
        wait_until 300 two_healthy
        scale_in_s=$(seconds $(( $(now_cs) - t0 )))
        nuage autoscaling delete-policy --auto-scaling-group-name asg --policy-name requests
        echo "@@ asg-scale round=$round load_per_min=$rate grown=$grown scale_out_s=$scale_out_s shrunk=$(desired) scale_in_s=$scale_in_s"
        round=$((round + 1))
    done

    nuage create-launch-template-version --launch-template-name asg --launch-template-data "$(template_data v2)" >/dev/null
    rm -f "$W/stop" "$W/client"
    requests "$balancer" "$W/client" 0.2 & client=$!
    sleep 2
    t0=$(now_cs)
    nuage autoscaling start-instance-refresh --auto-scaling-group-name asg \
        --preferences '{"MinHealthyPercentage":50,"InstanceWarmup":5}' \
        --desired-configuration '{"LaunchTemplate":{"LaunchTemplateName":"asg","Version":"2"}}' >/dev/null
    refreshed() {
        case "$(nuage --output json autoscaling describe-instance-refreshes --auto-scaling-group-name asg | json_values status | head -n 1)" in
            InProgress) return 1 ;;
        esac
    }
    wait_until 600 refreshed
    refresh_s=$(seconds $(( $(now_cs) - t0 )))
    sleep 2
    touch "$W/stop"; wait "$client"
    status=$(nuage --output json autoscaling describe-instance-refreshes --auto-scaling-group-name asg | json_values status | head -n 1)
    # The group's version, then each instance's.
    versions=$(nuage --output json autoscaling describe-auto-scaling-groups | json_values version | tr '\n' ,)
    total=$(wc -l < "$W/client")
    count_failed "$W/client"
    v2=$(grep -c ' v2$' "$W/client" || true)
    nuage autoscaling describe-instance-refreshes --auto-scaling-group-name asg | sed "s/^/[asg-refresh] /"
    nuage autoscaling describe-scaling-activities --auto-scaling-group-name asg | sed "s/^/[asg-refresh] /"
    echo "@@ asg-refresh status=$status refresh_s=$refresh_s requests=$total failed=$failed answered_by_v2=$v2 versions=$versions members=$(members | wc -l)"
    nuage autoscaling delete-auto-scaling-group --auto-scaling-group-name asg --force-delete
    gone() { [ -z "$(members)" ]; }
    wait_until 120 gone
    echo "@@ asg-delete left=$(members | wc -l)"
    nuage elbv2 delete-load-balancer --load-balancer-arn "$lb"
    stop_nuaged
    exit 0
fi

# The Elastic Beanstalk scenario (issue 20), run only when asked for alone (--only env): an
# application of three versions, the first two the README's sample bundle
# (examples/hello-app, answering "hello from <hostname>, version <version>" on $PORT), the
# third one whose `start` exits at once. An environment of two instances runs v1
# behind its load balancer; a Rolling update to v2, one instance at a time, runs under a
# client loop from this namespace, nuaged SIGKILLed once the deployment's refresh started
# and restarted; the update to v3 fails its health checks and rolls back, v2 serving
# throughout; an Immutable update back to v1 under the client loop; a second environment
# swaps CNAMEs (host ports) with the first; terminating both leaves no instance, volume,
# balancer, group, template or tap.
if [ "${1:-}" = env-namespace ]; then
    own_nuaged
    eb() { nuage --output json elasticbeanstalk "$@"; }
    subnet=$(nuage --output json create-subnet --cidr-block 10.0.33.0/24 | json_values subnet_id)
    image=$(register_default_image ssh)
    # bundle VERSION [broken]: $W/VERSION.tar.gz, the sample serving VERSION (or a start
    # that fails).
    bundle() {
        d=$W/app-$1
        cp -r "$P/hello-app" "$d"
        echo "$1" > "$d/VERSION"
        if [ "${2:-}" = broken ]; then
            printf '#!/bin/sh\necho "version %s does not start"\nexit 1\n' "$1" > "$d/start"
        fi
        chmod +x "$d/start"
        busybox tar -C "$d" -czf "$W/$1.tar.gz" .
    }
    eb create-application --application-name web >/dev/null
    bundle v1 && bundle v2 && bundle v3 broken
    for v in v1 v2 v3; do
        eb create-application-version --application-name web --version-label $v --source-bundle "$W/$v.tar.gz" >/dev/null
    done
    opt() { echo "Namespace=$1,OptionName=$2,Value=$3"; }
    options="$(opt aws:autoscaling:launchconfiguration ImageId "$image") $(opt aws:ec2:vpc Subnets "$subnet")
        $(opt aws:autoscaling:asg MinSize 2) $(opt aws:autoscaling:asg MaxSize 3)
        $(opt aws:elasticbeanstalk:command BatchSize 1) $(opt aws:elasticbeanstalk:command BatchSizeType Fixed)"
    # Refused, making nothing: an unknown version, min above max.
    refused=0
    # shellcheck disable=SC2086
    eb create-environment --application-name web --environment-name web-bad --version-label v9 \
        --option-settings $options >/dev/null 2>&1 || refused=$((refused + 1))
    # shellcheck disable=SC2086
    eb create-environment --application-name web --environment-name web-bad --version-label v1 \
        --option-settings $options "$(opt aws:autoscaling:asg MinSize 4)" >/dev/null 2>&1 || refused=$((refused + 1))
    made_by_refused=$(eb describe-environments --include-deleted | json_values environment_id | wc -l)
    field() { eb describe-environments --environment-names web-prod | json_values "$1" | head -n 1; }
    ready() { [ "$(field status)" = Ready ]; }
    t0=$(now_cs)
    # shellcheck disable=SC2086
    eb create-environment --application-name web --environment-name web-prod --version-label v1 \
        --option-settings $options >/dev/null
    wait_until 600 ready
    create_s=$(seconds $(( $(now_cs) - t0 )))
    url="http://127.0.0.1:$(field endpoint_url | cut -d: -f2)/"
    # sample N: the distinct versions of N requests, sorted.
    sample() { fetch_n "$1" "$url" | sed -n 's/.*, version //p' | sort -u | tr '\n' ,; }
    health=$(eb describe-environment-health --environment-name web-prod | json_values color)
    echo "@@ env-create status=$(field status) health=$health create_s=$create_s served=$(sample 10) refused=$refused made_by_refused=$made_by_refused url=$url"
    eb describe-events --environment-name web-prod | json_values message | sed 's/^/[env-events] /'


    # deploy VERSION FILE [POLICY [CRASH]]: updates to VERSION (by POLICY, if given) under a
    # client loop logging to FILE, nuaged SIGKILLed at failpoint CRASH and restarted when
    # one is named; waits until the environment is ready again.
    deploy() {
        rm -f "$W/stop" "$2"
        requests "$url" "$2" 0.2 & client=$!
        sleep 2
        t0=$(now_cs)
        policy=""
        [ -n "${3:-}" ] && policy="--option-settings $(opt aws:elasticbeanstalk:command DeploymentPolicy "$3")"
        # shellcheck disable=SC2086
        eb update-environment --environment-name web-prod --version-label "$1" $policy >/dev/null
        if [ -n "${4:-}" ]; then
            reached() { grep -q "failpoint reached" "$W/nuaged.log"; }
            wait_until 300 reached
            crashed=no; reached && crashed=yes
            kill -9 "$nuaged"; wait "$nuaged" 2>/dev/null
            rm -f "$W/nuaged.sock"
            start_nuaged --state-dir "$W/nuaged" --socket "$W/nuaged.sock" --vmm "$VMM"
        fi
        wait_until 900 ready
        deploy_s=$(seconds $(( $(now_cs) - t0 )))
        sleep 2
        touch "$W/stop"; wait "$client"
    }
    # The v2 deployment with nuaged SIGKILLed once its refresh started: the balancer and
    # the instances carry on, and the restarted daemon finishes it.
    kill -9 "$nuaged"; wait "$nuaged" 2>/dev/null
    rm -f "$W/nuaged.sock"
    NUAGE_FAILPOINT=environment-after-refresh; export NUAGE_FAILPOINT
    start_nuaged --state-dir "$W/nuaged" --socket "$W/nuaged.sock" --vmm "$VMM"
    unset NUAGE_FAILPOINT
    deploy v2 "$W/client-v2" Rolling environment-after-refresh
    count_failed "$W/client-v2"
    echo "@@ env-update status=$(field status) version=$(field version_label) crashed=$crashed deploy_s=$deploy_s requests=$(wc -l < "$W/client-v2") failed=$failed answered_by_v2=$(grep -c ' v2$' "$W/client-v2" || true) after=$(sample 10)"
    members() {
        nuage --output json describe-instances --filters "Name=tag:elasticbeanstalk:environment-name,Values=web-prod" \
            --states pending running | json_values instance_id | wc -l
    }
    two_members() { [ "$(members)" = 2 ]; }
    # A version that never serves, deployed with an additional batch first: the batch (on
    # v2) is added, the refresh fails and rolls back, and the group returns to its size.
    deploy v3 "$W/client-v3" RollingWithAdditionalBatch
    count_failed "$W/client-v3"
    said=no
    eb describe-events --environment-name web-prod | grep -q 'Failed to deploy application version v3' && said=yes
    batch=no
    eb describe-events --environment-name web-prod | grep -q 'Rolling with an additional batch: adding 1 instance' && batch=yes
    wait_until 180 two_members
    echo "@@ env-rollback status=$(field status) version=$(field version_label) deploy_s=$deploy_s requests=$(wc -l < "$W/client-v3") failed=$failed answered_by_v3=$(grep -c ' v3$' "$W/client-v3" || true) after=$(sample 10) event=$said added_batch=$batch members=$(members)"
    deploy v1 "$W/client-v1" Immutable
    count_failed "$W/client-v1"
    members=$(members)
    echo "@@ env-immutable status=$(field status) version=$(field version_label) deploy_s=$deploy_s requests=$(wc -l < "$W/client-v1") failed=$failed after=$(sample 10) members=$members"
    eb describe-events --environment-name web-prod | json_values message | sed 's/^/[env-events] /'

    # Blue/green: a second environment on v2 (one instance); swapped, the first one's port
    # answers with the second one's version, and the other way round.
    # shellcheck disable=SC2086
    eb create-environment --application-name web --environment-name web-green --version-label v2 \
        --option-settings $options "$(opt aws:autoscaling:asg MinSize 1)" >/dev/null
    green_ready() { [ "$(eb describe-environments --environment-names web-green | json_values status)" = Ready ]; }
    wait_until 600 green_ready
    green_url="http://127.0.0.1:$(eb describe-environments --environment-names web-green | json_values endpoint_url | cut -d: -f2)/"
    eb swap-environment-cnames --source-environment-name web-prod --destination-environment-name web-green
    swapped() { [ "$(sample 4)" = "v2," ]; }
    wait_until 60 swapped
    prod_port_serves=$(sample 6)
    other=$(url=$green_url; sample 6)
    echo "@@ env-swap prod_port_serves=$prod_port_serves green_port_serves=$other prod_url=$url green_url=$green_url prod_after=$(field endpoint_url)"

    for name in web-prod web-green; do
        eb terminate-environment --environment-name $name >/dev/null
    done
    gone() { [ -z "$(eb describe-environments | json_values environment_id)" ]; }
    wait_until 300 gone
    instances=$(nuage --output json describe-instances --states pending running stopping stopped | json_values instance_id | wc -l)
    volumes=$(nuage --output json describe-volumes | json_values volume_id | wc -l)
    balancers=$(nuage --output json elbv2 describe-load-balancers | json_values load_balancer_arn | wc -l)
    groups=$(nuage --output json autoscaling describe-auto-scaling-groups | json_values auto_scaling_group_name | wc -l)
    templates=$(nuage --output json describe-launch-templates | json_values launch_template_id | wc -l)
    taps=$(ip -br link | grep -c ntap- || true)
    statuses=$(eb describe-environments --include-deleted | json_values status | sort -u | tr '\n' ,)
    echo "@@ env-terminate statuses=$statuses instances=$instances volumes=$volumes balancers=$balancers groups=$groups templates=$templates taps=$taps"
    stop_nuaged
    exit 0
fi

# Resident memory of process $1 outside mappings of at least $2 KiB (guest RAM), in KiB;
# then, of the guest RAM mappings, how much is backed by transparent huge pages and whether
# each starts on a 2 MiB boundary (only then can KVM map guest memory with 2 MiB pages).
overhead_kb() {
    awk -v ram="$2" '
        /^[0-9a-f]+-[0-9a-f]+ / { split($1, range, "-"); start = range[1] }
        /^Size:/ { size = $2 }
        /^Rss:/ { if (size < ram) total += $2 }
        /^AnonHugePages:/ { if (size >= ram) { thp += $2; aligned = aligned (substr(start, length(start) - 5) ~ /^[02468ace]00000$/ ? "y" : "n") } else if ($2 > 0) { other = other size "k:" $2 "k," } }
        END { printf "%d guest_thp_kb=%d guest_ram_2m_aligned=%s vmm_thp=%s", total, thp, aligned, other }' "/proc/$1/smaps"
}

# bench_one KIND FLAVOUR FORMAT VCPUS RUN: boots the benchmark guest once (Debian's FLAVOUR
# kernel, cloud or generic, as an ELF vmlinux or a bzImage); prints "@@ bench ..." with the
# time from process start to the init marker, the VMM's memory beyond guest RAM, and the
# guest's boot profile (its kernel log's milestones; the gaps go on "@@ bench-gap" lines).
# nuage-vmm's first run of each configuration counts its exits (--stats: "@@ bench-stats").
bench_one() {
    kind=$1 flavour=$2 format=$3 vcpus=$4 run=$5 mem=128
    suffix=""; [ "$flavour" = generic ] && suffix=-generic
    kernel=$P/vmlinux$suffix; [ "$format" = bzimage ] && kernel=$P/vmlinuz$suffix
    initrd=$P/guest$suffix.cpio
    label="kind=$kind flavour=$flavour format=$format vcpus=$vcpus run=$run"
    fifo=$W/bench.fifo
    rm -f "$fifo" "$W/bench.stderr" && mkfifo "$fifo"
    cmdline="$BASE_CMDLINE nuage.action=profile"
    stats=""; [ "$run" = 1 ] && stats=--stats
    t0=$(now_cs)
    case "$kind" in
        nuage|unfiltered|jailed|baseline)
            # "unfiltered": the same VMM without its seccomp filters, to measure what they
            # cost; "jailed": in its jail, as nuaged runs it, to measure what that costs;
            # "baseline": a nuage-vmm built from another commit.
            filters="" vmm=$VMM
            [ "$kind" = unfiltered ] && filters=--no-seccomp && stats=""
            [ "$kind" = jailed ] && filters="$JAIL" && stats=""
            [ "$kind" = baseline ] && vmm=$P/baseline-vmm && stats=""
            "$vmm" --kernel "$kernel" --initrd "$initrd" --vcpus "$vcpus" --memory "$mem" $stats $filters \
                --log-level nuage::vmm::cli=info --cmdline "$cmdline" --console-stdout >"$fifo" 2>"$W/bench.stderr" &
            ;;
        other)
            cat >"$W/other.json" <<JSON
{"boot-source": {"kernel_image_path": "$kernel", "initrd_path": "$initrd", "boot_args": "$cmdline"},
 "drives": [], "machine-config": {"vcpu_count": $vcpus, "mem_size_mib": $mem}}
JSON
            "$P/other-vmm" --no-api --config-file "$W/other.json" >"$fifo" 2>/dev/null &
            ;;
    esac
    pid=$!
    dog=$(watchdog "$pid" "$GUEST_TIMEOUT")
    result="failed" phases=""
    # A jailed VMM's guest runs in the relay's child.
    vm=$pid
    while IFS= read -r line; do
        case "$line" in
            *NUAGE-INIT-MARKER*)
                t1=$(now_cs)
                relay=""
                if [ "$kind" = jailed ]; then
                    vm=$(cut -d' ' -f1 "/proc/$pid/task/$pid/children")
                    relay="relay_rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
                fi
                result="boot_ms=$(( (t1 - t0) * 10 )) overhead_kb=$(overhead_kb "$vm" $((mem * 1024))) $relay"
                ;;
            *NUAGE-PHASES*) phases=${line#*NUAGE-PHASES } ;;
            *NUAGE-GAP*) echo "@@ bench-gap $label ${line#*NUAGE-GAP }" ;;
            *NUAGE-PROFILE-END*)
                # TERM, so that nuage-vmm prints its statistics; KILL what ignores it.
                kill -TERM "$pid"
                ( sleep 3; kill -KILL "$pid" 2>/dev/null ) &
                ;;
        esac
    done <"$fifo"
    wait "$pid" 2>/dev/null
    kill "$dog" 2>/dev/null
    # nuage-vmm's own part: from its start to its vCPUs starting (jail and build).
    setup=$(grep -o 'ready_ms=[0-9.]*' "$W/bench.stderr" | head -1 | sed 's/ready_ms=/setup_ms=/')
    echo "@@ bench $label $result $setup $phases"
    [ -n "$stats" ] && [ "$kind" = nuage ] && sed "s/^/@@ bench-stats $label | /" "$W/bench.stderr"
}

if [ "${NUAGE_MODE:-test}" = bench ]; then
    # Alternating VMMs, for each flavour and vCPU count. The other VMM boots ELF kernels
    # only; nuage-vmm boots each both ways.
    flavours=cloud
    [ -f "$P/vmlinux-generic" ] && flavours="cloud generic"
    # --only FLAVOUR: that flavour alone.
    [ -n "${NUAGE_ONLY:-}" ] && flavours=$NUAGE_ONLY
    echo "@@ bench-config runs=${NUAGE_RUNS:-5} flavours=$(echo $flavours | tr ' ' ,) other=$([ -x "$P/other-vmm" ] && echo yes || echo no)"
    # What boots in each round: the kinds of VMM on the ELF kernel, then nuage-vmm on the
    # bzImage. Each round's order is the last one's rotated by one, as in the I/O rounds, so
    # that no kind always boots first or after the same neighbour.
    kinds="nuage unfiltered jailed"
    [ -x "$P/other-vmm" ] && kinds="$kinds other"
    [ -x "$P/baseline-vmm" ] && kinds="$kinds baseline"
    kinds="$kinds bzimage"
    r=1
    while [ "$r" -le "${NUAGE_RUNS:-5}" ]; do
        for flavour in $flavours; do
            for vcpus in 1 2; do
                for kind in $kinds; do
                    case "$kind" in
                        bzimage) bench_one nuage "$flavour" bzimage "$vcpus" "$r" ;;
                        *) bench_one "$kind" "$flavour" elf "$vcpus" "$r" ;;
                    esac
                done
            done
        done
        kinds="$(echo $kinds | cut -d' ' -f2-) ${kinds%% *}"
        r=$((r + 1))
    done
elif [ "${NUAGE_MODE:-test}" = sshbench ]; then
    unshare -n sh "$0" sshbench-namespace
elif [ "${NUAGE_MODE:-test}" = iobench ]; then
    unshare -n sh "$0" iobench-namespace
elif [ "${NUAGE_MODE:-test}" = asgbench ]; then
    NUAGE_ONLY=asg alone asg
elif [ "${NUAGE_MODE:-test}" = demo ]; then
    # The main job: nuaged on its embedded defaults launches one instance of the default image.
    daemon_launch 1
else
    run_guest boot-1cpu 1 128 poweroff
    run_guest boot-smp 4 512 poweroff
    run_guest boot-elf 2 256 poweroff "$P/vmlinux"
    run_guest reboot 1 128 reboot
    run_guest sigterm 1 128 wait
    disks_scenario
    net_scenario
    plane_scenario
    vsock_scenario
    store_scenario
    daemon_scenario
    cloud_scenario
    alone asg
    alone env
fi
echo "@@ scenarios-done"
