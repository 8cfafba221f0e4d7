//! `nuage`: the command-line client (not built yet; see the project's issues).

fn main() -> std::process::ExitCode {
    eprintln!("usage: nuage <command>\n\nThe nuage CLI does not exist yet. Use `nuage-vmm --help` to run a microVM directly.");
    std::process::ExitCode::from(2)
}
