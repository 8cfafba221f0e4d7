//! nuage: a self-hosted "EC2 in a box" for one Linux host.
//!
//! Today the crate holds the virtual machine monitor ([`vmm`]), [`storage`] (block backends
//! and the store of images, volumes and snapshots), [`net`] (taps, addresses, subnets) and
//! [`state`] (persistent records); the API daemon and the CLI join them as separate
//! top-level modules.

pub mod net;
pub mod state;
pub mod storage;
pub mod vmm;
