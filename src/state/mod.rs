//! Persistent state: resource ids, small JSON records replaced atomically (the store and
//! the network plane), and the daemon's embedded database of instances.

pub mod clock;
#[cfg(feature = "daemon")]
pub mod db;
#[cfg(feature = "daemon")]
pub mod document;
pub mod file;
pub mod id;
pub mod instance;
#[cfg(feature = "daemon")]
pub mod keypair;
#[cfg(feature = "daemon")]
pub mod tag;
