//! Instances as the daemon records them, and the EC2 life cycle they follow:
//!
//! ```text
//! pending -> running -> stopping -> stopped -> pending ...
//!    \          \                      /
//!     `----------`-> shutting-down -> terminated
//! ```

use std::fmt;
use std::str::FromStr;

/// Where an instance is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Being prepared: volume, process.
    Pending,
    /// Its VMM runs.
    Running,
    /// Its VMM is asked to stop.
    Stopping,
    /// No VMM; the root volume stays.
    Stopped,
    /// Its VMM is stopped for good.
    ShuttingDown,
    /// Gone; the record stays for a while so callers can see what happened.
    Terminated,
}

impl InstanceState {
    /// Every state, in life-cycle order.
    pub const ALL: [InstanceState; 6] =
        [Self::Pending, Self::Running, Self::Stopping, Self::Stopped, Self::ShuttingDown, Self::Terminated];

    /// The EC2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
        }
    }

    /// Whether the life cycle allows going from `self` to `next`.
    pub fn can_become(self, next: InstanceState) -> bool {
        use InstanceState::*;
        matches!(
            (self, next),
            (Pending, Running | Stopped | ShuttingDown)
                | (Running, Stopping | Stopped | ShuttingDown | Pending)
                | (Stopping, Stopped | ShuttingDown)
                | (Stopped, Pending | ShuttingDown)
                | (ShuttingDown, Terminated)
        )
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown instance state {s:?}"))
    }
}

/// One instance's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// `i-` and hex digits.
    pub id: String,
    /// The image it boots.
    pub image_id: String,
    /// The instance type's name.
    pub instance_type: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory.
    pub memory_mib: u32,
    /// Its root volume (a clone of the image).
    pub root_volume_id: String,
    /// The subnet its network interface is on (empty: none).
    pub subnet_id: String,
    /// Its private address there, once leased.
    pub private_ip: Option<std::net::Ipv4Addr>,
    /// The key pair whose public key it was launched with (empty: none).
    pub key_name: String,
    /// Life-cycle state.
    pub state: InstanceState,
    /// Why it last changed state.
    pub state_reason: String,
    /// The running VMM's process id.
    pub pid: Option<i32>,
    /// Seconds since the epoch.
    pub launch_time: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in InstanceState::ALL {
            assert_eq!(state.as_str().parse::<InstanceState>(), Ok(state));
        }
        assert!("booting".parse::<InstanceState>().is_err());
    }

    #[test]
    fn the_life_cycle_only_moves_forward() {
        use InstanceState::*;
        assert!(Stopped.can_become(Pending) && Running.can_become(Stopping));
        assert!(!Terminated.can_become(Pending), "terminated is final");
        assert!(!Stopped.can_become(Stopping) && !Stopped.can_become(Running));
        assert!(!Pending.can_become(Stopping));
    }
}
