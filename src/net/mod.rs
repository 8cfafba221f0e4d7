//! Host networking: subnets with their bridges, instance addresses, and the tap devices
//! instances' network interfaces sit on. Every operation can run inside a named network
//! namespace, which is also how the tests run it.

pub mod addr;
pub mod dhcp;
pub mod firewall;
pub mod ipam;
pub mod link;
pub mod plane;
pub mod security_groups;
pub mod socket;
#[cfg(test)]
mod testing;

use std::path::{Path, PathBuf};

/// Errors of network operations (the API maps each to an EC2 error name).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No such subnet or lease.
    #[error("{0} not found")]
    NotFound(String),
    /// A CIDR overlapping an existing subnet.
    #[error("{0}")]
    Conflict(String),
    /// A malformed or unassignable value.
    #[error("{0}")]
    InvalidParameter(String),
    /// The requested address is leased already.
    #[error("{0} is already assigned")]
    AddressInUse(String),
    /// The subnet has no free address.
    #[error("no free address in {0}")]
    Exhausted(String),
    /// No such Elastic IP.
    #[error("{0} not found")]
    AllocationNotFound(String),
    /// The Elastic IP pool is used up.
    #[error("{0}")]
    AddressLimitExceeded(String),
    /// Something still depends on the resource.
    #[error("{0}")]
    DependencyViolation(String),
    /// No such security group.
    #[error("security group {0} not found")]
    GroupNotFound(String),
    /// A security group of that name exists.
    #[error("{0}")]
    GroupDuplicate(String),
    /// The group holds that rule already.
    #[error("{0}")]
    PermissionDuplicate(String),
    /// The group has no such rule.
    #[error("{0}")]
    PermissionNotFound(String),
    /// The host holds as many security groups as it may.
    #[error("{0}")]
    GroupLimit(String),
    /// The group holds as many rules as it may.
    #[error("{0}")]
    RulesLimit(String),
    /// More groups for one instance than it may be in.
    #[error("{0}")]
    GroupsPerInstanceLimit(String),
    /// The resource may not be deleted (the default security group).
    #[error("{0}")]
    CannotDelete(String),
    /// A network command failed.
    #[error("{command}: {stderr}")]
    Command {
        /// What ran.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// An I/O error on a state file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl NetError {
    /// Wraps an I/O error on `path`.
    pub fn io(path: &Path) -> impl Fn(std::io::Error) -> NetError + '_ {
        move |source| NetError::Io { path: path.to_owned(), source }
    }
}

/// Runs `work` inside network namespace `netns` (`None`: the caller's own), on a
/// short-lived thread so the caller's namespace is never touched. Sockets and taps opened
/// there stay bound to that namespace wherever their descriptors go.
pub fn in_netns<T, F>(netns: Option<&str>, work: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    use std::os::fd::AsRawFd;
    let Some(name) = netns else { return work() };
    let path = format!("/var/run/netns/{name}");
    let thread = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        // SAFETY: setns only changes this thread's network namespace; the thread ends here.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        work()
    });
    thread.join().map_err(|_| std::io::Error::other("a thread in a network namespace panicked"))?
}
