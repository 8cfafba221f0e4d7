//! The gRPC API (`proto/nuage/v1`): generated messages and clients, the services `nuaged`
//! serves, and the mapping of errors to gRPC status codes with EC2 error names.

pub mod addresses;
pub mod images;
pub mod instances;
pub mod keypairs;
pub mod metrics;
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

use tonic::{Code, Status};

use crate::daemon::keypairs::KeyPairError;
use crate::daemon::DaemonError;
use crate::net::NetError;
use crate::state::db::StateError;
use crate::store::StoreError;

impl From<DaemonError> for Status {
    fn from(e: DaemonError) -> Self {
        let code = match &e {
            DaemonError::Store(StoreError::NotFound { .. })
            | DaemonError::State(StateError::NotFound(_))
            | DaemonError::Net(NetError::NotFound(_) | NetError::AllocationNotFound(_)) => Code::NotFound,
            DaemonError::Net(NetError::InvalidParameter(_)) => Code::InvalidArgument,
            DaemonError::Net(
                NetError::Conflict(_) | NetError::AddressInUse(_) | NetError::DependencyViolation(_),
            ) => Code::FailedPrecondition,
            DaemonError::Net(NetError::Exhausted(_) | NetError::AddressLimitExceeded(_)) => {
                Code::ResourceExhausted
            }
            DaemonError::Net(NetError::Command { .. } | NetError::Io { .. }) => Code::Internal,
            DaemonError::Store(StoreError::InvalidParameter(_) | StoreError::BadImage(_))
            | DaemonError::InvalidParameter(_) => Code::InvalidArgument,
            DaemonError::Store(StoreError::InUse { .. })
            | DaemonError::State(StateError::WrongState { .. }) => Code::FailedPrecondition,
            DaemonError::Store(StoreError::NoSpace(_)) => Code::ResourceExhausted,
            DaemonError::KeyPair(KeyPairError::NotFound(_)) => Code::NotFound,
            DaemonError::KeyPair(KeyPairError::Duplicate(_)) => Code::AlreadyExists,
            DaemonError::KeyPair(KeyPairError::Format(_)) => Code::InvalidArgument,
            DaemonError::Store(StoreError::Io { .. })
            | DaemonError::State(StateError::Sqlite(_) | StateError::Corrupt(_))
            | DaemonError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Runs blocking daemon work (file I/O, process control) off the async runtime.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, DaemonError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("Server.InternalError: {e}")))?
        .map_err(Status::from)
}
