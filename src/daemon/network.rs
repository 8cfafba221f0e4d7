//! Subnets and Elastic IPs as the API offers them: the network plane does the work; this
//! adds what depends on instances (an address is associated with an instance's private
//! address, and described with the instance that holds it).

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::describe::Describable;
use super::DaemonError;
use crate::net::addr::Ipv4Cidr;
use crate::net::firewall::Allow;
use crate::net::ipam::{ElasticIp, Subnet};
use crate::net::plane::NetworkPlane;
use crate::net::security_groups::SecurityGroup;
use crate::state::db::InstanceStore;
use crate::state::instance::{InstanceRecord, InstanceState};
use crate::state::tag::TagStore;

/// A subnet and how many of its addresses are leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetUse {
    /// The subnet.
    pub subnet: Subnet,
    /// Addresses leased to instances.
    pub leased: usize,
}

/// An Elastic IP and the live instance holding its private address, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressUse {
    /// The address.
    pub eip: ElasticIp,
    /// The instance, when one holds the private address.
    pub instance_id: Option<String>,
}

/// The daemon's network operations.
#[derive(Clone)]
pub struct Network {
    plane: Arc<NetworkPlane>,
    db: Arc<dyn InstanceStore>,
    tags: Arc<dyn TagStore>,
}

impl Describable for SubnetUse {
    const FILTERS: &'static [&'static str] = &["subnet-id", "cidr-block"];

    fn id(&self) -> &str {
        &self.subnet.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "subnet-id" => self.subnet.id.clone(),
            _ => self.subnet.cidr.to_string(),
        }
    }
}

impl Describable for AddressUse {
    const FILTERS: &'static [&'static str] =
        &["allocation-id", "public-ip", "instance-id", "private-ip-address"];

    fn id(&self) -> &str {
        &self.eip.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "allocation-id" => self.eip.id.clone(),
            "public-ip" => self.eip.public_ip.to_string(),
            "instance-id" => self.instance_id.clone().unwrap_or_default(),
            _ => self.eip.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }
}

impl Describable for SecurityGroup {
    const FILTERS: &'static [&'static str] = &["group-id", "group-name", "description"];

    fn id(&self) -> &str {
        &self.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "group-id" => self.id.clone(),
            "group-name" => self.name.clone(),
            _ => self.description.clone(),
        }
    }
}

impl Network {
    /// Network operations on `plane`, naming the instances recorded in `db` and
    /// forgetting a deleted subnet's or released address's tags in `tags`.
    pub fn new(plane: Arc<NetworkPlane>, db: Arc<dyn InstanceStore>, tags: Arc<dyn TagStore>) -> Self {
        Self { plane, db, tags }
    }

    /// Creates a subnet (its bridge and firewall rules with it).
    pub fn create_subnet(&self, cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> Result<SubnetUse, DaemonError> {
        let subnet = self.plane.create_subnet(cidr, gateway)?;
        self.subnet_use(subnet)
    }

    /// Every subnet.
    pub fn describe_subnets(&self) -> Result<Vec<SubnetUse>, DaemonError> {
        self.plane.ipam().subnets()?.into_iter().map(|subnet| self.subnet_use(subnet)).collect()
    }

    /// Every subnet, without counting its leases: what the metadata service reads every
    /// second and at every request.
    pub fn subnets(&self) -> Result<Vec<Subnet>, DaemonError> {
        Ok(self.plane.ipam().subnets()?)
    }

    /// The Elastic IP associated with private address `ip`, if any, without looking up
    /// the instances that hold addresses (as `describe_addresses` does).
    pub fn public_ip_of(&self, ip: Ipv4Addr) -> Result<Option<Ipv4Addr>, DaemonError> {
        let eips = self.plane.ipam().elastic_ips()?;
        Ok(eips.into_iter().find(|eip| eip.private_ip == Some(ip)).map(|eip| eip.public_ip))
    }

    /// Deletes a subnet no instance uses.
    pub fn delete_subnet(&self, id: &str) -> Result<(), DaemonError> {
        self.plane.delete_subnet(id)?;
        Ok(self.tags.forget_tags(id)?)
    }

    /// Allocates an Elastic IP from the pool.
    pub fn allocate_address(&self) -> Result<AddressUse, DaemonError> {
        let eip = self.plane.allocate_address()?;
        self.address_use(eip)
    }

    /// Every Elastic IP.
    pub fn describe_addresses(&self) -> Result<Vec<AddressUse>, DaemonError> {
        let instances = self.db.list()?;
        Ok(self.plane.ipam().elastic_ips()?.into_iter().map(|eip| address_use(eip, &instances)).collect())
    }

    /// Sends Elastic IP `allocation_id`'s traffic to instance `instance_id`'s private
    /// address.
    pub fn associate_address(
        &self,
        allocation_id: &str,
        instance_id: &str,
    ) -> Result<AddressUse, DaemonError> {
        let instance = self.db.get(instance_id)?;
        let ip = instance.private_ip.ok_or_else(|| {
            DaemonError::InvalidParameter(format!("{instance_id} has no network interface"))
        })?;
        let eip = self.plane.associate_address(allocation_id, ip)?;
        self.address_use(eip)
    }

    /// Takes an Elastic IP off its instance.
    pub fn disassociate_address(&self, allocation_id: &str) -> Result<AddressUse, DaemonError> {
        let eip = self.plane.disassociate_address(allocation_id)?;
        self.address_use(eip)
    }

    /// Holds Elastic IP `allocation_id` for load balancer `holder`, which listens on its
    /// address; returns the address.
    pub fn hold_address(&self, allocation_id: &str, holder: &str) -> Result<Ipv4Addr, DaemonError> {
        Ok(self.plane.hold_address(allocation_id, holder)?.public_ip)
    }

    /// Ends `holder`'s hold on Elastic IP `allocation_id`.
    pub fn unhold_address(&self, allocation_id: &str, holder: &str) -> Result<(), DaemonError> {
        Ok(self.plane.unhold_address(allocation_id, holder)?)
    }

    /// The Elastic IPs held by load balancers, as (allocation id, holder).
    pub fn held_addresses(&self) -> Result<Vec<(String, String)>, DaemonError> {
        let eips = self.plane.ipam().elastic_ips()?;
        Ok(eips.into_iter().filter_map(|eip| Some((eip.id, eip.holder?))).collect())
    }

    /// Gives an Elastic IP back to the pool.
    pub fn release_address(&self, allocation_id: &str) -> Result<(), DaemonError> {
        self.plane.release_address(allocation_id)?;
        Ok(self.tags.forget_tags(allocation_id)?)
    }

    /// Creates an empty security group.
    pub fn create_security_group(&self, name: &str, description: &str) -> Result<SecurityGroup, DaemonError> {
        Ok(self.plane.create_security_group(name, description)?)
    }

    /// The security groups named in `ids`, or all when none is named.
    pub fn describe_security_groups(&self, ids: &[String]) -> Result<Vec<SecurityGroup>, DaemonError> {
        super::by_ids(ids, || self.plane.security_groups(), |id| self.plane.security_group(id))
    }

    /// Deletes a security group no instance is in.
    pub fn delete_security_group(&self, id: &str) -> Result<(), DaemonError> {
        self.plane.delete_security_group(id)?;
        Ok(self.tags.forget_tags(id)?)
    }

    /// Lets `rules` in to the instances of group `id`.
    pub fn authorize_ingress(&self, id: &str, rules: &[Allow]) -> Result<SecurityGroup, DaemonError> {
        Ok(self.plane.authorize_ingress(id, rules)?)
    }

    /// Stops letting `rules` in to the instances of group `id`.
    pub fn revoke_ingress(&self, id: &str, rules: &[Allow]) -> Result<SecurityGroup, DaemonError> {
        Ok(self.plane.revoke_ingress(id, rules)?)
    }

    /// Puts a live instance with a network interface in exactly the security groups
    /// `groups` (1 to 5).
    pub fn set_instance_groups(&self, instance_id: &str, groups: &[String]) -> Result<(), DaemonError> {
        let instance = self.db.get(instance_id)?;
        if instance.subnet_id.is_empty() || instance.state == InstanceState::Terminated {
            return Err(DaemonError::InvalidParameter(format!(
                "{instance_id} has no network interface to put in security groups"
            )));
        }
        if groups.is_empty() {
            return Err(DaemonError::InvalidParameter("name at least one security group".into()));
        }
        Ok(self.plane.set_security_groups(instance_id, groups)?)
    }

    /// The security groups of each instance in some group.
    pub fn instance_groups(&self) -> Result<std::collections::BTreeMap<String, Vec<String>>, DaemonError> {
        Ok(self.plane.ipam().all_memberships()?)
    }

    fn subnet_use(&self, subnet: Subnet) -> Result<SubnetUse, DaemonError> {
        let leased = self.plane.ipam().leases(&subnet.id)?.len();
        Ok(SubnetUse { subnet, leased })
    }

    fn address_use(&self, eip: ElasticIp) -> Result<AddressUse, DaemonError> {
        Ok(address_use(eip, &self.db.list()?))
    }
}

/// `eip` with the live instance among `instances` that holds its private address.
fn address_use(eip: ElasticIp, instances: &[InstanceRecord]) -> AddressUse {
    let instance_id = eip.private_ip.and_then(|ip| {
        instances.iter().find(|i| i.private_ip == Some(ip) && i.state != InstanceState::Terminated)
    });
    AddressUse { instance_id: instance_id.map(|i| i.id.clone()), eip }
}
