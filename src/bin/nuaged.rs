//! `nuaged`: the host daemon (not built yet; see the project's issues).

fn main() -> std::process::ExitCode {
    eprintln!("usage: nuaged\n\nThe nuage daemon does not exist yet. Use `nuage-vmm --help` to run a microVM directly.");
    std::process::ExitCode::from(2)
}
