//! What the jail costs a VMM (`scripts/bench-jail.sh`): boots a tiny guest that powers off
//! at once, jailed and unjailed in turn, and reports the medians of nuage-vmm's own part of
//! a boot (its start to its vCPUs starting, read from its log) and of the whole run, and
//! their differences. The jail acts only before the vCPUs start, so that difference is its
//! cost, measured here where its system calls run natively (in the nested boot benchmark
//! they run emulated, under a guest boot's noise).
//!
//!   bench_jail NUAGE_VMM RUNS      (as root: the jail needs it)

#[path = "../tests/common/guest.rs"]
#[allow(dead_code)]
mod guest;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The jail's user: nuaged's first.
const JAIL_UID: &str = "1900000000";

/// One run of `vmm` on `kernel`, jailed on `jail` when given: (whole run, VMM's own part),
/// in milliseconds.
fn run(vmm: &Path, kernel: &Path, jail: Option<&Path>) -> Result<(f64, f64), String> {
    let mut command = Command::new(vmm);
    command.arg("--kernel").arg(kernel).args([
        "--memory",
        "16",
        "--no-rng",
        "--log-level",
        "nuage::vmm::cli=info",
    ]);
    if let Some(root) = jail {
        command.arg("--jail").arg(root).args(["--uid", JAIL_UID, "--gid", JAIL_UID]);
    }
    let start = Instant::now();
    let out = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output();
    let whole = start.elapsed().as_secs_f64() * 1e3;
    let out = out.map_err(|e| format!("{}: {e}", vmm.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("nuage-vmm failed ({}): {log}", out.status));
    }
    let own = log
        .split_whitespace()
        .find_map(|word| word.strip_prefix("ready_ms="))
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| format!("no ready_ms in the VMM's log: {log}"))?;
    Ok((whole, own))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench(vmm: &Path, runs: usize) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kernel = dir.path().join("vmlinux");
    let code = guest::Asm::new().acpi_poweroff().spin();
    std::fs::write(&kernel, guest::elf_kernel(code.bytes())).map_err(|e| e.to_string())?;
    let root = dir.path().join("jail");
    std::fs::create_dir(&root).map_err(|e| e.to_string())?;
    let (mut plain, mut jailed) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    // One of each first, untimed: the binary and the kernel in the page cache.
    run(vmm, &kernel, None)?;
    run(vmm, &kernel, Some(&root))?;
    for _ in 0..runs {
        for (jail, into) in [(None, &mut plain), (Some(root.as_path()), &mut jailed)] {
            let (whole, own) = run(vmm, &kernel, jail)?;
            into.0.push(whole);
            into.1.push(own);
        }
    }
    let (plain_whole, plain_own) = (median(&mut plain.0), median(&mut plain.1));
    let (jailed_whole, jailed_own) = (median(&mut jailed.0), median(&mut jailed.1));
    Ok(format!(
        "jail benchmark: a tiny guest that powers off at once, {runs} runs each, alternating (medians)\n\
         \x20 nuage-vmm's own part (start -> vCPUs starting): unjailed {plain_own:.2} ms, jailed {jailed_own:.2} ms: \
         the jail adds {:.2} ms\n\
         \x20 whole run (start -> exit): unjailed {plain_whole:.2} ms, jailed {jailed_whole:.2} ms: jailed/unjailed {:.3}x",
        jailed_own - plain_own,
        jailed_whole / plain_whole,
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(vmm), Some(runs)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!("usage: bench_jail NUAGE_VMM RUNS");
        return ExitCode::from(2);
    };
    match bench(Path::new(vmm), runs.max(1)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_jail: {e}");
            ExitCode::FAILURE
        }
    }
}
