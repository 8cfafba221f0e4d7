//! The gRPC API (`proto/nuage/v1`): generated messages and clients, the services `nuaged`
//! serves, and the mapping of errors to gRPC status codes with EC2 error names
//! ([`errors`]).

pub mod addresses;
pub mod audit;
pub mod autoscaling;
pub mod balancing;
pub mod environments;
pub mod errors;
pub mod images;
pub mod instances;
pub mod keypairs;
pub mod launch_templates;
pub mod metrics;
pub mod resources;
pub mod security_groups;
pub mod server;
pub mod subnets;
pub mod volumes;

/// Messages, clients and servers generated from `proto/nuage/v1/*.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("nuage.v1");

    /// The encoded descriptors of every message and service, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nuage_descriptor");
}

use tonic::Status;

use crate::daemon::DaemonError;

/// Runs blocking daemon work (file I/O, process control) off the async runtime.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, DaemonError> + Send + 'static,
    T: Send + 'static,
{
    off_runtime(work).await
}

/// Runs blocking work whose error maps to a status (the daemon's, a controller's) off the
/// async runtime; each service's `blocking` fixes the error type.
pub(crate) async fn off_runtime<T, E, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    Status: From<E>,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| errors::internal(&e))?.map_err(Status::from)
}
