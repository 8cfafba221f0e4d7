//! IPv4 networks in CIDR notation, and the MAC address an instance's interface is given
//! (derived from its address).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::vmm::api::config::MacAddress;

/// Smallest and largest subnet prefixes: a /30 leaves one instance address.
pub const SUBNET_PREFIXES: std::ops::RangeInclusive<u8> = 8..=30;

/// An IPv4 network: `10.0.7.0/24`, `0.0.0.0/0` or `192.168.1.5/32` (a subnet's prefix is
/// bounded by [`SUBNET_PREFIXES`] where subnets are made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a CIDR string is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error("invalid CIDR {0:?}: expected a.b.c.d/prefix")]
    Syntax(String),
    /// The prefix is longer than 32.
    #[error("prefix /{0} out of range: at most /32")]
    Prefix(u8),
    /// Host bits are set.
    #[error("{given} has host bits set: the network is {network}")]
    HostBits {
        /// What was given.
        given: String,
        /// The network it denotes.
        network: String,
    },
}

impl Ipv4Cidr {
    /// The mask of the prefix.
    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// Whether `ip` lies in the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The usable host addresses (all but the network and broadcast addresses), in order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(text.to_owned());
        let (ip, prefix) = text.split_once('/').ok_or_else(syntax)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| syntax())?;
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(CidrError::Prefix(prefix));
        }
        let cidr = Self { network: ip, prefix };
        let network = Ipv4Addr::from(u32::from(ip) & cidr.mask());
        if network != ip {
            return Err(CidrError::HostBits {
                given: text.to_owned(),
                network: format!("{network}/{prefix}"),
            });
        }
        Ok(cidr)
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl From<Ipv4Cidr> for String {
    fn from(cidr: Ipv4Cidr) -> Self {
        cidr.to_string()
    }
}

/// The metadata service's address, held by every subnet's bridge (EC2's link-local one,
/// so a guest's route to it is on the link, whatever its subnet).
pub const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The metadata service's TCP port.
pub const METADATA_PORT: u16 = 80;

/// The MAC address of the interface holding `ip`: locally administered, `02:4e` ("N")
/// then the four address bytes. Subnets never overlap, so addresses, and with them MACs,
/// are unique on the host, and a restart derives the same ones.
pub fn mac_for(ip: Ipv4Addr) -> MacAddress {
    let [a, b, c, d] = ip.octets();
    MacAddress([0x02, 0x4e, a, b, c, d])
}

/// The kernel command-line `ip=` entry that configures `device` statically at boot, for
/// kernels with IP autoconfiguration (`CONFIG_IP_PNP`): no agent and no DHCP needed.
pub fn kernel_ip_param(ip: Ipv4Addr, cidr: &Ipv4Cidr, gateway: Ipv4Addr, device: &str) -> String {
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(cidr.prefix())).unwrap_or(0));
    format!("ip={ip}::{gateway}:{mask}::{device}:off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_arithmetic() {
        let net: Ipv4Cidr = "10.0.7.0/24".parse().unwrap();
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 0, 7, 255));
        assert!(net.contains(Ipv4Addr::new(10, 0, 7, 9)) && !net.contains(Ipv4Addr::new(10, 0, 8, 1)));
        assert_eq!(net.hosts().count(), 254);
        assert_eq!(net.hosts().next(), Some(Ipv4Addr::new(10, 0, 7, 1)));
        let small: Ipv4Cidr = "192.168.1.4/30".parse().unwrap();
        assert_eq!(
            small.hosts().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 168, 1, 5), Ipv4Addr::new(192, 168, 1, 6)]
        );
        assert!(net.overlaps(&"10.0.0.0/16".parse().unwrap()));
        assert!(!net.overlaps(&"10.0.8.0/24".parse().unwrap()));
        assert_eq!(serde_json::to_string(&net).unwrap(), "\"10.0.7.0/24\"");
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert_eq!(
            "10.0.7.1/24".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits { given: "10.0.7.1/24".into(), network: "10.0.7.0/24".into() })
        );
        assert_eq!("10.0.0.0/33".parse::<Ipv4Cidr>(), Err(CidrError::Prefix(33)));
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().map(|c| c.to_string()), Ok("0.0.0.0/0".into()));
        assert!("192.168.1.5/32".parse::<Ipv4Cidr>().unwrap().contains("192.168.1.5".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0/24", "10.0.0.0/x", "", "/24", "300.0.0.0/24"] {
            assert!(matches!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn kernel_ip_parameter() {
        let net: Ipv4Cidr = "10.0.7.0/24".parse().unwrap();
        assert_eq!(
            kernel_ip_param(Ipv4Addr::new(10, 0, 7, 5), &net, Ipv4Addr::new(10, 0, 7, 1), "eth0"),
            "ip=10.0.7.5::10.0.7.1:255.255.255.0::eth0:off"
        );
    }

    #[test]
    fn macs_follow_addresses() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 0, 7, 2)).to_string(), "02:4e:0a:00:07:02");
        assert_ne!(mac_for(Ipv4Addr::new(10, 0, 7, 2)), mac_for(Ipv4Addr::new(10, 0, 7, 3)));
    }
}
