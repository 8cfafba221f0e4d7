//! The SecurityGroups service: EC2's permissions (a protocol, a port range, source ranges)
//! read into the network plane's rules, one rule per source range, and shown back the same
//! way.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::security_groups_server::SecurityGroups;
use super::pb::{
    CreateSecurityGroupRequest, DeleteSecurityGroupRequest, DeleteSecurityGroupResponse,
    DescribeSecurityGroupsRequest, DescribeSecurityGroupsResponse, IngressRequest, IpPermission,
    SecurityGroup as Group,
};
use super::resources::{self, Query};
use crate::daemon::tags::ResourceType;
use crate::daemon::{Daemon, DaemonError};
use crate::net::firewall::{Allow, Protocol};
use crate::net::security_groups::{SecurityGroup, MAX_RULES_PER_GROUP};
use crate::state::tag::Tag;

/// Serves the daemon's security groups.
pub struct SecurityGroupsService(pub Arc<Daemon>);

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::All => "-1",
    }
}

/// The API form of a group: one permission per rule.
fn group(g: SecurityGroup, tags: Vec<Tag>) -> Group {
    let ip_permissions = g
        .ingress
        .into_iter()
        .map(|rule| {
            let (from_port, to_port) =
                rule.ports.map_or((-1, -1), |(first, last)| (first.into(), last.into()));
            IpPermission {
                ip_protocol: protocol_name(rule.protocol).into(),
                from_port,
                to_port,
                ip_ranges: vec![rule.source.to_string()],
            }
        })
        .collect();
    Group {
        group_id: g.id,
        group_name: g.name,
        description: g.description,
        ip_permissions,
        tags: resources::to_pb(tags),
    }
}

/// The rules EC2 permissions ask for, checked: a known protocol (by name or number), a
/// port range within 0-65535 for TCP and UDP (-1 to -1, or all of them, meaning every
/// port; ignored for other protocols), at least one source range.
fn rules(permissions: Vec<IpPermission>) -> Result<Vec<Allow>, DaemonError> {
    let invalid = |why: String| DaemonError::InvalidParameter(why);
    let mut rules = Vec::new();
    for permission in permissions {
        let protocol = match permission.ip_protocol.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" => Protocol::Icmp,
            "-1" | "all" => Protocol::All,
            other => return Err(invalid(format!("ip_protocol {other:?}: tcp, udp, icmp or -1"))),
        };
        let ports = match (protocol, permission.from_port, permission.to_port) {
            (Protocol::Icmp | Protocol::All, _, _) | (_, -1, -1) | (_, 0, 65535) => None,
            (_, from, to) if (0..=65535).contains(&from) && (from..=65535).contains(&to) => {
                Some((from as u16, to as u16))
            }
            (_, from, to) => return Err(invalid(format!("port range {from} to {to}"))),
        };
        if permission.ip_ranges.is_empty() {
            return Err(invalid("a permission needs at least one source range".into()));
        }
        for range in permission.ip_ranges {
            let source = range.parse().map_err(|e| invalid(format!("source range: {e}")))?;
            rules.push(Allow { protocol, ports, source });
            if rules.len() > MAX_RULES_PER_GROUP {
                return Err(invalid(format!("at most {MAX_RULES_PER_GROUP} rules in one call")));
            }
        }
    }
    if rules.is_empty() {
        return Err(invalid("name at least one permission".into()));
    }
    Ok(rules)
}

#[tonic::async_trait]
impl SecurityGroups for SecurityGroupsService {
    async fn create_security_group(
        &self,
        request: Request<CreateSecurityGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        let CreateSecurityGroupRequest { group_name, description, tag_specifications } = request.into_inner();
        let make = move |daemon: &Daemon| daemon.network.create_security_group(&group_name, &description);
        resources::create(self.0.clone(), tag_specifications, ResourceType::SecurityGroup, make, group).await
    }

    async fn describe_security_groups(
        &self,
        request: Request<DescribeSecurityGroupsRequest>,
    ) -> Result<Response<DescribeSecurityGroupsResponse>, Status> {
        let DescribeSecurityGroupsRequest { group_ids, filters, max_results, next_token } =
            request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = move |daemon: &Daemon| daemon.network.describe_security_groups(&group_ids);
        let (security_groups, next_token) = resources::describe(self.0.clone(), query, find, group).await?;
        Ok(Response::new(DescribeSecurityGroupsResponse { security_groups, next_token }))
    }

    async fn authorize_security_group_ingress(
        &self,
        request: Request<IngressRequest>,
    ) -> Result<Response<Group>, Status> {
        let IngressRequest { group_id, ip_permissions } = request.into_inner();
        let allow = rules(ip_permissions)?;
        resources::changed(self.0.clone(), move |d| d.network.authorize_ingress(&group_id, &allow), group)
            .await
    }

    async fn revoke_security_group_ingress(
        &self,
        request: Request<IngressRequest>,
    ) -> Result<Response<Group>, Status> {
        let IngressRequest { group_id, ip_permissions } = request.into_inner();
        let revoke = rules(ip_permissions)?;
        resources::changed(self.0.clone(), move |d| d.network.revoke_ingress(&group_id, &revoke), group).await
    }

    async fn delete_security_group(
        &self,
        request: Request<DeleteSecurityGroupRequest>,
    ) -> Result<Response<DeleteSecurityGroupResponse>, Status> {
        let id = request.into_inner().group_id;
        resources::done(self.0.clone(), move |daemon| daemon.network.delete_security_group(&id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permission(protocol: &str, from: i32, to: i32, ranges: &[&str]) -> IpPermission {
        IpPermission {
            ip_protocol: protocol.into(),
            from_port: from,
            to_port: to,
            ip_ranges: ranges.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn permissions_become_one_rule_per_range_and_come_back_alike() {
        let asked = vec![
            permission("tcp", 22, 22, &["192.168.1.0/24", "10.0.0.5/32"]),
            permission("UDP", 5000, 5010, &["0.0.0.0/0"]),
            permission("6", 0, 65535, &["0.0.0.0/0"]),
            permission("icmp", 8, 0, &["0.0.0.0/0"]),
            permission("-1", -1, -1, &["172.16.0.0/12"]),
        ];
        let made = rules(asked).unwrap();
        assert_eq!(made.len(), 6);
        assert_eq!(
            made[0],
            Allow {
                protocol: Protocol::Tcp,
                ports: Some((22, 22)),
                source: "192.168.1.0/24".parse().unwrap()
            }
        );
        assert_eq!(made[2].ports, Some((5000, 5010)));
        assert_eq!(made[3].ports, None, "every port");
        assert_eq!((made[4].protocol, made[4].ports), (Protocol::Icmp, None));
        let shown = group(
            SecurityGroup {
                id: "sg-1".into(),
                name: "web".into(),
                description: String::new(),
                ingress: made.clone(),
            },
            Vec::new(),
        );
        assert_eq!(rules(shown.ip_permissions).unwrap(), made, "what is shown reads back as the same rules");
    }

    #[test]
    fn bad_permissions_are_named() {
        for (bad, why) in [
            (permission("gre", 0, 0, &["0.0.0.0/0"]), "ip_protocol"),
            (permission("tcp", 80, 79, &["0.0.0.0/0"]), "port range"),
            (permission("tcp", -1, 80, &["0.0.0.0/0"]), "port range"),
            (permission("udp", 1, 70000, &["0.0.0.0/0"]), "port range"),
            (permission("tcp", 80, 80, &[]), "source range"),
            (permission("tcp", 80, 80, &["10.0.0.1/24"]), "host bits"),
            (permission("tcp", 80, 80, &["everywhere"]), "invalid CIDR"),
        ] {
            let err = rules(vec![bad]).unwrap_err().to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
        assert!(rules(Vec::new()).is_err());
        let many = vec![permission("tcp", 80, 80, &["0.0.0.0/0"; 61])];
        assert!(rules(many).unwrap_err().to_string().contains("at most 60"));
    }
}
