//! A virtio-net interface: which tap carries it and which addresses the guest may use.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RateLimit;

/// A string that is not a unicast MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected a unicast address such as 52:54:00:12:34:56")]
pub struct MacError(pub String);

/// An Ethernet MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress(pub [u8; 6]);

impl FromStr for MacAddress {
    type Err = MacError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || MacError(text.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        // A guest interface needs a unicast address.
        if parts.next().is_some() || bytes[0] & 1 != 0 || bytes == [0; 6] {
            return Err(bad());
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for MacAddress {
    type Error = MacError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl From<MacAddress> for String {
    fn from(mac: MacAddress) -> Self {
        mac.to_string()
    }
}

/// One network interface of the microVM, in the order the guest enumerates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Tap interface to open by name (created when missing, which needs CAP_NET_ADMIN).
    #[serde(default)]
    pub tap: Option<String>,
    /// Or: descriptor of a tap the parent process opened (IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR) and passed down, so the VMM needs no network privileges.
    #[serde(default)]
    pub tap_fd: Option<i32>,
    /// The interface's MAC address; frames from any other source MAC are dropped.
    pub mac: MacAddress,
    /// The guest's IPv4 address; when set, IPv4 and ARP from any other source are dropped.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// Frame rate limit, both directions together.
    #[serde(default)]
    pub rate_limit: RateLimit,
}

/// What is wrong with a network interface's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetConfigError {
    /// Not a unicast MAC address.
    #[error(transparent)]
    Mac(#[from] MacError),
    /// Neither or both of tap and tap_fd.
    #[error("a network interface needs exactly one of tap=NAME and fd=N")]
    TapChoice,
    /// The `--net` syntax is wrong.
    #[error("invalid --net {0:?}: expected tap=NAME|fd=N,mac=MAC[,ip=IPV4][,ops=N][,bw=BYTES]")]
    Syntax(String),
}

impl NetConfig {
    /// Checks that exactly one tap source is given.
    pub fn validate(&self) -> Result<(), NetConfigError> {
        match (&self.tap, self.tap_fd) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(NetConfigError::TapChoice),
        }
    }
}

/// Parses the `--net` flag: `tap=NAME|fd=N,mac=MAC[,ip=IPV4][,ops=N][,bw=BYTES]` (ops and bw
/// are per-second limits).
impl FromStr for NetConfig {
    type Err = NetConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || NetConfigError::Syntax(text.to_owned());
        let (mut tap, mut tap_fd, mut mac, mut ipv4) = (None, None, None, None);
        let mut rate_limit = RateLimit::default();
        for item in text.split(',') {
            match item.split_once('=').ok_or_else(syntax)? {
                ("tap", name) => tap = Some(name.to_owned()),
                ("fd", fd) => tap_fd = Some(fd.parse().map_err(|_| syntax())?),
                ("mac", value) => mac = Some(value.parse()?),
                ("ip", ip) => ipv4 = Some(ip.parse().map_err(|_| syntax())?),
                (key, value) if rate_limit.apply_flag(key, value).map_err(|_| syntax())? => {}
                _ => return Err(syntax()),
            }
        }
        let config = NetConfig { tap, tap_fd, mac: mac.ok_or_else(syntax)?, ipv4, rate_limit };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses() {
        let mac: MacAddress = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.0, [0x52, 0x54, 0, 0xab, 0xcd, 1]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "5:54:00:ab:cd:01",
            "zz:54:00:ab:cd:01",
        ] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flag_syntax() {
        let n: NetConfig = "tap=nt0,mac=52:54:00:00:00:02,ip=10.0.7.2".parse().unwrap();
        assert_eq!(n.tap.as_deref(), Some("nt0"));
        assert_eq!(n.ipv4, Some(Ipv4Addr::new(10, 0, 7, 2)));
        let n: NetConfig = "fd=5,mac=52:54:00:00:00:02,bw=1000000".parse().unwrap();
        assert_eq!((n.tap_fd, n.ipv4, n.rate_limit.bytes_per_sec), (Some(5), None, Some(1_000_000)));
        assert_eq!("mac=52:54:00:00:00:02".parse::<NetConfig>(), Err(NetConfigError::TapChoice));
        assert_eq!("tap=a,fd=3,mac=52:54:00:00:00:02".parse::<NetConfig>(), Err(NetConfigError::TapChoice));
        for bad in [
            "tap=a",
            "tap=a,mac=52:54:00:00:00:02,ip=300.1.1.1",
            "tap=a,mac=52:54:00:00:00:02,mtu=9000",
            "tap",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_form() {
        let n: NetConfig = serde_json::from_str(r#"{"tap": "nt0", "mac": "52:54:00:00:00:02"}"#).unwrap();
        assert_eq!(n.mac.0[5], 2);
        assert!(serde_json::from_str::<NetConfig>(r#"{"tap": "nt0", "mac": "ff:ff:ff:ff:ff:ff"}"#).is_err());
    }
}
