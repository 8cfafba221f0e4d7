//! `nuage`: the command-line client of `nuaged` (see [`nuage::cli`]).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
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
