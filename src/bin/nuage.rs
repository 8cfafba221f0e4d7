//! `nuage`: the command-line client of `nuaged` (see [`nuage::cli`]).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // Output piped into a reader that stops early (`| head`, `| grep -q`) ends the CLI
    // quietly, as it ends other Unix tools, instead of in a panic over a failed print.
    // SAFETY: setting a signal's disposition to its default touches no memory; the
    // single-threaded runtime has started no other thread that could be handling it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = nuage::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A gRPC status carries the EC2 error name in its message: print just that.
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("nuage: {}", status.message()),
                None => eprintln!("nuage: {e:#}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}
