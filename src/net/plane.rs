//! The network plane: the one entry point that keeps addresses, links and the firewall
//! in step. The address record (`ipam`) is the truth; bridges, taps, uplink addresses and
//! the nftables table are derived from it, so [`NetworkPlane::open`] after a restart (or
//! a crash midway through an operation) makes the host match the record again.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::Path;

use super::addr::{kernel_ip_param, Ipv4Cidr};
use super::firewall::{Allow, Firewall, Policy};
use super::ipam::{range_overlaps, ElasticIp, Ipam, Subnet};
use super::link::{tap_name, Links};
use super::security_groups::SecurityGroup;
use super::{in_netns, NetError};
use crate::vmm::api::config::MacAddress;
use crate::vmm::devices::virtio::net::tap::Tap;

/// How the plane sits on the host.
#[derive(Debug, Clone, Default)]
pub struct PlaneConfig {
    /// The network namespace everything happens in (`None`: the process's own).
    pub netns: Option<String>,
    /// The LAN-facing interface that holds associated Elastic IPs.
    pub uplink: Option<String>,
    /// The LAN addresses Elastic IPs are allocated from.
    pub address_pool: Vec<Ipv4Addr>,
}

/// One instance network interface, as the VMM and the guest need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The subnet it is on.
    pub subnet: Subnet,
    /// Its private address.
    pub ip: Ipv4Addr,
    /// Its MAC address.
    pub mac: MacAddress,
    /// The tap device the VMM opens.
    pub tap: String,
}

impl Interface {
    /// The kernel `ip=` parameter that configures the guest without DHCP.
    pub fn kernel_ip_param(&self) -> String {
        kernel_ip_param(self.ip, &self.subnet.cidr, self.subnet.gateway, "eth0")
    }
}

/// Subnets, instance interfaces and Elastic IPs on one host.
#[derive(Debug)]
pub struct NetworkPlane {
    ipam: Ipam,
    links: Links,
    firewall: Firewall,
    config: PlaneConfig,
}

impl NetworkPlane {
    /// Opens the plane recorded in `dir` and brings the host in line with the record:
    /// bridges exist, forwarding is on, associated Elastic IPs sit on the uplink, the
    /// firewall is applied. A plane with no subnet and no Elastic IP touches nothing.
    pub fn open(dir: &Path, config: PlaneConfig) -> Result<Self, NetError> {
        if config.address_pool.is_empty() != config.uplink.is_none() {
            return Err(NetError::InvalidParameter(
                "an Elastic IP pool needs an uplink, and an uplink needs a pool".into(),
            ));
        }
        let plane = Self {
            ipam: Ipam::open(dir)?,
            links: Links::new(config.netns.clone()),
            firewall: Firewall::new(config.netns.clone()),
            config,
        };
        let subnets = plane.ipam.subnets()?;
        if subnets.is_empty() && plane.ipam.elastic_ips()?.is_empty() {
            return Ok(plane);
        }
        for subnet in subnets {
            plane.links.ensure_bridge(&subnet)?;
        }
        plane.firewall.enable_forwarding()?;
        plane.sync()?;
        Ok(plane)
    }

    /// The address record.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// Creates a subnet and its bridge.
    pub fn create_subnet(&self, cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> Result<Subnet, NetError> {
        self.check_host_networks(&cidr)?;
        let subnet = self.ipam.create_subnet(cidr, gateway)?;
        self.links.ensure_bridge(&subnet)?;
        self.firewall.enable_forwarding()?;
        self.sync()?;
        Ok(subnet)
    }

    /// Refuses a subnet overlapping a network the host already routes to (its LAN, a VPN, a
    /// container bridge): the bridge's route would take that network's traffic away from
    /// it. Subnets' own bridges are left to the IPAM's overlap check.
    fn check_host_networks(&self, cidr: &Ipv4Cidr) -> Result<(), NetError> {
        let own = self.ipam.subnets()?;
        let taken = self.links.routes()?.into_iter().find(|route| {
            let ours = own.iter().any(|s| route.dev.as_deref() == Some(s.bridge.as_str()));
            !ours && range_overlaps(route.network, route.prefix, cidr)
        });
        match taken {
            Some(route) => Err(NetError::Conflict(format!(
                "{cidr} overlaps the host's network {}/{} (on {})",
                route.network,
                route.prefix,
                route.dev.as_deref().unwrap_or("no interface")
            ))),
            None => Ok(()),
        }
    }

    /// Deletes a subnet no one has an address in, and its bridge.
    pub fn delete_subnet(&self, id: &str) -> Result<(), NetError> {
        let subnet = self.ipam.delete_subnet(id)?;
        self.links.delete(&subnet.bridge)?;
        self.sync()
    }

    /// Leases an address on `subnet_id` to `owner` (the requested one or the next free
    /// one), puts it in the security groups `groups` (none: unfiltered) and makes its tap,
    /// owned by `uid`, on the subnet's bridge.
    pub fn attach(
        &self,
        subnet_id: &str,
        owner: &str,
        requested: Option<Ipv4Addr>,
        uid: u32,
        groups: &[String],
    ) -> Result<Interface, NetError> {
        let subnet = self.ipam.subnet(subnet_id)?;
        let lease = self.ipam.allocate(subnet_id, owner, requested)?;
        let tap = tap_name(owner);
        let made = self
            .ipam
            .set_memberships(owner, groups)
            .and_then(|()| self.sync())
            .and_then(|()| self.links.create_tap(&tap, uid, &subnet.bridge));
        if let Err(e) = made {
            // Leave nothing behind: the lease is only worth something with its tap.
            let _ = self.links.delete(&tap);
            self.ipam.set_memberships(owner, &[])?;
            self.ipam.release(subnet_id, lease.ip)?;
            return Err(e);
        }
        Ok(Interface { subnet, ip: lease.ip, mac: lease.mac, tap })
    }

    /// The interface `owner` holds on `subnet_id`.
    pub fn interface(&self, subnet_id: &str, owner: &str) -> Result<Interface, NetError> {
        let subnet = self.ipam.subnet(subnet_id)?;
        let lease = self
            .ipam
            .leases(subnet_id)?
            .into_iter()
            .find(|l| l.owner == owner)
            .ok_or_else(|| NetError::NotFound(format!("no address of {owner} in {subnet_id}")))?;
        Ok(Interface { subnet, ip: lease.ip, mac: lease.mac, tap: tap_name(owner) })
    }

    /// Opens the interface's tap (in the plane's namespace) for a VMM to inherit, so the
    /// VMM needs neither the namespace nor the right to open taps.
    pub fn open_tap(&self, interface: &Interface) -> Result<OwnedFd, NetError> {
        let name = interface.tap.clone();
        in_netns(self.config.netns.as_deref(), move || {
            Tap::open(&name).map(OwnedFd::from).map_err(std::io::Error::other)
        })
        .map_err(|e| NetError::Command {
            command: format!("opening tap {}", interface.tap),
            stderr: e.to_string(),
        })
    }

    /// Removes the interface `owner` holds on `subnet_id`: its tap, any Elastic IP
    /// association, and its lease.
    pub fn detach(&self, subnet_id: &str, owner: &str) -> Result<(), NetError> {
        let tap = tap_name(owner);
        if self.links.exists(&tap)? {
            self.links.delete(&tap)?;
        }
        for lease in self.ipam.leases(subnet_id)?.into_iter().filter(|l| l.owner == owner) {
            for eip in self.ipam.elastic_ips()?.into_iter().filter(|e| e.private_ip == Some(lease.ip)) {
                self.disassociate_address(&eip.id)?;
            }
            self.ipam.release(subnet_id, lease.ip)?;
        }
        self.ipam.set_memberships(owner, &[])?;
        self.sync()
    }

    /// Removes the taps of owners not in `owners` (instances that no longer exist). A
    /// plane without subnets has none and touches nothing.
    pub fn remove_stale_taps(&self, owners: &[String]) -> Result<Vec<String>, NetError> {
        if self.ipam.subnets()?.is_empty() {
            return Ok(Vec::new());
        }
        let claimed: HashSet<String> = owners.iter().map(|o| tap_name(o)).collect();
        self.links.remove_stale_taps(&claimed)
    }

    /// Allocates an Elastic IP from the pool.
    pub fn allocate_address(&self) -> Result<ElasticIp, NetError> {
        self.ipam.allocate_address(&self.config.address_pool)
    }

    /// Points Elastic IP `id` at the instance address `private_ip`.
    pub fn associate_address(&self, id: &str, private_ip: Ipv4Addr) -> Result<ElasticIp, NetError> {
        let eip = self.ipam.associate_address(id, private_ip)?;
        self.sync()?;
        Ok(eip)
    }

    /// Detaches Elastic IP `id` from its instance.
    pub fn disassociate_address(&self, id: &str) -> Result<ElasticIp, NetError> {
        let eip = self.ipam.disassociate_address(id)?;
        self.sync()?;
        Ok(eip)
    }

    /// Holds Elastic IP `id` for load balancer `holder` and puts it on the uplink, where
    /// the balancer listens on it.
    pub fn hold_address(&self, id: &str, holder: &str) -> Result<ElasticIp, NetError> {
        let eip = self.ipam.hold_address(id, holder)?;
        self.sync()?;
        Ok(eip)
    }

    /// Ends `holder`'s hold on Elastic IP `id`, taking it off the uplink.
    pub fn unhold_address(&self, id: &str, holder: &str) -> Result<(), NetError> {
        self.ipam.unhold_address(id, holder)?;
        self.sync()
    }

    /// Returns Elastic IP `id` to the pool.
    pub fn release_address(&self, id: &str) -> Result<(), NetError> {
        self.ipam.release_address(id)
    }

    /// Creates a security group.
    pub fn create_security_group(&self, name: &str, description: &str) -> Result<SecurityGroup, NetError> {
        self.ipam.create_security_group(name, description)
    }

    /// The `default` security group's id (made when first asked for).
    pub fn default_security_group(&self) -> Result<String, NetError> {
        self.ipam.default_security_group()
    }

    /// Deletes a security group no instance is in.
    pub fn delete_security_group(&self, id: &str) -> Result<(), NetError> {
        self.ipam.delete_security_group(id)
    }

    /// Adds ingress rules to a security group and applies them.
    pub fn authorize_ingress(&self, id: &str, rules: &[Allow]) -> Result<SecurityGroup, NetError> {
        let group = self.ipam.authorize_ingress(id, rules)?;
        self.sync()?;
        Ok(group)
    }

    /// Removes ingress rules from a security group and applies that.
    pub fn revoke_ingress(&self, id: &str, rules: &[Allow]) -> Result<SecurityGroup, NetError> {
        let group = self.ipam.revoke_ingress(id, rules)?;
        self.sync()?;
        Ok(group)
    }

    /// Every security group.
    pub fn security_groups(&self) -> Result<Vec<SecurityGroup>, NetError> {
        self.ipam.security_groups()
    }

    /// Puts instance `owner` in exactly the security groups `groups` and applies that.
    pub fn set_security_groups(&self, owner: &str, groups: &[String]) -> Result<(), NetError> {
        self.ipam.set_memberships(owner, groups)?;
        self.sync()
    }

    /// Refuses security groups an instance could not be put in (see
    /// [`Ipam::set_memberships`]), changing nothing.
    pub fn check_security_groups(&self, groups: &[String]) -> Result<(), NetError> {
        self.ipam.check_memberships(groups)
    }

    /// The security group `id`.
    pub fn security_group(&self, id: &str) -> Result<SecurityGroup, NetError> {
        self.ipam.security_group(id)
    }

    /// Makes the uplink's Elastic IP addresses and the firewall match the record.
    fn sync(&self) -> Result<(), NetError> {
        let elastic_ips = self.ipam.elastic_ips()?;
        if let Some(uplink) = &self.config.uplink {
            for eip in &elastic_ips {
                match eip.in_use() {
                    true => self.links.add_address(uplink, eip.public_ip)?,
                    false => self.links.remove_address(uplink, eip.public_ip)?,
                }
            }
        }
        let policy = Policy {
            subnets: self.ipam.subnets()?.into_iter().map(|s| (s.cidr, s.bridge)).collect(),
            elastic_ips: elastic_ips.iter().filter_map(|e| Some((e.public_ip, e.private_ip?))).collect(),
            ingress: self.ipam.ingress()?,
        };
        self.firewall.apply(&policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::firewall::Protocol;
    use crate::net::testing::Netns;

    fn plane(ns: &Netns, dir: &Path) -> NetworkPlane {
        let config = PlaneConfig {
            netns: Some(ns.0.clone()),
            uplink: Some("uplink".into()),
            address_pool: vec!["192.168.60.10".parse().unwrap()],
        };
        NetworkPlane::open(dir, config).unwrap()
    }

    fn nft_rules(ns: &Netns) -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "nft", "list", "table", "inet", "nuage"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A subnet may not take a network the host already routes to: its LAN, or a network
    /// reached through a gateway; the host's own subnets are the IPAM's to refuse.
    #[test]
    fn subnets_stay_off_the_hosts_own_networks() {
        let ns = Netns::new("plane-routes");
        ns.ip(&["link", "add", "lan", "type", "veth", "peer", "name", "lan-peer"]);
        ns.ip(&["addr", "add", "192.168.77.1/24", "dev", "lan"]);
        ns.ip(&["link", "set", "lan", "up"]);
        ns.ip(&["link", "set", "lan-peer", "up"]);
        ns.ip(&["route", "add", "10.99.0.0/16", "via", "192.168.77.254"]);
        ns.ip(&["route", "add", "10.98.7.7", "via", "192.168.77.254"]);
        let dir = tempfile::tempdir().unwrap();
        let plane = plane(&ns, dir.path());
        for (cidr, network) in [
            ("192.168.77.0/24", "192.168.77.0/24"),
            ("10.99.5.0/24", "10.99.0.0/16"),
            ("10.98.0.0/16", "10.98.7.7/32"),
        ] {
            let err = plane.create_subnet(cidr.parse().unwrap(), None).unwrap_err();
            assert!(matches!(&err, NetError::Conflict(why) if why.contains(network)), "{cidr}: {err}");
        }
        assert!(plane.ipam().subnets().unwrap().is_empty(), "nothing recorded");
        let subnet = plane.create_subnet("10.97.0.0/24".parse().unwrap(), None).unwrap();
        let err = plane.create_subnet("10.97.0.0/25".parse().unwrap(), None).unwrap_err();
        assert!(matches!(&err, NetError::Conflict(why) if why.contains(&subnet.id)), "{err}");
    }

    /// After the host loses its links and rules (a reboot), opening the plane rebuilds
    /// them from the record: bridge, uplink address and Elastic IP translation.
    #[test]
    fn opening_rebuilds_the_host_from_the_record() {
        let ns = Netns::new("plane");
        ns.ip(&["link", "add", "uplink", "type", "veth", "peer", "name", "lan0"]);
        let dir = tempfile::tempdir().unwrap();
        let plane = plane(&ns, dir.path());
        let subnet = plane.create_subnet("10.0.11.0/24".parse().unwrap(), None).unwrap();
        let web = plane.create_security_group("web", "").unwrap();
        let http =
            Allow { protocol: Protocol::Tcp, ports: Some((80, 80)), source: "0.0.0.0/0".parse().unwrap() };
        plane.authorize_ingress(&web.id, &[http]).unwrap();
        let a = plane.attach(&subnet.id, "i-aaaa", None, 0, std::slice::from_ref(&web.id)).unwrap();
        let b = plane.attach(&subnet.id, "i-bbbb", Some("10.0.11.9".parse().unwrap()), 0, &[]).unwrap();
        assert!(nft_rules(&ns).contains("ip daddr 10.0.11.2 tcp dport 80 accept"), "{}", nft_rules(&ns));
        assert_eq!((a.ip.to_string(), b.ip.to_string()), ("10.0.11.2".into(), "10.0.11.9".into()));
        assert_eq!((a.tap.as_str(), a.mac.to_string()), ("ntap-iaaaa", "02:4e:0a:00:0b:02".to_owned()));
        let eip = plane.allocate_address().unwrap();
        plane.associate_address(&eip.id, a.ip).unwrap();
        assert!(nft_rules(&ns).contains("dnat ip to 10.0.11.2"));

        ns.ip(&["link", "del", &subnet.bridge]);
        ns.ip(&["addr", "flush", "dev", "uplink"]);
        let flushed = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "nft", "delete", "table", "inet", "nuage"])
            .status()
            .unwrap();
        assert!(flushed.success());
        let plane = self::plane(&ns, dir.path());
        assert!(ns.ip(&["-br", "link"]).contains(&subnet.bridge), "the bridge is back");
        assert!(ns.ip(&["-br", "addr", "show", "dev", "uplink"]).contains("192.168.60.10/32"));
        assert!(nft_rules(&ns).contains("dnat ip to 10.0.11.2"), "the translation is back");
        assert!(
            nft_rules(&ns).contains("ip daddr 10.0.11.2 tcp dport 80 accept"),
            "the security group is back"
        );

        // Detaching the associated instance takes its Elastic IP off the uplink too.
        plane.detach(&subnet.id, "i-aaaa").unwrap();
        assert!(!ns.ip(&["-br", "addr", "show", "dev", "uplink"]).contains("192.168.60.10"));
        assert!(!nft_rules(&ns).contains("dnat"));
        assert_eq!(plane.ipam().leases(&subnet.id).unwrap().len(), 1);
        assert_eq!(plane.remove_stale_taps(&[]).unwrap(), vec!["ntap-ibbbb".to_owned()]);
    }

    /// An interface whose tap cannot be made leaves neither a lease nor a tap behind.
    #[test]
    fn a_failed_attachment_leaves_nothing() {
        let ns = Netns::new("plane-fail");
        ns.ip(&["link", "add", "uplink", "type", "veth", "peer", "name", "lan0"]);
        let dir = tempfile::tempdir().unwrap();
        let plane = plane(&ns, dir.path());
        let subnet = plane.create_subnet("10.0.12.0/24".parse().unwrap(), None).unwrap();
        ns.ip(&["link", "del", &subnet.bridge]);
        let group = plane.default_security_group().unwrap();
        let err = plane.attach(&subnet.id, "i-cccc", None, 0, &[group]).unwrap_err();
        assert!(err.to_string().contains(&subnet.bridge), "{err}");
        assert!(plane.ipam().leases(&subnet.id).unwrap().is_empty());
        assert!(!ns.ip(&["-br", "link"]).contains("ntap-icccc"));
        assert!(plane.ipam().all_memberships().unwrap().is_empty(), "nor a group membership");
    }

    /// A daemon that never made a subnet leaves the host alone: here the namespace does not
    /// even exist, and nothing notices.
    #[test]
    fn a_plane_without_subnets_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = PlaneConfig { netns: Some("nuage-test-absent".into()), ..Default::default() };
        let plane = NetworkPlane::open(dir.path(), config).unwrap();
        assert!(plane.remove_stale_taps(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_pool_without_an_uplink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            PlaneConfig { address_pool: vec!["192.168.60.10".parse().unwrap()], ..Default::default() };
        let err = NetworkPlane::open(dir.path(), config).unwrap_err();
        assert!(matches!(err, NetError::InvalidParameter(_)), "{err}");
    }
}
