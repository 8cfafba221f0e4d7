//! Security groups: named sets of ingress rules, and which instances are in which groups,
//! kept in the network plane's record beside the leases they apply to (so that the plane
//! rebuilds the host's filter from its own record after a reboot, before anyone asks).
//!
//! An instance in at least one group takes routed traffic (from the LAN through its
//! Elastic IP, from the host's other networks) only where a rule of one of its groups
//! allows it, or where it answers the instance's own connections. Its own subnet reaches it
//! directly over the bridge, and other subnets never do (see [`super::firewall`]). Egress
//! is not filtered. The daemon puts instances nobody placed in a group in the `default`
//! group, which has no rules: closed from outside, as EC2's default group is.

use serde::{Deserialize, Serialize};

use super::firewall::Allow;
use super::ipam::{Ipam, State};
use super::NetError;
use crate::state::id::new_id;

/// The group instances are put in when their launch names none.
pub const DEFAULT_GROUP: &str = "default";
/// The most groups one host holds.
pub const MAX_GROUPS: usize = 500;
/// The most rules one group holds (EC2's default).
pub const MAX_RULES_PER_GROUP: usize = 60;
/// The most groups one instance is in (EC2's default).
pub const MAX_GROUPS_PER_INSTANCE: usize = 5;
/// The longest name and description (EC2's).
const MAX_TEXT_CHARS: usize = 255;

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    /// `sg-` and hex digits.
    pub id: String,
    /// Unique on the host.
    pub name: String,
    /// Free text.
    pub description: String,
    /// What it lets in.
    pub ingress: Vec<Allow>,
}

fn check_text(value: &str, field: &str, may_be_empty: bool) -> Result<(), NetError> {
    let chars = value.chars().count();
    if (chars == 0 && !may_be_empty) || chars > MAX_TEXT_CHARS || value.chars().any(char::is_control) {
        return Err(NetError::InvalidParameter(format!(
            "the group {field} must be {} to {MAX_TEXT_CHARS} characters without control characters",
            u8::from(!may_be_empty)
        )));
    }
    Ok(())
}

/// Whether one instance may be in `groups`: at most [`MAX_GROUPS_PER_INSTANCE`], each of
/// them existing.
fn check_memberships(state: &State, groups: &[String]) -> Result<(), NetError> {
    if groups.len() > MAX_GROUPS_PER_INSTANCE {
        return Err(NetError::GroupsPerInstanceLimit(format!(
            "an instance is in at most {MAX_GROUPS_PER_INSTANCE} security groups"
        )));
    }
    match groups.iter().find(|id| !state.security_groups.iter().any(|g| &g.id == *id)) {
        Some(unknown) => Err(NetError::GroupNotFound(unknown.clone())),
        None => Ok(()),
    }
}

fn group_mut<'a>(state: &'a mut State, id: &str) -> Result<&'a mut SecurityGroup, NetError> {
    state
        .security_groups
        .iter_mut()
        .find(|g| g.id == id)
        .ok_or_else(|| NetError::GroupNotFound(id.to_owned()))
}

impl Ipam {
    /// Creates an empty group named `name`.
    pub fn create_security_group(&self, name: &str, description: &str) -> Result<SecurityGroup, NetError> {
        check_text(name, "name", false)?;
        check_text(description, "description", true)?;
        if name.to_ascii_lowercase().starts_with("sg-") {
            return Err(NetError::InvalidParameter(format!("group name {name:?}: sg- starts group ids")));
        }
        self.transaction(|state| Self::add_group(state, name, description))
    }

    fn add_group(state: &mut State, name: &str, description: &str) -> Result<SecurityGroup, NetError> {
        if state.security_groups.iter().any(|g| g.name == name) {
            return Err(NetError::GroupDuplicate(format!("a security group named {name:?} exists")));
        }
        if state.security_groups.len() >= MAX_GROUPS {
            return Err(NetError::GroupLimit(format!("at most {MAX_GROUPS} security groups")));
        }
        let group = SecurityGroup {
            id: new_id("sg"),
            name: name.to_owned(),
            description: description.to_owned(),
            ingress: Vec::new(),
        };
        state.security_groups.push(group.clone());
        Ok(group)
    }

    /// The `default` group's id, made the first time it is asked for.
    pub fn default_security_group(&self) -> Result<String, NetError> {
        self.transaction(|state| match state.security_groups.iter().find(|g| g.name == DEFAULT_GROUP) {
            Some(group) => Ok(group.id.clone()),
            None => Ok(Self::add_group(state, DEFAULT_GROUP, "instances no one placed in a group")?.id),
        })
    }

    /// Deletes a group no instance is in (never `default`).
    pub fn delete_security_group(&self, id: &str) -> Result<(), NetError> {
        self.transaction(|state| {
            if group_mut(state, id)?.name == DEFAULT_GROUP {
                return Err(NetError::CannotDelete(format!("{id} is the default group")));
            }
            if let Some((owner, _)) =
                state.memberships.iter().find(|(_, groups)| groups.iter().any(|g| g == id))
            {
                return Err(NetError::DependencyViolation(format!("{id} is in use by {owner}")));
            }
            state.security_groups.retain(|g| g.id != id);
            Ok(())
        })
    }

    /// Adds `rules` to group `id`; all or nothing, none of them there already.
    pub fn authorize_ingress(&self, id: &str, rules: &[Allow]) -> Result<SecurityGroup, NetError> {
        self.transaction(|state| {
            let group = group_mut(state, id)?;
            for (i, rule) in rules.iter().enumerate() {
                if group.ingress.contains(rule) || rules[..i].contains(rule) {
                    return Err(NetError::PermissionDuplicate(format!("{id} already allows {rule:?}")));
                }
            }
            if group.ingress.len() + rules.len() > MAX_RULES_PER_GROUP {
                return Err(NetError::RulesLimit(format!("at most {MAX_RULES_PER_GROUP} rules in {id}")));
            }
            group.ingress.extend(rules.iter().cloned());
            Ok(group.clone())
        })
    }

    /// Removes `rules` from group `id`; all or nothing, each of them there.
    pub fn revoke_ingress(&self, id: &str, rules: &[Allow]) -> Result<SecurityGroup, NetError> {
        self.transaction(|state| {
            let group = group_mut(state, id)?;
            if let Some(missing) = rules.iter().find(|rule| !group.ingress.contains(rule)) {
                return Err(NetError::PermissionNotFound(format!("{id} has no rule {missing:?}")));
            }
            group.ingress.retain(|rule| !rules.contains(rule));
            Ok(group.clone())
        })
    }

    /// Every group.
    pub fn security_groups(&self) -> Result<Vec<SecurityGroup>, NetError> {
        Ok(self.load()?.security_groups)
    }

    /// Puts instance `owner` in exactly `groups` (up to 5 existing groups); none takes it
    /// out of every group.
    pub fn set_memberships(&self, owner: &str, groups: &[String]) -> Result<(), NetError> {
        self.transaction(|state| {
            check_memberships(state, groups)?;
            let mut unique = groups.to_vec();
            unique.sort();
            unique.dedup();
            if unique.is_empty() {
                state.memberships.remove(owner);
            } else {
                state.memberships.insert(owner.to_owned(), unique);
            }
            Ok(())
        })
    }

    /// Refuses `groups` as [`Ipam::set_memberships`] would, changing nothing (so that a
    /// launch can check before it makes anything).
    pub fn check_memberships(&self, groups: &[String]) -> Result<(), NetError> {
        check_memberships(&self.load()?, groups)
    }

    /// The group `id`.
    pub fn security_group(&self, id: &str) -> Result<SecurityGroup, NetError> {
        let groups = self.load()?.security_groups;
        groups.into_iter().find(|g| g.id == id).ok_or_else(|| NetError::GroupNotFound(id.to_owned()))
    }

    /// The groups of every instance in some group.
    pub fn all_memberships(&self) -> Result<std::collections::BTreeMap<String, Vec<String>>, NetError> {
        Ok(self.load()?.memberships)
    }

    /// What each leased address in some group may take in: the rules of all its groups.
    pub fn ingress(&self) -> Result<Vec<(std::net::Ipv4Addr, Vec<Allow>)>, NetError> {
        let state = self.load()?;
        Ok(state
            .leases
            .values()
            .flatten()
            .filter_map(|lease| {
                let groups = state.memberships.get(&lease.owner)?;
                let mut rules: Vec<Allow> = Vec::new();
                for group in state.security_groups.iter().filter(|g| groups.contains(&g.id)) {
                    for rule in &group.ingress {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
                Some((lease.ip, rules))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::firewall::Protocol;

    fn tcp(port: u16, source: &str) -> Allow {
        Allow { protocol: Protocol::Tcp, ports: Some((port, port)), source: source.parse().unwrap() }
    }

    #[test]
    fn groups_hold_rules_and_instances_take_the_union_of_their_groups() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let subnet = ipam.create_subnet("10.0.40.0/24".parse().unwrap(), None).unwrap();
        let web = ipam.create_security_group("web", "http").unwrap();
        let ssh = ipam.create_security_group("ssh", "").unwrap();
        ipam.authorize_ingress(&web.id, &[tcp(80, "0.0.0.0/0"), tcp(443, "0.0.0.0/0")]).unwrap();
        ipam.authorize_ingress(&ssh.id, &[tcp(22, "192.168.1.0/24"), tcp(80, "0.0.0.0/0")]).unwrap();
        let a = ipam.allocate(&subnet.id, "i-a", None).unwrap();
        let b = ipam.allocate(&subnet.id, "i-b", None).unwrap();
        ipam.allocate(&subnet.id, "i-c", None).unwrap();
        ipam.set_memberships("i-a", &[web.id.clone(), ssh.id.clone()]).unwrap();
        ipam.set_memberships("i-b", &[ipam.default_security_group().unwrap()]).unwrap();
        let mut ingress = ipam.ingress().unwrap();
        ingress.sort_by_key(|(ip, _)| *ip);
        assert_eq!(ingress.len(), 2, "i-c is in no group: not filtered");
        assert_eq!(
            ingress[0],
            (a.ip, vec![tcp(80, "0.0.0.0/0"), tcp(443, "0.0.0.0/0"), tcp(22, "192.168.1.0/24")])
        );
        assert_eq!(ingress[1], (b.ip, vec![]), "the default group lets nothing in");
        assert_eq!(ipam.default_security_group().unwrap(), ipam.default_security_group().unwrap());

        ipam.revoke_ingress(&web.id, &[tcp(443, "0.0.0.0/0")]).unwrap();
        assert_eq!(ipam.security_groups().unwrap().iter().find(|g| g.id == web.id).unwrap().ingress.len(), 1);
        ipam.set_memberships("i-a", std::slice::from_ref(&ssh.id)).unwrap();
        assert_eq!(ipam.all_memberships().unwrap()["i-a"], vec![ssh.id.clone()]);
        ipam.delete_security_group(&web.id).unwrap();
    }

    #[test]
    fn bad_requests_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path()).unwrap();
        let web = ipam.create_security_group("web", "").unwrap();
        ipam.authorize_ingress(&web.id, &[tcp(80, "0.0.0.0/0")]).unwrap();
        let default = ipam.default_security_group().unwrap();
        ipam.set_memberships("i-a", std::slice::from_ref(&web.id)).unwrap();
        let refusals = [
            (ipam.create_security_group("web", "").unwrap_err(), "GroupDuplicate"),
            (ipam.create_security_group("", "").unwrap_err(), "InvalidParameter"),
            (ipam.create_security_group("sg-123", "").unwrap_err(), "InvalidParameter"),
            (ipam.create_security_group("x", &"d".repeat(256)).unwrap_err(), "InvalidParameter"),
            (ipam.create_security_group("x\0", "").unwrap_err(), "InvalidParameter"),
            (ipam.authorize_ingress(&web.id, &[tcp(80, "0.0.0.0/0")]).unwrap_err(), "PermissionDuplicate"),
            (
                ipam.authorize_ingress(&web.id, &[tcp(81, "0.0.0.0/0"), tcp(81, "0.0.0.0/0")]).unwrap_err(),
                "PermissionDuplicate",
            ),
            (ipam.authorize_ingress("sg-none", &[tcp(80, "0.0.0.0/0")]).unwrap_err(), "GroupNotFound"),
            (
                ipam.revoke_ingress(&web.id, &[tcp(80, "0.0.0.0/0"), tcp(22, "0.0.0.0/0")]).unwrap_err(),
                "PermissionNotFound",
            ),
            (ipam.delete_security_group(&web.id).unwrap_err(), "DependencyViolation"),
            (ipam.delete_security_group(&default).unwrap_err(), "CannotDelete"),
            (ipam.set_memberships("i-b", &["sg-none".into()]).unwrap_err(), "GroupNotFound"),
            (ipam.set_memberships("i-b", &vec![web.id.clone(); 6]).unwrap_err(), "GroupsPerInstanceLimit"),
        ];
        for (err, kind) in refusals {
            assert!(format!("{err:?}").starts_with(kind), "{err:?}");
        }
        let too_many: Vec<Allow> =
            (1..=MAX_RULES_PER_GROUP as u16).map(|p| tcp(1000 + p, "0.0.0.0/0")).collect();
        assert!(matches!(ipam.authorize_ingress(&web.id, &too_many).unwrap_err(), NetError::RulesLimit(_)));
        let groups = ipam.security_groups().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups.iter().find(|g| g.id == web.id).unwrap().ingress, vec![tcp(80, "0.0.0.0/0")]);
        assert!(!ipam.all_memberships().unwrap().contains_key("i-b"));
    }
}
