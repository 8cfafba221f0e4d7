//! Bad configurations fail before the VM starts, with one clear line and exit status 3;
//! bad flags exit 2; `--help` documents every option and exit status.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::guest::{bzimage_kernel, elf_kernel, Asm};
use common::{run_vmm, write_file};

fn rejected(args: &[&str], expect_in_message: &str) {
    let out = run_vmm(args, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "args {args:?}: stderr {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line for {args:?}: {stderr}");
    assert!(stderr.contains(expect_in_message), "{args:?}: expected {expect_in_message:?} in {stderr}");
    assert!(out.stdout.is_empty());
}

fn good_kernel(dir: &std::path::Path) -> String {
    write_file(dir, "vmlinux", &elf_kernel(Asm::new().acpi_poweroff().bytes()))
}

#[test]
fn missing_kernel() {
    rejected(&[], "no kernel given");
    rejected(&["--kernel", "/nonexistent/vmlinuz"], "/nonexistent/vmlinuz");
}

#[test]
fn zero_or_too_little_memory_and_bad_vcpu_counts() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    rejected(&["--kernel", &k, "--memory", "0"], "memory must be");
    rejected(&["--kernel", &k, "--memory", "2"], "memory must be");
    rejected(&["--kernel", &k, "--vcpus", "0"], "vcpus must be");
    rejected(&["--kernel", &k, "--vcpus", "33"], "vcpus must be");
}

#[test]
fn unreadable_initrd() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    rejected(&["--kernel", &k, "--initrd", "/nonexistent/initrd.img"], "initrd /nonexistent/initrd.img");
    rejected(&["--kernel", &k, "--initrd", dir.path().to_str().unwrap()], "is a directory");
}

#[test]
fn initrd_larger_than_guest_memory() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    let initrd = write_file(dir.path(), "initrd", &vec![0u8; 6 << 20]);
    rejected(&["--kernel", &k, "--initrd", &initrd, "--memory", "4"], "does not fit");
}

#[test]
fn files_that_are_not_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let text = write_file(dir.path(), "notes.txt", b"this is not a kernel\n");
    rejected(&["--kernel", &text], "is not a Linux kernel");
    let empty = write_file(dir.path(), "empty", b"");
    rejected(&["--kernel", &empty], "empty");
    let mut truncated_elf = elf_kernel(Asm::new().acpi_poweroff().bytes());
    truncated_elf.truncate(40);
    let truncated = write_file(dir.path(), "truncated-elf", &truncated_elf);
    rejected(&["--kernel", &truncated], "cannot load kernel");
    let mut bz = bzimage_kernel(Asm::new().acpi_poweroff().bytes());
    bz[0x236] = 0; // clear XLF_KERNEL_64
    let bz32 = write_file(dir.path(), "bzimage-32bit", &bz);
    rejected(&["--kernel", &bz32], "without a 64-bit entry point");
}

#[test]
fn oversized_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    let long = "x".repeat(4096);
    rejected(&["--kernel", &k, "--cmdline", &long], "command line");
}

#[test]
fn bad_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    let unknown =
        write_file(dir.path(), "unknown.json", format!(r#"{{"kernel": "{k}", "memory": 64}}"#).as_bytes());
    rejected(&["--config", &unknown], "unknown field");
    let broken = write_file(dir.path(), "broken.json", b"{\"kernel\": ");
    rejected(&["--config", &broken], "invalid config file");
    rejected(&["--config", "/nonexistent/vm.json"], "cannot read config file");
}

#[test]
fn config_file_alone_boots() {
    let dir = tempfile::tempdir().unwrap();
    let k =
        write_file(dir.path(), "vmlinux", &elf_kernel(Asm::new().print("from file").acpi_poweroff().bytes()));
    let config = write_file(
        dir.path(),
        "vm.json",
        format!(r#"{{"kernel": "{k}", "vcpus": 2, "memory_mib": 32, "console": {{"stdout": true}}}}"#)
            .as_bytes(),
    );
    let out = run_vmm(&["--config", &config], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"from file");
}

#[test]
fn bad_disks() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    let disk = write_file(dir.path(), "disk.img", &[0u8; 4096]);
    let spec = |extra: &str| format!("path={disk}{extra}");
    rejected(&["--kernel", &k, "--disk", "path=/nonexistent/vol.img"], "disk /nonexistent/vol.img");
    let dir_spec = format!("path={},readonly=on", dir.path().display());
    rejected(&["--kernel", &k, "--disk", &dir_spec], "not a regular file");
    rejected(&["--kernel", &k, "--disk", &spec(",id=an-id-longer-than-twenty")], "printable ASCII");
    rejected(
        &["--kernel", &k, "--disk", &spec(",id=same"), "--disk", &spec(",id=same")],
        "used by two disks",
    );
    let many: Vec<String> = (0..17).map(|i| spec(&format!(",id=d{i}"))).collect();
    let mut args = vec!["--kernel", k.as_str()];
    for spec in &many {
        args.extend(["--disk", spec.as_str()]);
    }
    rejected(&args, "at most 16 virtio devices");
    rejected(&["--kernel", &k, "--disk", &spec(",format=qcow2")], "not a qcow2 image");
    let out = run_vmm(&["--kernel", &k, "--disk", &spec(",cache=none")], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "an unknown --disk key is a usage error");
}

#[test]
fn bad_network_interfaces_and_vsock() {
    let dir = tempfile::tempdir().unwrap();
    let k = good_kernel(dir.path());
    let mac = "mac=52:54:00:00:00:02";
    rejected(&["--kernel", &k, "--net", &format!("tap=a-name-too-long-for-linux,{mac}")], "invalid tap name");
    rejected(&["--kernel", &k, "--net", &format!("fd=1,{mac}")], "tap fd 1");
    rejected(&["--kernel", &k, "--net", &format!("fd=57,{mac}")], "is not a tap");
    rejected(
        &["--kernel", &k, "--vsock", "cid=3,uds=/nonexistent/dir/v.sock"],
        "cannot listen on /nonexistent",
    );
    for usage in [
        "tap=t0,mac=ff:ff:ff:ff:ff:ff".to_string(),
        format!("tap=t0,{mac},ip=1.2.3"),
        "cid=2,uds=/tmp/x".into(),
    ] {
        let flag = if usage.starts_with("cid") { "--vsock" } else { "--net" };
        let out = run_vmm(&["--kernel", &k, flag, &usage], Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{flag} {usage}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run_vmm(&["--kernal", "x"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_every_option_and_exit_status() {
    let out = run_vmm(&["--help"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--config",
        "--kernel",
        "--initrd",
        "--cmdline",
        "--vcpus",
        "--memory",
        "--console-log",
        "--console-stdout",
        "--console-stdin",
        "--log-level",
        "--disk",
        "--net",
        "--vsock",
        "--no-rng",
        "--no-virtio-cmdline",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    for status in [
        "0  the guest powered off",
        "3  invalid configuration",
        "4  the guest rebooted",
        "5  stopped by SIGTERM",
    ] {
        assert!(help.contains(status), "--help lacks exit status {status:?}");
    }
}
