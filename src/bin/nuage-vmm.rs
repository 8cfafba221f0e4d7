//! `nuage-vmm`: runs one KVM microVM. See `nuage-vmm --help`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(nuage::vmm::cli::main().code())
}
