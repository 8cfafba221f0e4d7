//! Bridges and tap devices, made with iproute2 (`ip`, whose `-j` JSON output is what is
//! read back, never its text) in the host's or a named network namespace. Creation is
//! idempotent: after a restart, what exists is adopted; taps nothing claims are removed.

use std::collections::HashSet;
use std::process::Command;

use serde::Deserialize;

use super::addr::METADATA_ADDRESS;
use super::ipam::Subnet;
use super::NetError;

/// Names of the taps nuage makes start with this.
pub const TAP_PREFIX: &str = "ntap-";

/// Runs link operations in one network namespace.
#[derive(Debug, Clone, Default)]
pub struct Links {
    netns: Option<String>,
}

#[derive(Deserialize)]
struct LinkInfo {
    ifname: String,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Deserialize)]
struct AddrInfo {
    #[serde(default)]
    addr_info: Vec<Addr>,
}

#[derive(Deserialize)]
struct RouteInfo {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
}

/// A network the host reaches (a route of its main table other than the default one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The network's address.
    pub network: std::net::Ipv4Addr,
    /// Its prefix length (32 for a route to one address).
    pub prefix: u8,
    /// The interface it goes through, when it names one.
    pub dev: Option<String>,
}

#[derive(Deserialize)]
struct Addr {
    local: String,
    prefixlen: u8,
}

/// The tap name of an interface owner (an instance id): `ntap-` and up to 10 characters.
pub fn tap_name(owner: &str) -> String {
    let tail: String = owner.chars().rev().filter(char::is_ascii_alphanumeric).take(10).collect();
    format!("{TAP_PREFIX}{}", tail.chars().rev().collect::<String>())
}

impl Links {
    /// Links in the namespace `netns` (`None`: the process's own).
    pub fn new(netns: Option<String>) -> Self {
        Self { netns }
    }

    fn ip(&self, args: &[&str]) -> Result<String, NetError> {
        let mut command = Command::new("ip");
        if let Some(netns) = &self.netns {
            command.args(["-n", netns]);
        }
        command.args(args);
        let text = format!("ip {}", args.join(" "));
        let out = command
            .output()
            .map_err(|e| NetError::Command { command: text.clone(), stderr: e.to_string() })?;
        if !out.status.success() {
            return Err(NetError::Command {
                command: text,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn links(&self) -> Result<Vec<LinkInfo>, NetError> {
        let json = self.ip(&["-j", "link", "show"])?;
        serde_json::from_str(&json)
            .map_err(|e| NetError::Command { command: "ip -j link show".into(), stderr: e.to_string() })
    }

    fn link(&self, name: &str) -> Result<Option<LinkInfo>, NetError> {
        Ok(self.links()?.into_iter().find(|l| l.ifname == name))
    }

    /// Whether an interface named `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool, NetError> {
        Ok(self.link(name)?.is_some())
    }

    /// Makes the subnet's bridge exist, hold the gateway and metadata service addresses and
    /// be up; adopts what is already there.
    pub fn ensure_bridge(&self, subnet: &Subnet) -> Result<(), NetError> {
        let bridge = subnet.bridge.as_str();
        if !self.exists(bridge)? {
            self.ip(&["link", "add", "name", bridge, "type", "bridge"])?;
        }
        let gateway = subnet.gateway.to_string();
        let present =
            self.addresses(bridge)?.iter().any(|a| a.local == gateway && a.prefixlen == subnet.cidr.prefix());
        if !present {
            self.ip(&["addr", "add", &format!("{gateway}/{}", subnet.cidr.prefix()), "dev", bridge])?;
        }
        self.add_address(bridge, METADATA_ADDRESS)?;
        self.ip(&["link", "set", bridge, "up"])?;
        Ok(())
    }

    /// Creates a persistent tap `name` owned by `uid` (so an unprivileged VMM can open it),
    /// with virtio-net headers, attached to `bridge` and up. An existing tap is adopted.
    pub fn create_tap(&self, name: &str, uid: u32, bridge: &str) -> Result<(), NetError> {
        if !name.starts_with(TAP_PREFIX) || name.len() > 15 {
            return Err(NetError::InvalidParameter(format!("tap name {name:?}")));
        }
        if !self.exists(name)? {
            self.ip(&["tuntap", "add", "dev", name, "mode", "tap", "user", &uid.to_string(), "vnet_hdr"])?;
        }
        self.ip(&["link", "set", name, "master", bridge, "up"])?;
        Ok(())
    }

    /// Puts `ip`/32 on interface `dev` (an Elastic IP on the uplink, the metadata address
    /// on a bridge), if not there yet.
    pub fn add_address(&self, dev: &str, ip: std::net::Ipv4Addr) -> Result<(), NetError> {
        if !self.has_address(dev, ip)? {
            self.ip(&["addr", "add", &format!("{ip}/32"), "dev", dev])?;
        }
        Ok(())
    }

    /// Removes `ip`/32 from interface `dev`, if there.
    pub fn remove_address(&self, dev: &str, ip: std::net::Ipv4Addr) -> Result<(), NetError> {
        if self.has_address(dev, ip)? {
            self.ip(&["addr", "del", &format!("{ip}/32"), "dev", dev])?;
        }
        Ok(())
    }

    fn addresses(&self, dev: &str) -> Result<Vec<Addr>, NetError> {
        let json = self.ip(&["-j", "-4", "addr", "show", "dev", dev])?;
        let addrs: Vec<AddrInfo> = serde_json::from_str(&json)
            .map_err(|e| NetError::Command { command: "ip -j addr show".into(), stderr: e.to_string() })?;
        Ok(addrs.into_iter().flat_map(|a| a.addr_info).collect())
    }

    fn has_address(&self, dev: &str, ip: std::net::Ipv4Addr) -> Result<bool, NetError> {
        Ok(self.addresses(dev)?.iter().any(|a| a.local == ip.to_string()))
    }

    /// Removes interface `name` if it exists.
    pub fn delete(&self, name: &str) -> Result<(), NetError> {
        if self.exists(name)? {
            self.ip(&["link", "del", name])?;
        }
        Ok(())
    }

    /// Removes the taps nuage made that no one claims any more (left by a crash); returns
    /// their names.
    pub fn remove_stale_taps(&self, claimed: &HashSet<String>) -> Result<Vec<String>, NetError> {
        let stale: Vec<String> = self
            .links()?
            .into_iter()
            .map(|l| l.ifname)
            .filter(|n| n.starts_with(TAP_PREFIX) && !claimed.contains(n))
            .collect();
        for name in &stale {
            self.ip(&["link", "del", name])?;
            tracing::warn!(tap = name, "removed a tap nothing claims");
        }
        Ok(stale)
    }

    /// The IPv4 networks the host routes to (its main table, the default route left out).
    pub fn routes(&self) -> Result<Vec<HostRoute>, NetError> {
        let json = self.ip(&["-j", "-4", "route", "show"])?;
        let routes: Vec<RouteInfo> = serde_json::from_str(&json).map_err(|e| NetError::Command {
            command: "ip -j -4 route show".into(),
            stderr: e.to_string(),
        })?;
        Ok(routes
            .into_iter()
            .filter_map(|route| {
                let (network, prefix) = route.dst.split_once('/').unwrap_or((&route.dst, "32"));
                Some(HostRoute {
                    network: network.parse().ok()?,
                    prefix: prefix.parse().ok()?,
                    dev: route.dev,
                })
            })
            .collect())
    }

    /// The bridge `name` is attached to, and whether it is up.
    pub fn attachment(&self, name: &str) -> Result<Option<(Option<String>, bool)>, NetError> {
        Ok(self.link(name)?.map(|l| (l.master, l.flags.iter().any(|f| f == "UP"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ipam::Ipam;
    use crate::net::testing::Netns;

    #[test]
    fn tap_names_fit_linux_limits() {
        assert_eq!(tap_name("i-0123456789abcdef0"), "ntap-789abcdef0");
        assert!(tap_name("i-1").len() <= 15);
    }

    #[test]
    fn bridges_and_taps_are_made_adopted_and_cleaned_up_in_a_namespace() {
        let ns = Netns::new("links");
        let dir = tempfile::tempdir().unwrap();
        let subnet =
            Ipam::open(dir.path()).unwrap().create_subnet("10.77.0.0/24".parse().unwrap(), None).unwrap();
        let links = Links::new(Some(ns.0.clone()));
        links.ensure_bridge(&subnet).unwrap();
        links.ensure_bridge(&subnet).unwrap(); // a restart adopts it
        let addrs = links.ip(&["-4", "-o", "addr", "show", "dev", &subnet.bridge]).unwrap();
        assert_eq!(addrs.matches("10.77.0.1/24").count(), 1, "{addrs}");

        links.create_tap("ntap-a", 0, &subnet.bridge).unwrap();
        links.create_tap("ntap-a", 0, &subnet.bridge).unwrap();
        links.create_tap("ntap-b", 0, &subnet.bridge).unwrap();
        assert_eq!(links.attachment("ntap-a").unwrap(), Some((Some(subnet.bridge.clone()), true)));
        assert!(links.create_tap("eth0", 0, &subnet.bridge).is_err(), "only nuage's names");

        // After a crash only ntap-a is claimed: ntap-b goes.
        let claimed: HashSet<String> = ["ntap-a".to_owned()].into();
        assert_eq!(links.remove_stale_taps(&claimed).unwrap(), vec!["ntap-b".to_owned()]);
        assert!(links.exists("ntap-a").unwrap() && !links.exists("ntap-b").unwrap());
        links.delete("ntap-a").unwrap();
        links.delete("ntap-a").unwrap();
        assert!(!links.exists("ntap-a").unwrap());
        // Nothing leaked into the host's namespace.
        assert!(!Links::default().exists(&subnet.bridge).unwrap());
    }

    #[test]
    fn failures_name_the_command() {
        let ns = Netns::new("errors");
        let err = Links::new(Some(ns.0.clone())).create_tap("ntap-x", 0, "no-such-br").unwrap_err();
        assert!(err.to_string().starts_with("ip link set ntap-x master no-such-br"), "{err}");
    }
}
