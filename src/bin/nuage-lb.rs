//! `nuage-lb`: serves one load balancer (see [`nuage::lb`]). The daemon starts it; it can
//! also be run by hand on a configuration file, as the benchmark does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "nuage-lb", version, about = "Serves one nuage load balancer")]
struct Args {
    /// The balancer's configuration (JSON, `nuage::lb::config::BalancerConfig`); reread on
    /// SIGHUP.
    #[arg(long)]
    config: PathBuf,
    /// Where it writes what it sees, every second.
    #[arg(long)]
    status: PathBuf,
    /// Log filter (tracing's env-filter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Exit status for a configuration it cannot serve, as `nuage-vmm`'s.
const BAD_CONFIG: u8 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter(args.log_level.as_str()).with_ansi(false).init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nuage-lb: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nuage::lb::run(args.config, args.status)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ nuage::lb::LbError::Config { .. }) => {
            eprintln!("nuage-lb: {e}");
            ExitCode::from(BAD_CONFIG)
        }
        Err(e) => {
            eprintln!("nuage-lb: {e}");
            ExitCode::FAILURE
        }
    }
}
