//! The contract between the daemon and `nuage-vmm`, in one place. The daemon reaches the
//! data plane only through it:
//!
//! - [`config`]: the VM a `nuage-vmm` process runs, [`config::VmConfig`], which the daemon
//!   writes as a JSON file and names with `--config` (the flags exist for people and
//!   scripts); a tap the daemon opened is inherited as a descriptor the file names;
//! - [`control`]: the control socket of a running VMM, its requests and replies, the
//!   server and the client;
//! - [`ExitStatus`]: how the process ended, which tells the supervisor whether to restart
//!   the guest (it rebooted), mark it stopped, or report a failure;
//! - [`LOG_LIMIT`]: how much one run writes to its log (stderr), so the supervisor knows
//!   when to move a log aside.

pub mod config;
pub mod control;
mod exit_status;

pub use exit_status::ExitStatus;

/// Most bytes one `nuage-vmm` run writes to its stderr, whatever its guest does; the
/// supervisor moves a log that reached it aside before the next run.
pub const LOG_LIMIT: u64 = 1 << 20;
