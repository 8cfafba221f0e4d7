//! Persistent state. Today: small JSON records replaced atomically, for the storage and
//! network modules; the daemon's embedded database joins here.

pub mod file;
