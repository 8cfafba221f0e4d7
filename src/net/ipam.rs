//! Subnets and the addresses leased in them, persisted in one JSON record that every change
//! rewrites atomically under an exclusive file lock: concurrent allocations, in threads or
//! processes, never hand out an address twice, and a restart finds every lease.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::addr::{mac_for, Ipv4Cidr, SUBNET_PREFIXES};
use super::security_groups::SecurityGroup;
use super::NetError;
use crate::state::file::{create_private_dir, read_json, write_json};
use crate::state::id::new_id;
use crate::vmm::api::config::MacAddress;

/// A subnet: its addresses, gateway (the host's address on it) and bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// `subnet-` and hex digits.
    pub id: String,
    /// Its network.
    pub cidr: Ipv4Cidr,
    /// The host's address on the bridge; never leased.
    pub gateway: Ipv4Addr,
    /// The Linux bridge nuage owns for it.
    pub bridge: String,
}

/// An address leased to an owner (an instance's interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// The interface's MAC address, derived from the address.
    pub mac: MacAddress,
    /// Who holds it.
    pub owner: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) subnets: Vec<Subnet>,
    pub(super) leases: BTreeMap<String, Vec<Lease>>,
    #[serde(default)]
    pub(super) elastic_ips: Vec<ElasticIp>,
    #[serde(default)]
    pub(super) security_groups: Vec<SecurityGroup>,
    /// The security groups of each instance (by owner), as its interface applies them.
    #[serde(default)]
    pub(super) memberships: BTreeMap<String, Vec<String>>,
}

/// An Elastic IP: an address of the host's LAN pool, associated with an instance's
/// private address, held by a load balancer that listens on it, or free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElasticIp {
    /// `eipalloc-` and hex digits.
    pub id: String,
    /// The LAN address.
    pub public_ip: Ipv4Addr,
    /// The private address it forwards to, when associated.
    pub private_ip: Option<Ipv4Addr>,
    /// Who listens on it, when a load balancer holds it (its ARN): the address sits on the
    /// uplink for the balancer's own sockets and forwards nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

impl ElasticIp {
    /// Whether the address belongs on the uplink: something answers for it.
    pub fn in_use(&self) -> bool {
        self.private_ip.is_some() || self.holder.is_some()
    }

    fn refuse_if_held(&self) -> Result<(), NetError> {
        match &self.holder {
            Some(holder) => Err(NetError::AddressInUse(format!("{} (held by {holder})", self.public_ip))),
            None => Ok(()),
        }
    }
}

/// The address manager over one state directory.
#[derive(Debug)]
pub struct Ipam {
    state: PathBuf,
    lock: PathBuf,
}

/// An exclusive `flock` held until dropped.
struct Locked(File);

impl Locked {
    fn acquire(path: &Path) -> Result<Self, NetError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(NetError::io(path))?;
        // SAFETY: flock only acts on our own descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(NetError::io(path)(std::io::Error::last_os_error()));
        }
        Ok(Self(file))
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release the lock anyway.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Ipam {
    /// The address manager whose record lives in `dir`.
    pub fn open(dir: &Path) -> Result<Self, NetError> {
        create_private_dir(dir).map_err(NetError::io(dir))?;
        Ok(Self { state: dir.join("network.json"), lock: dir.join("network.lock") })
    }

    /// Runs `change` on the current state under the lock and saves the result.
    pub(super) fn transaction<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        let _lock = Locked::acquire(&self.lock)?;
        let mut state = self.load()?;
        let result = change(&mut state)?;
        write_json(&self.state, &state).map_err(NetError::io(&self.state))?;
        Ok(result)
    }

    pub(super) fn load(&self) -> Result<State, NetError> {
        if self.state.exists() {
            read_json(&self.state).map_err(NetError::io(&self.state))
        } else {
            Ok(State::default())
        }
    }

    /// Creates a subnet; refuses one overlapping another or a range reserved for something
    /// else ([`RESERVED_RANGES`]). The gateway defaults to the first host address.
    pub fn create_subnet(&self, cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> Result<Subnet, NetError> {
        if !SUBNET_PREFIXES.contains(&cidr.prefix()) {
            return Err(NetError::InvalidParameter(format!(
                "{cidr}: subnets are /{} to /{}",
                SUBNET_PREFIXES.start(),
                SUBNET_PREFIXES.end()
            )));
        }
        let reserved =
            RESERVED_RANGES.iter().find(|(network, prefix, _)| range_overlaps(*network, *prefix, &cidr));
        if let Some((network, prefix, what)) = reserved {
            return Err(NetError::InvalidParameter(format!(
                "{cidr} lies in {network}/{prefix}, {what}: not for subnets"
            )));
        }
        let gateway = gateway.or_else(|| cidr.hosts().next()).ok_or(NetError::Exhausted(cidr.to_string()))?;
        if !cidr.hosts().any(|h| h == gateway) {
            return Err(NetError::InvalidParameter(format!(
                "gateway {gateway} is not a host address of {cidr}"
            )));
        }
        self.transaction(|state| {
            if let Some(other) = state.subnets.iter().find(|s| s.cidr.overlaps(&cidr)) {
                return Err(NetError::Conflict(format!("{cidr} overlaps {} ({})", other.cidr, other.id)));
            }
            let id = new_id("subnet");
            let bridge = format!("nbr-{}", &id["subnet-".len().."subnet-".len() + 8]);
            let subnet = Subnet { id, cidr, gateway, bridge };
            state.subnets.push(subnet.clone());
            Ok(subnet)
        })
    }

    /// All subnets.
    pub fn subnets(&self) -> Result<Vec<Subnet>, NetError> {
        Ok(self.load()?.subnets)
    }

    /// The subnet `id`.
    pub fn subnet(&self, id: &str) -> Result<Subnet, NetError> {
        self.subnets()?.into_iter().find(|s| s.id == id).ok_or_else(|| NetError::NotFound(id.to_owned()))
    }

    /// Removes a subnet without leases.
    pub fn delete_subnet(&self, id: &str) -> Result<Subnet, NetError> {
        self.transaction(|state| {
            let index = state
                .subnets
                .iter()
                .position(|s| s.id == id)
                .ok_or_else(|| NetError::NotFound(id.to_owned()))?;
            if state.leases.get(id).is_some_and(|l| !l.is_empty()) {
                return Err(NetError::DependencyViolation(format!("{id} still has leased addresses")));
            }
            state.leases.remove(id);
            Ok(state.subnets.remove(index))
        })
    }

    /// Leases `requested`, or the lowest free address, in subnet `subnet_id` to `owner`.
    /// The network, gateway and broadcast addresses are never leased.
    pub fn allocate(
        &self,
        subnet_id: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Lease, NetError> {
        self.transaction(|state| {
            let subnet = state
                .subnets
                .iter()
                .find(|s| s.id == subnet_id)
                .cloned()
                .ok_or_else(|| NetError::NotFound(subnet_id.to_owned()))?;
            let leases = state.leases.entry(subnet_id.to_owned()).or_default();
            let taken = |ip: Ipv4Addr| ip == subnet.gateway || leases.iter().any(|l| l.ip == ip);
            let ip = match requested {
                Some(ip) if !subnet.cidr.hosts().any(|h| h == ip) || ip == subnet.gateway => {
                    return Err(NetError::InvalidParameter(format!(
                        "{ip} is not an assignable address of {} (gateway {})",
                        subnet.cidr, subnet.gateway
                    )))
                }
                Some(ip) if taken(ip) => return Err(NetError::AddressInUse(ip.to_string())),
                Some(ip) => ip,
                None => subnet
                    .cidr
                    .hosts()
                    .find(|&ip| !taken(ip))
                    .ok_or(NetError::Exhausted(subnet.cidr.to_string()))?,
            };
            let lease = Lease { ip, mac: mac_for(ip), owner: owner.to_owned() };
            leases.push(lease.clone());
            Ok(lease)
        })
    }

    /// Returns `ip` to subnet `subnet_id`'s pool.
    pub fn release(&self, subnet_id: &str, ip: Ipv4Addr) -> Result<(), NetError> {
        self.transaction(|state| {
            let leases =
                state.leases.get_mut(subnet_id).ok_or_else(|| NetError::NotFound(subnet_id.to_owned()))?;
            let before = leases.len();
            leases.retain(|l| l.ip != ip);
            if leases.len() == before {
                return Err(NetError::NotFound(format!("lease of {ip} in {subnet_id}")));
            }
            Ok(())
        })
    }

    /// The leases of subnet `subnet_id`.
    pub fn leases(&self, subnet_id: &str) -> Result<Vec<Lease>, NetError> {
        Ok(self.load()?.leases.remove(subnet_id).unwrap_or_default())
    }

    /// Allocates the lowest free address of `pool` (spare LAN addresses) as an Elastic IP.
    pub fn allocate_address(&self, pool: &[Ipv4Addr]) -> Result<ElasticIp, NetError> {
        self.transaction(|state| {
            let free = pool.iter().copied().find(|ip| !state.elastic_ips.iter().any(|e| e.public_ip == *ip));
            let public_ip = free.ok_or_else(|| {
                NetError::AddressLimitExceeded(format!("all {} pool addresses are allocated", pool.len()))
            })?;
            let eip = ElasticIp { id: new_id("eipalloc"), public_ip, private_ip: None, holder: None };
            state.elastic_ips.push(eip.clone());
            Ok(eip)
        })
    }

    /// Associates Elastic IP `id` with `private_ip`, which must be leased in some subnet.
    pub fn associate_address(&self, id: &str, private_ip: Ipv4Addr) -> Result<ElasticIp, NetError> {
        self.transaction(|state| {
            find(state, id)?.refuse_if_held()?;
            if !state.leases.values().flatten().any(|l| l.ip == private_ip) {
                return Err(NetError::InvalidParameter(format!("{private_ip} is not an instance address")));
            }
            if let Some(other) =
                state.elastic_ips.iter().find(|e| e.private_ip == Some(private_ip) && e.id != id)
            {
                return Err(NetError::AddressInUse(format!("{private_ip} (associated with {})", other.id)));
            }
            let eip = find(state, id)?;
            eip.private_ip = Some(private_ip);
            Ok(eip.clone())
        })
    }

    /// Ends Elastic IP `id`'s association.
    pub fn disassociate_address(&self, id: &str) -> Result<ElasticIp, NetError> {
        self.transaction(|state| {
            let eip = find(state, id)?;
            eip.refuse_if_held()?;
            eip.private_ip = None;
            Ok(eip.clone())
        })
    }

    /// Holds Elastic IP `id` for `holder` (a load balancer listening on it). Holding it
    /// again for the same holder changes nothing; an associated address, or one another
    /// holder has, is refused.
    pub fn hold_address(&self, id: &str, holder: &str) -> Result<ElasticIp, NetError> {
        self.transaction(|state| {
            let eip = find(state, id)?;
            if eip.holder.as_deref() != Some(holder) {
                eip.refuse_if_held()?;
            }
            if let Some(private_ip) = eip.private_ip {
                return Err(NetError::AddressInUse(format!(
                    "{} (associated with {private_ip})",
                    eip.public_ip
                )));
            }
            eip.holder = Some(holder.to_owned());
            Ok(eip.clone())
        })
    }

    /// Ends `holder`'s hold on Elastic IP `id`; an address it does not hold (or that is
    /// gone) is left as it is.
    pub fn unhold_address(&self, id: &str, holder: &str) -> Result<(), NetError> {
        self.transaction(|state| {
            if let Some(eip) =
                state.elastic_ips.iter_mut().find(|e| e.id == id && e.holder.as_deref() == Some(holder))
            {
                eip.holder = None;
            }
            Ok(())
        })
    }

    /// Returns an unassociated Elastic IP to the pool.
    pub fn release_address(&self, id: &str) -> Result<(), NetError> {
        self.transaction(|state| {
            let index = state
                .elastic_ips
                .iter()
                .position(|e| e.id == id)
                .ok_or_else(|| NetError::AllocationNotFound(id.to_owned()))?;
            if state.elastic_ips[index].private_ip.is_some() {
                return Err(NetError::DependencyViolation(format!(
                    "{id} is associated: disassociate it first"
                )));
            }
            state.elastic_ips[index].refuse_if_held()?;
            state.elastic_ips.remove(index);
            Ok(())
        })
    }

    /// All Elastic IPs.
    pub fn elastic_ips(&self) -> Result<Vec<ElasticIp>, NetError> {
        Ok(self.load()?.elastic_ips)
    }
}

/// Elastic IP `id` in `state`.
fn find<'a>(state: &'a mut State, id: &str) -> Result<&'a mut ElasticIp, NetError> {
    state
        .elastic_ips
        .iter_mut()
        .find(|e| e.id == id)
        .ok_or_else(|| NetError::AllocationNotFound(id.to_owned()))
}

/// Address ranges no subnet may touch, as (network, prefix length, what it is for): a bridge
/// given such an address would take over what the host uses it for (a subnet of
/// 127.0.0.0/8 gave a bridge 127.0.0.1), and 169.254.0.0/16 holds the instance metadata
/// service's address.
pub const RESERVED_RANGES: [(Ipv4Addr, u8, &str); 5] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local (the metadata service's)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// Whether `cidr` overlaps the range `network`/`prefix`: under the shorter of the two
/// prefixes' masks, both networks are the same.
pub(crate) fn range_overlaps(network: Ipv4Addr, prefix: u8, cidr: &Ipv4Cidr) -> bool {
    let shorter = u32::from(prefix.min(cidr.prefix()));
    let mask = u32::MAX.checked_shl(32 - shorter).unwrap_or(0);
    u32::from(network) & mask == u32::from(cidr.network()) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn reserved_ranges_are_refused_and_nothing_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        for text in [
            "127.0.0.0/8",
            "127.1.0.0/16",
            "0.0.0.0/8",
            "169.254.0.0/16",
            "169.254.169.0/24",
            "224.0.0.0/8",
            "240.0.0.0/8",
        ] {
            let err = ipam.create_subnet(cidr(text), None).unwrap_err();
            assert!(
                matches!(&err, NetError::InvalidParameter(m) if m.contains("not for subnets")),
                "{text}: {err}"
            );
        }
        assert!(ipam.subnets().unwrap().is_empty());
        // Next to them is fine.
        for text in ["126.0.0.0/8", "169.253.0.0/16", "223.255.255.0/24", "10.0.0.0/8"] {
            assert!(ipam.create_subnet(cidr(text), None).is_ok(), "{text}");
        }
    }

    #[test]
    fn subnets_may_not_overlap_and_gateways_must_fit() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let subnet = ipam.create_subnet(cidr("10.0.7.0/24"), None).unwrap();
        assert_eq!(subnet.gateway, Ipv4Addr::new(10, 0, 7, 1));
        assert!(subnet.bridge.len() <= 15 && subnet.bridge.starts_with("nbr-"));
        for size in ["10.1.0.0/31", "10.1.0.0/32", "0.0.0.0/0", "16.0.0.0/4"] {
            let err = ipam.create_subnet(cidr(size), None).unwrap_err();
            assert!(
                matches!(&err, NetError::InvalidParameter(why) if why.contains("/8 to /30")),
                "{size}: {err}"
            );
        }
        let err = ipam.create_subnet(cidr("10.0.0.0/16"), None).unwrap_err();
        assert!(matches!(err, NetError::Conflict(_)), "{err}");
        let err = ipam.create_subnet(cidr("10.0.8.0/24"), Some(Ipv4Addr::new(10, 0, 9, 1))).unwrap_err();
        assert!(err.to_string().contains("not a host address"), "{err}");
        assert!(ipam.create_subnet(cidr("10.0.8.0/24"), Some(Ipv4Addr::new(10, 0, 8, 254))).is_ok());
        assert_eq!(ipam.subnets().unwrap().len(), 2);
    }

    #[test]
    fn addresses_are_unique_reserved_ones_never_leased_and_exhaustion_is_clear() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let subnet = ipam.create_subnet(cidr("192.168.5.0/29"), None).unwrap();
        // Hosts .1-.6; .1 is the gateway: five leases.
        let leased: Vec<Ipv4Addr> =
            (0..5).map(|i| ipam.allocate(&subnet.id, &format!("i-{i}"), None).unwrap().ip).collect();
        assert_eq!(leased.first(), Some(&Ipv4Addr::new(192, 168, 5, 2)));
        assert_eq!(leased.last(), Some(&Ipv4Addr::new(192, 168, 5, 6)));
        let err = ipam.allocate(&subnet.id, "i-x", None).unwrap_err();
        assert!(matches!(err, NetError::Exhausted(_)), "{err}");
        ipam.release(&subnet.id, Ipv4Addr::new(192, 168, 5, 4)).unwrap();
        assert_eq!(ipam.allocate(&subnet.id, "i-y", None).unwrap().ip, Ipv4Addr::new(192, 168, 5, 4));
        for (ip, in_use) in [
            ("192.168.5.0", false),
            ("192.168.5.1", false),
            ("192.168.5.7", false),
            ("10.1.1.1", false),
            ("192.168.5.3", true),
        ] {
            let err = ipam.allocate(&subnet.id, "i-z", Some(ip.parse().unwrap())).unwrap_err();
            let kind_ok = if in_use {
                matches!(err, NetError::AddressInUse(_))
            } else {
                matches!(err, NetError::InvalidParameter(_))
            };
            assert!(kind_ok, "{ip}: {err}");
        }
        assert!(matches!(ipam.allocate("subnet-0000000000", "i", None), Err(NetError::NotFound(_))));
        let err = ipam.delete_subnet(&subnet.id).unwrap_err();
        assert!(matches!(err, NetError::DependencyViolation(_)), "{err}");
    }

    #[test]
    fn elastic_ips_are_allocated_associated_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let subnet = ipam.create_subnet(cidr("10.0.7.0/24"), None).unwrap();
        let lease = ipam.allocate(&subnet.id, "i-1", None).unwrap();
        let pool = [Ipv4Addr::new(192, 168, 50, 10), Ipv4Addr::new(192, 168, 50, 11)];
        let first = ipam.allocate_address(&pool).unwrap();
        assert!(first.id.starts_with("eipalloc-") && first.public_ip == pool[0]);
        let second = ipam.allocate_address(&pool).unwrap();
        let err = ipam.allocate_address(&pool).unwrap_err();
        assert!(matches!(err, NetError::AddressLimitExceeded(_)), "{err}");
        let err = ipam.associate_address(&first.id, Ipv4Addr::new(10, 0, 7, 99)).unwrap_err().to_string();
        assert!(err.contains("not an instance address"), "{err}");
        ipam.associate_address(&first.id, lease.ip).unwrap();
        assert!(matches!(ipam.associate_address(&second.id, lease.ip), Err(NetError::AddressInUse(_))));
        assert!(matches!(ipam.release_address(&first.id), Err(NetError::DependencyViolation(_))));
        let err = ipam.associate_address("eipalloc-0000000000", lease.ip).unwrap_err();
        assert!(matches!(err, NetError::AllocationNotFound(_)), "{err}");
        // The association is a record: a restart finds it.
        let reopened = Ipam::open(dir.path()).unwrap();
        let found = reopened.elastic_ips().unwrap().into_iter().find(|e| e.id == first.id).unwrap();
        assert_eq!(found.private_ip, Some(lease.ip));
        reopened.disassociate_address(&first.id).unwrap();
        reopened.release_address(&first.id).unwrap();
        assert_eq!(
            reopened.allocate_address(&pool).unwrap().public_ip,
            pool[0],
            "released addresses return to the pool"
        );
    }

    /// A load balancer's hold keeps an address from instances, other balancers and the
    /// pool until it ends; a hold is a record a restart finds.
    #[test]
    fn a_held_address_is_nobody_elses_until_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let subnet = ipam.create_subnet(cidr("10.0.8.0/24"), None).unwrap();
        let lease = ipam.allocate(&subnet.id, "i-1", None).unwrap();
        let pool = [Ipv4Addr::new(192, 168, 51, 10), Ipv4Addr::new(192, 168, 51, 11)];
        let (held, associated) =
            (ipam.allocate_address(&pool).unwrap(), ipam.allocate_address(&pool).unwrap());
        ipam.associate_address(&associated.id, lease.ip).unwrap();
        let in_use = |r: Result<ElasticIp, NetError>| matches!(r, Err(NetError::AddressInUse(_)));
        assert!(in_use(ipam.hold_address(&associated.id, "lb-a")), "an associated address");
        assert!(ipam.hold_address(&held.id, "lb-a").unwrap().in_use());
        assert_eq!(ipam.hold_address(&held.id, "lb-a").unwrap().holder.as_deref(), Some("lb-a"), "again");
        assert!(in_use(ipam.hold_address(&held.id, "lb-b")), "another holder");
        ipam.disassociate_address(&associated.id).unwrap();
        assert!(in_use(ipam.associate_address(&held.id, lease.ip)));
        assert!(in_use(ipam.disassociate_address(&held.id)));
        assert!(matches!(ipam.release_address(&held.id), Err(NetError::AddressInUse(_))));
        assert!(matches!(
            ipam.hold_address("eipalloc-0000000000", "lb-a"),
            Err(NetError::AllocationNotFound(_))
        ));
        let before = ipam.elastic_ips().unwrap();
        ipam.unhold_address(&held.id, "lb-b").unwrap();
        assert_eq!(Ipam::open(dir.path()).unwrap().elastic_ips().unwrap(), before, "only its holder lets go");
        ipam.unhold_address(&held.id, "lb-a").unwrap();
        assert!(!ipam.elastic_ips().unwrap().iter().any(ElasticIp::in_use));
        ipam.release_address(&held.id).unwrap();
    }

    #[test]
    fn concurrent_allocations_never_collide_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = Ipam::open(dir.path()).unwrap().create_subnet(cidr("10.9.0.0/24"), None).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (path, id) = (dir.path().to_owned(), subnet.id.clone());
                // Each thread opens its own manager, as separate processes would.
                std::thread::spawn(move || {
                    let ipam = Ipam::open(&path).unwrap();
                    (0..30)
                        .map(|i| ipam.allocate(&id, &format!("i-{t}-{i}"), None).unwrap().ip)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        assert_eq!(all.len(), 240);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 240, "an address was handed out twice");
        let reopened = Ipam::open(dir.path()).unwrap();
        let leases = reopened.leases(&subnet.id).unwrap();
        assert_eq!(leases.len(), 240);
        assert_eq!(leases.iter().map(|l| &l.mac).collect::<HashSet<_>>().len(), 240, "MACs are unique");
    }
}
