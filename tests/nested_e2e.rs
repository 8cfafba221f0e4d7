//! End to end on real KVM: `nuage-vmm` boots Debian's stock `linux-image-cloud-amd64` kernel
//! with the test guest initramfs (`images/test-guest`), whose `/init` reports the CPUs and
//! memory it sees, prints a marker and powers off, reboots or waits as asked.
//!
//! `scripts/nested/run.sh` runs every scenario in one go: directly where the host has
//! hardware virtualization, otherwise inside one QEMU-emulated L1 with nested SVM; the
//! Debian cloud disk's scenario (minutes of systemd and cloud-init) runs on its own L1, so
//! an L1 that wedges there is booted again for that scenario alone. These
//! tests take minutes and need root (packages, /dev/kvm), so they are `#[ignore]`d in a plain
//! `cargo test`; `scripts/test.sh` (the README's test command, run by CI) runs them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// What one scenario printed: its result fields and its guest console lines.
struct Scenario {
    fields: HashMap<String, String>,
    console: Vec<String>,
}

impl Scenario {
    fn field(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in {:?}", self.fields))
    }

    /// Asserts that each named field has its value, saying `why` (with every field and the
    /// scenario's console) when one does not.
    fn expect(&self, expected: &[(&str, &str)], why: &str) {
        for (key, value) in expected {
            assert_eq!(
                self.field(key),
                *value,
                "{why} ({key}): {:?}\n{}",
                self.fields,
                self.console.join("\n")
            );
        }
    }

    fn console_line(&self, prefix: &str) -> &str {
        self.console.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| {
            panic!("no console line starting with {prefix:?}:\n{}", self.console.join("\n"))
        })
    }

    fn guest_report(&self) -> HashMap<String, String> {
        parse_fields(self.console_line("NUAGE-GUEST ").trim_start_matches("NUAGE-GUEST "))
    }

    fn assert_status(&self, expected: &str) {
        assert_eq!(self.field("status"), expected, "console:\n{}", self.console.join("\n"));
    }

    fn assert_marker(&self) {
        self.console_line("NUAGE-INIT-MARKER");
    }
}

fn parse_fields(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The harness's console, from one run (with `--only SCENARIO` when given) shared by every
/// test that reads it; a failed run is remembered too, so the other tests fail at once
/// instead of running the harness again. Where `NUAGE_NESTED_OUT` names the folder of a
/// finished `scripts/nested/run.sh --groups` (as `scripts/test.sh` runs it, the groups side
/// by side), its consoles are read instead.
fn harness_log(log: &'static OnceLock<Result<String, String>>, only: Option<&str>) -> &'static str {
    let log = log.get_or_init(|| {
        if let Some(done) = std::env::var_os("NUAGE_NESTED_OUT") {
            let console = PathBuf::from(done).join(match only {
                Some(scenario) => format!("console-{scenario}.log"),
                None => "console.log".to_owned(),
            });
            return std::fs::read_to_string(&console).map_err(|e| format!("read {}: {e}", console.display()));
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = root.join(match only {
            Some(scenario) => format!("target/nested-e2e-{scenario}"),
            None => "target/nested-e2e".to_owned(),
        });
        let mut command = Command::new(root.join("scripts/nested/run.sh"));
        if let Some(scenario) = only {
            command.args(["--only", scenario]);
        }
        let status = command.arg(&out).status().map_err(|e| format!("run scripts/nested/run.sh: {e}"))?;
        if !status.success() {
            return Err(format!("scripts/nested/run.sh failed: {status}"));
        }
        std::fs::read_to_string(out.join("console.log")).map_err(|e| format!("read console.log: {e}"))
    });
    match log {
        Ok(log) => log,
        Err(e) => panic!("{e}"),
    }
}

/// The console of the run of every scenario but the cloud disk's.
fn console_log() -> &'static str {
    static LOG: OnceLock<Result<String, String>> = OnceLock::new();
    harness_log(&LOG, None)
}

/// The console of the Auto Scaling scenario's own run.
fn asg_console_log() -> &'static str {
    static LOG: OnceLock<Result<String, String>> = OnceLock::new();
    harness_log(&LOG, Some("asg"))
}

/// The console of the Elastic Beanstalk scenario's own run.
fn env_console_log() -> &'static str {
    static LOG: OnceLock<Result<String, String>> = OnceLock::new();
    harness_log(&LOG, Some("env"))
}

/// The console of the cloud disk's own run.
fn cloud_console_log() -> &'static str {
    static LOG: OnceLock<Result<String, String>> = OnceLock::new();
    harness_log(&LOG, Some("cloud"))
}

fn scenario(name: &str) -> Scenario {
    scenario_in(console_log(), name)
}

fn scenario_in(log: &str, name: &str) -> Scenario {
    assert!(log.contains("@@ scenarios-done"), "the harness did not finish:\n{log}");
    let result = format!("@@ {name} ");
    let fields = log
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(result.as_str()))
        .map(parse_fields)
        .unwrap_or_else(|| panic!("scenario {name} did not run:\n{log}"));
    let prefix = format!("[{name}] ");
    let console = log
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    Scenario { fields, console }
}

/// Asserts the guest's MemTotal fits the configured RAM (less what the kernel reserves).
fn assert_memory(report: &HashMap<String, String>, memory_mib: u64) {
    let kb: u64 = report["memtotal_kb"].parse().expect("memtotal_kb");
    let configured = memory_mib * 1024;
    assert!(kb <= configured && kb >= configured * 7 / 10, "MemTotal {kb} kB for {memory_mib} MiB");
}

#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn stock_kernel_boots_to_init_and_powers_off() {
    let s = scenario("boot-1cpu");
    s.assert_status("0");
    s.assert_marker();
    let report = s.guest_report();
    assert_eq!(report["cpus"], "1");
    assert_memory(&report, 128);
    assert_eq!(report["clocksource"], "kvm-clock", "the guest should find the KVM paravirt clock");
    assert_eq!(
        s.console_line("NUAGE-RNG "),
        "NUAGE-RNG current=virtio_rng.0 bytes=64",
        "the guest's hardware RNG is the virtio entropy device"
    );
    assert_clock_right(&s);
}

/// The guest finds the CMOS RTC, and its clock and the RTC's agree with the host's (the
/// L1's) within 2 s, read while the guest ran.
fn assert_clock_right(s: &Scenario) {
    let clock = parse_fields(s.console_line("NUAGE-CLOCK "));
    assert_eq!(clock["rtc"], "rtc_cmos", "the guest should find the CMOS RTC: {clock:?}");
    let epoch = |map: &HashMap<String, String>, key: &str| -> i64 {
        map[key].parse().unwrap_or_else(|_| panic!("{key} in {map:?}"))
    };
    let (start, end) = (epoch(&s.fields, "epoch_start"), epoch(&s.fields, "epoch_end"));
    for key in ["epoch", "rtc_epoch"] {
        let guest = epoch(&clock, key);
        assert!(
            start - 2 <= guest && guest <= end + 2,
            "guest {key} {guest} outside the host's {start}..{end}"
        );
    }
}

#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn stock_kernel_brings_up_every_requested_cpu() {
    let s = scenario("boot-smp");
    s.assert_status("0");
    s.assert_marker();
    let report = s.guest_report();
    assert_eq!((report["cpus"].as_str(), report["online"].as_str()), ("4", "0-3"));
    assert_memory(&report, 512);
    let smpboot = s.console_line("NUAGE-DMESG ");
    assert!(
        s.console.iter().any(|l| l.contains("smpboot: Total of 4 processors activated")),
        "no smpboot line for 4 CPUs (first dmesg line: {smpboot})"
    );
    // The processor is named by its brand string, not by Linux's "family/model" fallback
    // ("AMD 17/01") for a CPU whose CPUID has none.
    let cpu0 = s.console.iter().find(|l| l.contains("smpboot: CPU0: ")).map_or("", String::as_str);
    let name = cpu0.split("CPU0: ").nth(1).and_then(|rest| rest.split(" (family").next()).unwrap_or("");
    let fallback = name.rsplit(' ').next().is_some_and(|last| {
        last.len() == 5
            && last.as_bytes()[2] == b'/'
            && last.chars().filter(char::is_ascii_hexdigit).count() == 4
    });
    assert!(!name.is_empty() && !fallback, "the guest names its CPU {name:?} ({cpu0})");
}

#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn stock_elf_vmlinux_boots() {
    let s = scenario("boot-elf");
    s.assert_status("0");
    s.assert_marker();
    let report = s.guest_report();
    assert_eq!(report["cpus"], "2");
    assert_memory(&report, 256);
}

#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn guest_reboot_exits_with_the_reboot_status() {
    let s = scenario("reboot");
    s.assert_status("4");
    s.assert_marker();
    assert!(s.console.iter().any(|l| l.contains("nuage-vmm: guest rebooted")), "{:?}", s.console);
}

#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn sigterm_stops_a_booted_guest() {
    let s = scenario("sigterm");
    s.assert_status("5");
    s.assert_marker();
}

/// Two read-write disks and a read-only one: the guest finds each by its volume id, mounts
/// the ext4 root the test made, writes a file to the raw volume and flushes it, discards a
/// range, and cannot write the read-only disk; the host then checks all of it in the files.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn guest_uses_virtio_disks_and_the_host_sees_its_writes() {
    let s = scenario("disks");
    s.assert_status("0");
    let disks: Vec<HashMap<String, String>> =
        s.console.iter().filter_map(|l| l.strip_prefix("NUAGE-DISK ")).map(parse_fields).collect();
    let serials: Vec<(&str, &str, &str)> =
        disks.iter().map(|d| (d["name"].as_str(), d["serial"].as_str(), d["ro"].as_str())).collect();
    assert_eq!(
        serials,
        [("vda", "vol-root", "0"), ("vdb", "vol-data", "0"), ("vdc", "vol-ro", "1")],
        "console:\n{}",
        s.console.join("\n")
    );
    assert_eq!(disks[1]["sectors"], (16u64 << 20 >> 9).to_string(), "data volume capacity");
    assert!(s.console_line("NUAGE-ROOT marker=").starts_with("NUAGE-ROOT marker=nuage-root-"));
    assert_eq!(s.console_line("NUAGE-ROOT readback="), "NUAGE-ROOT readback=written_by_the_guest");
    s.console_line("NUAGE-DATA written");
    s.console_line("NUAGE-DATA discarded");
    assert_eq!(s.console_line("NUAGE-RO write="), "NUAGE-RO write=refused");

    let host = scenario("disks-host");
    assert_eq!(
        host.field("file"),
        "hello_from_the_nuage_guest",
        "the flushed file, read from the volume file"
    );
    assert_eq!(host.field("discarded_nonzero_bytes"), "0", "the discarded range reads as zeros");
    let before: u64 = host.field("blocks_before").parse().unwrap();
    let after: u64 = host.field("blocks_after").parse().unwrap();
    // Before: 4 MiB of data (8192 blocks). After: only the small archive stays allocated.
    assert!(before >= 8192 && after < 1024, "discard should punch a hole: {before} -> {after} blocks");
    assert_eq!(host.field("ro_unchanged"), "yes");
}

/// A guest on a tap inside a network namespace the harness creates: it reaches the host and
/// answers its pings with the address it was given; frames it sends from another IPv4
/// address or another MAC are dropped by the VMM and counted, so neither is ever heard.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn guest_on_a_tap_is_reachable_and_cannot_spoof() {
    let s = scenario("net");
    s.assert_status("5");
    assert_eq!(s.console_line("NUAGE-NET eth0="), "NUAGE-NET eth0=52:54:00:00:07:02");
    assert_eq!(s.console_line("NUAGE-NET host_ping="), "NUAGE-NET host_ping=ok");
    assert_eq!(
        s.console_line("NUAGE-NET spoof_ip_ping="),
        "NUAGE-NET spoof_ip_ping=fail spoof_mac_ping=fail",
        "spoofed frames must not get answers"
    );
    let host = scenario("net-host");
    assert_eq!(host.field("ping_guest"), "ok", "the host reaches the guest's assigned address");
    assert_eq!(host.field("ping_spoofed"), "fail", "the address the guest was not given stays unheard");
    assert!(
        s.console.iter().any(|l| l.contains("dropped frames with a spoofed source address")),
        "the VMM counts the dropped frames:\n{}",
        s.console.join("\n")
    );
}

/// The network plane end to end: two guests on one nuage subnet reach each other by the
/// static addresses it leased them, a LAN namespace reaches the first through its Elastic
/// IP until that is disassociated, and detaching leaves no tap.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn two_guests_on_a_subnet_reach_each_other_and_the_lan_reaches_one_by_its_elastic_ip() {
    let setup = scenario("plane-setup");
    assert!(setup.field("eip").starts_with("eipalloc-"), "{:?}", setup.fields);
    for (name, own, peer) in [("plane-a", "10.0.9.2", "10.0.9.3"), ("plane-b", "10.0.9.3", "10.0.9.2")] {
        let s = scenario(name);
        s.assert_status("5");
        assert_eq!(
            s.console_line("NUAGE-PEER address="),
            format!("NUAGE-PEER address={own} gateway=10.0.9.1")
        );
        assert_eq!(s.console_line("NUAGE-PEER peer="), format!("NUAGE-PEER peer={peer} ping=ok"), "{name}");
    }
    let host = scenario("plane-host");
    assert_eq!(host.field("eip_ping"), "ok", "the Elastic IP leads to the first guest");
    assert_eq!(host.field("eip_ping_after_disassociate"), "fail", "disassociated, it leads nowhere");
    assert_eq!(scenario("plane-teardown").field("taps_left"), "0");
}

/// nuaged end to end on real KVM, the way a user works: it makes a subnet and an ed25519
/// key pair and launches two instances of the stock-kernel image with the key and user
/// data. Both reach running with the addresses leased them; each guest reads its config
/// drive (instance id, key, user data), installs the key and serves SSH (dropbear). From
/// the namespace the subnet's bridge is in, SSH with the private key logs in (a key nuage
/// did not give the instance is refused) and writes a file to the root volume; the stop
/// is graceful (Ctrl+Alt+Del reaches the guest's init, which powers off), and after it and
/// a start the instance has the same address and the file. From inside, the guest pings
/// its gateway but reaches none of the host's ports there (the API over TCP, the metrics
/// page, another listener), all of which the host reaches. Terminating leaves no
/// instance, tap or config drive.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn nuaged_instances_boot_the_stock_kernel_and_take_ssh_with_their_key_pair() {
    let host = scenario("daemon-host");
    let instances: Vec<HashMap<String, String>> = console_log()
        .lines()
        .filter_map(|l| l.strip_prefix("@@ daemon-instance "))
        .map(parse_fields)
        .collect();
    assert_eq!(instances.len(), 2, "{instances:?}");
    let mut addresses: Vec<&str> = instances.iter().map(|i| i["address"].as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["10.0.31.2", "10.0.31.3"]);
    for instance in &instances {
        assert_eq!(instance["state"], "running", "{instance:?}");
        assert_eq!(instance["ssh_ready"], "yes", "the guest set up SSH: {instance:?}");
        assert_eq!(
            instance["cidata"],
            format!("instance={},keys=1,user_data=nuage-user-data", instance["id"]),
            "the config drive carried the instance id, the key pair and the user data"
        );
    }
    let ssh = scenario("daemon-ssh");
    assert_eq!(ssh.field("login"), "ok", "SSH with the key pair's private key: {:?}", ssh.fields);
    assert_eq!(ssh.field("stored"), "ok", "{:?}", ssh.fields);
    assert_eq!(ssh.field("wrong_key"), "refused", "only the instance's key pair gets in");
    assert_eq!(
        ssh.field("graceful_stop"),
        "yes",
        "the stop pressed Ctrl+Alt+Del and the guest's init shut down"
    );
    assert_eq!(ssh.field("restarted"), "yes", "stop and start boots the guest again");
    assert_eq!(ssh.field("address_after"), ssh.field("address"), "stop/start keeps the address");
    assert_eq!(ssh.field("data_kept"), "yes", "stop/start keeps the root volume's data");
    let ports: Vec<HashMap<String, String>> =
        console_log().lines().filter_map(|l| l.strip_prefix("@@ daemon-port ")).map(parse_fields).collect();
    assert_eq!(ports.len(), 3, "{ports:?}");
    let reach = scenario("daemon-guest-reach");
    assert_eq!(reach.field("icmp"), "ok", "the guest reaches its gateway: {:?}", reach.fields);
    for port in &ports {
        assert_eq!(port["from_host"], "open", "the host reaches its own listener: {port:?}");
        assert_eq!(
            reach.field(&port["port"]),
            "closed",
            "no host port is open to a guest: {:?}",
            reach.fields
        );
    }
    let imds = scenario("daemon-imds");
    assert_eq!(imds.field("token"), "200", "a guest gets a token: {:?}", imds.fields);
    assert_eq!(imds.field("v1"), "401", "a read without a token is refused: {:?}", imds.fields);
    assert_eq!(imds.field("id"), imds.field("instance"), "the guest reads its own id: {:?}", imds.fields);
    assert_eq!(imds.field("ipv4"), ssh.field("address"), "and its own address: {:?}", imds.fields);
    assert_eq!(imds.field("key"), "same", "the key its config drive gave: {:?}", imds.fields);
    assert_eq!(imds.field("user_data"), "nuage-user-data", "{:?}", imds.fields);
    assert_eq!(imds.field("foreign"), "401", "another instance's token is refused: {:?}", imds.fields);
    let elb = scenario("daemon-elb");
    let (first, second) = (imds.field("instance"), elb.field("second"));
    let mut both = [first, second];
    both.sort_unstable();
    let both = format!("{},{},", both[0], both[1]);
    assert_eq!(elb.field("both"), both, "the load balancer sends requests to both guests: {:?}", elb.fields);
    assert_eq!(
        elb.field("after_stop"),
        format!("{second},"),
        "a stopped instance leaves the rotation at once: {:?}",
        elb.fields
    );
    assert_eq!(elb.field("back"), both, "started again, it is back in rotation: {:?}", elb.fields);
    assert_eq!(elb.field("lb_left"), "0", "deleting the load balancer stops its process");
    let confined = scenario("daemon-confined");
    let uid: u32 = confined.field("uid").parse().unwrap_or(0);
    assert!(uid >= 1_900_000_000, "the VMM runs as its instance's user: {:?}", confined.fields);
    assert_eq!(confined.field("relay_uid"), confined.field("uid"), "{:?}", confined.fields);
    assert_eq!(confined.field("nspid"), "1", "the VMM is its PID namespace's init: {:?}", confined.fields);
    let top: Vec<&str> = confined.field("root_top").split(',').filter(|s| !s.is_empty()).collect();
    assert!(
        top.contains(&"dev") && !top.iter().any(|dir| ["etc", "usr", "proc", "bin", "root"].contains(dir)),
        "the VMM's root holds only its files: {:?}",
        confined.fields
    );
    let threads: usize = confined.field("seccomp").strip_prefix("2:").map_or(0, |n| n.parse().unwrap_or(0));
    assert!(threads >= 3, "every thread of the VMM is filtered (Seccomp: 2): {:?}", confined.fields);
    for set in ["cap_eff", "cap_bnd"] {
        assert_eq!(
            confined.field(set),
            "0000000000000000",
            "the VMM holds no capability: {:?}",
            confined.fields
        );
    }
    assert_eq!(
        confined.field("in_cgroup"),
        "yes",
        "the VMM runs in its instance's cgroup: {:?}",
        confined.fields
    );
    // t.nano: one vCPU, 256 MiB, and the VMM's margin above it.
    assert_eq!(confined.field("cpu_max"), "100000/100000", "{:?}", confined.fields);
    let memory_max = (256 + nuage::daemon::cgroup::MEMORY_OVERHEAD_MIB) << 20;
    assert_eq!(confined.field("memory_max"), memory_max.to_string(), "{:?}", confined.fields);
    assert_eq!(confined.field("pids_max"), "33", "{:?}", confined.fields);
    let peak: u64 = confined.field("memory_peak").parse().unwrap_or(u64::MAX);
    assert!(peak < memory_max, "a booted guest stays below its limit: {:?}", confined.fields);
    assert!(host.field("image").starts_with("ami-"), "{:?}", host.fields);
    assert_eq!(
        host.field("booted_kernel"),
        "vmlinux",
        "registration unpacked the stock bzImage, and the instances booted its ELF kernel"
    );
    assert_eq!(host.field("instances"), "2");
    assert_eq!(host.field("not_terminated"), "0", "terminate-instances ends them all");
    assert_eq!(host.field("taps_left"), "0", "their taps go with them");
    assert_eq!(host.field("drives_left"), "0", "their config drives go with them");
}

/// vsock both ways: a host process reaches a guest port through the VMM's Unix socket, and
/// a guest connection to the host's port 5000 reaches the Unix socket service behind it.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn vsock_connects_host_and_guest_both_ways() {
    let s = scenario("vsock");
    s.assert_status("5");
    assert_eq!(
        s.console_line("NUAGE-VSOCK "),
        "NUAGE-VSOCK reply=pong:hello-from-guest",
        "the guest (whose CID the VMM checks on every packet) reached the host service"
    );
    let host = scenario("vsock-host");
    assert!(host.field("handshake").starts_with("OK_"), "{:?}", host.fields);
    assert_eq!(host.field("reply"), "echo:ping-from-host", "the host reached the guest's port");
    assert_eq!(host.field("received"), "hello-from-guest");
}

/// Storage end to end: a guest boots (kernel and initrd from the image) on a copy-on-write
/// clone of an image's ext4 disk and writes a file; the volume is snapshotted, a new volume
/// is made from the snapshot, and a second guest reads the same file from it.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn a_snapshot_carries_a_guests_writes_to_a_new_volume() {
    let first = scenario("store-write");
    first.assert_status("0");
    let marker = "NUAGE-STORE marker=nuage-root-";
    assert!(first.console_line(marker).ends_with("data=written-in-the-first-guest"), "{:?}", first.console);
    let second = scenario("store-read");
    second.assert_status("0");
    assert!(
        second.console_line(marker).ends_with("data=written-in-the-first-guest"),
        "the second guest reads the first one's file through the snapshot: {:?}",
        second.console
    );
    let host = scenario("store-host");
    for (key, prefix) in [("image", "ami-"), ("vol1", "vol-"), ("snapshot", "snap-"), ("vol2", "vol-")] {
        assert!(host.field(key).starts_with(prefix), "{key}: {:?}", host.fields);
    }
    let snapshot: u64 = host.field("snapshot_bytes").parse().unwrap();
    let image: u64 = host.field("image_bytes").parse().unwrap();
    assert!(snapshot * 4 < image, "the clone's layer holds only its own writes: {snapshot} of {image} bytes");
}

/// A volume snapshotted while its guest runs and writes: the VMM pauses the disk, the
/// volume's file becomes the snapshot and the VMM reopens the new top layer. The guest
/// notices nothing; the snapshot holds what was written before, the volume everything.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn a_running_guests_volume_is_snapshotted_without_stopping_it() {
    let live = scenario("store-live");
    live.assert_status("0");
    live.console_line("NUAGE-LIVE-DONE");
    assert!(
        !live.console.iter().any(|l| l.contains("signal=timeout") || l.contains("I/O error")),
        "{:?}",
        live.console
    );
    let host = scenario("store-live-host");
    assert!(host.field("snapshot").starts_with("snap-"), "{:?}", host.fields);
    let snapshot = scenario("store-check-snapshot");
    assert_eq!(snapshot.console_line("NUAGE-LIVE before="), "NUAGE-LIVE before=before after=none");
    let volume = scenario("store-check-volume");
    assert_eq!(volume.console_line("NUAGE-LIVE before="), "NUAGE-LIVE before=before after=after");
}

/// A Debian 12 cloud disk (images/debian-cloud: stock kernel and initrd in its /boot,
/// systemd, cloud-init, openssh-server), registered as it is and run by nuaged with a key
/// pair and a `#!` user-data script: stock cloud-init configures it from the config drive,
/// SSH works as `debian`, the script ran, and curl inside reads the metadata service with
/// a token (its id, address and, once associated, its Elastic IP), while a read without a
/// token and another instance's token are refused.
#[test]
#[ignore = "needs the real-KVM harness (minutes, root): run scripts/test.sh"]
fn a_debian_cloud_disk_boots_with_cloud_init_and_takes_ssh() {
    let guest = scenario_in(cloud_console_log(), "cloud-guest");
    let id = guest.field("instance");
    assert_eq!(
        guest.field("cmdline"),
        "root=/dev/vda1,ro",
        "root= the partition with /boot: {:?}",
        guest.fields
    );
    assert_eq!(guest.field("ssh_ready"), "yes", "SSH as debian with the key pair: {:?}", guest.fields);
    assert_eq!(guest.field("pid1"), "systemd", "{:?}", guest.fields);
    assert_eq!(guest.field("cloud_init"), "done", "cloud-init finished without errors: {:?}", guest.fields);
    assert_eq!(guest.field("hostname"), id, "cloud-init set the hostname: {:?}", guest.fields);
    assert_eq!(guest.field("user_data"), "user_data_ran_as_root", "the #! script ran: {:?}", guest.fields);
    assert_eq!(
        guest.field("cloud_config"),
        "cloud-config_applied",
        "the #cloud-config part too: {:?}",
        guest.fields
    );
    assert_eq!(guest.field("id"), id, "the metadata service's instance-id: {:?}", guest.fields);
    assert_eq!(guest.field("ipv4"), guest.field("address"), "{:?}", guest.fields);
    assert_eq!(guest.field("public"), "192.168.99.10", "the associated Elastic IP: {:?}", guest.fields);
    assert_eq!(guest.field("v1"), "401", "tokens are required: {:?}", guest.fields);
    assert_eq!(guest.field("foreign"), "401", "another instance's token is refused: {:?}", guest.fields);
}

/// An Auto Scaling group of two real guests behind the load balancer (issue 19): one's VMM
/// killed, it is replaced and the replacement serves; load from the LAN side above the
/// group's requests-per-target target grows it to its max, and it shrinks back to its min
/// once the load stops; an instance refresh onto a new launch template version under a
/// client loop fails no request and leaves every instance on the new version.
#[test]
#[ignore = "needs KVM and Debian's kernel; run by scripts/test.sh"]
fn an_auto_scaling_group_heals_scales_and_refreshes_behind_a_balancer() {
    let log = asg_console_log();
    let list = |s: &Scenario, field: &str| -> Vec<String> {
        s.field(field).split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect()
    };
    let start = scenario_in(log, "asg-start");
    assert_eq!((list(&start, "members").len(), start.field("healthy")), (2, "2"), "{:?}", start.fields);
    let replace = scenario_in(log, "asg-replace");
    let (victim, members) = (replace.field("victim").to_owned(), list(&replace, "members"));
    assert!(
        members.len() == 2 && !members.contains(&victim),
        "the killed one was replaced: {:?}",
        replace.fields
    );
    assert_eq!(list(&replace, "served"), members, "both serve behind the balancer: {:?}", replace.fields);
    let scale = scenario_in(log, "asg-scale");
    assert_eq!(
        scale.field("grown"),
        "3",
        "load above the target grows the group to its max: {:?}",
        scale.fields
    );
    assert_eq!(scale.field("shrunk"), "2", "and it shrinks to its min after: {:?}", scale.fields);
    let refresh = scenario_in(log, "asg-refresh");
    assert_eq!(refresh.field("status"), "Successful", "{:?}\n{}", refresh.fields, refresh.console.join("\n"));
    assert_eq!(refresh.field("failed"), "0", "no request failed during the refresh: {:?}", refresh.fields);
    let requests: u32 = refresh.field("requests").parse().unwrap_or(0);
    let by_v2: u32 = refresh.field("answered_by_v2").parse().unwrap_or(0);
    assert!(
        requests >= 10 && by_v2 > 0,
        "the client loop ran, and reached the new version: {:?}",
        refresh.fields
    );
    assert_eq!(
        refresh.field("versions"),
        "2,2,2,",
        "the group and both instances on version 2: {:?}",
        refresh.fields
    );
    assert_eq!(scenario_in(log, "asg-delete").field("left"), "0", "a forced delete terminates them");
}

/// Elastic Beanstalk on real guests (issue 20): an environment of two instances made in one
/// call serves v1 through its load balancer's host port; a Rolling update to v2 under a
/// client loop, nuaged SIGKILLed midway and restarted, fails no request and ends with only
/// v2 answering; a version whose server never starts, deployed with an additional batch,
/// fails its health checks, is rolled back, v2 keeps serving and the group returns to its
/// size; an Immutable update back to v1 fails no request; swapped
/// with a second environment, each one's port serves the other's version; terminating
/// both leaves nothing they made.
#[test]
#[ignore = "needs KVM and Debian's kernel; run by scripts/test.sh"]
fn an_environment_serves_deploys_rolls_back_and_leaves_nothing() {
    let log = env_console_log();
    let create = scenario_in(log, "env-create");
    create.expect(
        &[("status", "Ready"), ("health", "Green"), ("served", "v1,")],
        "made in one call, serving v1",
    );
    create.expect(&[("refused", "2"), ("made_by_refused", "0")], "bad requests are refused and make nothing");
    let update = scenario_in(log, "env-update");
    update.expect(
        &[("status", "Ready"), ("version", "v2"), ("crashed", "yes"), ("failed", "0"), ("after", "v2,")],
        "a rolling update, nuaged killed midway, fails no request and ends on v2",
    );
    let requests: u32 = update.field("requests").parse().unwrap_or(0);
    let by_v2: u32 = update.field("answered_by_v2").parse().unwrap_or(0);
    assert!(requests >= 10 && by_v2 > 0, "the client loop ran and reached v2: {:?}", update.fields);
    let rollback = scenario_in(log, "env-rollback");
    rollback.expect(
        &[
            ("status", "Ready"),
            ("version", "v2"),
            ("event", "yes"),
            ("answered_by_v3", "0"),
            ("after", "v2,"),
            ("added_batch", "yes"),
            ("members", "2"),
        ],
        "the broken version, deployed with an additional batch, is rolled back, v2 keeps serving, \
         the group returns to its size, and the events say so",
    );
    let immutable = scenario_in(log, "env-immutable");
    immutable.expect(
        &[("status", "Ready"), ("version", "v1"), ("failed", "0"), ("after", "v1,"), ("members", "2")],
        "an immutable update fails no request and the old set is gone once it is done",
    );
    let swap = scenario_in(log, "env-swap");
    swap.expect(
        &[("prod_port_serves", "v2,"), ("green_port_serves", "v1,"), ("prod_after", "localhost:8001")],
        "each port serves the other environment after the swap",
    );
    let terminate = scenario_in(log, "env-terminate");
    terminate.expect(
        &[
            ("statuses", "Terminated,"),
            ("instances", "0"),
            ("volumes", "0"),
            ("balancers", "0"),
            ("groups", "0"),
            ("templates", "0"),
            ("taps", "0"),
        ],
        "terminating leaves nothing",
    );
}
