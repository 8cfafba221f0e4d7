//! The daemon's configuration: embedded defaults, optionally overridden by a JSON file and
//! by flags.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::quotas::Quotas;

/// A named vCPU and memory preset.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceType {
    /// `t.nano`, ...
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
}

/// Where the network plane runs and how it reaches the LAN.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// A named network namespace holding bridges, taps and firewall (`None`: the host's).
    pub netns: Option<String>,
    /// The LAN-facing interface Elastic IPs are put on.
    pub uplink: Option<String>,
    /// LAN addresses for Elastic IPs.
    pub address_pool: Vec<Ipv4Addr>,
}

/// The API on TCP, for clients on other hosts: always with mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Where to listen.
    pub address: std::net::SocketAddr,
    /// The daemon's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA (PEM) whose certificates clients must present.
    pub client_ca: PathBuf,
    /// Clients whose certificates have these SHA-1 fingerprints (as the audit trail and
    /// `openssl x509 -fingerprint -sha1` show them) may only read (Describe, Get, Watch).
    #[serde(default)]
    pub read_only_clients: Vec<String>,
}

/// How `nuaged` runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Images, volumes, the database and the instances' directories.
    pub state_dir: PathBuf,
    /// The API's Unix socket (mode 0660).
    pub socket: PathBuf,
    /// The group the socket is given to, when it exists: its members may call the API.
    pub socket_group: String,
    /// The group the read-only socket ([`DaemonConfig::read_only_socket`]) is given to,
    /// when it exists: its members may call the API's reads (Describe, Get, Watch).
    pub read_only_socket_group: String,
    /// The `nuage-vmm` binary.
    pub vmm: PathBuf,
    /// The `nuage-lb` binary, which serves each load balancer.
    pub balancer: PathBuf,
    /// The instance types, the first being the default.
    pub instance_types: Vec<InstanceType>,
    /// The most instances one RunInstances call may launch.
    pub max_count: u32,
    /// How long a stop waits for the guest to shut down (after Ctrl+Alt+Del) before the
    /// VMM is stopped from outside, in seconds.
    pub stop_timeout_secs: u64,
    /// The network plane.
    pub network: NetworkConfig,
    /// Where Prometheus metrics are served over HTTP (`GET /metrics`); none by default.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The API on TCP with mutual TLS, besides the Unix socket; none by default.
    pub tcp: Option<TcpConfig>,
    /// Where RegisterImage takes image files from (files uploaded over the API, or put
    /// there by the operator); default `imports/` in the state directory. The daemon keeps
    /// it private (0700): only root can place files there.
    pub import_dir: Option<PathBuf>,
    /// The largest file one upload may bring, in bytes.
    pub max_upload_bytes: u64,
    /// What the host may hold: volume sizes, instances, vCPUs and memory.
    pub quotas: Quotas,
    /// The region this host is, as guests read it from the metadata service (its one
    /// availability zone is the region and `a`).
    pub region: String,
    /// The jails the instances' VMMs run in.
    pub jail: JailUsers,
}

/// Each instance's VMM runs jailed ([`crate::vmm::jail`]) as a user of its own, with the
/// group of the same number: the lowest of `uids` users from `first_uid` on that no other
/// instance holds. Numbers no account of the host should have (systemd leaves
/// 1879048192–2147352575 unassigned).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JailUsers {
    /// Off, VMMs run unjailed as the daemon's user (without capabilities): for debugging
    /// and for measuring what the jail costs, never for guests one does not trust.
    pub enabled: bool,
    /// The first user.
    pub first_uid: u32,
    /// How many users there are, so how many instances may run at once.
    pub uids: u32,
}

impl JailUsers {
    /// Whether `uid` is one of the jails' users.
    pub fn holds(&self, uid: u32) -> bool {
        uid.checked_sub(self.first_uid).is_some_and(|n| n < self.uids)
    }
}

impl Default for JailUsers {
    fn default() -> Self {
        Self { enabled: true, first_uid: 1_900_000_000, uids: 65_536 }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let types = [
            ("t.nano", 1, 256),
            ("t.micro", 1, 512),
            ("t.small", 1, 1024),
            ("t.medium", 2, 2048),
            ("t.large", 2, 4096),
        ];
        Self {
            state_dir: PathBuf::from("/var/lib/nuage"),
            socket: PathBuf::from("/run/nuage/nuaged.sock"),
            socket_group: "nuage".into(),
            read_only_socket_group: "nuage-readonly".into(),
            vmm: sibling_binary("nuage-vmm"),
            balancer: sibling_binary("nuage-lb"),
            instance_types: types
                .into_iter()
                .map(|(name, vcpus, memory_mib)| InstanceType { name: name.into(), vcpus, memory_mib })
                .collect(),
            max_count: 32,
            stop_timeout_secs: 10,
            network: NetworkConfig::default(),
            metrics_address: None,
            tcp: None,
            import_dir: None,
            max_upload_bytes: 64 << 30,
            quotas: Quotas::default(),
            region: "nuage-1".into(),
            jail: JailUsers::default(),
        }
    }
}

/// `name` in the directory of the running binary (where `cargo build` and packages put
/// nuage's binaries side by side), or on `PATH`.
fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

impl DaemonConfig {
    /// The defaults overridden by the JSON file `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The instance type `name` (empty: the default).
    pub fn instance_type(&self, name: &str) -> Option<&InstanceType> {
        if name.is_empty() {
            return self.instance_types.first();
        }
        self.instance_types.iter().find(|t| t.name == name)
    }

    /// Where RegisterImage takes image files from.
    pub fn import_dir(&self) -> PathBuf {
        self.import_dir.clone().unwrap_or_else(|| self.state_dir.join("imports"))
    }

    /// The read-only socket, beside the API's: `nuaged.sock` → `nuaged-readonly.sock`.
    pub fn read_only_socket(&self) -> PathBuf {
        let stem = self.socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.socket.with_file_name(format!("{stem}-readonly.sock"))
    }

    /// How long a stop waits for the guest before stopping its VMM.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_timeout_secs)
    }
}
