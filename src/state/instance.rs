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
    /// How its metadata service answers it.
    pub metadata_options: MetadataOptions,
}

/// What an instance was launched with that its metadata service serves as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaunchData {
    /// Its user data.
    pub user_data: Vec<u8>,
    /// Its key pair's public key (empty: none), kept in case the key pair is deleted or
    /// replaced later.
    pub public_key: String,
    /// The SHA-256 of the application source bundle it finds on a read-only disk
    /// (empty: none), as an environment's instances do.
    pub bundle: String,
}

/// Whether the metadata service asks for a session token (EC2's `HttpTokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// Every read carries a token (IMDSv2 only): a server-side request forgery in the guest
    /// cannot read credentials with a plain GET.
    #[default]
    Required,
    /// Token-less reads are answered too (IMDSv1).
    Optional,
}

impl HttpTokens {
    /// The EC2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::Optional => "optional",
        }
    }
}

impl FromStr for HttpTokens {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(Self::Required),
            "optional" => Ok(Self::Optional),
            _ => Err(format!("HttpTokens {s:?}: required or optional")),
        }
    }
}

/// How an instance's metadata service answers it (EC2's `InstanceMetadataOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetadataOptions {
    /// Whether reads need a token.
    pub http_tokens: HttpTokens,
    /// Whether the service answers at all (`HttpEndpoint=enabled`).
    pub http_endpoint: bool,
    /// The IP TTL of a token's response: how many hops away a caller may get one, so a
    /// container routed through the guest (one hop more) gets none by default.
    pub hop_limit: u8,
}

impl MetadataOptions {
    /// EC2's range of `HttpPutResponseHopLimit`.
    pub const HOP_LIMITS: std::ops::RangeInclusive<u8> = 1..=64;

    /// The EC2 name of `http_endpoint`.
    pub fn endpoint_str(&self) -> &'static str {
        if self.http_endpoint {
            "enabled"
        } else {
            "disabled"
        }
    }

    /// Parses EC2's `HttpEndpoint` value.
    pub fn parse_endpoint(text: &str) -> Result<bool, String> {
        match text {
            "enabled" => Ok(true),
            "disabled" => Ok(false),
            _ => Err(format!("HttpEndpoint {text:?}: enabled or disabled")),
        }
    }

    /// Checks a hop limit against EC2's range.
    pub fn check_hop_limit(limit: u32) -> Result<u8, String> {
        u8::try_from(limit)
            .ok()
            .filter(|limit| Self::HOP_LIMITS.contains(limit))
            .ok_or_else(|| format!("HttpPutResponseHopLimit {limit}: from 1 to 64"))
    }
}

/// A change to [`MetadataOptions`]: each field given replaces the option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MetadataChange {
    /// New `HttpTokens`.
    pub http_tokens: Option<HttpTokens>,
    /// New `HttpEndpoint`.
    pub http_endpoint: Option<bool>,
    /// New `HttpPutResponseHopLimit`, already checked.
    pub hop_limit: Option<u8>,
}

impl MetadataOptions {
    /// These options with `change` made.
    pub fn changed(self, change: &MetadataChange) -> Self {
        Self {
            http_tokens: change.http_tokens.unwrap_or(self.http_tokens),
            http_endpoint: change.http_endpoint.unwrap_or(self.http_endpoint),
            hop_limit: change.hop_limit.unwrap_or(self.hop_limit),
        }
    }
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self { http_tokens: HttpTokens::Required, http_endpoint: true, hop_limit: 1 }
    }
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
    fn metadata_options_parse_as_ec2_writes_them() {
        assert_eq!("optional".parse(), Ok(HttpTokens::Optional));
        assert!("Required".parse::<HttpTokens>().is_err());
        assert_eq!(MetadataOptions::parse_endpoint("disabled"), Ok(false));
        assert!(MetadataOptions::parse_endpoint("off").is_err());
        assert_eq!(MetadataOptions::check_hop_limit(64), Ok(64));
        for bad in [0, 65, 256, u32::MAX] {
            assert!(MetadataOptions::check_hop_limit(bad).is_err(), "{bad}");
        }
        let change = MetadataChange { hop_limit: Some(2), ..Default::default() };
        let changed = MetadataOptions::default().changed(&change);
        assert_eq!(
            (changed.http_tokens, changed.http_endpoint, changed.hop_limit),
            (HttpTokens::Required, true, 2)
        );
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
