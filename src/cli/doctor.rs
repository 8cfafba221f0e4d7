//! `nuage doctor`: checks that this host can run nuage and says plainly what is missing.

use std::path::Path;
use std::process::Command;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
}

fn check(name: &'static str, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check { name, verdict, detail: detail.into() }
}

/// Which KVM module serves `/dev/kvm`, and whether the CPU virtualizes in hardware.
fn kvm() -> Check {
    if !Path::new("/dev/kvm").exists() {
        return check(
            "kvm",
            Verdict::Fail,
            "/dev/kvm is missing: load kvm_intel or kvm_amd (and enable VT-x/AMD-V)",
        );
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return check("kvm", Verdict::Fail, format!("/dev/kvm cannot be opened: {e} (join the kvm group?)"));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hardware = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|flag| flag == "vmx" || flag == "svm"));
    let module =
        ["kvm_intel", "kvm_amd", "kvm_pvm"].into_iter().find(|m| Path::new("/sys/module").join(m).exists());
    match (hardware, module) {
        (true, Some(module)) => {
            check("kvm", Verdict::Ok, format!("hardware virtualization through {module}"))
        }
        (_, Some("kvm_pvm")) | (false, _) => check(
            "kvm",
            Verdict::Warn,
            format!(
                "/dev/kvm is software ({}): no vmx/svm in /proc/cpuinfo; stock guest kernels run only nested \
                 (scripts/nested/run.sh)",
                module.unwrap_or("unknown module")
            ),
        ),
        (true, None) => check("kvm", Verdict::Ok, "hardware virtualization"),
    }
}

/// Whether `program ARGS` runs and succeeds; its first output line as the detail.
fn tool(name: &'static str, program: &str, args: &[&str], package: &str) -> Check {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            check(name, Verdict::Ok, text.lines().next().unwrap_or(program).trim().to_owned())
        }
        _ => check(name, Verdict::Fail, format!("`{program}` is missing: install the {package} package")),
    }
}

/// Free space where the daemon keeps its state.
fn disk(state_dir: &Path) -> Check {
    let mut dir = state_dir;
    while !dir.exists() {
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return check("disk", Verdict::Fail, format!("{} is not a usable path", state_dir.display()));
    };
    // SAFETY: statvfs writes one struct we own, reading a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return check(
            "disk",
            Verdict::Fail,
            format!("statvfs {}: {}", dir.display(), std::io::Error::last_os_error()),
        );
    }
    let free = stat.f_bavail as u64 * stat.f_frsize as u64;
    let gib = free as f64 / f64::from(1u32 << 30);
    let verdict = if free < 5 << 30 { Verdict::Warn } else { Verdict::Ok };
    check("disk", verdict, format!("{gib:.1} GiB free for {}", state_dir.display()))
}

/// Runs every check, prints one line each, and returns whether none failed.
pub fn run(endpoint: &Path, state_dir: &Path) -> bool {
    let tun = if Path::new("/dev/net/tun").exists() {
        check("tun", Verdict::Ok, "/dev/net/tun")
    } else {
        check("tun", Verdict::Fail, "/dev/net/tun is missing: load the tun module")
    };
    let bridge = if Path::new("/sys/module/bridge").exists() {
        check("bridge", Verdict::Ok, "bridge module loaded")
    } else {
        check("bridge", Verdict::Warn, "bridge module not loaded (it loads when the first subnet is made)")
    };
    let daemon = if std::os::unix::net::UnixStream::connect(endpoint).is_ok() {
        check("nuaged", Verdict::Ok, format!("answering on {}", endpoint.display()))
    } else {
        check("nuaged", Verdict::Warn, format!("not answering on {} (start nuaged)", endpoint.display()))
    };
    let checks = [
        kvm(),
        tun,
        bridge,
        tool("iproute2", "ip", &["-V"], "iproute2"),
        tool("nftables", "nft", &["--version"], "nftables"),
        disk(state_dir),
        daemon,
    ];
    for c in &checks {
        let verdict = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        println!("{verdict:<5} {:<9} {}", c.name, c.detail);
    }
    checks.iter().all(|c| c.verdict != Verdict::Fail)
}
