//! Application source bundles, kept in the store for the environments' controller: the
//! daemon side of `create-application-version`. The bytes come in the request (the daemon
//! never reads a path a caller names).

use std::sync::Arc;

use super::DaemonError;
use crate::store::bundle::Bundle;
use crate::store::Store;

/// The bundles in the store.
pub struct Bundles {
    store: Arc<Store>,
}

impl Bundles {
    /// The bundles of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// Keeps `bytes` once the store finds them a whole tar.gz or zip.
    pub fn keep(&self, bytes: &[u8]) -> Result<Bundle, DaemonError> {
        Ok(self.store.put_bundle(bytes)?)
    }

    /// Every bundle kept, by SHA-256.
    pub fn list(&self) -> Result<Vec<String>, DaemonError> {
        Ok(self.store.bundles()?)
    }

    /// Drops bundle `sha256`.
    pub fn remove(&self, sha256: &str) -> Result<(), DaemonError> {
        Ok(self.store.remove_bundle(sha256)?)
    }
}
