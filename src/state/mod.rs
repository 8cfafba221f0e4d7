//! Persistent state: small JSON records replaced atomically (the storage and network
//! modules), and the daemon's embedded database of instances.

#[cfg(feature = "daemon")]
pub mod db;
pub mod file;
pub mod instance;
#[cfg(feature = "daemon")]
pub mod keypair;
