//! nuage: a self-hosted "EC2 in a box" for one Linux host.
//!
//! Today the crate holds the virtual machine monitor ([`vmm`]) and the block backends of
//! [`storage`]; networking, the state store, the API daemon and the CLI join it as separate
//! top-level modules.

pub mod net;
pub mod storage;
pub mod vmm;
