//! The API end to end: a real `nuaged` on a temporary socket and state directory, driven
//! through the real `nuage` CLI (and a gRPC client where status codes matter), launching
//! tiny hand-assembled guests with the real `nuage-vmm` on this host's `/dev/kvm`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guest::{elf_kernel, Asm};
use nuage::block::DiskFormat;
use nuage::vmm::api::config::VmConfig;
use serde_json::Value;

/// A running `nuaged`, killed (never gracefully) when dropped, with the VMMs of its
/// instances, which outlive a daemon by design; [`Daemon::kill`] leaves them running for
/// the next daemon to adopt.
struct Daemon {
    child: Child,
    dir: PathBuf,
    keep_instances: bool,
}

impl Daemon {
    fn start(dir: &Path) -> Self {
        Self::start_with_vmm(dir, Path::new(common::vmm_bin()))
    }

    fn start_with_vmm(dir: &Path, vmm: &Path) -> Self {
        Self::spawn(dir, &["--vmm".as_ref(), vmm.as_os_str()])
    }

    /// A daemon that gives guests `seconds` to shut down when stopped.
    fn start_with_stop_timeout(dir: &Path, seconds: u32) -> Self {
        let seconds = seconds.to_string();
        Self::spawn(dir, &["--vmm", common::vmm_bin(), "--stop-timeout", &seconds].map(std::ffi::OsStr::new))
    }

    /// A daemon whose network plane lives in namespace `netns`.
    fn start_in_netns(dir: &Path, netns: &str) -> Self {
        Self::spawn(dir, &Self::netns_args(netns))
    }

    fn netns_args(netns: &str) -> [&std::ffi::OsStr; 4] {
        ["--vmm".as_ref(), common::vmm_bin().as_ref(), "--netns".as_ref(), netns.as_ref()]
    }

    fn spawn(dir: &Path, extra: &[&std::ffi::OsStr]) -> Self {
        Self::spawn_with_env(dir, extra, &[])
    }

    /// A daemon with these environment variables (`NUAGE_FAILPOINT` stops it for good at a
    /// step, see `nuage::daemon::failpoint`; its VMMs inherit the rest).
    fn spawn_with_env(dir: &Path, extra: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Self {
        let socket = dir.join("api.sock");
        // Tiny guests ignore Ctrl+Alt+Del: unless a test says otherwise, stops give them a
        // second before stopping the VMM.
        let stop_timeout: &[&str] =
            if extra.contains(&"--stop-timeout".as_ref()) { &[] } else { &["--stop-timeout", "1"] };
        let child = Command::new(env!("CARGO_BIN_EXE_nuaged"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .args(stop_timeout)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nuaged.log")).unwrap(),
            )
            .spawn()
            .unwrap();
        let daemon = Self { child, dir: dir.to_owned(), keep_instances: false };
        daemon.wait_for(|| std::os::unix::net::UnixStream::connect(&socket).is_ok(), "the API socket");
        daemon
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.keep_instances = true;
    }

    /// Runs `nuage ARGS --output json`; returns (success, JSON or stderr).
    fn nuage(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("--endpoint")
            .arg(self.dir.join("api.sock"))
            .args(["--output", "json"])
            .args(args)
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(stderr.trim().trim_start_matches("nuage: ").to_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    fn ok(&self, args: &[&str]) -> Value {
        self.nuage(args).unwrap_or_else(|e| panic!("nuage {args:?}: {e}\n{}", self.log()))
    }

    fn err(&self, args: &[&str]) -> String {
        match self.nuage(args) {
            Ok(v) => panic!("nuage {args:?} should fail, gave {v}"),
            Err(e) => e,
        }
    }

    /// What `nuage ARGS` prints for people (a table, or a console as is).
    fn text(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("--endpoint")
            .arg(self.dir.join("api.sock"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The instance's console output.
    fn console(&self, id: &str) -> String {
        self.text(&["get-console-output", "--instance-id", id])
    }

    fn state(&self, id: &str) -> (String, String) {
        let v = self.ok(&["describe-instances", "--instance-ids", id]);
        let i = &v["Instances"][0];
        (i["state"].as_str().unwrap().to_owned(), i["state_reason"].as_str().unwrap().to_owned())
    }

    fn wait_for(&self, mut done: impl FnMut() -> bool, what: &str) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_state(&self, id: &str, state: &str) {
        self.wait_for(|| self.state(id).0 == state, &format!("{id} to be {state}"));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nuaged.log")).unwrap_or_default()
    }

    fn volumes(&self) -> usize {
        let dir = self.dir.join("state/store/volumes");
        std::fs::read_dir(dir)
            .map(|d| d.filter(|e| e.as_ref().unwrap().path().extension() == Some("json".as_ref())).count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_instances {
            kill_vmms(&self.dir);
            for pid in running_balancers(&self.dir).into_values() {
                // SAFETY: kill only sends a signal.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `GET path` from the metrics listener of `daemon` (started with `--metrics-address
/// 127.0.0.1:0`; the address is the last one its log names).
fn metrics_page(daemon: &Daemon, path: &str) -> String {
    use std::io::{Read, Write};
    let log = daemon.log();
    let port: String = log
        .lines()
        .rev()
        .filter(|l| l.contains("serving metrics"))
        .find_map(|l| l.split("127.0.0.1:").nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_else(|| panic!("no metrics address in {log}"));
    let mut stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: nuaged\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

/// Registers an image whose kernel prints `text` and then does `end`.
fn register(daemon: &Daemon, name: &str, guest: Asm) -> String {
    let kernel = common::write_file(&daemon.dir, &format!("{name}.kernel"), &elf_kernel(guest.bytes()));
    let disk = common::write_file(&daemon.dir, &format!("{name}.disk"), &vec![0u8; 1 << 20]);
    let v = daemon.ok(&["register-image", "--name", name, "--disk", &disk, "--kernel", &kernel]);
    v["Images"][0]["image_id"].as_str().unwrap().to_owned()
}

/// A guest that prints "up", powers off once the keyboard delivers Delete (as Linux's init
/// does on Ctrl+Alt+Del), printing "bye".
fn polite_guest() -> Asm {
    Asm::new().print("up\n").wait_for_scancode(0x71).print("bye\n").acpi_poweroff().spin()
}

fn ids(v: &Value) -> Vec<String> {
    v["Instances"].as_array().unwrap().iter().map(|i| i["instance_id"].as_str().unwrap().to_owned()).collect()
}

/// The configuration the running VMM of instance `id` was started with: the file its
/// command line names.
fn running_vm_config(dir: &Path, id: &str) -> VmConfig {
    let state = dir.join("state");
    let pid = nuage::daemon::process::running_vmms(&state)[id];
    let argv = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let file = state.join(format!("instances/{id}/vm.json"));
    assert!(argv.split('\0').any(|a| Path::new(a) == file), "the VMM runs on {}: {argv:?}", file.display());
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

/// Kills every VMM still running for this test's state directory.
fn kill_vmms(dir: &Path) {
    for pid in nuage::daemon::process::running_vmms(&dir.join("state")).into_values() {
        // SAFETY: kill only sends a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[test]
fn instances_run_stop_start_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let images = daemon.ok(&["describe-images"]);
    assert_eq!(images["Images"][0]["state"], "available");

    let run =
        daemon.ok(&["run-instances", "--image-id", &image, "--count", "2", "--instance-type", "t.nano"]);
    let ids = ids(&run);
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert_eq!(daemon.state(id).0, "running");
        daemon.wait_for(|| daemon.console(id).contains("booted"), "the console");
    }
    assert_eq!(daemon.volumes(), 2, "one root volume each");

    let filtered = |filters: &[&str]| {
        let v = daemon.ok(&[&["describe-instances", "--filters"][..], filters].concat());
        v["Instances"].as_array().unwrap().len()
    };
    let by_image = format!("Name=image-id,Values=ami-0,{image}");
    assert_eq!(filtered(&[&by_image]), 2, "any value matches");
    assert_eq!(filtered(&["Name=instance-type,Values=t.micro"]), 0);
    let one = format!("Name=instance-id,Values={}", ids[1]);
    assert_eq!(filtered(&[&one, "Name=instance-state-name,Values=running"]), 1, "every filter must match");
    let err = daemon.err(&["describe-instances", "--filters", "Name=color,Values=red"]);
    assert!(err.starts_with("InvalidParameterValue: filter \"color\""), "{err}");

    let stop = daemon.ok(&["stop-instances", "--instance-ids", &ids[0]]);
    assert_eq!(stop["StateChanges"][0]["previous_state"], "running");
    assert_eq!(stop["StateChanges"][0]["current_state"], "stopped");
    let start = daemon.ok(&["start-instances", "--instance-ids", &ids[0]]);
    assert_eq!(start["StateChanges"][0]["current_state"], "running");

    // Wrong states and unknown ids change nothing.
    let err = daemon.err(&["stop-instances", "--instance-ids", &ids[0], "i-00000000000000000"]);
    assert!(err.starts_with("InvalidInstanceID.NotFound"), "{err}");
    assert_eq!(daemon.state(&ids[0]).0, "running");
    let err = daemon.err(&["deregister-image", "--image-id", &image]);
    assert!(err.contains("InUse"), "{err}");

    let term = daemon.ok(&["terminate-instances", "--instance-ids", &ids[0], &ids[1]]);
    for change in term["StateChanges"].as_array().unwrap() {
        assert_eq!(change["current_state"], "terminated");
    }
    assert_eq!(daemon.volumes(), 0, "terminating deletes the root volumes");
    assert!(nuage::daemon::process::running_vmms(&dir.path().join("state")).is_empty());
    let err = daemon.err(&["start-instances", "--instance-ids", &ids[0]]);
    assert!(err.starts_with("IncorrectInstanceState"), "{err}");
    daemon.ok(&["deregister-image", "--image-id", &image]);
}

#[test]
fn a_guest_power_off_stops_its_instance() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "brief", Asm::new().print("bye\n").acpi_poweroff().spin());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    daemon.wait_state(&id, "stopped");
    assert!(daemon.state(&id).1.starts_with("Client.InstanceInitiatedShutdown"), "{:?}", daemon.state(&id));
    assert_eq!(daemon.volumes(), 1, "a stopped instance keeps its volume");
}

/// A stop asks the guest first: Ctrl+Alt+Del reaches its keyboard controller and a guest
/// that acts on it powers off well within the stop timeout. A guest that ignores it is
/// stopped from outside once the timeout has passed; `--force` does not wait at all. A
/// reboot asks the same way, then boots the instance again on a new VMM.
#[test]
fn stop_and_reboot_ask_the_guest_to_shut_down_first() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_stop_timeout(dir.path(), 8);
    let polite = register(&daemon, "polite", polite_guest());
    let deaf = register(&daemon, "deaf", Asm::new().print("up\n").cli_hlt());
    let polite = ids(&daemon.ok(&["run-instances", "--image-id", &polite])).remove(0);
    let deaf = ids(&daemon.ok(&["run-instances", "--image-id", &deaf, "--count", "2"]));
    for id in [&polite, &deaf[0], &deaf[1]] {
        daemon.wait_for(|| daemon.console(id).contains("up"), "the guest to boot");
    }

    let vmm = |id: &str| nuage::daemon::process::running_vmms(&dir.path().join("state")).get(id).copied();
    let before = vmm(&polite);
    let reboot = daemon.ok(&["reboot-instances", "--instance-ids", &polite]);
    assert_eq!(reboot["StateChanges"][0]["current_state"], "running");
    assert!(vmm(&polite).is_some() && vmm(&polite) != before, "a new VMM runs the instance");
    daemon.wait_for(|| daemon.console(&polite).matches("up").count() == 2, "the guest to boot again");
    assert_eq!(daemon.console(&polite).matches("bye").count(), 1, "it shut down for the reboot");

    let start = Instant::now();
    let stop = daemon.ok(&["stop-instances", "--instance-ids", &polite]);
    assert_eq!(stop["StateChanges"][0]["current_state"], "stopped");
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    assert_eq!(daemon.console(&polite).matches("bye").count(), 2, "the guest saw Delete and powered off");
    let err = daemon.err(&["reboot-instances", "--instance-ids", &polite]);
    assert!(err.starts_with("IncorrectInstanceState"), "only running instances reboot: {err}");

    let start = Instant::now();
    daemon.ok(&["stop-instances", "--instance-ids", &deaf[0], "--force"]);
    assert!(start.elapsed() < Duration::from_secs(6), "--force does not wait: {:?}", start.elapsed());
    assert_eq!(daemon.state(&deaf[0]).0, "stopped");

    let start = Instant::now();
    daemon.ok(&["stop-instances", "--instance-ids", &deaf[1]]);
    assert!(start.elapsed() >= Duration::from_secs(8), "the guest got its time: {:?}", start.elapsed());
    assert_eq!(daemon.state(&deaf[1]).0, "stopped", "then its VMM was stopped");
    assert!(daemon.log().contains("did not shut down in time"), "{}", daemon.log());
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    // Text that would grow every DescribeImages answer (a 3 MB description once made it fail
    // for every caller): refused before any file is read.
    let (long_name, long_text) = ("n".repeat(129), "d".repeat(256));
    let long_cmdline = format!("console=ttyS0 {}", "x".repeat(2040));
    for (args, expected) in [
        (vec!["run-instances", "--image-id", "ami-00000000000000000"], "InvalidAMIID.NotFound"),
        (vec!["run-instances", "--image-id", &image, "--count", "1000"], "InvalidParameterValue"),
        (vec!["run-instances", "--image-id", &image, "--instance-type", "x.huge"], "InvalidParameterValue"),
        (vec!["describe-instances", "--states", "booting"], "InvalidParameterValue"),
        (vec!["terminate-instances", "--instance-ids", "i-0"], "InvalidInstanceID.NotFound"),
        (vec!["get-console-output", "--instance-id", "i-0"], "InvalidInstanceID.NotFound"),
        (vec!["register-image", "--disk", "/nonexistent", "--kernel", "/nonexistent"], "/nonexistent"),
        (
            vec!["register-image", "--name", &long_name, "--disk", "d", "--kernel", "k"],
            "InvalidParameterValue",
        ),
        (
            vec!["register-image", "--description", &long_text, "--disk", "d", "--kernel", "k"],
            "longer than 255",
        ),
        (
            vec!["register-image", "--kernel-cmdline", &long_cmdline, "--disk", "d", "--kernel", "k"],
            "2047 bytes",
        ),
    ] {
        let err = daemon.err(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(daemon.ok(&["describe-instances"])["Instances"].as_array().unwrap().len(), 0);
    assert_eq!(daemon.volumes(), 0);

    // The gRPC status codes behind the messages.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use nuage::api::pb::instances_client::InstancesClient;
        use nuage::api::pb::{InstanceIds, RunInstancesRequest};
        let channel = nuage::api::server::connect(&dir.path().join("api.sock")).await.unwrap();
        let mut client = InstancesClient::new(channel);
        let missing = RunInstancesRequest { image_id: "ami-0".into(), count: 1, ..Default::default() };
        assert_eq!(client.run_instances(missing).await.unwrap_err().code(), tonic::Code::NotFound);
        let empty = InstanceIds { instance_ids: vec![], force: false };
        assert_eq!(client.stop_instances(empty).await.unwrap_err().code(), tonic::Code::InvalidArgument);
        use nuage::api::pb::images_client::ImagesClient;
        use nuage::api::pb::RegisterImageRequest;
        let channel = nuage::api::server::connect(&dir.path().join("api.sock")).await.unwrap();
        let nul = RegisterImageRequest {
            disk_path: "d".into(),
            kernel_path: "k".into(),
            kernel_cmdline: "console=ttyS0\0init=/bin/sh".into(),
            ..Default::default()
        };
        let err = ImagesClient::new(channel).register_image(nul).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains("control character"), "{err}");
    });
    assert_eq!(daemon.ok(&["describe-images"])["Images"].as_array().unwrap().len(), 1, "nothing registered");
}

/// Key pairs: created (the private key printed once), imported, refused when malformed or
/// taken; an instance launched with one gets its public key and the user data on a
/// read-only config drive, which goes when the instance is terminated.
#[test]
fn key_pairs_and_user_data_reach_the_config_drive() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let created = daemon.ok(&["create-key-pair", "--key-name", "ci", "--key-type", "ed25519"]);
    let material = created["key_material"].as_str().unwrap();
    assert!(material.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{created}");
    let public_key = created["key_pair"]["public_key"].as_str().unwrap().to_owned();
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");

    // As a table, the private key alone goes to stdout, ready for a file.
    let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .args([
            "--endpoint",
            dir.path().join("api.sock").to_str().unwrap(),
            "create-key-pair",
            "--key-name",
            "rsa",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") && stdout.trim_end().ends_with("-----")
    );
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("rsa key-"), "name, id, fingerprint on stderr");

    let imported =
        common::write_file(&daemon.dir, "laptop.pub", format!("{public_key} me@laptop\n").as_bytes());
    let laptop = daemon.ok(&[
        "import-key-pair",
        "--key-name",
        "laptop",
        "--public-key-material",
        &format!("file://{imported}"),
    ]);
    assert_eq!(laptop["KeyPairs"][0]["key_fingerprint"], created["key_pair"]["key_fingerprint"]);
    for (args, expected) in [
        (vec!["create-key-pair", "--key-name", "ci"], "InvalidKeyPair.Duplicate"),
        (vec!["create-key-pair", "--key-name", "x", "--key-type", "dsa"], "InvalidParameterValue"),
        (
            vec!["import-key-pair", "--key-name", "x", "--public-key-material", "ssh-rsa AAAAB3Nza"],
            "InvalidKey.Format",
        ),
        (vec!["describe-key-pairs", "--key-names", "nope"], "InvalidKeyPair.NotFound"),
    ] {
        let err = daemon.err(&args);
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    let listed = daemon.ok(&["describe-key-pairs"]);
    let listed: Vec<&str> =
        listed["KeyPairs"].as_array().unwrap().iter().map(|k| k["key_name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["ci", "laptop", "rsa"]);

    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let big = common::write_file(&daemon.dir, "big", &vec![b'x'; (16 << 10) + 1]);
    for (args, expected) in [
        (vec!["--key-name", "nope"], "InvalidKeyPair.NotFound"),
        (vec!["--user-data", &format!("file://{big}")], "InvalidParameterValue: user data is 16385 bytes"),
    ] {
        let err = daemon.err(&[&["run-instances", "--image-id", &image][..], &args].concat());
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    assert_eq!(daemon.ok(&["describe-instances"])["Instances"].as_array().unwrap().len(), 0);

    let run = daemon.ok(&[
        "run-instances",
        "--image-id",
        &image,
        "--key-name",
        "ci",
        "--user-data",
        "#!/bin/sh\necho hi\n",
    ]);
    assert_eq!(run["Instances"][0]["key_name"], "ci");
    let id = ids(&run).remove(0);
    let drive = dir.path().join(format!("state/instances/{id}/cidata.img"));
    let bytes = std::fs::read(&drive).unwrap();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(&format!("instance-id: {id}")) && contains(&public_key) && contains("echo hi"));
    let config = running_vm_config(dir.path(), &id);
    assert!(
        config.disks.iter().any(|d| d.path == drive && d.read_only && d.id.as_deref() == Some("cidata")),
        "{config:?}"
    );
    daemon.wait_for(|| daemon.console(&id).contains("booted"), "the guest with its config drive");

    // The instance keeps its key when the key pair goes; the drive goes with the instance.
    daemon.ok(&["delete-key-pair", "--key-name", "ci"]);
    daemon.ok(&["stop-instances", "--instance-ids", &id]);
    daemon.ok(&["start-instances", "--instance-ids", &id]);
    assert_eq!(std::fs::read(&drive).unwrap(), bytes, "a restart keeps the drive");
    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
    assert!(!drive.exists(), "the drive (and its user data) goes with the instance");
}

/// A launch that fails (here: no VMM binary) terminates the instance and deletes its volume.
#[test]
fn a_failed_launch_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_vmm(dir.path(), Path::new("/nonexistent/nuage-vmm"));
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let err = daemon.err(&["run-instances", "--image-id", &image]);
    assert!(err.starts_with("Server.InternalError: cannot start /nonexistent/nuage-vmm"), "{err}");
    let all = daemon.ok(&["describe-instances"]);
    let instance = &all["Instances"][0];
    assert_eq!(instance["state"], "terminated", "{all}");
    assert!(instance["state_reason"].as_str().unwrap().contains("launch failed"), "{all}");
    assert_eq!(daemon.volumes(), 0);
}

/// A daemon crash never takes instances down: the VMMs run on, and the next daemon adopts
/// them and can still stop them.
#[test]
fn a_restarted_daemon_adopts_running_instances() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    let vmms = nuage::daemon::process::running_vmms(&dir.path().join("state"));
    let pid = vmms[&id];
    daemon.kill();
    std::thread::sleep(Duration::from_millis(200));
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the VMM outlives the daemon");

    let daemon = Daemon::start(dir.path());
    assert!(daemon.log().contains(&format!("adopted the VMM of {id} (pid {pid})")), "{}", daemon.log());
    assert_eq!(daemon.state(&id).0, "running");
    let stop = daemon.ok(&["stop-instances", "--instance-ids", &id]);
    assert_eq!(stop["StateChanges"][0]["current_state"], "stopped");
    // Gone, or a zombie waiting for init to reap it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "the adopted VMM was stopped: {stat}");
    kill_vmms(dir.path());
}

/// What process `pid`'s descriptors lead to.
fn open_files_of(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .collect()
}

/// A VMM inherits no descriptor but its standard ones and its tap (issue 16), not even one
/// nuaged itself inherited without close-on-exec (a test shell's, say).
#[test]
fn a_vmm_inherits_no_stray_descriptor() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("inherited-by-nuaged");
    let file = std::fs::File::create(&marker).unwrap();
    // SAFETY: fcntl on a descriptor this test owns; children of this process inherit it.
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) }, 0);
    let daemon = Daemon::start(dir.path());
    drop(file);
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    assert!(open_files_of(daemon.child.id()).contains(&marker), "nuaged inherited the descriptor");
    let vmm = nuage::daemon::process::running_vmms(&dir.path().join("state"))[&id];
    let vmm = nuage::daemon::process::running_the_vm(vmm);
    let held = open_files_of(vmm as u32);
    assert!(!held.contains(&marker), "the VMM holds {held:?}");
    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
}

/// A field of `/proc/.../status` text.
fn status_field(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("?").to_owned()
}

/// Every file (not directory) under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Every VMM runs jailed (issue 16): its relay, the daemon's child, as the instance's own
/// user with nothing; the VMM itself init of a new PID namespace, in new mount, IPC and
/// UTS namespaces, as that user, with a root that holds only its instance's directory, its
/// kernel, its disk's chain and three devices; every thread under its seccomp filter, with
/// no new privileges and no capability. A VMM that makes a forbidden call (a test-only
/// trigger in debug builds) is stopped and its instance says why.
#[test]
fn a_vmm_is_confined_and_a_forbidden_call_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let launched = ids(&daemon.ok(&["run-instances", "--image-id", &image, "--count", "2"]));
    let (id, other) = (&launched[0], &launched[1]);
    daemon.wait_for(|| daemon.console(id).contains("booted"), "the guest to boot");
    let relay = nuage::daemon::process::running_vmms(&dir.path().join("state"))[id.as_str()];
    let relay_status = std::fs::read_to_string(format!("/proc/{relay}/status")).unwrap();
    let uid = status_field(&relay_status, "Uid:");
    let user: u32 = uid.split_whitespace().next().unwrap().parse().unwrap();
    assert!(user >= 1_900_000_000, "the relay runs as {uid}");
    assert_eq!(uid, vec![user.to_string(); 4].join("\t"));
    assert_eq!(status_field(&relay_status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&relay_status, "CapPrm:"), "0000000000000000");
    let vmm = nuage::daemon::process::running_the_vm(relay);
    assert_ne!(vmm, relay, "the relay runs the VMM as its child");
    let other_relay = nuage::daemon::process::running_vmms(&dir.path().join("state"))[other.as_str()];
    let other_uid =
        status_field(&std::fs::read_to_string(format!("/proc/{other_relay}/status")).unwrap(), "Uid:");
    assert_ne!(uid, other_uid, "two instances, two users");

    let vmm_status = std::fs::read_to_string(format!("/proc/{vmm}/status")).unwrap();
    assert_eq!(status_field(&vmm_status, "Uid:"), uid);
    assert_eq!(status_field(&vmm_status, "Gid:"), uid, "its group is its user's number");
    assert_eq!(status_field(&vmm_status, "Groups:"), "");
    assert!(status_field(&vmm_status, "NSpid:").ends_with("\t1"), "init of its own PID namespace");
    for namespace in ["mnt", "pid", "ipc", "uts"] {
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/{namespace}")).unwrap();
        assert_ne!(ns(&vmm.to_string()), ns("self"), "the VMM's {namespace} namespace");
    }
    let root = PathBuf::from(format!("/proc/{vmm}/root"));
    let state = dir.path().join("state").canonicalize().unwrap();
    let instance = state.join("instances").join(id);
    let mut seen: Vec<String> = files_under(&root)
        .into_iter()
        .map(|file| format!("/{}", file.strip_prefix(&root).unwrap().display()))
        .filter(|file| !file.starts_with(&instance.display().to_string()))
        .collect();
    seen.sort();
    let store = state.join("store").display().to_string();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen[..3] == ["/dev/kvm", "/dev/null", "/dev/urandom"], "{seen:?}");
    let image = format!("{store}/images/{image}");
    assert_eq!(
        seen[3..5],
        [format!("{image}/disk.raw"), format!("{image}/kernel")],
        "the chain's base, the kernel"
    );
    assert!(seen[5].starts_with(&format!("{store}/volumes/vol-")), "the root volume: {seen:?}");
    assert!(
        !root.join("etc").exists()
            && !root.join(state.join("instances").join(other).strip_prefix("/").unwrap()).exists()
    );
    assert!(root.join(instance.strip_prefix("/").unwrap()).join("console.log").exists());

    let tasks: Vec<_> =
        std::fs::read_dir(format!("/proc/{vmm}/task")).unwrap().map(|t| t.unwrap().path()).collect();
    assert!(tasks.len() >= 3, "main, vCPU and control threads: {tasks:?}");
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let field = |name: &str| status_field(&status, name);
        let thread = field("Name:");
        assert_eq!(field("Seccomp:"), "2", "thread {thread} of the VMM is not filtered");
        assert_eq!(field("NoNewPrivs:"), "1", "thread {thread}");
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(set), "0000000000000000", "{set} of thread {thread}");
        }
    }
    daemon.ok(&["terminate-instances", "--instance-ids", id, other]);
    drop(daemon);

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn_with_env(
        dir.path(),
        &["--vmm", common::vmm_bin()].map(std::ffi::OsStr::new),
        &[("NUAGE_VMM_FORBIDDEN_SYSCALL", "vcpu")],
    );
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    // The VMM dies as its first vCPU starts: the launch fails, saying why, and the instance
    // is terminated; or (when the control socket answered first) the running instance stops.
    if let Err(error) = daemon.nuage(&["run-instances", "--image-id", &image]) {
        assert!(error.contains("seccomp filter forbids"), "{error}");
    }
    let id = ids(&daemon.ok(&["describe-instances"])).remove(0);
    daemon.wait_for(
        || ["stopped", "terminated"].contains(&daemon.state(&id).0.as_str()),
        "the instance to end",
    );
    let (_, reason) = daemon.state(&id);
    assert!(reason.contains("seccomp filter forbids"), "{reason}");
    let log = daemon.log();
    assert!(log.contains("code=Some(6)"), "{log}");
}

/// A guest that reboots as soon as it starts (issue 16) is started again later each time
/// instead of hundreds of times a second, the instance's state reason says so, and a stop
/// still takes effect at once.
#[test]
fn a_reboot_loop_is_slowed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    // The keyboard controller's reset line, at once: the VMM exits with the reboot status.
    let image = register(&daemon, "resets", Asm::new().outb(0x64, 0xfe).spin());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    daemon.wait_for(|| daemon.state(&id).1.starts_with("Server.RebootLoop"), "the loop to be reported");
    let (state, reason) = daemon.state(&id);
    assert_eq!(state, "running", "{reason}");
    assert!(reason.contains("times in a row"), "{reason}");
    std::thread::sleep(Duration::from_secs(3));
    let starts = daemon.log().lines().filter(|l| l.contains("launched") && l.contains(&id)).count();
    assert!(starts <= 8, "{starts} starts by 3 s into the loop");
    let asked = Instant::now();
    daemon.ok(&["stop-instances", "--instance-ids", &id]);
    assert_eq!(daemon.state(&id).0, "stopped");
    assert!(asked.elapsed() < Duration::from_secs(5), "the stop cut the wait short: {:?}", asked.elapsed());
    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
}

/// After a restart the daemon adopts only a process that proves it is the instance's VMM
/// (issue 15): one that merely names the instance's directory on its command line (here a
/// shell run by `nobody`) is reported and left alone, and the instance, whose real VMM
/// died with the daemon, is recorded as stopped.
#[test]
fn a_process_that_only_names_an_instance_is_not_adopted() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    daemon.kill();
    kill_vmms(dir.path());
    let instance = dir.path().join(format!("state/instances/{id}"));
    let mut impostor =
        Command::new("sh").args(["-c", "sleep 60"]).arg(instance.join("vm.json")).uid(65534).spawn().unwrap();
    let pid = impostor.id() as i32;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(nuage::daemon::process::running_vmms(&dir.path().join("state")).get(&id), Some(&pid));

    let daemon = Daemon::start(dir.path());
    let log = daemon.log();
    assert!(log.contains(&format!("left pid {pid} alone: it names {id} but is not its VMM")), "{log}");
    assert!(!log.contains("adopted"), "{log}");
    let (state, reason) = daemon.state(&id);
    assert_eq!(state, "stopped", "{reason}");
    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
    assert!(matches!(impostor.try_wait(), Ok(None)), "the impostor was left alone, not signalled");
    impostor.kill().unwrap();
    impostor.wait().unwrap();
}

/// A network namespace of the test's own, deleted at the end.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("nuage-api-{tag}-{}", std::process::id());
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Self(name)
    }

    fn links(&self) -> String {
        let out = Command::new("ip").args(["-n", &self.0, "-br", "link"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The namespace's nuage table, as `nft list` shows it.
    fn nft_table(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "table", "inet", "nuage"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Instances on a subnet get static addresses and taps on its bridge (in the daemon's
/// network namespace), keep them across stop and start, and give them back at
/// termination; the guest is told its address on the kernel command line.
#[test]
fn instances_on_a_subnet_get_addresses_and_taps() {
    let ns = Netns::new("subnet");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in_netns(dir.path(), &ns.0);
    let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.21.0/24"]);
    let subnet = subnet["Subnets"][0].clone();
    let (subnet_id, bridge) = (subnet["subnet_id"].as_str().unwrap(), subnet["bridge"].as_str().unwrap());
    assert_eq!(subnet["gateway"], "10.0.21.1");
    let err = daemon.err(&["create-subnet", "--cidr-block", "10.0.21.128/25"]);
    assert!(err.starts_with("InvalidSubnet.Conflict"), "{err}");
    let err = daemon.err(&["create-subnet", "--cidr-block", "10.0.21.0/33"]);
    assert!(err.starts_with("InvalidParameterValue"), "{err}");

    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let run = daemon.ok(&["run-instances", "--image-id", &image, "--count", "2", "--subnet-id", subnet_id]);
    let addresses: Vec<&str> = run["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["private_ip_address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["10.0.21.2", "10.0.21.3"]);
    let ids = ids(&run);
    let links = ns.links();
    for id in &ids {
        let tap = format!("ntap-{}", &id[id.len() - 10..]);
        assert!(links.lines().any(|l| l.starts_with(&tap)), "{tap} in\n{links}");
        daemon.wait_for(|| daemon.console(id).contains("booted"), "the guest on its tap");
        assert_eq!(daemon.state(id).0, "running");
        let vmm_log =
            std::fs::read_to_string(dir.path().join(format!("state/instances/{id}/vmm.log"))).unwrap();
        assert!(!vmm_log.contains("error"), "{vmm_log}");
    }
    let master =
        Command::new("ip").args(["-n", &ns.0, "-br", "link", "show", "master", bridge]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&master.stdout).lines().count(), 2, "both taps are on the bridge");
    let config = running_vm_config(dir.path(), &ids[0]);
    assert!(config.cmdline.contains("ip=10.0.21.2::10.0.21.1:255.255.255.0::eth0:off"), "{config:?}");
    let net = &config.nets[..];
    assert!(
        matches!(net, [n] if n.tap_fd == Some(3) && n.mac.to_string() == "02:4e:0a:00:15:02"
            && n.ipv4 == Some(Ipv4Addr::new(10, 0, 21, 2))),
        "{config:?}"
    );

    let err = daemon.err(&[
        "run-instances",
        "--image-id",
        &image,
        "--subnet-id",
        subnet_id,
        "--private-ip-address",
        "10.0.21.3",
    ]);
    assert!(err.starts_with("InvalidIPAddress.InUse"), "{err}");
    let err = daemon.err(&["run-instances", "--image-id", &image, "--subnet-id", "subnet-0"]);
    assert!(err.starts_with("InvalidSubnetID.NotFound"), "{err}");
    let err = daemon.err(&["delete-subnet", "--subnet-id", subnet_id]);
    assert!(err.starts_with("DependencyViolation"), "{err}");

    daemon.ok(&["stop-instances", "--instance-ids", &ids[0]]);
    daemon.ok(&["start-instances", "--instance-ids", &ids[0]]);
    assert_eq!(
        daemon.ok(&["describe-instances", "--instance-ids", &ids[0]])["Instances"][0]["private_ip_address"],
        "10.0.21.2"
    );

    daemon.ok(&["terminate-instances", "--instance-ids", &ids[0], &ids[1]]);
    assert!(!ns.links().contains("ntap-"), "terminated instances leave no tap:\n{}", ns.links());
    daemon.ok(&["delete-subnet", "--subnet-id", subnet_id]);
    assert!(!ns.links().contains(bridge), "the bridge goes with its subnet");
}

/// Volumes and snapshots through the API: a data volume attached to a stopped instance
/// becomes its second disk at the next start; volumes in use are snapshotted while their
/// instance runs; terminating deletes the root volume and keeps the data volume.
#[test]
fn volumes_attach_snapshot_and_outlive_their_instance() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    let root = daemon.ok(&["describe-instances", "--instance-ids", &id])["Instances"][0]["root_volume_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = daemon.ok(&["create-volume", "--size", "1"]);
    let data = data["Volumes"][0]["volume_id"].as_str().unwrap().to_owned();
    let err = daemon.err(&["attach-volume", "--volume-id", &data, "--instance-id", &id]);
    assert!(err.starts_with("IncorrectInstanceState"), "{err}");

    daemon.ok(&["stop-instances", "--instance-ids", &id]);
    let attached = daemon.ok(&["attach-volume", "--volume-id", &data, "--instance-id", &id]);
    assert_eq!(attached["Volumes"][0]["state"], "in-use");
    let err = daemon.err(&["detach-volume", "--volume-id", &root]);
    assert!(err.contains("OperationNotPermitted"), "{err}");
    daemon.ok(&["start-instances", "--instance-ids", &id]);
    let config = running_vm_config(dir.path(), &id);
    let serial = data.replace('-', "");
    assert!(
        config
            .disks
            .iter()
            .any(|d| d.format == DiskFormat::Qcow2 && d.id.as_deref() == Some(serial.as_str())),
        "{config:?}"
    );

    // Snapshots of both volumes while the instance runs, through its VMM.
    for volume in [&root, &data] {
        let snapshot = daemon.ok(&["create-snapshot", "--volume-id", volume]);
        assert_eq!(&snapshot["Snapshots"][0]["volume_id"], volume.as_str());
    }
    assert_eq!(daemon.state(&id).0, "running", "snapshots do not stop the instance");
    let snapshots = daemon.ok(&["describe-snapshots"]);
    let data_snapshot =
        snapshots["Snapshots"].as_array().unwrap().iter().find(|s| s["volume_id"] == data.as_str()).unwrap()
            ["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let err = daemon.err(&["delete-volume", "--volume-id", &data]);
    assert!(err.starts_with("VolumeInUse"), "{err}");

    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
    let volumes = daemon.ok(&["describe-volumes"]);
    let remaining: Vec<&str> =
        volumes["Volumes"].as_array().unwrap().iter().map(|v| v["volume_id"].as_str().unwrap()).collect();
    assert_eq!(remaining, [data.as_str()], "the root volume went with the instance, the data volume stays");
    assert_eq!(volumes["Volumes"][0]["state"], "available");

    let grown = daemon.ok(&["modify-volume", "--volume-id", &data, "--size", "2"]);
    assert_eq!(grown["Volumes"][0]["size_bytes"], 2u64 << 30);
    let err = daemon.err(&["modify-volume", "--volume-id", &data, "--size", "1"]);
    assert!(err.starts_with("InvalidParameterValue"), "{err}");
    let restored = daemon.ok(&["create-volume", "--snapshot-id", &data_snapshot]);
    assert_eq!(restored["Volumes"][0]["snapshot_id"], data_snapshot.as_str());
    let err = daemon.err(&["delete-snapshot", "--snapshot-id", &data_snapshot]);
    assert!(err.contains("InUse"), "{err}");
    let err = daemon.err(&["create-volume"]);
    assert!(err.starts_with("InvalidParameterValue"), "{err}");
}

/// Elastic IPs through the API: allocated from the configured pool, associated with an
/// instance on a subnet (an address on the uplink and a translation in the firewall),
/// dropped from the uplink when the instance terminates, released back to the pool.
#[test]
fn elastic_ips_follow_their_instance() {
    let ns = Netns::new("eip");
    let ip = |args: &[&str]| {
        assert!(Command::new("ip").args(["-n", &ns.0]).args(args).status().unwrap().success())
    };
    ip(&["link", "add", "uplink", "type", "veth", "peer", "name", "lan0"]);
    let dir = tempfile::tempdir().unwrap();
    let vmm = common::vmm_bin();
    let args = [
        "--vmm",
        vmm,
        "--netns",
        &ns.0,
        "--uplink",
        "uplink",
        "--address-pool",
        "192.168.70.10,192.168.70.11",
    ];
    let daemon = Daemon::spawn(dir.path(), &args.map(std::ffi::OsStr::new));
    let uplink = || {
        let out =
            Command::new("ip").args(["-n", &ns.0, "-br", "addr", "show", "dev", "uplink"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rules = || ns.nft_table();

    let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.22.0/24"])["Subnets"][0]["subnet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image, "--subnet-id", &subnet])).remove(0);
    let unplugged = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);

    let eip = daemon.ok(&["allocate-address"])["Addresses"][0].clone();
    assert_eq!(eip["public_ip"], "192.168.70.10");
    let allocation = eip["allocation_id"].as_str().unwrap();
    assert!(allocation.starts_with("eipalloc-"));
    daemon.ok(&["allocate-address"]);
    let err = daemon.err(&["allocate-address"]);
    assert!(err.starts_with("AddressLimitExceeded"), "{err}");
    let err = daemon.err(&["associate-address", "--allocation-id", allocation, "--instance-id", &unplugged]);
    assert!(err.contains("has no network interface"), "{err}");

    let associated = daemon.ok(&["associate-address", "--allocation-id", allocation, "--instance-id", &id]);
    assert_eq!(associated["Addresses"][0]["instance_id"], id.as_str());
    assert_eq!(associated["Addresses"][0]["private_ip_address"], "10.0.22.2");
    assert!(uplink().contains("192.168.70.10/32"), "{}", uplink());
    assert!(rules().contains("dnat ip to 10.0.22.2"), "{}", rules());
    let err = daemon.err(&["release-address", "--allocation-id", allocation]);
    assert!(err.starts_with("DependencyViolation"), "{err}");
    let freed = daemon.ok(&["disassociate-address", "--allocation-id", allocation]);
    assert_eq!(freed["Addresses"][0]["instance_id"], "");
    assert!(!uplink().contains("192.168.70.10") && !rules().contains("dnat"), "{}{}", uplink(), rules());
    daemon.ok(&["associate-address", "--allocation-id", allocation, "--instance-id", &id]);
    assert!(uplink().contains("192.168.70.10/32"), "associated again: {}", uplink());

    daemon.ok(&["terminate-instances", "--instance-ids", &id, &unplugged]);
    assert!(!uplink().contains("192.168.70.10"), "{}", uplink());
    assert!(!rules().contains("dnat"), "{}", rules());
    assert_eq!(daemon.ok(&["describe-addresses"])["Addresses"][0]["instance_id"], "");
    daemon.ok(&["release-address", "--allocation-id", allocation]);
    assert_eq!(daemon.ok(&["describe-addresses"])["Addresses"].as_array().unwrap().len(), 1);
}

/// Security groups through the API: groups and their rules, instances launched into them
/// (or into the default group, which lets nothing in), moved between them, and the network
/// plane's filter following every change; refusals name EC2's errors.
#[test]
fn security_groups_decide_what_reaches_an_instance() {
    let ns = Netns::new("sg");
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in_netns(dir.path(), &ns.0);
    let rules = || ns.nft_table();
    let group_id = |v: Value| v["SecurityGroups"][0]["group_id"].as_str().unwrap().to_owned();
    let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.23.0/24"])["Subnets"][0]["subnet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let image = register(&daemon, "idle", Asm::new().cli_hlt());

    let web = group_id(daemon.ok(&[
        "create-security-group",
        "--group-name",
        "web",
        "--description",
        "http from anywhere",
        "--tag-specifications",
        "ResourceType=security-group,Tags=[{Key=Name,Value=front}]",
    ]));
    assert!(web.starts_with("sg-"), "{web}");
    let authorize = |args: &[&str]| {
        daemon.nuage(&[&["authorize-security-group-ingress", "--group-id", &web], args].concat())
    };
    let shown = authorize(&["--port", "80", "--cidr", "0.0.0.0/0"]).unwrap();
    let permission = &shown["SecurityGroups"][0]["ip_permissions"][0];
    assert_eq!(
        (permission["ip_protocol"].as_str(), permission["from_port"].as_i64()),
        (Some("tcp"), Some(80))
    );
    authorize(&["--port", "8000-8010", "--cidr", "192.168.0.0/16"]).unwrap();
    let err = authorize(&["--port", "80", "--cidr", "0.0.0.0/0"]).unwrap_err();
    assert!(err.starts_with("InvalidPermission.Duplicate"), "{err}");
    let err = authorize(&["--protocol", "gre", "--cidr", "0.0.0.0/0"]).unwrap_err();
    assert!(err.starts_with("InvalidParameterValue"), "{err}");
    let err = daemon.err(&["create-security-group", "--group-name", "web"]);
    assert!(err.starts_with("InvalidGroup.Duplicate"), "{err}");

    let run = |groups: &[&str]| {
        let mut args = vec!["run-instances", "--image-id", &image, "--subnet-id", &subnet];
        if !groups.is_empty() {
            args.push("--security-group-ids");
            args.extend_from_slice(groups);
        }
        daemon.nuage(&args)
    };
    let front = run(&[&web]).unwrap()["Instances"][0].clone();
    assert_eq!(front["security_group_ids"], serde_json::json!([web]));
    let back = run(&[]).unwrap()["Instances"][0].clone();
    let default = back["security_group_ids"][0].as_str().unwrap().to_owned();
    let groups = daemon.ok(&["describe-security-groups"]);
    let names: Vec<&str> = groups["SecurityGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"default") && names.contains(&"web"), "{names:?}");
    let (front_id, back_id) = (front["instance_id"].as_str().unwrap(), back["instance_id"].as_str().unwrap());
    let table = rules();
    assert!(table.contains("ip daddr 10.0.23.2 tcp dport 80 accept"), "{table}");
    assert!(
        table.contains("ip daddr 10.0.23.2 ip saddr 192.168.0.0/16 tcp dport 8000-8010 accept"),
        "{table}"
    );
    assert!(
        table.contains("ip daddr 10.0.23.3 drop") && !table.contains("ip daddr 10.0.23.3 tcp"),
        "{table}"
    );

    let err = run(&["sg-0000000000000000"]).unwrap_err();
    assert!(err.starts_with("InvalidGroup.NotFound"), "{err}");
    let err = daemon.err(&["run-instances", "--image-id", &image, "--security-group-ids", &web]);
    assert!(err.contains("security groups need a subnet"), "{err}");
    let err = daemon.err(&["delete-security-group", "--group-id", &web]);
    assert!(err.starts_with("DependencyViolation"), "{err}");
    let err = daemon.err(&["delete-security-group", "--group-id", &default]);
    assert!(err.starts_with("CannotDelete"), "{err}");

    daemon.ok(&["modify-instance-attribute", "--instance-id", back_id, "--groups", &web, &default]);
    let described = daemon.ok(&["describe-instances", "--instance-ids", back_id]);
    let mut now: Vec<String> =
        serde_json::from_value(described["Instances"][0]["security_group_ids"].clone()).unwrap();
    now.sort();
    let mut expected = vec![web.clone(), default.clone()];
    expected.sort();
    assert_eq!(now, expected);
    assert!(rules().contains("ip daddr 10.0.23.3 tcp dport 80 accept"), "{}", rules());
    daemon
        .nuage(&["revoke-security-group-ingress", "--group-id", &web, "--port", "80", "--cidr", "0.0.0.0/0"])
        .unwrap();
    // (The metadata service's input rule is port 80 too, to 169.254.169.254.)
    assert!(!rules().contains("ip daddr 10.0.23.3 tcp dport 80"), "{}", rules());

    daemon.ok(&["terminate-instances", "--instance-ids", front_id, back_id]);
    daemon.wait_for(|| !rules().contains("ip daddr 10.0.23."), "their rules to go with them");
    daemon.nuage(&["delete-security-group", "--group-id", &web]).unwrap();
    let left = daemon.ok(&["describe-security-groups"]);
    assert_eq!(left["SecurityGroups"].as_array().unwrap().len(), 1, "{left}");
}

/// SIGKILL nuaged at recorded steps of RunInstances and TerminateInstances: the next
/// nuaged settles every instance (none left pending or shutting down), and VMMs, volumes,
/// taps and leases match what the instances' states say.
#[test]
fn a_daemon_killed_mid_operation_leaves_nothing_behind() {
    let points = [
        "run-after-volume",
        "launch-after-spawn",
        "terminate-after-record",
        "snapshot-after-pause",
        "snapshot-before-switch",
    ];
    for (n, point) in points.into_iter().enumerate() {
        let ns = Netns::new(&format!("crash{n}"));
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let daemon = Daemon::start_in_netns(dir.path(), &ns.0);
        let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.23.0/24"])["Subnets"][0]["subnet_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let image = register(&daemon, "idle", Asm::new().cli_hlt());
        let run = ["run-instances", "--image-id", &image, "--subnet-id", &subnet];
        let victim = daemon.ok(&run)["Instances"][0].clone();
        let (victim, root) = (
            victim["instance_id"].as_str().unwrap().to_owned(),
            victim["root_volume_id"].as_str().unwrap().to_owned(),
        );
        daemon.kill();

        let daemon =
            Daemon::spawn_with_env(dir.path(), &Daemon::netns_args(&ns.0), &[("NUAGE_FAILPOINT", point)]);
        let operation: Vec<&str> = match point.split('-').next() {
            Some("terminate") => vec!["terminate-instances", "--instance-ids", &victim],
            Some("snapshot") => vec!["create-snapshot", "--volume-id", &root],
            _ => run.to_vec(),
        };
        let mut client = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("--endpoint")
            .arg(dir.path().join("api.sock"))
            .args(&operation)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        daemon.wait_for(|| daemon.log().contains("failpoint reached"), point);
        daemon.kill();
        let _ = client.kill();
        let _ = client.wait();

        let daemon = Daemon::start_in_netns(dir.path(), &ns.0);
        let all = daemon.ok(&["describe-instances"]);
        let instances = all["Instances"].as_array().unwrap();
        let vmms = nuage::daemon::process::running_vmms(&state);
        let mut live = 0;
        for instance in instances {
            let id = instance["instance_id"].as_str().unwrap();
            let state_name = instance["state"].as_str().unwrap();
            assert!(["running", "stopped", "terminated"].contains(&state_name), "{point}: {all}");
            assert_eq!(
                vmms.contains_key(id),
                state_name == "running",
                "{point}: a VMM runs iff running: {all}"
            );
            if state_name != "terminated" {
                live += 1;
            }
        }
        let volumes = daemon.ok(&["describe-volumes"]);
        assert_eq!(
            volumes["Volumes"].as_array().unwrap().len(),
            live,
            "{point}: one root volume per live instance"
        );
        let taps = ns.links().lines().filter(|l| l.starts_with("ntap-")).count();
        assert_eq!(taps, live, "{point}: one tap per live instance:\n{}", ns.links());
        let subnets = daemon.ok(&["describe-subnets"]);
        assert_eq!(subnets["Subnets"][0]["leased_addresses"], live, "{point}: one lease per live instance");
        if point == "terminate-after-record" {
            assert_eq!(daemon.state(&victim).0, "terminated", "{point}: the termination was finished");
        }
        if point.starts_with("snapshot") {
            // The snapshot is finished if it had begun, and the running VMM writes the
            // volume's current top layer again, not the file that became the snapshot.
            let snapshots = daemon.ok(&["describe-snapshots"])["Snapshots"].as_array().unwrap().len();
            assert_eq!(snapshots, usize::from(point == "snapshot-before-switch"), "{point}");
            let top = state.join(format!("store/volumes/{root}.qcow2"));
            let pid = nuage::daemon::process::running_the_vm(vmms[&victim]);
            let writes_top = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().any(|fd| {
                let info = std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ));
                let flags = info
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:").map(|f| f.trim().to_owned()));
                let read_write =
                    flags.and_then(|f| u32::from_str_radix(&f, 8).ok()).is_some_and(|f| f & 3 == 2);
                std::fs::read_link(fd.path()).is_ok_and(|target| target == top) && read_write
            });
            assert!(writes_top, "{point}: the VMM has {} open for writing", top.display());
            let socket = state.join(format!("instances/{victim}/control.sock"));
            let disks = nuage::vmm::api::control::query_disks(&socket).unwrap();
            assert!(disks.iter().all(|d| !d.paused), "{point}: no disk is left paused: {disks:?}");
            daemon.ok(&["create-snapshot", "--volume-id", &root]);
        }

        // Everything still works, and goes away cleanly.
        let ids: Vec<String> = instances
            .iter()
            .filter(|i| i["state"] != "terminated")
            .map(|i| i["instance_id"].as_str().unwrap().to_owned())
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["terminate-instances", "--instance-ids"];
            args.extend(ids.iter().map(String::as_str));
            daemon.ok(&args);
        }
        assert_eq!(daemon.volumes(), 0, "{point}");
        assert!(!ns.links().contains("ntap-"), "{point}");
        kill_vmms(dir.path());
    }
}

/// `get-console-output --follow` streams the console as the guest writes it and the state
/// changes as they happen, and ends by itself when the instance is terminated.
#[test]
fn following_an_instance_streams_its_console_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with_stop_timeout(dir.path(), 8);
    let image = register(&daemon, "polite", polite_guest());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    let follow = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("--endpoint")
            .arg(dir.path().join("api.sock"))
            .args(["get-console-output", "--follow", "--instance-id", id])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut watcher = follow(&id);
    daemon.wait_for(|| daemon.console(&id).contains("up"), "the guest to boot");
    daemon.ok(&["stop-instances", "--instance-ids", &id]);
    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
    let start = Instant::now();
    while watcher.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "the stream did not end with the instance");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "up\nbye\n");
    let states: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("[nuage] {id} is ")).map(str::to_owned))
        .collect();
    assert_eq!(states.first().map(String::as_str), Some("running"), "{states:?}");
    assert_eq!(states.last().map(String::as_str), Some("terminated"), "{states:?}");
    assert!(states.iter().any(|s| s == "stopped"), "{states:?}");

    let missing = follow("i-00000000000000000").wait_with_output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("InvalidInstanceID.NotFound"));
}

/// `--metrics-address` serves Prometheus metrics: instances by state, each running VMM's
/// CPU time and memory, and API call counts and latencies by method.
#[test]
fn metrics_report_instances_and_api_calls() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(
        dir.path(),
        &["--vmm".as_ref(), common::vmm_bin().as_ref(), "--metrics-address".as_ref(), "127.0.0.1:0".as_ref()],
    );
    let get = |path: &str| metrics_page(&daemon, path);
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    daemon.ok(&["describe-instances"]);
    let page = get("/metrics");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("nuage_instances{state=\"running\"} 1\n"), "{page}");
    assert!(page.contains("nuage_instances{state=\"stopped\"} 0\n"), "{page}");
    let memory = page
        .lines()
        .find_map(|l| l.strip_prefix(&format!("nuage_instance_memory_bytes{{instance_id=\"{id}\"}} ")))
        .unwrap_or_else(|| panic!("no memory line for {id}: {page}"));
    assert!(memory.parse::<u64>().unwrap() > 1 << 20, "the VMM's resident memory: {memory}");
    assert!(page.contains(&format!("nuage_instance_cpu_seconds_total{{instance_id=\"{id}\"}} ")), "{page}");
    let run = "method=\"/nuage.v1.Instances/RunInstances\"";
    assert!(page.contains(&format!("nuage_api_request_duration_seconds_count{{{run}}} 1\n")), "{page}");
    assert!(page.contains(&format!("nuage_api_request_duration_seconds_bucket{{{run},le=\"+Inf\"}} 1\n")));
    assert!(get("/other").starts_with("HTTP/1.1 404"), "only /metrics is served");
}

/// ImportImage streams how much of the disk has been copied, ending with the image; a file
/// the import directory lacks ends the stream with an error naming it.
#[test]
fn image_import_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(dir.path());
    // Files the operator put in the import directory, named as the API takes them.
    let imports = dir.path().join("state/imports");
    common::write_file(&imports, "big.disk", &vec![7u8; 40 << 20]);
    common::write_file(&imports, "k", &elf_kernel(Asm::new().cli_hlt().bytes()));
    let (disk, kernel) = ("big.disk".to_owned(), "k".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use nuage::api::pb::images_client::ImagesClient;
        use nuage::api::pb::RegisterImageRequest;
        let channel = nuage::api::server::connect(&dir.path().join("api.sock")).await.unwrap();
        let mut images = ImagesClient::new(channel);
        let request = RegisterImageRequest { disk_path: disk, kernel_path: kernel, ..Default::default() };
        let mut updates = images.import_image(request).await.unwrap().into_inner();
        let mut seen = Vec::new();
        let mut image = None;
        while let Some(update) = updates.message().await.unwrap() {
            assert_eq!(update.bytes_total, 40 << 20);
            seen.push(update.bytes_done);
            image = image.or(update.image);
        }
        assert!(seen.len() >= 10, "a report per 4 MiB: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.last() == Some(&(40 << 20)), "{seen:?}");
        assert!(image.unwrap().image_id.starts_with("ami-"));

        let missing = RegisterImageRequest {
            disk_path: "/nonexistent".into(),
            kernel_path: "/k".into(),
            ..Default::default()
        };
        let mut updates = images.import_image(missing).await.unwrap().into_inner();
        let err = updates.message().await.unwrap_err();
        assert!(err.message().contains("/nonexistent"), "{err:?}");
    });
}

/// Runs openssl in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA `name`.pem/.key in `dir`, and a certificate `leaf`.pem/.key it signs for `usage`
/// (serverAuth or clientAuth), valid for 127.0.0.1.
fn certificate(dir: &Path, ca: &str, leaf: &str, usage: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    if !dir.join(format!("{ca}.pem")).exists() {
        let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN={ca}"));
        let args =
            [&["req", "-x509"][..], &ec, &["-keyout", &key, "-out", &pem, "-days", "1", "-subj", &subject]];
        openssl(dir, &args.concat());
    }
    std::fs::write(
        dir.join(format!("{leaf}.ext")),
        format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    let (key, csr, subject) = (format!("{leaf}.key"), format!("{leaf}.csr"), format!("/CN={leaf}"));
    openssl(dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subject]].concat());
    let (ca_pem, ca_key, pem, ext) =
        (format!("{ca}.pem"), format!("{ca}.key"), format!("{leaf}.pem"), format!("{leaf}.ext"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
}

/// Over TCP the API is served with mutual TLS only: a client with a certificate from the
/// configured CA is served; one with another CA's certificate, or without TLS settings,
/// is not; and the daemon refuses TCP without the TLS files. A certificate configured as
/// read-only (by the fingerprint openssl prints) reads and is refused every change.
#[test]
fn the_api_over_tcp_requires_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    certificate(pki, "ca", "server", "serverAuth");
    certificate(pki, "ca", "client", "clientAuth");
    certificate(pki, "ca", "monitor", "clientAuth");
    certificate(pki, "rogue-ca", "rogue", "clientAuth");
    let fingerprint = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(pki.join("monitor.pem"))
        .output()
        .unwrap();
    let monitor_fingerprint = String::from_utf8(fingerprint.stdout).unwrap();

    let refused = Command::new(env!("CARGO_BIN_EXE_nuaged"))
        .args([
            "--state-dir",
            pki.join("state").to_str().unwrap(),
            "--socket",
            pki.join("x.sock").to_str().unwrap(),
        ])
        .args(["--tcp-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("mutual TLS only"), "{refused:?}");

    let file = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let daemon = Daemon::spawn(
        pki,
        &[
            "--vmm",
            common::vmm_bin(),
            "--tcp-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
            "--tls-read-only-client",
            monitor_fingerprint.trim(),
        ]
        .map(std::ffi::OsStr::new),
    );
    let log = daemon.log();
    let port: String = log
        .lines()
        .filter(|l| l.contains("over TCP"))
        .find_map(|l| l.split("127.0.0.1:").nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_else(|| panic!("no TCP address in {log}"));
    let endpoint = format!("https://127.0.0.1:{port}");
    let call = |tls: &[&str], args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nuage"))
            .args(["--endpoint", &endpoint, "--output", "json"])
            .args(tls)
            .args(args)
            .output()
            .unwrap()
    };
    let remote = |tls: &[&str]| call(tls, &["describe-key-pairs"]);
    daemon.ok(&["create-key-pair", "--key-name", "k", "--key-type", "ed25519"]);
    let (client, client_key, rogue, rogue_key) =
        (file("client.pem"), file("client.key"), file("rogue.pem"), file("rogue.key"));
    let ok = remote(&["--tls-ca", &ca, "--tls-cert", &client, "--tls-key", &client_key]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"key_name\": \"k\""));
    let denied = remote(&["--tls-ca", &ca, "--tls-cert", &rogue, "--tls-key", &rogue_key]);
    assert!(!denied.status.success(), "a certificate from another CA is refused");
    let bare = remote(&[]);
    assert!(!bare.status.success());
    assert!(String::from_utf8_lossy(&bare.stderr).contains("needs --tls-ca"));

    let (monitor, monitor_key) = (file("monitor.pem"), file("monitor.key"));
    let as_monitor = ["--tls-ca", &ca, "--tls-cert", &monitor, "--tls-key", &monitor_key];
    let read = call(&as_monitor, &["describe-key-pairs"]);
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let change = call(&as_monitor, &["delete-key-pair", "--key-name", "k"]);
    assert!(!change.status.success());
    assert!(String::from_utf8_lossy(&change.stderr).contains("UnauthorizedOperation"), "{change:?}");
    let as_client = ["--tls-ca", &ca, "--tls-cert", &client, "--tls-key", &client_key];
    let made = call(&as_client, &["create-key-pair", "--key-name", "k2", "--key-type", "ed25519"]);
    assert!(made.status.success(), "the full client still changes things: {made:?}");
    let names: Vec<Value> = daemon.ok(&["describe-key-pairs"])["KeyPairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_name"].clone())
        .collect();
    assert_eq!(names.len(), 2, "the read-only caller deleted nothing: {names:?}");
    assert!(daemon.log().contains("refused to a read-only caller"), "{}", daemon.log());
}

/// The standard gRPC health and reflection services answer beside nuage's own, so
/// grpcurl, load balancers and probes work without knowing nuage.
#[test]
fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;

        let channel = nuage::api::server::connect(&dir.path().join("api.sock")).await.unwrap();
        let mut health = HealthClient::new(channel.clone());
        for service in ["", "nuage.v1.Instances", "nuage.v1.KeyPairs"] {
            let request = HealthCheckRequest { service: service.into() };
            let status = health.check(request).await.unwrap().into_inner().status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let unknown = health.check(HealthCheckRequest { service: "nuage.v1.Nope".into() }).await;
        assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);

        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies =
            reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("{reply:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for service in
            ["nuage.v1.Instances", "nuage.v1.Volumes", "nuage.v1.KeyPairs", "grpc.health.v1.Health"]
        {
            assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
        }
    });
}

/// `nuage doctor` reports each thing nuage needs, tells software KVM from hardware, and
/// notices whether the daemon answers.
#[test]
fn doctor_says_what_this_host_has() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let doctor = || {
        Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("--endpoint")
            .arg(dir.path().join("api.sock"))
            .arg("doctor")
            .arg("--state-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = doctor();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{text}"))
            .to_owned()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let hardware = cpuinfo.split_whitespace().any(|flag| flag == "vmx" || flag == "svm");
    let kvm = line("kvm");
    if hardware {
        assert!(kvm.starts_with("ok") && kvm.contains("hardware"), "{kvm}");
    } else {
        assert!(kvm.starts_with("warn") && kvm.contains("software"), "{kvm}");
    }
    for name in ["tun", "iproute2", "nftables", "nuaged"] {
        assert!(line(name).starts_with("ok"), "{text}");
    }
    assert!(line("disk").contains("GiB free"), "{text}");
    daemon.kill();
    let text = String::from_utf8_lossy(&doctor().stdout).into_owned();
    assert!(text.contains("not answering"), "{text}");
}

/// `nuage completions SHELL` prints a completion script that knows the subcommands.
#[test]
fn shell_completions_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_nuage")).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8_lossy(&out.stdout);
        for command in ["run-instances", "create-key-pair", "reboot-instances"] {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_nuage")).args(["completions", "tcsh"]).output().unwrap();
    assert!(!bad.status.success(), "an unknown shell is a usage error");
}

/// Watches are threads in the daemon: at most 64 are served at once, and a closed one
/// frees its place.
#[test]
fn watches_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use nuage::api::instances::MAX_WATCHES;
        use nuage::api::pb::instances_client::InstancesClient;
        use nuage::api::pb::WatchInstanceRequest;
        let channel = nuage::api::server::connect(&dir.path().join("api.sock")).await.unwrap();
        let mut client = InstancesClient::new(channel);
        let request = || WatchInstanceRequest { instance_id: id.clone(), from_start: false };
        let mut streams = Vec::new();
        for _ in 0..MAX_WATCHES {
            let mut stream = client.watch_instance(request()).await.unwrap().into_inner();
            let first = stream.message().await.unwrap().unwrap();
            assert!(first.event.is_some());
            streams.push(stream);
        }
        let refused = client.watch_instance(request()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        streams.pop();
        let start = Instant::now();
        while client.watch_instance(request()).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(5), "a closed watch frees its place");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// The read-only socket beside the API's (for dashboards and monitoring) serves reads and
/// refuses every call that would change something before it reaches the daemon, logging
/// the refusal to the audit trail.
#[test]
fn the_read_only_socket_serves_reads_and_refuses_changes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let socket = dir.path().join("api-readonly.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);
    let read_only = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nuage"))
            .arg("--endpoint")
            .arg(&socket)
            .args(["--output", "json"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, listed) = read_only(&["describe-images"]);
    assert!(ok && listed.contains(&image), "{listed}");
    assert!(read_only(&["describe-instances"]).0);
    for change in [
        &["run-instances", "--image-id", &image][..],
        &["create-subnet", "--cidr-block", "10.0.24.0/24"],
        &["deregister-image", "--image-id", &image],
        &["create-tags", "--resources", &image, "--tags", "Key=a,Value=b"],
    ] {
        let (ok, said) = read_only(change);
        assert!(!ok && said.contains("UnauthorizedOperation"), "{change:?}: {said}");
    }
    assert_eq!(daemon.ok(&["describe-instances"])["Instances"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(daemon.ok(&["describe-images"])["Images"][0]["image_id"], image.as_str(), "nothing changed");
    assert!(daemon.log().contains("refused to a read-only caller"), "{}", daemon.log());
}

/// The API socket is mode 0660 and given to the configured group; each instance's
/// directory holds the VMM's command line and, while it runs, its pid.
#[test]
fn the_socket_and_instance_files_are_as_documented() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    let gid: u32 = groups
        .lines()
        .find_map(|l| l.strip_prefix("daemon:x:"))
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(
        dir.path(),
        &["--vmm", common::vmm_bin(), "--socket-group", "daemon"].map(std::ffi::OsStr::new),
    );
    let socket = std::fs::metadata(dir.path().join("api.sock")).unwrap();
    assert_eq!((socket.permissions().mode() & 0o777, socket.gid()), (0o660, gid));

    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    let instance = dir.path().join(format!("state/instances/{id}"));
    let pid = nuage::daemon::process::running_vmms(&dir.path().join("state"))[&id];
    assert_eq!(std::fs::read_to_string(instance.join("pid")).unwrap(), format!("{pid}\n"));
    let config = running_vm_config(dir.path(), &id);
    assert!(
        config.kernel.is_file() && config.api_socket == Some(instance.join("control.sock")),
        "{config:?}"
    );
    let mode = std::fs::metadata(instance.join("vm.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the VM's configuration is the daemon's alone");
    daemon.ok(&["stop-instances", "--instance-ids", &id, "--force"]);
    assert!(!instance.join("pid").exists(), "no pid file once the VMM is gone");
    drop(daemon);

    let other = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(
        other.path(),
        &["--vmm", common::vmm_bin(), "--socket-group", "no-such-group"].map(std::ffi::OsStr::new),
    );
    assert!(daemon.log().contains("no such group"), "a missing group is said, not fatal");
}

/// RunInstances makes data volumes for each instance (empty or from a snapshot): disks
/// after the root disk, deleted with the instance unless kept. Bad ones make nothing.
#[test]
fn instances_launch_with_data_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let source =
        daemon.ok(&["create-volume", "--size", "2"])["Volumes"][0]["volume_id"].as_str().unwrap().to_owned();
    let snapshot = daemon.ok(&["create-snapshot", "--volume-id", &source])["Snapshots"][0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let from_snapshot = format!("snapshot-id={snapshot},keep=true");
    let many: Vec<&str> = (0..9).flat_map(|_| ["--volume", "size=1"]).collect();
    for (extra, expected) in [
        (vec!["--volume", "keep=true"], "InvalidParameterValue: an empty volume needs a size"),
        (vec!["--volume", "snapshot-id=snap-00000000000000000"], "InvalidSnapshot.NotFound"),
        (vec!["--volume", &format!("snapshot-id={snapshot},size=1")], "InvalidParameterValue"),
        (many, "InvalidParameterValue: 9 volumes"),
    ] {
        let err = daemon.err(&[&["run-instances", "--image-id", &image][..], &extra].concat());
        assert!(err.starts_with(expected), "{extra:?}: {err}");
    }
    assert_eq!(daemon.volumes(), 1, "failed launches made no volume (the source is the one)");

    let run =
        daemon.ok(&["run-instances", "--image-id", &image, "--volume", "size=1", "--volume", &from_snapshot]);
    let id = ids(&run).remove(0);
    let attached: Vec<serde_json::Value> = daemon.ok(&["describe-volumes"])["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["instance_id"] == id.as_str())
        .cloned()
        .collect();
    assert_eq!(attached.len(), 3, "root and two data volumes: {attached:?}");
    let kept = attached.iter().find(|v| v["snapshot_id"] == snapshot.as_str()).unwrap()["volume_id"].clone();
    assert_eq!(running_vm_config(dir.path(), &id).disks.len(), 4, "root, two volumes, config drive");
    daemon.wait_for(|| daemon.console(&id).contains("booted"), "the guest");

    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
    let left: Vec<String> = daemon.ok(&["describe-volumes"])["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["volume_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 2, "the source and the kept volume: {left:?}");
    assert!(left.contains(&kept.as_str().unwrap().to_owned()));
}

/// Tags, filters and pages through the API, on every kind of resource: tags given at
/// creation (RunInstances tags its instances and their volumes), added, replaced and
/// removed later, filtered on, shown as the Name column, forgotten with their resource;
/// pages that cover a listing exactly once; and bad tags, filters and pages refused
/// without changing anything.
#[test]
fn tags_filters_and_pages_work_alike_on_every_resource() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let kernel = common::write_file(&daemon.dir, "idle.kernel", &elf_kernel(Asm::new().cli_hlt().bytes()));
    let disk = common::write_file(&daemon.dir, "idle.disk", &vec![0u8; 1 << 20]);
    let registered = daemon.ok(&[
        "register-image",
        "--disk",
        &disk,
        "--kernel",
        &kernel,
        "--tag-specifications",
        "ResourceType=image,Tags=[{Key=Name,Value=golden},{Key=tier,Value=base}]",
    ]);
    let image = registered["Images"][0]["image_id"].as_str().unwrap().to_owned();
    assert_eq!(registered["Images"][0]["tags"][0]["value"], "golden");

    let tag_spec = "ResourceType=instance,Tags=[{Key=Name,Value=web},{Key=role,Value=ci}]";
    let volume_spec = "ResourceType=volume,Tags=[{Key=Name,Value=web-root}]";
    let run = daemon.ok(&[
        "run-instances",
        "--image-id",
        &image,
        "--count",
        "3",
        "--tag-specifications",
        tag_spec,
        volume_spec,
    ]);
    let ids = ids(&run);
    assert_eq!(run["Instances"][0]["tags"].as_array().unwrap().len(), 2, "{run}");
    let count = |args: &[&str], key: &str| daemon.ok(args)[key].as_array().unwrap().len();
    let instances_where = |filter: &str| count(&["describe-instances", "--filters", filter], "Instances");
    assert_eq!(instances_where("Name=tag:role,Values=ci"), 3);
    assert_eq!(instances_where("Name=tag:Name,Values=we?"), 3, "wildcards");
    assert_eq!(instances_where("Name=tag-key,Values=role"), 3);
    daemon.ok(&["create-tags", "--resources", &ids[0], "--tags", "Key=role,Value=db", "Key=owner,Value=me"]);
    assert_eq!(instances_where("Name=tag:role,Values=ci"), 2, "create-tags replaces a value");
    assert_eq!(instances_where("Name=tag:role,Values=db,ci"), 3);
    let volume_tags = daemon.ok(&["describe-tags", "--filters", "Name=resource-type,Values=volume"]);
    let volume_tags = volume_tags["Tags"].as_array().unwrap();
    assert_eq!(volume_tags.len(), 3, "each root volume: {volume_tags:?}");
    assert!(volume_tags.iter().all(|t| t["key"] == "Name" && t["value"] == "web-root"));
    let images = count(&["describe-images", "--filters", "Name=tag:tier,Values=base"], "Images");
    assert_eq!(images, 1);
    let table = daemon.text(&["describe-instances"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header[..3], ["INSTANCE", "ID", "NAME"], "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" web ")).count(), 3, "the Name column: {table}");

    // Bad tags, filters and pages: refused, and nothing changed.
    for (args, expected) in [
        (
            vec!["create-tags", "--resources", "i-00000000000000000", "--tags", "Key=a,Value=b"],
            "InvalidInstanceID.NotFound",
        ),
        (vec!["create-tags", "--resources", &ids[1], "--tags", "Key=aws:x,Value=b"], "InvalidParameterValue"),
        (vec!["create-tags", "--resources", "nothing", "--tags", "Key=a,Value=b"], "InvalidParameterValue"),
        (vec!["describe-instances", "--filters", "Name=tag:,Values=x"], "InvalidParameterValue"),
        (vec!["describe-volumes", "--max-results", "3"], "InvalidParameterValue"),
        (
            vec![
                "run-instances",
                "--image-id",
                &image,
                "--tag-specifications",
                "ResourceType=subnet,Tags=[{Key=a,Value=b}]",
            ],
            "InvalidParameterValue",
        ),
    ] {
        let err = daemon.err(&args);
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    let long_key = format!("Key={},Value=x", "k".repeat(129));
    assert!(daemon
        .err(&["create-tags", "--resources", &ids[1], "--tags", &long_key])
        .starts_with("InvalidParameterValue"));
    let fifty_one: Vec<String> = (0..51).map(|i| format!("Key=k{i},Value=v")).collect();
    let mut args = vec!["create-tags", "--resources", &ids[1], "--tags"];
    args.extend(fifty_one.iter().map(String::as_str));
    assert!(daemon.err(&args).starts_with("InvalidParameterValue"));
    assert_eq!(count(&["describe-instances"], "Instances"), 3, "no instance launched by a refused call");
    assert_eq!(
        count(&["describe-tags", "--filters", &format!("Name=resource-id,Values={}", ids[1])], "Tags"),
        2
    );

    // Pages: 3 root volumes and 6 more, 5 at a time, each exactly once.
    for _ in 0..6 {
        daemon.ok(&[
            "create-volume",
            "--size",
            "1",
            "--tag-specifications",
            "ResourceType=volume,Tags=[{Key=Name,Value=data}]",
        ]);
    }
    let first = daemon.ok(&["describe-volumes", "--max-results", "5"]);
    let token = first["NextToken"].as_str().expect("a next page").to_owned();
    let second = daemon.ok(&["describe-volumes", "--max-results", "5", "--next-token", &token]);
    assert!(second.get("NextToken").is_none(), "the last page: {second}");
    let mut seen: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|page| {
            page["Volumes"].as_array().unwrap().iter().map(|v| v["volume_id"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(seen.len(), 9);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 9, "no volume twice");
    assert_eq!(
        count(
            &["describe-volumes", "--filters", "Name=tag:Name,Values=data", "Name=status,Values=available"],
            "Volumes"
        ),
        6
    );

    // Removing tags, and resources taking their tags with them.
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    daemon.ok(&[&["delete-tags", "--tags", "Key=role", "--resources"][..], &all].concat());
    assert_eq!(count(&["describe-tags", "--filters", "Name=key,Values=role"], "Tags"), 0);
    daemon.ok(&["delete-tags", "--resources", &ids[0], "--tags", "Key=owner,Value=someone-else"]);
    assert_eq!(
        count(&["describe-tags", "--filters", "Name=key,Values=owner"], "Tags"),
        1,
        "only where the value matches"
    );
    let root = run["Instances"][2]["root_volume_id"].as_str().unwrap().to_owned();
    daemon.ok(&["terminate-instances", "--instance-ids", &ids[2]]);
    assert_eq!(count(&["describe-tags", "--filters", &format!("Name=resource-id,Values={root}")], "Tags"), 0);
}

/// An API caller cannot make the daemon read a host file (issue 15): image files come
/// only from the import directory, by plain name, as regular files; a FIFO, a device, a
/// symbolic link or a path is refused at once with a clear error, nothing is copied and
/// no thread is left waiting. A local file reaches the daemon by upload (the CLI's way),
/// capped in size, and the registration uses the upload up.
#[test]
fn image_files_come_only_from_the_import_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_file(dir.path(), "nuaged.json", br#"{"max_upload_bytes": 8388608}"#);
    let daemon = Daemon::spawn(
        dir.path(),
        &["--vmm", common::vmm_bin(), "--config", &config].map(std::ffi::OsStr::new),
    );
    let imports = dir.path().join("state/imports");
    let mode = std::fs::metadata(&imports).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the import directory is the daemon's alone");
    let kernel = common::write_file(&imports, "vmlinux", &elf_kernel(Asm::new().cli_hlt().bytes()));
    std::os::unix::fs::symlink("/etc/shadow", imports.join("shadow-link")).unwrap();
    let path = |name: &str| std::ffi::CString::new(imports.join(name).to_str().unwrap()).unwrap();
    // SAFETY: mkfifo and mknod read a NUL-terminated path.
    unsafe {
        assert_eq!(libc::mkfifo(path("fifo").as_ptr(), 0o600), 0);
        assert_eq!(libc::mknod(path("null").as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)), 0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        use nuage::api::pb::images_client::ImagesClient;
        use nuage::api::pb::RegisterImageRequest;
        let channel = nuage::api::server::connect(&dir.path().join("api.sock")).await.unwrap();
        let mut images = ImagesClient::new(channel);
        for (disk, why) in [
            ("/etc/shadow", "not a plain file name"),
            ("/proc/self/environ", "not a plain file name"),
            ("../nuage.db", "not a plain file name"),
            ("shadow-link", "a symbolic link"),
            ("fifo", "not a regular file"),
            ("null", "not a regular file"),
            ("nothing-here", "no such file"),
        ] {
            let request = RegisterImageRequest {
                disk_path: disk.into(),
                kernel_path: "vmlinux".into(),
                ..Default::default()
            };
            let started = Instant::now();
            let err = images.register_image(request).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{disk}: {err}");
            assert!(err.message().contains(why), "{disk}: {err}");
            assert!(started.elapsed() < Duration::from_secs(10), "{disk}: answered at once");
        }
        let request = RegisterImageRequest {
            disk_path: "vmlinux".into(),
            kernel_path: "/boot/../etc/passwd".into(),
            ..Default::default()
        };
        assert_eq!(images.register_image(request).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    });
    assert_eq!(daemon.ok(&["describe-images"])["Images"].as_array().unwrap().len(), 0, "nothing registered");
    let copied = std::fs::read_dir(dir.path().join("state/store/images")).map_or(0, |d| d.count());
    assert_eq!(copied, 0, "no file copied into the store");
    assert_eq!(
        daemon.ok(&["describe-volumes"])["Volumes"].as_array().unwrap().len(),
        0,
        "the daemon still answers"
    );

    // The CLI uploads a local file; the registration uses the upload up.
    let disk = common::write_file(dir.path(), "local.disk", &vec![1u8; 1 << 20]);
    let image = daemon.ok(&["register-image", "--disk", &disk, "--kernel", &kernel]);
    assert_eq!(image["Images"][0]["size_bytes"], 1 << 20);
    let left: Vec<String> = std::fs::read_dir(&imports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|name| name.starts_with("upload-")), "uploads used up: {left:?}");
    // A file over the configured cap is refused, and nothing of it stays.
    let big = common::write_file(dir.path(), "big.disk", &vec![2u8; 9 << 20]);
    let err = daemon.err(&["register-image", "--disk", &big, "--kernel", &kernel]);
    assert!(err.starts_with("LimitExceeded"), "{err}");
    let left = std::fs::read_dir(&imports)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("upload-"));
    assert_eq!(left.count(), 0, "no partial upload left");
}

/// Everything the daemon and its VMMs keep is private (issue 15): the state directory,
/// the database, images, volumes, snapshots, an instance's directory with its config
/// drive (the user data), console log, VMM log, configuration and control socket; and a
/// file someone made readable is made private again when the daemon starts.
#[test]
fn every_file_the_daemon_keeps_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let open_files = |root: &Path| {
        let mut open = Vec::new();
        let mut pending = vec![root.to_owned()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.permissions().mode() & 0o077 != 0 && !meta.file_type().is_symlink() {
                open.push(format!("{} {:o}", path.display(), meta.permissions().mode() & 0o777));
            }
            if meta.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
        }
        open
    };
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    daemon.ok(&["create-key-pair", "--key-name", "k", "--key-type", "ed25519"]);
    let run = daemon.ok(&[
        "run-instances",
        "--image-id",
        &image,
        "--key-name",
        "k",
        "--user-data",
        "secret",
        "--volume",
        "size=1",
    ]);
    let id = ids(&run).remove(0);
    daemon.wait_for(|| daemon.console(&id).contains("booted"), "the guest");
    let root = run["Instances"][0]["root_volume_id"].as_str().unwrap().to_owned();
    daemon.ok(&["create-snapshot", "--volume-id", &root]);
    let instance = state.join(format!("instances/{id}"));
    for file in ["cidata.img", "console.log", "vmm.log", "vm.json", "control.sock"] {
        assert!(instance.join(file).exists(), "{file}");
    }
    assert_eq!(open_files(&state), Vec::<String>::new(), "files others may read or enter");

    daemon.kill();
    let readable = state.join("network/left-open");
    std::fs::write(&readable, b"x").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(dir.path());
    assert_eq!(open_files(&state), Vec::<String>::new(), "repaired when the daemon starts");
    daemon.ok(&["terminate-instances", "--instance-ids", &id]);
}

/// Quotas (issue 15): volumes up to a size and, being thin, up to a multiple of the
/// store's disk in all; instances up to a count; each refusal with EC2's error name, before
/// anything is made.
#[test]
fn quotas_refuse_what_the_host_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_file(
        dir.path(),
        "nuaged.json",
        br#"{"quotas": {"max_volume_bytes": 2147483648, "max_instances": 2}}"#,
    );
    let daemon = Daemon::spawn(
        dir.path(),
        &["--vmm", common::vmm_bin(), "--config", &config].map(std::ffi::OsStr::new),
    );
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let err = daemon.err(&["create-volume", "--size", "3"]);
    assert!(err.starts_with("VolumeLimitExceeded"), "{err}");
    let volume =
        daemon.ok(&["create-volume", "--size", "1"])["Volumes"][0]["volume_id"].as_str().unwrap().to_owned();
    let err = daemon.err(&["modify-volume", "--volume-id", &volume, "--size", "3"]);
    assert!(err.starts_with("VolumeLimitExceeded"), "{err}");
    let err = daemon.err(&["run-instances", "--image-id", &image, "--volume", "size=3"]);
    assert!(err.starts_with("VolumeLimitExceeded"), "{err}");
    let err = daemon.err(&["run-instances", "--image-id", &image, "--count", "3"]);
    assert!(err.starts_with("InstanceLimitExceeded"), "{err}");
    assert_eq!(
        daemon.ok(&["describe-instances"])["Instances"].as_array().unwrap().len(),
        0,
        "nothing launched"
    );
    daemon.ok(&["run-instances", "--image-id", &image, "--count", "2"]);
    let err = daemon.err(&["run-instances", "--image-id", &image]);
    assert!(err.starts_with("InstanceLimitExceeded"), "{err}");
    assert_eq!(daemon.volumes(), 3, "one volume and two roots, nothing more");
    drop(daemon);

    // The defaults: no 64 TiB volume, nor fifty, on a test machine's disk.
    let other = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(other.path());
    let err = daemon.err(&["create-volume", "--size", "65536"]);
    assert!(err.starts_with("VolumeLimitExceeded"), "{err}");
    let disk_gib = nuage::store::disk_size(other.path()).unwrap() >> 30;
    let err = daemon.err(&["create-volume", "--size", &(disk_gib * 5).to_string()]);
    let over_the_disk = disk_gib * 5 <= 16 << 10; // else the 16 TiB volume limit speaks first
    assert!(err.starts_with("VolumeLimitExceeded") && (err.contains("4×") || !over_the_disk), "{err}");
    assert_eq!(daemon.volumes(), 0);
}

/// The answers of `callers` threads started at once, each calling `call` with its number.
fn race<T: Send>(callers: usize, call: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let call = &call;
        let threads: Vec<_> = (0..callers).map(|n| scope.spawn(move || call(n))).collect();
        threads.into_iter().map(|thread| thread.join().unwrap()).collect()
    })
}

/// Launches racing for the last room under a quota (issue 15): of ten callers asking at
/// once for one instance each where three fit, exactly three are told yes, the others
/// `InstanceLimitExceeded`, and the records agree with every answer.
#[test]
fn racing_launches_never_exceed_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_file(dir.path(), "nuaged.json", br#"{"quotas": {"max_instances": 3}}"#);
    let daemon = Daemon::spawn(
        dir.path(),
        &["--vmm", common::vmm_bin(), "--config", &config].map(std::ffi::OsStr::new),
    );
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let answers = race(10, |_| daemon.nuage(&["run-instances", "--image-id", &image]));
    let mut told: Vec<String> =
        answers.iter().filter_map(|answer| answer.as_ref().ok()).flat_map(ids).collect();
    for refused in answers.iter().filter_map(|answer| answer.as_ref().err()) {
        assert!(refused.starts_with("InstanceLimitExceeded"), "{refused}");
    }
    assert_eq!(told.len(), 3, "{answers:?}");
    let mut recorded = ids(&daemon.ok(&["describe-instances"]));
    told.sort();
    recorded.sort();
    assert_eq!(recorded, told, "the records hold exactly the launches callers were told of");
    assert_eq!(daemon.volumes(), 3, "one root each, nothing from the refused launches");
}

/// Starts racing terminations of one stopped instance (issue 15): every terminate is told
/// yes; a start is told yes only while the instance was not yet being terminated, else
/// `IncorrectInstanceState`; and whichever order they came in, the instance ends
/// terminated with no VMM left running and no volume left behind.
#[test]
fn racing_start_and_terminate_leave_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    for round in 0..4 {
        let id = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
        daemon.ok(&["stop-instances", "--instance-ids", &id, "--force"]);
        let answers = race(6, |n| {
            let verb = if n % 2 == 0 { "start-instances" } else { "terminate-instances" };
            (n % 2 == 0, daemon.nuage(&[verb, "--instance-ids", &id]))
        });
        for (start, answer) in &answers {
            match (start, answer) {
                (_, Ok(_)) => {}
                (true, Err(e)) => assert!(e.starts_with("IncorrectInstanceState"), "round {round}: {e}"),
                (false, Err(e)) => panic!("round {round}: a terminate was refused: {e}"),
            }
        }
        daemon.wait_for(|| daemon.state(&id).0 == "terminated", "the instance to be terminated");
        assert_eq!(
            nuage::daemon::process::running_vmms(&dir.path().join("state")).get(&id),
            None,
            "round {round}: no VMM outlives its terminated instance"
        );
    }
    assert_eq!(daemon.volumes(), 0, "every root volume went with its instance");
}

/// Calls that change something leave an audit line naming the caller (issue 15): over the
/// Unix socket, the uid and pid the kernel vouches for; reads leave none.
#[test]
fn changes_are_audited_with_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    daemon.ok(&["create-tags", "--resources", &image, "--tags", "Key=Name,Value=audited"]);
    daemon.ok(&["describe-images"]);
    let log = daemon.log();
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    let audited: Vec<&str> = log.lines().filter(|line| line.contains("nuage::audit")).collect();
    for method in ["Images/UploadImageFile", "Images/ImportImage", "Tags/CreateTags"] {
        let line = audited.iter().find(|line| line.contains(&format!("method=/nuage.v1.{method} ")));
        assert!(
            line.is_some_and(|line| line.contains(&format!("caller=uid {uid} "))),
            "{method}: {audited:?}"
        );
    }
    assert!(!audited.iter().any(|line| line.contains("Describe")), "reads are not audited: {audited:?}");
}

/// A stand-in for a guest on a subnet's bridge: a namespace whose `eth0` is plugged into
/// the bridge with the instance's address (the tiny guests have no network stack), so
/// requests reach the metadata service exactly as the guest's would.
struct FakeGuest {
    ns: Netns,
}

impl FakeGuest {
    fn plug(host: &Netns, bridge: &str, tag: &str, ip: &str, gateway: &str) -> Self {
        let ns = Netns::new(tag);
        let port = format!("mdp-{}", &tag[..tag.len().min(8)]);
        let run =
            |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "{args:?}");
        run(&["-n", &host.0, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.0]);
        run(&["-n", &host.0, "link", "set", &port, "master", bridge, "up"]);
        run(&["-n", &ns.0, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        run(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        run(&["-n", &ns.0, "link", "set", "lo", "up"]);
        run(&["-n", &ns.0, "route", "add", "default", "via", gateway]);
        Self { ns }
    }

    /// `curl` from inside: (HTTP status, body); status 0 when no answer came.
    fn curl(&self, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
        curl_in(&self.ns.0, method, path, headers)
    }

    /// A token for `ttl` seconds.
    fn token(&self, ttl: &str) -> String {
        let (status, token) =
            self.curl("PUT", "/latest/api/token", &[&format!("X-aws-ec2-metadata-token-ttl-seconds: {ttl}")]);
        assert_eq!(status, 200, "{token}");
        token
    }

    fn get(&self, path: &str, token: &str) -> (u16, String) {
        self.curl("GET", path, &[&format!("X-aws-ec2-metadata-token: {token}")])
    }
}

fn curl_in(ns: &str, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, "curl", "-s", "-m", "3", "-X", method, "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(format!("http://169.254.169.254{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// Packets from the metadata service that reached namespace `ns` with IP TTL `ttl`, as an
/// nftables counter there has seen them.
fn packets_with_ttl(ns: &str, ttl: u8) -> u64 {
    let nft = |script: &str| {
        let out = Command::new("ip").args(["netns", "exec", ns, "nft", script]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "ttls"])
        .output()
        .unwrap();
    if !listed.status.success() {
        nft("add table ip ttls");
        nft("add chain ip ttls in { type filter hook input priority 0; }");
        for t in [1, 3, 64] {
            nft(&format!("add rule ip ttls in ip saddr 169.254.169.254 ip ttl {t} counter"));
        }
    }
    let listed = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "ttls"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("ip ttl {ttl} counter")))
        .unwrap_or_else(|| panic!("{text}"));
    let packets = line.split("packets ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap();
    packets.parse().unwrap()
}

/// The metadata service end to end: a real daemon in a namespace, instances on a subnet,
/// and curl from their addresses on the bridge: IMDSv2 tokens and EC2's statuses, each
/// instance answered about itself only, values that follow the API (Elastic IP, options),
/// the hop limit on the token's answer (a container behind the guest gets none), nothing
/// from the LAN side, and tokens that outlive a daemon restart.
#[test]
fn the_metadata_service_answers_each_instance_about_itself() {
    let ns = Netns::new("imds");
    let run = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "{args:?}");
    run(&["-n", &ns.0, "link", "add", "uplink", "type", "veth", "peer", "name", "lan0"]);
    run(&["-n", &ns.0, "link", "set", "uplink", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let vmm = common::vmm_bin();
    let args = ["--vmm", vmm, "--netns", &ns.0, "--uplink", "uplink", "--address-pool", "192.168.71.10"];
    let args = args.map(std::ffi::OsStr::new);
    let mut daemon = Daemon::spawn(dir.path(), &args);
    let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.23.0/24"])["Subnets"][0].clone();
    let (subnet_id, bridge) = (subnet["subnet_id"].as_str().unwrap(), subnet["bridge"].as_str().unwrap());
    let key = daemon.ok(&["create-key-pair", "--key-name", "me", "--key-type", "ed25519"]);
    let public_key = key["key_pair"]["public_key"].as_str().unwrap().to_owned();
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let launch = |extra: &[&str]| {
        let mut args = vec!["run-instances", "--image-id", &image, "--subnet-id", subnet_id];
        args.extend_from_slice(extra);
        daemon.ok(&args)["Instances"][0].clone()
    };
    let a = launch(&["--key-name", "me", "--user-data", "#!/bin/sh\necho from-user-data\n"]);
    let b = launch(&["--metadata-options", "HttpTokens=optional,HttpPutResponseHopLimit=3"]);
    assert_eq!(a["metadata_options"]["http_tokens"], "required", "{a}");
    assert_eq!(a["metadata_options"]["http_put_response_hop_limit"], 1);
    assert_eq!(b["metadata_options"]["http_tokens"], "optional", "{b}");
    let (a_id, b_id) = (a["instance_id"].as_str().unwrap(), b["instance_id"].as_str().unwrap());
    let (a_ip, b_ip) = (a["private_ip_address"].as_str().unwrap(), b["private_ip_address"].as_str().unwrap());
    let guest_a = FakeGuest::plug(&ns, bridge, "imds-a", a_ip, "10.0.23.1");
    let guest_b = FakeGuest::plug(&ns, bridge, "imds-b", b_ip, "10.0.23.1");
    daemon.wait_for(|| guest_a.curl("GET", "/", &[]).0 != 0, "the metadata service to listen");

    // IMDSv2 for A: no token, no answer; then its own data only.
    assert_eq!(guest_a.curl("GET", "/latest/meta-data/instance-id", &[]).0, 401);
    let token = guest_a.token("60");
    assert_eq!(guest_a.get("/latest/meta-data/instance-id", &token), (200, a_id.to_owned()));
    assert_eq!(guest_a.get("/latest/meta-data/local-ipv4", &token), (200, a_ip.to_owned()));
    assert_eq!(guest_a.get("/latest/meta-data/public-keys/0/openssh-key", &token), (200, public_key.clone()));
    assert_eq!(guest_a.get("/latest/meta-data/public-keys", &token), (200, "0=me".to_owned()));
    assert_eq!(
        guest_a.get("/latest/user-data", &token),
        (200, "#!/bin/sh\necho from-user-data\n".to_owned())
    );
    let (status, listing) = guest_a.get("/latest/meta-data/", &token);
    assert!(
        status == 200 && listing.contains("network/\nplacement/") && !listing.contains("public-ipv4"),
        "{listing}"
    );
    let (_, document) = guest_a.get("/latest/dynamic/instance-identity/document", &token);
    let document: Value = serde_json::from_str(&document).unwrap();
    assert_eq!(
        (document["instanceId"].as_str(), document["imageId"].as_str()),
        (Some(a_id), Some(image.as_str()))
    );
    assert_eq!(guest_a.get("/latest/meta-data/nothing-here", &token).0, 404);
    assert_eq!(guest_a.curl("GET", "/latest/meta-data/", &["X-aws-ec2-metadata-token: forged"]).0, 401);
    let short = guest_a.token("1");
    std::thread::sleep(Duration::from_millis(2100));
    let (status, why) = guest_a.get("/latest/meta-data/instance-id", &short);
    assert_eq!((status, why.trim()), (401, "Unauthorized: expired token"), "its TTL is over");
    // EC2's refusals of token requests.
    assert_eq!(guest_a.curl("PUT", "/latest/api/token", &[]).0, 400, "no TTL");
    assert_eq!(
        guest_a.curl("PUT", "/latest/api/token", &["X-aws-ec2-metadata-token-ttl-seconds: 21601"]).0,
        400
    );
    let proxied = ["X-aws-ec2-metadata-token-ttl-seconds: 60", "X-Forwarded-For: 10.9.9.9"];
    assert_eq!(guest_a.curl("PUT", "/latest/api/token", &proxied).0, 403);
    assert_eq!(guest_a.curl("POST", "/latest/meta-data/", &[]).0, 405);
    // HTTP/1.0 as busybox nc speaks it (small guests have no curl): a token, then a read.
    let raw = |request: &str| {
        let mut nc = Command::new("ip")
            .args(["netns", "exec", &guest_a.ns.0, "busybox", "nc", "-w", "3", "169.254.169.254", "80"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut nc.stdin.take().unwrap(), request.as_bytes()).unwrap();
        String::from_utf8_lossy(&nc.wait_with_output().unwrap().stdout).replace('\r', "")
    };
    let answer = raw("PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n");
    let (head, old_style) = answer.split_once("\n\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.0 200"), "{answer:?}");
    let read = raw(&format!(
        "GET /latest/meta-data/instance-id HTTP/1.0\r\nX-aws-ec2-metadata-token: {old_style}\r\n\r\n"
    ));
    assert!(read.ends_with(&format!("\n\n{a_id}")), "{read:?}");

    // B reads without a token (IMDSv1 allowed for it), but A's token is not B's.
    assert_eq!(guest_b.curl("GET", "/latest/meta-data/instance-id", &[]), (200, b_id.to_owned()));
    assert_eq!(guest_b.get("/latest/meta-data/instance-id", &token).0, 401, "A's token");
    assert_eq!(guest_b.curl("GET", "/latest/user-data", &[]).0, 404, "B has none");
    assert_eq!(guest_b.curl("GET", "/latest/meta-data/public-keys/", &[]).0, 404, "B has no key");

    // The token's answer leaves with the instance's hop limit, everything else with the
    // host's default: A's with 1, B's with 3.
    let before = (packets_with_ttl(&guest_a.ns.0, 1), packets_with_ttl(&guest_b.ns.0, 3));
    guest_a.token("30");
    guest_b.token("30");
    assert!(packets_with_ttl(&guest_a.ns.0, 1) > before.0, "A's token came with TTL 1");
    assert!(packets_with_ttl(&guest_b.ns.0, 3) > before.1, "B's token came with TTL 3");
    assert!(packets_with_ttl(&guest_a.ns.0, 64) > 0, "other answers with the default TTL");
    // A container routed (and masqueraded) through A's guest: it can read a 401, but a
    // token's answer dies one hop short of it.
    let container = Netns::new("imds-c");
    run(&[
        "-n",
        &guest_a.ns.0,
        "link",
        "add",
        "veth-c",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.0,
    ]);
    run(&["-n", &guest_a.ns.0, "addr", "add", "172.31.9.1/30", "dev", "veth-c"]);
    run(&["-n", &guest_a.ns.0, "link", "set", "veth-c", "up"]);
    run(&["-n", &container.0, "addr", "add", "172.31.9.2/30", "dev", "eth0"]);
    run(&["-n", &container.0, "link", "set", "eth0", "up"]);
    run(&["-n", &container.0, "route", "add", "default", "via", "172.31.9.1"]);
    let in_guest = |args: &[&str]| {
        let ok =
            Command::new("ip").args(["netns", "exec", &guest_a.ns.0]).args(args).status().unwrap().success();
        assert!(ok, "{args:?}");
    };
    in_guest(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    in_guest(&["nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority 100; }; add rule ip nat post oifname eth0 masquerade"]);
    assert_eq!(
        curl_in(&container.0, "GET", "/latest/meta-data/", &[]).0,
        401,
        "the container reaches the service"
    );
    let ttl = ["X-aws-ec2-metadata-token-ttl-seconds: 60"];
    assert_eq!(curl_in(&container.0, "PUT", "/latest/api/token", &ttl).0, 0, "but gets no token");

    // Values follow the API at once: an Elastic IP, the options.
    let eip = daemon.ok(&["allocate-address"])["Addresses"][0]["allocation_id"].as_str().unwrap().to_owned();
    daemon.ok(&["associate-address", "--allocation-id", &eip, "--instance-id", a_id]);
    assert_eq!(guest_a.get("/latest/meta-data/public-ipv4", &token), (200, "192.168.71.10".to_owned()));
    daemon.ok(&["disassociate-address", "--allocation-id", &eip]);
    assert_eq!(guest_a.get("/latest/meta-data/public-ipv4", &token).0, 404);
    let off = daemon.ok(&[
        "modify-instance-metadata-options",
        "--instance-id",
        a_id,
        "--http-endpoint",
        "disabled",
    ]);
    assert_eq!(
        off["InstanceMetadataOptions"]["instance_metadata_options"]["http_endpoint"], "disabled",
        "{off}"
    );
    assert_eq!(guest_a.get("/latest/meta-data/instance-id", &token).0, 403);
    daemon.ok(&[
        "modify-instance-metadata-options",
        "--instance-id",
        a_id,
        "--http-endpoint",
        "enabled",
        "--http-tokens",
        "optional",
    ]);
    assert_eq!(guest_a.curl("GET", "/latest/meta-data/instance-id", &[]), (200, a_id.to_owned()));
    let shown = daemon.ok(&["describe-instances", "--instance-ids", a_id])["Instances"][0]
        ["metadata_options"]
        .clone();
    assert_eq!(
        (shown["http_tokens"].as_str(), shown["http_put_response_hop_limit"].as_u64()),
        (Some("optional"), Some(1))
    );
    for bad in [
        vec!["--http-tokens", "maybe"],
        vec!["--http-endpoint", "off"],
        vec!["--http-put-response-hop-limit", "65"],
    ] {
        let mut args = vec!["modify-instance-metadata-options", "--instance-id", a_id];
        args.extend(bad);
        let err = daemon.err(&args);
        assert!(err.starts_with("InvalidParameterValue"), "{err}");
    }
    let err =
        daemon.err(&["run-instances", "--image-id", &image, "--metadata-options", "HttpTokens=sometimes"]);
    assert!(err.starts_with("InvalidParameterValue"), "{err}");
    let err = daemon.err(&[
        "modify-instance-metadata-options",
        "--instance-id",
        "i-00000000000000000",
        "--http-tokens",
        "optional",
    ]);
    assert!(err.starts_with("InvalidInstanceID.NotFound"), "{err}");
    daemon.ok(&["modify-instance-metadata-options", "--instance-id", a_id, "--http-tokens", "required"]);

    // Nothing on the LAN side reaches it, even with a route to the address.
    let lan = Netns::new("imds-lan");
    run(&["-n", &ns.0, "link", "set", "lan0", "netns", &lan.0]);
    run(&["-n", &lan.0, "addr", "add", "192.168.71.2/24", "dev", "lan0"]);
    run(&["-n", &lan.0, "link", "set", "lan0", "up"]);
    run(&["-n", &lan.0, "route", "add", "169.254.169.254/32", "dev", "lan0"]);
    assert_eq!(curl_in(&lan.0, "GET", "/latest/meta-data/instance-id", &[]).0, 0, "from the LAN");
    assert_eq!(curl_in(&ns.0, "GET", "/latest/meta-data/instance-id", &[]).0, 0, "from the host");

    // A killed and restarted daemon answers again within seconds, the old token still good.
    daemon.kill();
    daemon = Daemon::spawn(dir.path(), &args);
    daemon.wait_for(
        || guest_a.get("/latest/meta-data/instance-id", &token).0 == 200,
        "the service after a restart",
    );
    assert_eq!(guest_a.get("/latest/meta-data/instance-id", &token).1, a_id);

    // A stopped instance's address answers nobody.
    daemon.ok(&["stop-instances", "--instance-ids", a_id, "--force"]);
    assert_eq!(guest_a.get("/latest/meta-data/instance-id", &token).0, 403);
    daemon.ok(&["terminate-instances", "--instance-ids", a_id, b_id]);
}

/// A distribution-style disk: a GPT partition holding an ext4 root whose `/boot` has the
/// kernel (here a tiny guest) and an initrd, registered without --kernel, raw and qcow2:
/// instances boot the kernel found there, with root= that partition; a disk without one
/// is refused with its reason and leaves nothing.
#[test]
fn a_disk_with_its_own_boot_directory_boots_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(
        root.join("boot/vmlinuz-6.1.0-10-cloud-amd64"),
        elf_kernel(Asm::new().print("from-boot\n").acpi_poweroff().bytes()),
    )
    .unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-10-cloud-amd64"), b"initrd").unwrap();
    let fs = dir.path().join("root.ext4");
    let made = Command::new("mkfs.ext4").args(["-q", "-d"]).arg(&root).arg(&fs).arg("8M").status().unwrap();
    assert!(made.success());
    let raw = dir.path().join("cloud.raw");
    let mut bytes = vec![0u8; 1 << 20];
    bytes.extend(std::fs::read(&fs).unwrap());
    bytes.extend(vec![0u8; 1 << 20]);
    std::fs::write(&raw, bytes).unwrap();
    let mut sfdisk = Command::new("sfdisk").arg("--quiet").arg(&raw).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(
        &mut sfdisk.stdin.take().unwrap(),
        b"label: gpt\nstart=2048, size=16384, type=L\n",
    )
    .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let qcow2 = dir.path().join("cloud.qcow2");
    let converted = Command::new("qemu-img")
        .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status();
    assert!(converted.unwrap().success());

    for (disk, format) in [(&raw, "raw"), (&qcow2, "qcow2")] {
        let disk = disk.to_str().unwrap();
        let image =
            daemon.ok(&["register-image", "--name", "cloud", "--disk", disk, "--disk-format", format]);
        let image = &image["Images"][0];
        assert_eq!(image["kernel_cmdline"], "root=/dev/vda1 ro", "{image}");
        let image_id = image["image_id"].as_str().unwrap();
        let id = ids(&daemon.ok(&["run-instances", "--image-id", image_id])).remove(0);
        daemon.wait_state(&id, "stopped");
        assert!(
            daemon.console(&id).contains("from-boot"),
            "the kernel from /boot ran: {}",
            daemon.console(&id)
        );
        let config = running_vm_config_of(&daemon.dir, &id);
        assert!(config.contains("root=/dev/vda1 ro"), "{config}");
        daemon.ok(&["terminate-instances", "--instance-ids", &id]);
    }
    let images = daemon.ok(&["describe-images"])["Images"].as_array().unwrap().len();
    let err = daemon.err(&["register-image", "--disk", fs.to_str().unwrap(), "--initrd", "x"]);
    assert!(err.contains("--kernel"), "an initrd needs a kernel: {err}");
    let empty = dir.path().join("empty.ext4");
    let made = Command::new("mkfs.ext4").args(["-q"]).arg(&empty).arg("8M").status().unwrap();
    assert!(made.success());
    let err = daemon.err(&["register-image", "--disk", empty.to_str().unwrap()]);
    assert!(err.starts_with("InvalidImage") && err.contains("no /boot/vmlinuz"), "{err}");
    let err = daemon.err(&["register-image", "--disk", raw.to_str().unwrap(), "--disk-format", "qcow2"]);
    assert!(err.starts_with("InvalidImage"), "{err}");
    assert_eq!(
        daemon.ok(&["describe-images"])["Images"].as_array().unwrap().len(),
        images,
        "nothing registered"
    );
}

/// The kernel command line a stopped instance's last VMM was given.
fn running_vm_config_of(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join("state/instances").join(id).join("vm.json")).unwrap()
}

/// An HTTP server in namespace `ns` (busybox httpd on port 80) whose every page is `body`.
struct Backend {
    child: Child,
    _root: tempfile::TempDir,
}

impl Backend {
    fn serve(ns: &str, body: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("index.html"), body).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "httpd", "-f", "-p", "80", "-h"])
            .arg(root.path())
            .spawn()
            .unwrap();
        Self { child, _root: root }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET url` from namespace `ns`: the body, or `None` when no 200 came.
fn http_get(ns: &str, url: &str) -> Option<String> {
    let out =
        Command::new("ip").args(["netns", "exec", ns, "curl", "-s", "-f", "-m", "3", url]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The balancer processes running for this test's state directory, by load balancer.
fn running_balancers(dir: &Path) -> std::collections::HashMap<String, i32> {
    nuage::daemon::process::running_under(&dir.join("state/balancers"))
}

/// Load balancing end to end: a real daemon in a namespace with a LAN beside it, two
/// instances on a subnet whose addresses serve HTTP (namespaces on the bridge, as the
/// metadata test's), an application load balancer in front of them reached from the LAN.
/// Health checks take a dead backend out and bring it back; a stopped instance leaves the
/// rotation at once; a deregistered target drains without a failed request; a SIGKILLed
/// daemon drops no request and the next one adopts the balancer; bad requests change
/// nothing.
#[test]
fn a_load_balancer_sends_requests_to_healthy_instances_only() {
    let ns = Netns::new("elb");
    let lan = Netns::new("elb-lan");
    let run = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "{args:?}");
    run(&["-n", &ns.0, "link", "add", "uplink", "type", "veth", "peer", "name", "lan0", "netns", &lan.0]);
    run(&["-n", &ns.0, "addr", "add", "192.168.72.1/24", "dev", "uplink"]);
    run(&["-n", &ns.0, "link", "set", "uplink", "up"]);
    run(&["-n", &lan.0, "addr", "add", "192.168.72.2/24", "dev", "lan0"]);
    run(&["-n", &lan.0, "link", "set", "lan0", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let vmm = common::vmm_bin();
    let args = [
        "--vmm",
        vmm,
        "--netns",
        &ns.0,
        "--uplink",
        "uplink",
        "--address-pool",
        "192.168.72.10",
        "--metrics-address",
        "127.0.0.1:0",
    ];
    let args = args.map(std::ffi::OsStr::new);
    let mut daemon = Daemon::spawn(dir.path(), &args);
    let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.24.0/24"])["Subnets"][0].clone();
    let (subnet_id, bridge) = (subnet["subnet_id"].as_str().unwrap(), subnet["bridge"].as_str().unwrap());
    let image = register(&daemon, "idle", Asm::new().cli_hlt());
    let run_instances =
        daemon.ok(&["run-instances", "--image-id", &image, "--subnet-id", subnet_id, "--count", "2"]);
    let instances: Vec<(String, String)> = run_instances["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap().to_owned(),
                i["private_ip_address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let [(a, a_ip), (b, b_ip)] = [instances[0].clone(), instances[1].clone()];
    let unplugged = ids(&daemon.ok(&["run-instances", "--image-id", &image])).remove(0);
    let guest_a = FakeGuest::plug(&ns, bridge, "elb-a", &a_ip, "10.0.24.1");
    let guest_b = FakeGuest::plug(&ns, bridge, "elb-b", &b_ip, "10.0.24.1");
    let mut backend_a = Some(Backend::serve(&guest_a.ns.0, &a));
    let _backend_b = Backend::serve(&guest_b.ns.0, &b);

    let elb = |args: &[&str]| daemon.ok(&[&["elbv2"], args].concat());
    let lb = elb(&["create-load-balancer", "--name", "web"])["LoadBalancers"][0]["load_balancer_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    let tg = elb(&[
        "create-target-group",
        "--name",
        "web-80",
        "--protocol",
        "HTTP",
        "--port",
        "80",
        "--health-check-interval-seconds",
        "5",
        "--health-check-timeout-seconds",
        "2",
        "--healthy-threshold-count",
        "2",
        "--unhealthy-threshold-count",
        "2",
        "--matcher",
        "HttpCode=200",
    ])["TargetGroups"][0]["target_group_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    elb(&[
        "register-targets",
        "--target-group-arn",
        &tg,
        "--targets",
        &format!("Id={a}"),
        &format!("Id={b},Port=80"),
    ]);
    let forward = format!("Type=forward,TargetGroupArn={tg}");
    let listener = elb(&[
        "create-listener",
        "--load-balancer-arn",
        &lb,
        "--protocol",
        "HTTP",
        "--port",
        "8080",
        "--default-actions",
        &forward,
    ]);
    assert_eq!(listener["Listeners"][0]["port"], 8080, "{listener}");

    // Bad requests: one clear error each, nothing changed.
    let elb_err = |args: &[&str]| daemon.err(&[&["elbv2"], args].concat());
    let (id_a, id_unplugged) = (format!("Id={a}"), format!("Id={unplugged}"));
    let refusals = [
        (
            vec!["register-targets", "--target-group-arn", &tg, "--targets", "Id=i-00000000000000000"],
            "InvalidTarget",
        ),
        (vec!["register-targets", "--target-group-arn", &tg, "--targets", &id_unplugged], "InvalidTarget"),
        (
            vec!["register-targets", "--target-group-arn", "arn:nope", "--targets", &id_a],
            "TargetGroupNotFound",
        ),
        (
            vec![
                "create-listener",
                "--load-balancer-arn",
                &lb,
                "--protocol",
                "HTTP",
                "--port",
                "8080",
                "--default-actions",
                &forward,
            ],
            "DuplicateListener",
        ),
        (
            vec![
                "create-listener",
                "--load-balancer-arn",
                &lb,
                "--protocol",
                "TCP",
                "--port",
                "8081",
                "--default-actions",
                &forward,
            ],
            "IncompatibleProtocols",
        ),
        (
            vec![
                "create-listener",
                "--load-balancer-arn",
                "arn:nope",
                "--protocol",
                "HTTP",
                "--port",
                "8081",
                "--default-actions",
                &forward,
            ],
            "LoadBalancerNotFound",
        ),
        (vec!["create-load-balancer", "--name", "web"], "DuplicateLoadBalancerName"),
        (vec!["create-load-balancer", "--name", "bad_name"], "ValidationError"),
        (vec!["create-target-group", "--name", "x", "--protocol", "UDP", "--port", "80"], "ValidationError"),
        (
            vec![
                "create-target-group",
                "--name",
                "x",
                "--protocol",
                "HTTP",
                "--port",
                "80",
                "--health-check-interval-seconds",
                "1",
            ],
            "ValidationError",
        ),
        (vec!["delete-target-group", "--target-group-arn", &tg], "ResourceInUse"),
        (
            vec![
                "modify-target-group-attributes",
                "--target-group-arn",
                &tg,
                "--attributes",
                "Key=deregistration_delay.timeout_seconds,Value=9999",
            ],
            "ValidationError",
        ),
    ];
    let before =
        (elb(&["describe-target-groups"]), elb(&["describe-listeners"]), elb(&["describe-load-balancers"]));
    for (args, name) in refusals {
        let err = elb_err(&args);
        assert!(err.starts_with(name), "{args:?}: {err}");
    }
    assert_eq!(
        before,
        (elb(&["describe-target-groups"]), elb(&["describe-listeners"]), elb(&["describe-load-balancers"]))
    );

    // Both become healthy and share the requests from the LAN.
    let health = |id: &str| -> (String, String) {
        let all = elb(&["describe-target-health", "--target-group-arn", &tg]);
        let found = all["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"]["id"] == id)
            .cloned();
        let state = found.map(|d| d["target_health"].clone()).unwrap_or_default();
        (state["state"].as_str().unwrap_or("").to_owned(), state["reason"].as_str().unwrap_or("").to_owned())
    };
    let log = dir.path().join("nuaged.log");
    let wait = |what: &str, seconds: u64, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(start.elapsed() < Duration::from_secs(seconds), "timed out waiting for {what}\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("both targets healthy", 20, &|| health(&a).0 == "healthy" && health(&b).0 == "healthy");
    let url = "http://192.168.72.1:8080/";
    let served = |n: usize| -> Vec<Option<String>> { (0..n).map(|_| http_get(&lan.0, url)).collect() };
    let answers = served(10);
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
    assert!(answers.contains(&Some(a.clone())) && answers.contains(&Some(b.clone())), "{answers:?}");
    // Guests do not reach the listener: the host's ports are closed to bridges.
    let from_guest = Command::new("ip")
        .args(["netns", "exec", &guest_a.ns.0, "curl", "-s", "-m", "2", "http://10.0.24.1:8080/"])
        .output()
        .unwrap();
    assert!(!from_guest.status.success(), "a guest reached the balancer: {from_guest:?}");
    // HTTP/1.0 from a client that shuts down its side once the request is out.
    let mut nc = Command::new("ip")
        .args(["netns", "exec", &lan.0, "busybox", "nc", "-w", "3", "192.168.72.1", "8080"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nc.stdin.take().unwrap(), b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let old_style = String::from_utf8_lossy(&nc.wait_with_output().unwrap().stdout).replace('\r', "");
    assert!(old_style.starts_with("HTTP/1.0 200"), "{old_style:?}");
    assert!(
        old_style.ends_with(&format!("\n\n{a}")) || old_style.ends_with(&format!("\n\n{b}")),
        "{old_style:?}"
    );
    // HTTP/2 from the client (cleartext, prior knowledge), HTTP/1.1 to the instance.
    let h2 = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.0,
            "curl",
            "-s",
            "-f",
            "-m",
            "3",
            "--http2-prior-knowledge",
            "-w",
            " %{http_version}",
            url,
        ])
        .output()
        .unwrap();
    let h2 = String::from_utf8_lossy(&h2.stdout).into_owned();
    assert!(h2 == format!("{a} 2") || h2 == format!("{b} 2"), "{h2:?}");

    // A network load balancer on an Elastic IP passes TCP streams through to the same
    // instances. The address is the balancer's until it is deleted: no instance, other
    // balancer or release takes it.
    let allocation =
        daemon.ok(&["allocate-address"])["Addresses"][0]["allocation_id"].as_str().unwrap().to_owned();
    let on_eip = format!("AllocationId={allocation}");
    let created =
        elb(&["create-load-balancer", "--name", "tcp", "--type", "network", "--subnet-mappings", &on_eip]);
    let nlb = created["LoadBalancers"][0]["load_balancer_arn"].as_str().unwrap().to_owned();
    let address = &created["LoadBalancers"][0]["load_balancer_addresses"][0];
    assert_eq!(
        (address["ip_address"].as_str(), address["allocation_id"].as_str()),
        (Some("192.168.72.10"), Some(allocation.as_str()))
    );
    let described = daemon.ok(&["describe-addresses"])["Addresses"][0].clone();
    assert_eq!(described["load_balancer_arn"], nlb.as_str(), "{described}");
    let addresses_before = daemon.ok(&["describe-addresses"]);
    for (args, name) in [
        (
            vec!["associate-address", "--allocation-id", &allocation, "--instance-id", &a],
            "InvalidIPAddress.InUse",
        ),
        (vec!["release-address", "--allocation-id", &allocation], "InvalidIPAddress.InUse"),
        (
            vec![
                "elbv2",
                "create-load-balancer",
                "--name",
                "tcp2",
                "--type",
                "network",
                "--subnet-mappings",
                &on_eip,
            ],
            "InvalidConfigurationRequest",
        ),
        (
            vec![
                "elbv2",
                "create-load-balancer",
                "--name",
                "tcp2",
                "--subnet-mappings",
                "AllocationId=eipalloc-0000000000",
            ],
            "AllocationIdNotFound",
        ),
    ] {
        let err = daemon.err(&args);
        assert!(err.starts_with(name), "{args:?}: {err}");
    }
    assert_eq!(daemon.ok(&["describe-addresses"]), addresses_before);
    assert_eq!(elb(&["describe-load-balancers"])["LoadBalancers"].as_array().unwrap().len(), 2);
    let tcp_tg = elb(&["create-target-group", "--name", "tcp-80", "--protocol", "TCP", "--port", "80"])
        ["TargetGroups"][0]["target_group_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        elb(&["describe-target-groups", "--target-group-arns", &tcp_tg])["TargetGroups"][0]["health_check"]
            ["protocol"],
        "TCP",
        "a TCP group checks by TCP"
    );
    elb(&["register-targets", "--target-group-arn", &tcp_tg, "--targets", &id_a]);
    let tcp_forward = format!("Type=forward,TargetGroupArn={tcp_tg}");
    elb(&[
        "create-listener",
        "--load-balancer-arn",
        &nlb,
        "--protocol",
        "TCP",
        "--port",
        "8082",
        "--default-actions",
        &tcp_forward,
    ]);
    wait("the TCP listener", 10, &|| {
        http_get(&lan.0, "http://192.168.72.10:8082/").as_deref() == Some(a.as_str())
    });
    assert_eq!(http_get(&lan.0, "http://192.168.72.1:8082/"), None, "only the Elastic IP listens");
    elb(&["delete-load-balancer", "--load-balancer-arn", &nlb]);
    elb(&["delete-target-group", "--target-group-arn", &tcp_tg]);
    assert_eq!(daemon.ok(&["describe-addresses"])["Addresses"][0]["load_balancer_arn"], "");
    let uplink =
        Command::new("ip").args(["-n", &ns.0, "-br", "addr", "show", "dev", "uplink"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&uplink.stdout).contains("192.168.72.10"), "{uplink:?}");
    daemon.ok(&["release-address", "--allocation-id", &allocation]);

    // A dead backend leaves after the unhealthy threshold; back after the healthy one,
    // ramping up over the group's slow start: with a minute of it, A takes a small share
    // at first (an equal one is 10 of these 20), and its full share once slow start is off.
    drop(backend_a.take());
    wait("A unhealthy", 20, &|| health(&a).0 == "unhealthy");
    assert_eq!(health(&a).1, "Target.FailedHealthChecks");
    assert!(served(6).iter().all(|body| body.as_deref() == Some(b.as_str())), "only B answers");
    let slow_start = |seconds: &str| {
        let attribute = format!("Key=slow_start.duration_seconds,Value={seconds}");
        elb(&["modify-target-group-attributes", "--target-group-arn", &tg, "--attributes", &attribute])
    };
    slow_start("60");
    backend_a.replace(Backend::serve(&guest_a.ns.0, &a));
    wait("A healthy again", 20, &|| health(&a).0 == "healthy");
    let to_a = served(20).iter().filter(|body| body.as_deref() == Some(a.as_str())).count();
    assert!(to_a <= 6, "A is in slow start, yet took {to_a} of 20 requests");
    slow_start("0");
    wait("A at its full share", 10, &|| {
        served(10).iter().filter(|body| body.as_deref() == Some(a.as_str())).count() >= 4
    });

    // A stopped instance leaves the rotation at once (its address still answers here).
    daemon.ok(&["stop-instances", "--instance-ids", &a, "--force"]);
    assert_eq!(health(&a), ("unused".to_owned(), "Target.InvalidState".to_owned()));
    wait("the balancer to drop A", 5, &|| served(4).iter().all(|body| body.as_deref() == Some(b.as_str())));
    daemon.ok(&["start-instances", "--instance-ids", &a]);
    wait("A back in rotation", 20, &|| health(&a).0 == "healthy");

    // A client loop while the daemon is SIGKILLed and restarted: no failed request, and
    // the new daemon adopts the running balancer.
    let pid = running_balancers(dir.path()).values().copied().next().unwrap();
    let client = std::thread::spawn({
        let lan = lan.0.clone();
        move || (0..40).filter(|_| http_get(&lan, url).is_none()).count()
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill();
    daemon = Daemon::spawn(dir.path(), &args);
    assert_eq!(client.join().unwrap(), 0, "requests failed while the daemon was down");
    daemon.wait_for(|| daemon.log().contains("adopted the running balancer process"), "adoption");
    assert_eq!(
        running_balancers(dir.path()).values().copied().collect::<Vec<_>>(),
        [pid],
        "the same process"
    );

    // Deregistration with a delay: B drains, no request fails, then only A answers.
    let elb = |args: &[&str]| daemon.ok(&[&["elbv2"], args].concat());
    elb(&[
        "modify-target-group-attributes",
        "--target-group-arn",
        &tg,
        "--attributes",
        "Key=deregistration_delay.timeout_seconds,Value=3",
    ]);
    let client = std::thread::spawn({
        let lan = lan.0.clone();
        move || (0..30).map(|_| http_get(&lan, url)).collect::<Vec<_>>()
    });
    elb(&["deregister-targets", "--target-group-arn", &tg, "--targets", &format!("Id={b}")]);
    let during = client.join().unwrap();
    assert!(during.iter().all(Option::is_some), "a request failed while B drained: {during:?}");
    let drained = || {
        elb(&["describe-target-health", "--target-group-arn", &tg])["TargetHealthDescriptions"]
            .as_array()
            .unwrap()
            .len()
            == 1
    };
    wait("B drained and gone", 10, &drained);
    assert!(served(6).iter().all(|body| body.as_deref() == Some(a.as_str())), "only A answers");

    // The metrics page counts what went where.
    let page = metrics_page(&daemon, "/metrics");
    let line = |prefix: &str| -> u64 {
        page.lines()
            .find(|l| l.starts_with(prefix) && l.contains(&format!("target=\"{a}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} for {a}: {page}"))
    };
    assert!(line("nuage_lb_target_requests_total{load_balancer=\"web\"") > 10, "{page}");
    assert_eq!(line("nuage_lb_target_healthy{load_balancer=\"web\""), 1, "{page}");
    assert!(line("nuage_lb_target_response_seconds_count{load_balancer=\"web\"") > 10, "{page}");
    drop(backend_a);
    elb(&["delete-listener", "--listener-arn", listener["Listeners"][0]["listener_arn"].as_str().unwrap()]);
    elb(&["delete-load-balancer", "--load-balancer-arn", &lb]);
    wait("the balancer to stop", 10, &|| running_balancers(dir.path()).is_empty());
    assert_eq!(http_get(&lan.0, url), None, "nothing listens any more");
    elb(&["delete-target-group", "--target-group-arn", &tg]);
    daemon.ok(&["terminate-instances", "--instance-ids", &a, &b, &unplugged]);
}

/// Launch templates keep RunInstances' parameters as immutable versions: run-instances
/// launches a version (request options replacing its values), tags the instance with the
/// template and version as EC2 does (tags callers can neither add nor remove), and bad
/// requests change nothing.
#[test]
fn instances_launch_from_template_versions() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let first = register(&daemon, "one", Asm::new().print("first\n").cli_hlt());
    let second = register(&daemon, "two", Asm::new().print("second\n").cli_hlt());
    let data = |image: &str| {
        format!(
            r#"{{"ImageId":"{image}","InstanceType":"t.nano","UserData":"aGk=",
                "TagSpecifications":[{{"ResourceType":"instance","Tags":[{{"Key":"role","Value":"web"}}]}}]}}"#
        )
    };
    let made = daemon.ok(&[
        "create-launch-template",
        "--launch-template-name",
        "web",
        "--launch-template-data",
        &data(&first),
    ]);
    let id = made["LaunchTemplates"][0]["launch_template_id"].as_str().unwrap().to_owned();
    let v2 = daemon.ok(&[
        "create-launch-template-version",
        "--launch-template-id",
        &id,
        "--source-version",
        "1",
        "--version-description",
        "new image",
        "--launch-template-data",
        &format!(r#"{{"ImageId":"{second}"}}"#),
    ]);
    let v2 = &v2["LaunchTemplateVersions"][0];
    assert_eq!(v2["version_number"], 2);
    assert_eq!(v2["launch_template_data"]["instance_type"], "t.nano", "kept from the source");

    let before = daemon.ok(&["describe-launch-template-versions", "--launch-template-id", &id]);
    let bad_version = format!("LaunchTemplateId={id},Version=x");
    let bad = [
        (
            vec!["create-launch-template", "--launch-template-name", "web", "--launch-template-data", "{}"],
            "InvalidLaunchTemplateName.AlreadyExistsException",
        ),
        (
            vec!["create-launch-template", "--launch-template-name", "x!", "--launch-template-data", "{}"],
            "InvalidParameterValue",
        ),
        (
            vec![
                "create-launch-template-version",
                "--launch-template-name",
                "nope",
                "--launch-template-data",
                "{}",
            ],
            "InvalidLaunchTemplateName.NotFoundException",
        ),
        (
            vec![
                "create-launch-template-version",
                "--launch-template-id",
                &id,
                "--source-version",
                "7",
                "--launch-template-data",
                "{}",
            ],
            "InvalidLaunchTemplateId.VersionNotFound",
        ),
        (
            vec!["modify-launch-template", "--launch-template-id", &id, "--default-version", "9"],
            "InvalidLaunchTemplateId.VersionNotFound",
        ),
        (
            vec!["run-instances", "--launch-template", "LaunchTemplateId=lt-00000000000000000"],
            "InvalidLaunchTemplateId.NotFound",
        ),
        (vec!["run-instances", "--launch-template", &bad_version], "InvalidParameterValue"),
    ];
    for (args, expected) in bad {
        let err = daemon.err(&args);
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    assert_eq!(daemon.ok(&["describe-launch-template-versions", "--launch-template-id", &id]), before);
    assert!(ids(&daemon.ok(&["describe-instances"])).is_empty(), "no refused launch made an instance");

    // $Default is version 1 until it is changed; $Latest is 2.
    let launch = |version: &str, extra: &[&str]| {
        let spec = format!("LaunchTemplateName=web,Version={version}");
        let run = daemon.ok(&[&["run-instances", "--launch-template", &spec][..], extra].concat());
        run["Instances"][0].clone()
    };
    let by_default = launch("$Default", &[]);
    assert_eq!(by_default["image_id"], first.as_str());
    assert_eq!(by_default["instance_type"], "t.nano");
    let tag = |instance: &Value, key: &str| {
        instance["tags"].as_array().unwrap().iter().find(|t| t["key"] == key).map(|t| t["value"].clone())
    };
    assert_eq!(tag(&by_default, "role"), Some("web".into()));
    assert_eq!(tag(&by_default, "aws:ec2launchtemplate:id"), Some(id.as_str().into()));
    assert_eq!(tag(&by_default, "aws:ec2launchtemplate:version"), Some("1".into()));
    let latest = launch("$Latest", &["--instance-type", "t.micro"]);
    assert_eq!(
        (latest["image_id"].as_str(), latest["instance_type"].as_str()),
        (Some(second.as_str()), Some("t.micro"))
    );
    daemon.wait_for(
        || daemon.console(latest["instance_id"].as_str().unwrap()).contains("second"),
        "version 2's image",
    );
    daemon.ok(&["modify-launch-template", "--launch-template-id", &id, "--default-version", "$Latest"]);
    assert_eq!(launch("", &[])["image_id"], second.as_str(), "the default is version 2 now");

    let instance = by_default["instance_id"].as_str().unwrap();
    for args in [
        ["create-tags", "--resources", instance, "--tags", "Key=aws:ec2launchtemplate:id,Value=lt-x"],
        ["delete-tags", "--resources", instance, "--tags", "Key=aws:ec2launchtemplate:id"],
    ] {
        let err = daemon.err(&args);
        assert!(err.starts_with("InvalidParameterValue") && err.contains("reserved"), "{args:?}: {err}");
    }
    let filter = format!("Name=tag:aws:ec2launchtemplate:id,Values={id}");
    assert_eq!(ids(&daemon.ok(&["describe-instances", "--filters", &filter])).len(), 3);

    daemon.ok(&["delete-launch-template", "--launch-template-name", "web"]);
    assert_eq!(daemon.ok(&["describe-launch-templates"])["LaunchTemplates"].as_array().unwrap().len(), 0);
    assert_eq!(daemon.state(instance).0, "running", "instances outlive their template");
}

/// The live (not terminated) instances of group `name`, as (id, state).
fn group_members(daemon: &Daemon, name: &str) -> Vec<(String, String)> {
    let filter = format!("Name=tag:aws:autoscaling:groupName,Values={name}");
    let found = daemon.ok(&["describe-instances", "--filters", &filter]);
    found["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["instance_id"].as_str().unwrap().to_owned(), i["state"].as_str().unwrap().to_owned()))
        .filter(|(_, state)| state != "terminated")
        .collect()
}

/// Waits until group `name` has exactly `count` instances, all running, and every live
/// instance on the host is one of them; then checks it stays so for a few passes.
fn wait_for_capacity(daemon: &Daemon, name: &str, count: usize) -> Vec<String> {
    let settled = || {
        let members = group_members(daemon, name);
        let live =
            daemon.ok(&["describe-instances", "--states", "pending", "running", "stopping", "stopped"]);
        members.len() == count
            && members.iter().all(|(_, state)| state == "running")
            && live["Instances"].as_array().unwrap().len() == count
    };
    let start = Instant::now();
    while !settled() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "group {name} never settled at {count}: {:?}\n{}",
            group_members(daemon, name),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(settled(), "group {name} left {count}: {:?}", group_members(daemon, name));
    group_members(daemon, name).into_iter().map(|(id, _)| id).collect()
}

/// An Auto Scaling group of tiny guests through the real daemon: bad requests change
/// nothing; it launches its desired capacity, replaces an instance whose VMM is killed,
/// and `nuaged` SIGKILLed mid scale-out, mid scale-in and mid replacement ends, once
/// restarted, with exactly the desired instances: none orphaned, none launched twice.
#[test]
fn an_auto_scaling_group_keeps_its_capacity_through_failures_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let data = format!(r#"{{"ImageId":"{image}","InstanceType":"t.nano"}}"#);
    daemon.ok(&["create-launch-template", "--launch-template-name", "web", "--launch-template-data", &data]);
    fn create<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let base = ["autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", "web"];
        [&base[..], &["--launch-template", "LaunchTemplateName=web,Version=$Latest"], extra].concat()
    }
    for (extra, expected) in [
        (vec!["--min-size", "3", "--max-size", "1"], "ValidationError"),
        (vec!["--min-size", "1", "--max-size", "3", "--desired-capacity", "5"], "ValidationError"),
        (vec!["--min-size", "1", "--max-size", "3", "--health-check-type", "PING"], "ValidationError"),
        (vec!["--min-size", "1", "--max-size", "3", "--target-group-arns", "arn:nope"], "ValidationError"),
    ] {
        let err = daemon.err(&create(&extra));
        assert!(err.starts_with(expected), "{extra:?}: {err}");
    }
    let unknown = daemon.err(&[
        "autoscaling",
        "create-auto-scaling-group",
        "--auto-scaling-group-name",
        "web",
        "--launch-template",
        "LaunchTemplateName=nope",
        "--min-size",
        "1",
        "--max-size",
        "1",
    ]);
    assert!(unknown.starts_with("ValidationError") && unknown.contains("nope"), "{unknown}");
    let none = daemon.ok(&["autoscaling", "describe-auto-scaling-groups"]);
    assert_eq!(none["AutoScalingGroups"].as_array().unwrap().len(), 0, "refusals made nothing");
    assert!(group_members(&daemon, "web").is_empty());

    daemon.ok(&create(&["--min-size", "1", "--max-size", "4", "--desired-capacity", "2"]));
    let err = daemon.err(&create(&["--min-size", "1", "--max-size", "4"]));
    assert!(err.starts_with("AlreadyExists"), "{err}");
    let members = wait_for_capacity(&daemon, "web", 2);
    for (args, expected) in [
        (
            vec!["set-desired-capacity", "--auto-scaling-group-name", "web", "--desired-capacity", "5"],
            "ValidationError",
        ),
        (
            vec!["set-desired-capacity", "--auto-scaling-group-name", "nope", "--desired-capacity", "1"],
            "ValidationError",
        ),
        (vec!["delete-auto-scaling-group", "--auto-scaling-group-name", "web"], "ResourceInUse"),
    ] {
        let err = daemon.err(&[&["autoscaling"][..], &args].concat());
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    let group =
        daemon.ok(&["autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names", "web"]);
    assert_eq!(group["AutoScalingGroups"][0]["desired_capacity"], 2);
    assert_eq!(group["AutoScalingGroups"][0]["instances"].as_array().unwrap().len(), 2);

    let policy = |metric: &str, label: &str| {
        let config = format!(
            r#"{{"PredefinedMetricSpecification":{{"PredefinedMetricType":"{metric}","ResourceLabel":"{label}"}},"TargetValue":50}}"#
        );
        let base =
            ["autoscaling", "put-scaling-policy", "--auto-scaling-group-name", "web", "--policy-name", "p"];
        [&base[..], &["--target-tracking-configuration", &config]]
            .concat()
            .iter()
            .map(|a| (*a).to_owned())
            .collect::<Vec<String>>()
    };
    for (metric, label) in [("ALBRequestCountPerTarget", "app/x/1/targetgroup/tg/2"), ("Memory", "")] {
        let args = policy(metric, label);
        let err = daemon.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.starts_with("ValidationError"), "{metric}: {err}");
    }
    let args = policy("ASGAverageCPUUtilization", "");
    let arn = daemon.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())["PolicyARN"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(arn.contains(":scalingPolicy:") && arn.ends_with("policyName/p"), "{arn}");
    let policies = daemon.ok(&["autoscaling", "describe-policies", "--auto-scaling-group-name", "web"]);
    assert_eq!(policies["ScalingPolicies"][0]["cooldown"], 300, "{policies}");
    daemon.ok(&["autoscaling", "delete-policy", "--auto-scaling-group-name", "web", "--policy-name", "p"]);
    let policies = daemon.ok(&["autoscaling", "describe-policies"]);
    assert!(policies["ScalingPolicies"].as_array().unwrap().is_empty());

    // A VMM killed: its instance stops, and the group replaces it.
    let pid = nuage::daemon::process::running_vmms(&dir.path().join("state"))[&members[0]];
    // SAFETY: kill only sends a signal.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    daemon.wait_for(|| daemon.state(&members[0]).0 == "terminated", "the dead instance to be terminated");
    let now = wait_for_capacity(&daemon, "web", 2);
    assert!(now.contains(&members[1]) && !now.contains(&members[0]));
    let activities =
        daemon.ok(&["autoscaling", "describe-scaling-activities", "--auto-scaling-group-name", "web"]);
    let activities = activities["Activities"].as_array().unwrap().clone();
    assert!(
        activities.iter().any(|a| a["cause"].as_str().unwrap().contains("EC2 health check")
            && a["description"].as_str().unwrap().contains(&members[0])),
        "{activities:?}"
    );
    assert!(activities.iter().all(|a| a["status_code"] == "Successful"), "{activities:?}");

    // nuaged SIGKILLed at each step, then restarted without the failpoint.
    let kill_a_vmm = |daemon: &Daemon| {
        let id = &group_members(daemon, "web")[0].0;
        let pid = nuage::daemon::process::running_vmms(&dir.path().join("state"))[id];
        // SAFETY: kill only sends a signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };
    let desired = |n: &'static str| {
        move |daemon: &Daemon| {
            daemon.ok(&[
                "autoscaling",
                "set-desired-capacity",
                "--auto-scaling-group-name",
                "web",
                "--desired-capacity",
                n,
            ]);
        }
    };
    /// A failpoint, what makes the daemon reach it, and the capacity it must end with.
    type Step<'a> = (&'a str, Box<dyn Fn(&Daemon) + 'a>, usize);
    let steps: [Step; 5] = [
        ("run-after-volume", Box::new(desired("3")), 3),
        ("asg-after-launch", Box::new(desired("4")), 4),
        ("asg-after-leave", Box::new(desired("2")), 2),
        ("terminate-after-record", Box::new(kill_a_vmm), 2),
        ("terminate-after-record", Box::new(desired("1")), 1),
    ];
    for (point, act, expected) in steps {
        daemon.kill();
        let crashing = Daemon::spawn_with_env(
            dir.path(),
            &["--vmm".as_ref(), common::vmm_bin().as_ref()],
            &[("NUAGE_FAILPOINT", point)],
        );
        act(&crashing);
        crashing.wait_for(|| crashing.log().contains("failpoint reached"), point);
        crashing.kill();
        daemon = Daemon::start(dir.path());
        wait_for_capacity(&daemon, "web", expected);
    }

    daemon.ok(&[
        "autoscaling",
        "delete-auto-scaling-group",
        "--auto-scaling-group-name",
        "web",
        "--force-delete",
    ]);
    daemon.wait_for(
        || {
            daemon.ok(&["autoscaling", "describe-auto-scaling-groups"])["AutoScalingGroups"]
                .as_array()
                .unwrap()
                .is_empty()
        },
        "the group to go",
    );
    assert!(group_members(&daemon, "web").is_empty());
}

/// The image each of group `name`'s live instances runs, sorted.
fn group_images(daemon: &Daemon, name: &str) -> Vec<String> {
    let filter = format!("Name=tag:aws:autoscaling:groupName,Values={name}");
    let found = daemon.ok(&["describe-instances", "--filters", &filter, "--states", "pending", "running"]);
    let mut images: Vec<String> = found["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_owned())
        .collect();
    images.sort();
    images
}

/// Scheduled actions and an instance refresh through the real daemon: bad requests are
/// refused with AWS's names and change nothing; a one-off action grows the group once; a
/// refresh to a new version, with nuaged SIGKILLed after it took the first instance out of
/// service, ends with every instance on the new version and the group on it.
#[test]
fn scheduled_actions_and_an_instance_refresh_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let first = register(&daemon, "one", Asm::new().print("first\n").cli_hlt());
    let second = register(&daemon, "two", Asm::new().print("second\n").cli_hlt());
    let data = format!(r#"{{"ImageId":"{first}","InstanceType":"t.nano"}}"#);
    daemon.ok(&["create-launch-template", "--launch-template-name", "web", "--launch-template-data", &data]);
    let data = format!(r#"{{"ImageId":"{second}"}}"#);
    daemon.ok(&[
        "create-launch-template-version",
        "--launch-template-name",
        "web",
        "--launch-template-data",
        &data,
    ]);
    daemon.ok(&[
        "autoscaling",
        "create-auto-scaling-group",
        "--auto-scaling-group-name",
        "web",
        "--launch-template",
        "LaunchTemplateName=web,Version=1",
        "--min-size",
        "1",
        "--max-size",
        "3",
        "--desired-capacity",
        "2",
    ]);
    wait_for_capacity(&daemon, "web", 2);

    let put = |extra: &[&str]| -> Vec<String> {
        let base = ["autoscaling", "put-scheduled-update-group-action", "--scheduled-action-name", "grow"];
        [&base[..], extra].concat().iter().map(|a| (*a).to_owned()).collect()
    };
    let soon = nuage::state::clock::format_utc(nuage::state::id::now() + 2);
    let group = ["--auto-scaling-group-name", "web"];
    for (extra, expected) in [
        (
            vec![
                "--auto-scaling-group-name",
                "web",
                "--start-time",
                "2020-01-01T00:00:00Z",
                "--desired-capacity",
                "3",
            ],
            "ValidationError",
        ),
        (
            vec!["--auto-scaling-group-name", "web", "--recurrence", "every day", "--desired-capacity", "3"],
            "ValidationError",
        ),
        (
            vec![
                "--auto-scaling-group-name",
                "web",
                "--recurrence",
                "0 3 * * *",
                "--time-zone",
                "Europe/Paris",
                "--desired-capacity",
                "3",
            ],
            "ValidationError",
        ),
        (vec!["--auto-scaling-group-name", "web", "--start-time", &soon], "ValidationError"),
        (
            vec!["--auto-scaling-group-name", "nope", "--start-time", &soon, "--desired-capacity", "3"],
            "ValidationError",
        ),
    ] {
        let args = put(&extra);
        let err = daemon.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.starts_with(expected), "{extra:?}: {err}");
    }
    let none = daemon.ok(&["autoscaling", "describe-scheduled-actions"]);
    assert!(none["ScheduledUpdateGroupActions"].as_array().unwrap().is_empty(), "refusals made nothing");
    let args = put(&[&group[..], &["--start-time", &soon, "--desired-capacity", "3"]].concat());
    daemon.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let nightly = [&group[..], &["--recurrence", "0 3 * * *", "--min-size", "1"]].concat();
    let mut args = put(&nightly);
    args[3] = "nightly".into();
    daemon.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let listed = daemon.ok(&[&["autoscaling", "describe-scheduled-actions"][..], &group].concat());
    assert_eq!(listed["ScheduledUpdateGroupActions"].as_array().unwrap().len(), 2, "{listed}");
    wait_for_capacity(&daemon, "web", 3);
    let listed = daemon.ok(&[&["autoscaling", "describe-scheduled-actions"][..], &group].concat());
    let listed = listed["ScheduledUpdateGroupActions"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "the one-off action went once it ran: {listed:?}");
    assert_eq!(listed[0]["next_run_time"].as_i64().unwrap() % 86_400, 3 * 3600, "{listed:?}");
    daemon.ok(&[
        &["autoscaling", "delete-scheduled-action", "--scheduled-action-name", "nightly"][..],
        &group,
    ]
    .concat());
    let activities = daemon.ok(&[&["autoscaling", "describe-scaling-activities"][..], &group].concat());
    let executed = activities["Activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["description"] == "Executing scheduled action grow")
        .count();
    assert_eq!(executed, 1);

    let refresh = |extra: &[&str]| -> Vec<String> {
        let base = ["autoscaling", "start-instance-refresh", "--auto-scaling-group-name", "web"];
        [&base[..], extra].concat().iter().map(|a| (*a).to_owned()).collect()
    };
    let to_2 = r#"{"LaunchTemplate":{"LaunchTemplateName":"web","Version":"2"}}"#;
    for (args, expected) in [
        (refresh(&["--preferences", r#"{"MinHealthyPercentage":150}"#]), "ValidationError"),
        (
            refresh(&["--desired-configuration", r#"{"LaunchTemplate":{"LaunchTemplateName":"nope"}}"#]),
            "ValidationError",
        ),
        (refresh(&["--strategy", "Replace"]), "ValidationError"),
        (
            ["autoscaling", "cancel-instance-refresh", "--auto-scaling-group-name", "web"]
                .map(String::from)
                .to_vec(),
            "ActiveInstanceRefreshNotFound",
        ),
        (
            ["autoscaling", "rollback-instance-refresh", "--auto-scaling-group-name", "web"]
                .map(String::from)
                .to_vec(),
            "ActiveInstanceRefreshNotFound",
        ),
    ] {
        let err = daemon.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    let described = |daemon: &Daemon| {
        daemon.ok(&[&["autoscaling", "describe-instance-refreshes"][..], &group].concat())
            ["InstanceRefreshes"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(described(&daemon).is_empty(), "refusals made nothing");
    assert_eq!(group_images(&daemon, "web"), [first.clone(), first.clone(), first.clone()]);

    // nuaged SIGKILLed once the refresh took its first instance out of service.
    daemon.kill();
    let crashing = Daemon::spawn_with_env(
        dir.path(),
        &["--vmm".as_ref(), common::vmm_bin().as_ref()],
        &[("NUAGE_FAILPOINT", "asg-after-leave")],
    );
    let args = refresh(&[
        "--preferences",
        r#"{"MinHealthyPercentage":60,"InstanceWarmup":0}"#,
        "--desired-configuration",
        to_2,
    ]);
    let id = crashing.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())["InstanceRefreshId"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = crashing.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.starts_with("InstanceRefreshInProgress"), "{err}");
    crashing.wait_for(|| crashing.log().contains("failpoint reached"), "asg-after-leave");
    crashing.kill();
    daemon = Daemon::start(dir.path());
    let start = Instant::now();
    while described(&daemon)[0]["status"] != "Successful" {
        assert!(start.elapsed() < Duration::from_secs(90), "{:?}\n{}", described(&daemon), daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = &described(&daemon)[0];
    assert_eq!(
        (done["instance_refresh_id"].as_str().unwrap(), done["percentage_complete"].as_u64()),
        (id.as_str(), Some(100))
    );
    wait_for_capacity(&daemon, "web", 3);
    assert_eq!(group_images(&daemon, "web"), [second.clone(), second.clone(), second.clone()]);
    let group = daemon.ok(&["autoscaling", "describe-auto-scaling-groups"]);
    assert_eq!(
        group["AutoScalingGroups"][0]["launch_template"]["version"], "2",
        "the group is on version 2 now"
    );
    let launched =
        daemon.ok(&["autoscaling", "describe-scaling-activities", "--auto-scaling-group-name", "web"]);
    let launched = launched["Activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["description"].as_str().unwrap().starts_with("Launching a new EC2 instance: "))
        .count();
    assert_eq!(launched, 2 + 1 + 3, "2 at first, 1 scheduled, 3 replacements: none twice");
}

/// A tar.gz of `files` (name, content), made by the system's tar.
fn tar_gz(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join(format!("{name}.src"));
    std::fs::create_dir_all(&src).unwrap();
    for (file, content) in files {
        std::fs::write(src.join(file), content).unwrap();
    }
    let out = dir.join(format!("{name}.tar.gz"));
    let status = Command::new("tar").arg("-czf").arg(&out).arg("-C").arg(&src).arg(".").status().unwrap();
    assert!(status.success());
    out
}

/// Applications and versions through the real daemon: a bundle that is not an archive,
/// a truncated one, an unknown application and a clash are refused with AWS's names and
/// keep nothing; a bundle larger than a gRPC message's default cap is kept as sent
/// (private, by its SHA-256) and let go with its version; nuaged SIGKILLed between keeping
/// a bundle and recording its version lets that bundle go at its next start.
#[test]
fn application_versions_keep_their_source_bundles_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let bundles = dir.path().join("state/store/bundles");
    let kept = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&bundles)
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    fn eb<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["elasticbeanstalk"][..], args].concat()
    }
    daemon.ok(&eb(&["create-application", "--application-name", "web", "--description", "my site"]));
    let start = b"#!/bin/sh\nexec busybox httpd -f -p $PORT -h www\n";
    let v1 = tar_gz(dir.path(), "v1", &[("start", start), ("index.html", b"v1")]);
    let v1_bytes = std::fs::read(&v1).unwrap();
    let text = common::write_file(dir.path(), "notes.txt", b"not an archive");
    let truncated = common::write_file(dir.path(), "cut.tar.gz", &v1_bytes[..v1_bytes.len() / 2]);
    let version = |app: &str, label: &str, bundle: &str| -> Vec<String> {
        let args = ["create-application-version", "--application-name", app, "--version-label", label];
        let bundle = format!("file://{bundle}");
        eb(&[&args[..], &["--source-bundle", &bundle]].concat()).iter().map(|a| (*a).to_owned()).collect()
    };
    let v1_path = v1.to_str().unwrap();
    for (args, expected) in [
        (
            eb(&["create-application", "--application-name", "web"])
                .iter()
                .map(|a| (*a).to_owned())
                .collect(),
            "InvalidParameterValue",
        ),
        (version("web", "v1", &text), "InvalidParameterValue"),
        (version("web", "v1", &truncated), "InvalidParameterValue"),
        (version("nope", "v1", v1_path), "InvalidParameterValue"),
        (version("web", "a/b", v1_path), "InvalidParameterValue"),
    ] {
        let err = daemon.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    assert!(kept().is_empty(), "refusals keep nothing: {:?}", kept());
    let made = daemon.ok(&version("web", "v1", v1_path).iter().map(String::as_str).collect::<Vec<_>>());
    let made = &made["ApplicationVersions"][0];
    let sha = nuage::store::bundle::sha256_hex(&v1_bytes);
    assert_eq!(
        (made["source_bundle_sha256"].as_str(), made["source_bundle_format"].as_str()),
        (Some(sha.as_str()), Some("tar.gz"))
    );
    assert_eq!(kept(), std::slice::from_ref(&sha));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(bundles.join(&sha)).unwrap().permissions().mode() & 0o777, 0o600);
    let disk = std::fs::read(bundles.join(&sha)).unwrap();
    assert_eq!(&disk[512..512 + v1_bytes.len()], v1_bytes, "kept as sent, after its header sector");
    let err = daemon.err(&version("web", "v1", v1_path).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.starts_with("InvalidParameterValue") && err.contains("already exists"), "{err}");

    // Larger than the 4 MiB a gRPC message may carry by default (incompressible bytes).
    let mut noise = vec![0u8; 5 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for byte in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let big = tar_gz(dir.path(), "big", &[("start", start), ("data", &noise)]);
    daemon.ok(&version("web", "big", big.to_str().unwrap()).iter().map(String::as_str).collect::<Vec<_>>());
    let listed = daemon.ok(&eb(&["describe-application-versions", "--application-name", "web"]));
    let labels: Vec<&str> = listed["ApplicationVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version_label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 2, "{listed}");
    daemon.ok(&eb(&["delete-application-version", "--application-name", "web", "--version-label", "big"]));
    assert_eq!(kept(), std::slice::from_ref(&sha), "its bundle goes with it");

    // Killed after keeping a bundle, before recording its version.
    daemon.kill();
    let crashing = Daemon::spawn_with_env(
        dir.path(),
        &["--vmm".as_ref(), common::vmm_bin().as_ref()],
        &[("NUAGE_FAILPOINT", "bundle-after-keep")],
    );
    let v2 = tar_gz(dir.path(), "v2", &[("start", start), ("index.html", b"v2")]);
    let args = version("web", "v2", v2.to_str().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nuage"))
        .arg("--endpoint")
        .arg(dir.path().join("api.sock"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crashing.wait_for(|| crashing.log().contains("failpoint reached"), "bundle-after-keep");
    assert_eq!(kept().len(), 2, "kept, not yet recorded");
    crashing.kill();
    let _ = child.wait();
    daemon = Daemon::start(dir.path());
    assert_eq!(kept(), std::slice::from_ref(&sha), "the next start lets the orphan go");
    let listed = daemon.ok(&eb(&["describe-application-versions"]));
    assert_eq!(listed["ApplicationVersions"].as_array().unwrap().len(), 1, "{listed}");
    daemon.ok(&eb(&["delete-application", "--application-name", "web"]));
    assert!(kept().is_empty());
    let none = daemon.ok(&eb(&["describe-applications"]));
    assert!(none["Applications"].as_array().unwrap().is_empty());
}

/// Environments through the real daemon (issue 20): bad requests are refused with AWS's
/// names and make nothing; nuaged SIGKILLed in the middle of a create (its balancer made,
/// its group not) carries on at restart and makes each part once; the instances carry the
/// environment's tags and get the version's bundle as a read-only disk; terminating it
/// leaves no instance, volume, balancer, target group, group or launch template.
#[test]
fn an_environment_survives_a_crash_and_leaves_nothing() {
    let ns = Netns::new("beanstalk");
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_in_netns(dir.path(), &ns.0);
    let subnet = daemon.ok(&["create-subnet", "--cidr-block", "10.0.23.0/24"]);
    let subnet = subnet["Subnets"][0]["subnet_id"].as_str().unwrap().to_owned();
    let image = register(&daemon, "idle", Asm::new().print("booted\n").cli_hlt());
    let v1 = tar_gz(dir.path(), "v1", &[("start", b"#!/bin/sh\nexit 0\n")]);
    let v1_bytes = std::fs::read(&v1).unwrap();
    fn eb<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["elasticbeanstalk"][..], args].concat()
    }
    daemon.ok(&eb(&["create-application", "--application-name", "web"]));
    let bundle = format!("file://{}", v1.display());
    daemon.ok(&eb(&[
        "create-application-version",
        "--application-name",
        "web",
        "--version-label",
        "v1",
        "--source-bundle",
        &bundle,
    ]));
    let option = |namespace: &str, name: &str, value: &str| {
        format!("Namespace={namespace},OptionName={name},Value={value}")
    };
    let options = [
        option("aws:autoscaling:launchconfiguration", "ImageId", &image),
        option("aws:autoscaling:launchconfiguration", "InstanceType", "t.nano"),
        option("aws:ec2:vpc", "Subnets", &subnet),
        option("aws:autoscaling:asg", "MinSize", "2"),
        option("aws:autoscaling:asg", "MaxSize", "2"),
    ];
    let create = |name: &str, label: &str, extra: &[String]| -> Vec<String> {
        let mut args: Vec<String> = ["elasticbeanstalk", "create-environment", "--application-name", "web"]
            .map(String::from)
            .to_vec();
        args.extend(["--environment-name".into(), name.into(), "--version-label".into(), label.into()]);
        args.push("--option-settings".into());
        args.extend(options.iter().cloned());
        args.extend(extra.iter().cloned());
        args
    };
    let strs = |args: &[String]| -> Vec<String> { args.to_vec() };
    for (args, expected) in [
        (create("web-prod", "v9", &[]), "InvalidParameterValue"),
        (create("web-prod", "v1", &[option("aws:autoscaling:asg", "MinSize", "3")]), "InvalidParameterValue"),
        (
            create("web-prod", "v1", &[option("aws:autoscaling:launchconfiguration", "ImageId", "ami-nope")]),
            "InvalidAMIID.NotFound",
        ),
        (
            create("web-prod", "v1", &[option("aws:ec2:vpc", "Subnets", "subnet-nope")]),
            "InvalidSubnetID.NotFound",
        ),
        (create("no", "v1", &[]), "InvalidParameterValue"),
        (
            create(
                "web-prod",
                "v1",
                &[option("aws:elasticbeanstalk:command", "DeploymentPolicy", "Sometimes")],
            ),
            "InvalidParameterValue",
        ),
        (create("web-prod", "v1", &[option("aws:elb:listener", "Port", "80")]), "InvalidParameterValue"),
    ] {
        let args = strs(&args);
        let err = daemon.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    let described = |daemon: &Daemon, deleted: bool| {
        let mut args = vec!["elasticbeanstalk", "describe-environments"];
        if deleted {
            args.push("--include-deleted");
        }
        daemon.ok(&args)["Environments"].as_array().unwrap().clone()
    };
    assert!(described(&daemon, true).is_empty(), "refusals made nothing");
    assert!(daemon.ok(&["elbv2", "describe-load-balancers"])["LoadBalancers"].as_array().unwrap().is_empty());

    // nuaged SIGKILLed with the balancer and its listener made, the group not yet.
    daemon.kill();
    let crashing = Daemon::spawn_with_env(
        dir.path(),
        &Daemon::netns_args(&ns.0),
        &[("NUAGE_FAILPOINT", "environment-before-group")],
    );
    let args = create("web-prod", "v1", &[]);
    let made = crashing.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let env = &made["Environments"][0];
    assert_eq!((env["status"].as_str(), env["health"].as_str()), (Some("Launching"), Some("Grey")));
    let id = env["environment_id"].as_str().unwrap().to_owned();
    let err = crashing.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.starts_with("InvalidParameterValue") && err.contains("already exists"), "{err}");
    crashing.wait_for(|| crashing.log().contains("failpoint reached"), "environment-before-group");
    crashing.kill();
    daemon = Daemon::start_in_netns(dir.path(), &ns.0);
    let name = format!("awseb-{id}");
    let members = wait_for_capacity(&daemon, &name, 2);
    let lbs = daemon.ok(&["elbv2", "describe-load-balancers"]);
    assert_eq!(lbs["LoadBalancers"].as_array().unwrap().len(), 1, "made once: {lbs}");
    let templates = daemon.ok(&["describe-launch-templates"]);
    assert_eq!(templates["LaunchTemplates"].as_array().unwrap().len(), 1, "made once: {templates}");
    let sha = nuage::store::bundle::sha256_hex(&v1_bytes);
    for member in &members {
        let config = running_vm_config(dir.path(), member);
        let disk = config.disks.iter().find(|d| d.id.as_deref() == Some("bundle")).expect("a bundle disk");
        assert!(disk.read_only && disk.path.ends_with(&sha), "{disk:?}");
    }
    let tagged = daemon.ok(&[
        "describe-instances",
        "--filters",
        &format!("Name=tag:elasticbeanstalk:environment-id,Values={id}"),
    ]);
    assert_eq!(ids(&tagged).len(), 2, "{tagged}");
    let env = &described(&daemon, false)[0];
    assert_eq!(env["endpoint_url"], "localhost:8000");
    assert_eq!(env["resources"]["auto_scaling_group_name"].as_str(), Some(name.as_str()));
    let err = daemon.err(&eb(&[
        "delete-application-version",
        "--application-name",
        "web",
        "--version-label",
        "v1",
    ]));
    assert!(err.starts_with("InvalidParameterValue") && err.contains("web-prod"), "{err}");
    let health = daemon.ok(&eb(&["describe-environment-health", "--environment-name", "web-prod"]));
    assert_eq!(health["EnvironmentHealth"]["color"], "Grey", "still launching: tiny guests serve nothing");

    // Deploys, swaps and terminations that cannot be are refused and change nothing.
    let events_before = daemon.ok(&eb(&["describe-events", "--environment-name", "web-prod"]));
    let update = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            eb(&["update-environment", "--environment-name", name]).into_iter().map(String::from).collect();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let policy = option("aws:elasticbeanstalk:command", "DeploymentPolicy", "Sometimes");
    let swap = |a: &str, b: &str| -> Vec<String> {
        eb(&["swap-environment-cnames", "--source-environment-name", a, "--destination-environment-name", b])
            .into_iter()
            .map(String::from)
            .collect()
    };
    let terminate = |name: &str| -> Vec<String> {
        eb(&["terminate-environment", "--environment-name", name]).into_iter().map(String::from).collect()
    };
    for (args, said) in [
        (update("web-nope", &["--version-label", "v1"]), "No Environment found"),
        (update("web-prod", &["--version-label", "v9"]), "No Application Version named 'v9'"),
        (update("web-prod", &["--option-settings", &policy]), "deployment policy \"Sometimes\""),
        (update("web-prod", &["--version-label", "v1"]), "Must be Ready (it is Launching)"),
        (swap("web-prod", "web-prod"), "cannot swap with itself"),
        (swap("web-prod", "web-nope"), "No Environment found"),
        (terminate("web-nope"), "No Environment found"),
    ] {
        let err = daemon.err(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.starts_with("InvalidParameterValue") && err.contains(said), "{args:?}: {err}");
    }
    let env = &described(&daemon, true);
    assert_eq!(env.len(), 1, "{env:?}");
    assert_eq!(
        (env[0]["status"].as_str(), env[0]["version_label"].as_str(), env[0]["endpoint_url"].as_str()),
        (Some("Launching"), Some("v1"), Some("localhost:8000")),
        "the refusals changed nothing"
    );
    let events_after = daemon.ok(&eb(&["describe-events", "--environment-name", "web-prod"]));
    assert_eq!(events_before, events_after, "the refusals recorded nothing");

    daemon.ok(&eb(&["terminate-environment", "--environment-name", "web-prod"]));
    let start = Instant::now();
    while described(&daemon, true)[0]["status"] != "Terminated" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}\n{}",
            described(&daemon, true),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let live = daemon.ok(&["describe-instances", "--states", "pending", "running", "stopping", "stopped"]);
    assert!(ids(&live).is_empty(), "no instance left: {live}");
    assert!(daemon.ok(&["describe-volumes"])["Volumes"].as_array().unwrap().is_empty(), "no volume left");
    assert!(daemon.ok(&["elbv2", "describe-load-balancers"])["LoadBalancers"].as_array().unwrap().is_empty());
    assert!(daemon.ok(&["elbv2", "describe-target-groups"])["TargetGroups"].as_array().unwrap().is_empty());
    assert!(daemon.ok(&["autoscaling", "describe-auto-scaling-groups"])["AutoScalingGroups"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(daemon.ok(&["describe-launch-templates"])["LaunchTemplates"].as_array().unwrap().is_empty());
    let events = daemon.ok(&eb(&["describe-events", "--environment-name", "web-prod"]));
    let said: Vec<&str> =
        events["Events"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert_eq!(said.iter().filter(|m| m.starts_with("Created load balancer")).count(), 1, "{said:?}");
    assert!(said[0].contains("terminateEnvironment completed"), "{said:?}");
    daemon.ok(&eb(&["delete-application-version", "--application-name", "web", "--version-label", "v1"]));
}
