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

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration it cannot serve, as `nuage-vmm`'s.
const BAD_CONFIG: u8 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    // The VMMs' bounded log: a message repeated from one place is counted, not written
    // again and again, and one run writes at most `LOG_LIMIT`.
    let repeats = nuage::vmm::logging::init(&args.log_level, false);
    // The control side (signals, reloads, health checks, status); clients are served by
    // the balancer's own worker threads.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nuage-lb: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(nuage::lb::run(args.config, args.status));
    repeats.flush();
    match served {
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
