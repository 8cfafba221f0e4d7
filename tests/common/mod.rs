//! Shared helpers for integration tests: tiny hand-assembled guests and running `nuage-vmm`.

#![allow(dead_code)]

pub mod guest;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Path of the built `nuage-vmm` binary.
pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nuage-vmm")
}

/// Runs `nuage-vmm` with `args`, failing the test if it runs longer than `timeout`.
pub fn run_vmm(args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(vmm_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nuage-vmm");
    wait_with_timeout(child, timeout)
}

/// Waits for `child`, killing it and failing the test after `timeout`.
pub fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "nuage-vmm did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `bytes` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path.to_str().expect("utf-8 path").to_owned()
}
