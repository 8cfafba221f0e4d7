//! nuage: a self-hosted "EC2 in a box" for one Linux host.
//!
//! - [`vmm`]: the virtual machine monitor, one `nuage-vmm` process per instance, and its
//!   contract with the daemon ([`vmm::api`]);
//! - [`block`]: the disk formats (raw, qcow2) the VMM's block devices read and write;
//! - [`store`]: images, volumes and snapshots;
//! - [`net`]: subnets, addresses, bridges and taps, NAT and Elastic IPs;
//! - [`state`]: persistent records and the daemon's database;
//! - [`daemon`], [`api`], [`cli`]: `nuaged`, its gRPC API and the `nuage` client (feature
//!   `daemon`, on by default);
//! - [`balancer`]: Elastic Load Balancing, the controller that keeps each load balancer's
//!   `nuage-lb` serving what the API asked;
//! - [`environments`]: Elastic Beanstalk's controller: applications and their versions'
//!   source bundles;
//! - [`metadata`]: the instance metadata service (IMDSv2) the daemon serves its guests;
//! - [`lb`]: `nuage-lb`, the load balancers' data plane, one process per load balancer.

#[cfg(feature = "daemon")]
pub mod api;
#[cfg(feature = "daemon")]
pub mod autoscaling;
#[cfg(feature = "daemon")]
pub mod balancer;
pub mod block;
#[cfg(feature = "daemon")]
pub mod cli;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod environments;
#[cfg(feature = "daemon")]
pub mod lb;
#[cfg(feature = "daemon")]
pub mod metadata;
pub mod net;
pub mod state;
pub mod store;
pub mod vmm;
