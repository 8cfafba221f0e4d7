//! nuage: a self-hosted "EC2 in a box" for one Linux host.
//!
//! - [`vmm`]: the virtual machine monitor, one `nuage-vmm` process per instance;
//! - [`storage`]: block backends and the store of images, volumes and snapshots;
//! - [`net`]: subnets, addresses, bridges and taps, NAT and Elastic IPs;
//! - [`state`]: persistent records and the daemon's database;
//! - [`daemon`], [`api`], [`cli`]: `nuaged`, its gRPC API and the `nuage` client (feature
//!   `daemon`, on by default).

#[cfg(feature = "daemon")]
pub mod api;
#[cfg(feature = "daemon")]
pub mod cli;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod net;
pub mod state;
pub mod storage;
pub mod vmm;
