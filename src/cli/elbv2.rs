//! `nuage elbv2 ...`: the load balancing commands, named and shaped as `aws elbv2`'s
//! (`--targets Id=i-…,Port=80`, `--default-actions Type=forward,TargetGroupArn=…`,
//! `--attributes Key=…,Value=…`, `--matcher HttpCode=200`).

use clap::Subcommand;
use tonic::transport::Channel;

use super::output::{json, table, Format};
use crate::api::pb::load_balancing_client::LoadBalancingClient;
use crate::api::pb::{
    Attribute, CreateListenerRequest, CreateLoadBalancerRequest, CreateTargetGroupRequest,
    DeleteListenerRequest, DeleteLoadBalancerRequest, DeleteTargetGroupRequest, DeregisterTargetsRequest,
    DescribeListenersRequest, DescribeLoadBalancersRequest, DescribeTargetGroupAttributesRequest,
    DescribeTargetGroupsRequest, DescribeTargetHealthRequest, HealthCheck, Listener, LoadBalancer,
    ModifyTargetGroupAttributesRequest, ModifyTargetGroupRequest, RegisterTargetsRequest, SubnetMapping,
    TargetDescription, TargetGroup,
};

/// A health check's settings, as `create-target-group` and `modify-target-group` take them.
#[derive(Debug, clap::Args)]
pub struct HealthCheckArgs {
    /// HTTP or TCP (default: the group's protocol).
    #[arg(long)]
    health_check_protocol: Option<String>,
    /// A port, or traffic-port (the target's).
    #[arg(long)]
    health_check_port: Option<String>,
    /// The HTTP path (default /).
    #[arg(long)]
    health_check_path: Option<String>,
    /// Seconds between checks (5-300, default 30).
    #[arg(long)]
    health_check_interval_seconds: Option<u32>,
    /// Seconds a check may take (2-120, default 5 for HTTP, 10 for TCP).
    #[arg(long)]
    health_check_timeout_seconds: Option<u32>,
    /// Passes in a row to be healthy (2-10, default 5).
    #[arg(long)]
    healthy_threshold_count: Option<u32>,
    /// Failures in a row to be unhealthy (2-10, default 2).
    #[arg(long)]
    unhealthy_threshold_count: Option<u32>,
    /// HttpCode=200 (or 200,302 or 200-299).
    #[arg(long, value_parser = parse_matcher)]
    matcher: Option<String>,
}

impl HealthCheckArgs {
    fn health_check(self) -> HealthCheck {
        HealthCheck {
            protocol: self.health_check_protocol,
            port: self.health_check_port,
            path: self.health_check_path,
            matcher: self.matcher,
            interval_seconds: self.health_check_interval_seconds,
            timeout_seconds: self.health_check_timeout_seconds,
            healthy_threshold: self.healthy_threshold_count,
            unhealthy_threshold: self.unhealthy_threshold_count,
        }
    }
}

/// `aws elbv2` commands.
#[derive(Debug, Subcommand)]
pub enum Elbv2 {
    /// Makes a load balancer; once it has listeners it listens on an Elastic IP (given by
    /// --subnet-mappings) or on host ports of every address of the network plane's
    /// namespace, reachable from the LAN side either way.
    CreateLoadBalancer {
        /// Its name (1-32 letters, digits, hyphens).
        #[arg(long)]
        name: String,
        /// application (HTTP) or network (TCP).
        #[arg(long = "type", default_value = "application")]
        kind: String,
        /// AllocationId=eipalloc-… (the Elastic IP to listen on); a SubnetId= beside it is
        /// taken as aws writes it and not used.
        #[arg(long, num_args = 1.., value_parser = parse_subnet_mapping)]
        subnet_mappings: Vec<SubnetMapping>,
    },
    /// Lists load balancers.
    DescribeLoadBalancers {
        /// Only these.
        #[arg(long, num_args = 1..)]
        load_balancer_arns: Vec<String>,
        /// Only these names.
        #[arg(long, num_args = 1..)]
        names: Vec<String>,
    },
    /// Deletes a load balancer and its listeners.
    DeleteLoadBalancer {
        /// The load balancer.
        #[arg(long)]
        load_balancer_arn: String,
    },
    /// Makes a target group of instances.
    CreateTargetGroup {
        /// Its name.
        #[arg(long)]
        name: String,
        /// HTTP or TCP.
        #[arg(long)]
        protocol: String,
        /// The targets' port.
        #[arg(long)]
        port: u32,
        /// instance (the only kind).
        #[arg(long, default_value = "instance")]
        target_type: String,
        #[command(flatten)]
        health: HealthCheckArgs,
    },
    /// Lists target groups.
    DescribeTargetGroups {
        /// Only these.
        #[arg(long, num_args = 1..)]
        target_group_arns: Vec<String>,
        /// Only these names.
        #[arg(long, num_args = 1..)]
        names: Vec<String>,
        /// Only those this load balancer forwards to.
        #[arg(long, default_value = "")]
        load_balancer_arn: String,
    },
    /// Changes a target group's health check.
    ModifyTargetGroup {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        #[command(flatten)]
        health: HealthCheckArgs,
    },
    /// Changes a target group's attributes: deregistration_delay.timeout_seconds,
    /// load_balancing.algorithm.type (least_outstanding_requests or round_robin),
    /// slow_start.duration_seconds (0: off, or 30-900).
    ModifyTargetGroupAttributes {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        /// Key=NAME,Value=VALUE ...
        #[arg(long, num_args = 1.., value_parser = parse_attribute)]
        attributes: Vec<Attribute>,
    },
    /// A target group's attributes.
    DescribeTargetGroupAttributes {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
    },
    /// Deletes a target group that no listener uses.
    DeleteTargetGroup {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
    },
    /// Registers instances in a target group.
    RegisterTargets {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        /// Id=i-…[,Port=N] ...
        #[arg(long, num_args = 1.., value_parser = parse_target)]
        targets: Vec<TargetDescription>,
    },
    /// Deregisters instances: each drains for the deregistration delay.
    DeregisterTargets {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        /// Id=i-…[,Port=N] ...
        #[arg(long, num_args = 1.., value_parser = parse_target)]
        targets: Vec<TargetDescription>,
    },
    /// Each target's health.
    DescribeTargetHealth {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
    },
    /// Makes a listener: a port forwarding to a target group.
    CreateListener {
        /// The load balancer.
        #[arg(long)]
        load_balancer_arn: String,
        /// HTTP (application) or TCP (network).
        #[arg(long)]
        protocol: String,
        /// The port, on the host's uplink side.
        #[arg(long)]
        port: u32,
        /// Type=forward,TargetGroupArn=ARN
        #[arg(long, value_parser = parse_forward)]
        default_actions: String,
    },
    /// Lists listeners.
    DescribeListeners {
        /// Of this load balancer.
        #[arg(long, default_value = "")]
        load_balancer_arn: String,
        /// Only these.
        #[arg(long, num_args = 1..)]
        listener_arns: Vec<String>,
    },
    /// Deletes a listener.
    DeleteListener {
        /// The listener.
        #[arg(long)]
        listener_arn: String,
    },
}

/// `Key=value` pairs of the aws CLI's shorthand, as a lookup.
pub(super) fn shorthand<'a>(text: &'a str, keys: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    text.split(',')
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not Key=Value"))?;
            if keys.contains(&key) {
                Ok((key, value))
            } else {
                Err(format!("{key:?} is not one of {}", keys.join(", ")))
            }
        })
        .collect()
}

fn parse_target(text: &str) -> Result<TargetDescription, String> {
    let mut target = TargetDescription::default();
    for (key, value) in shorthand(text, &["Id", "Port"])? {
        match key {
            "Id" => target.id = value.to_owned(),
            _ => target.port = value.parse().map_err(|_| format!("port {value:?}"))?,
        }
    }
    if target.id.is_empty() {
        return Err("a target needs Id=".into());
    }
    Ok(target)
}

fn parse_subnet_mapping(text: &str) -> Result<SubnetMapping, String> {
    let mut mapping = SubnetMapping::default();
    for (key, value) in shorthand(text, &["SubnetId", "AllocationId"])? {
        match key {
            "SubnetId" => mapping.subnet_id = value.to_owned(),
            _ => mapping.allocation_id = value.to_owned(),
        }
    }
    Ok(mapping)
}

fn parse_attribute(text: &str) -> Result<Attribute, String> {
    let mut attribute = Attribute::default();
    for (key, value) in shorthand(text, &["Key", "Value"])? {
        match key {
            "Key" => attribute.key = value.to_owned(),
            _ => attribute.value = value.to_owned(),
        }
    }
    Ok(attribute)
}

/// `Type=forward,TargetGroupArn=ARN`: the target group's ARN.
fn parse_forward(text: &str) -> Result<String, String> {
    let mut arn = None;
    for (key, value) in shorthand(text, &["Type", "TargetGroupArn"])? {
        match key {
            "Type" if value != "forward" => {
                return Err(format!("action type {value:?}: only forward exists"))
            }
            "Type" => {}
            _ => arn = Some(value.to_owned()),
        }
    }
    arn.ok_or_else(|| "a forward action needs TargetGroupArn=".into())
}

/// `HttpCode=200` (or the codes alone).
fn parse_matcher(text: &str) -> Result<String, String> {
    Ok(text.strip_prefix("HttpCode=").unwrap_or(text).to_owned())
}

fn print_load_balancers(format: Format, lbs: Vec<LoadBalancer>) {
    match format {
        Format::Json => json("LoadBalancers", lbs),
        Format::Table => table(
            &["NAME", "TYPE", "STATE", "ADDRESS", "ARN"],
            lbs.into_iter()
                .map(|lb| {
                    let address = lb.load_balancer_addresses.first().map(|a| a.ip_address.clone());
                    let address = address.unwrap_or_else(|| "every address".into());
                    vec![lb.load_balancer_name, lb.r#type, lb.state, address, lb.load_balancer_arn]
                })
                .collect(),
        ),
    }
}

fn print_target_groups(format: Format, groups: Vec<TargetGroup>) {
    match format {
        Format::Json => json("TargetGroups", groups),
        Format::Table => table(
            &["NAME", "PROTOCOL", "PORT", "HEALTH CHECK", "ARN"],
            groups
                .into_iter()
                .map(|g| {
                    let check = g.health_check.unwrap_or_default();
                    let shown = format!(
                        "{} {} every {}s",
                        check.protocol.unwrap_or_default(),
                        check.path.unwrap_or_default(),
                        check.interval_seconds.unwrap_or_default()
                    );
                    vec![g.target_group_name, g.protocol, g.port.to_string(), shown, g.target_group_arn]
                })
                .collect(),
        ),
    }
}

fn print_listeners(format: Format, listeners: Vec<Listener>) {
    match format {
        Format::Json => json("Listeners", listeners),
        Format::Table => table(
            &["PORT", "PROTOCOL", "TARGET GROUP", "ARN"],
            listeners
                .into_iter()
                .map(|l| vec![l.port.to_string(), l.protocol, l.target_group_arn, l.listener_arn])
                .collect(),
        ),
    }
}

/// Runs `command` against the daemon on `channel`.
pub async fn run(command: Elbv2, channel: Channel, format: Format) -> anyhow::Result<()> {
    let mut client = LoadBalancingClient::new(channel);
    match command {
        Elbv2::CreateLoadBalancer { name, kind, subnet_mappings } => {
            let request = CreateLoadBalancerRequest { name, r#type: kind, subnet_mappings };
            let lb = client.create_load_balancer(request).await?;
            print_load_balancers(format, vec![lb.into_inner()]);
        }
        Elbv2::DescribeLoadBalancers { load_balancer_arns, names } => {
            let request = DescribeLoadBalancersRequest { load_balancer_arns, names };
            print_load_balancers(
                format,
                client.describe_load_balancers(request).await?.into_inner().load_balancers,
            );
        }
        Elbv2::DeleteLoadBalancer { load_balancer_arn } => {
            client.delete_load_balancer(DeleteLoadBalancerRequest { load_balancer_arn }).await?;
        }
        Elbv2::CreateTargetGroup { name, protocol, port, target_type, health } => {
            let request = CreateTargetGroupRequest {
                name,
                protocol,
                port,
                health_check: Some(health.health_check()),
                target_type,
            };
            print_target_groups(format, vec![client.create_target_group(request).await?.into_inner()]);
        }
        Elbv2::DescribeTargetGroups { target_group_arns, names, load_balancer_arn } => {
            let request = DescribeTargetGroupsRequest { target_group_arns, names, load_balancer_arn };
            print_target_groups(
                format,
                client.describe_target_groups(request).await?.into_inner().target_groups,
            );
        }
        Elbv2::ModifyTargetGroup { target_group_arn, health } => {
            let request =
                ModifyTargetGroupRequest { target_group_arn, health_check: Some(health.health_check()) };
            print_target_groups(format, vec![client.modify_target_group(request).await?.into_inner()]);
        }
        Elbv2::ModifyTargetGroupAttributes { target_group_arn, attributes } => {
            let request = ModifyTargetGroupAttributesRequest { target_group_arn, attributes };
            print_attributes(
                format,
                client.modify_target_group_attributes(request).await?.into_inner().attributes,
            );
        }
        Elbv2::DescribeTargetGroupAttributes { target_group_arn } => {
            let request = DescribeTargetGroupAttributesRequest { target_group_arn };
            print_attributes(
                format,
                client.describe_target_group_attributes(request).await?.into_inner().attributes,
            );
        }
        Elbv2::DeleteTargetGroup { target_group_arn } => {
            client.delete_target_group(DeleteTargetGroupRequest { target_group_arn }).await?;
        }
        Elbv2::RegisterTargets { target_group_arn, targets } => {
            client.register_targets(RegisterTargetsRequest { target_group_arn, targets }).await?;
        }
        Elbv2::DeregisterTargets { target_group_arn, targets } => {
            client.deregister_targets(DeregisterTargetsRequest { target_group_arn, targets }).await?;
        }
        Elbv2::DescribeTargetHealth { target_group_arn } => {
            let request = DescribeTargetHealthRequest { target_group_arn };
            let health =
                client.describe_target_health(request).await?.into_inner().target_health_descriptions;
            match format {
                Format::Json => json("TargetHealthDescriptions", health),
                Format::Table => table(
                    &["TARGET", "PORT", "STATE", "REASON", "DESCRIPTION"],
                    health
                        .into_iter()
                        .map(|h| {
                            let target = h.target.unwrap_or_default();
                            let state = h.target_health.unwrap_or_default();
                            vec![
                                target.id,
                                target.port.to_string(),
                                state.state,
                                state.reason,
                                state.description,
                            ]
                        })
                        .collect(),
                ),
            }
        }
        Elbv2::CreateListener { load_balancer_arn, protocol, port, default_actions } => {
            let request = CreateListenerRequest {
                load_balancer_arn,
                protocol,
                port,
                target_group_arn: default_actions,
            };
            print_listeners(format, vec![client.create_listener(request).await?.into_inner()]);
        }
        Elbv2::DescribeListeners { load_balancer_arn, listener_arns } => {
            let request = DescribeListenersRequest { load_balancer_arn, listener_arns };
            print_listeners(format, client.describe_listeners(request).await?.into_inner().listeners);
        }
        Elbv2::DeleteListener { listener_arn } => {
            client.delete_listener(DeleteListenerRequest { listener_arn }).await?;
        }
    }
    Ok(())
}

fn print_attributes(format: Format, attributes: Vec<Attribute>) {
    match format {
        Format::Json => json("Attributes", attributes),
        Format::Table => {
            table(&["KEY", "VALUE"], attributes.into_iter().map(|a| vec![a.key, a.value]).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_arguments_read_as_the_aws_cli_writes_them() {
        let target = parse_target("Id=i-0abc,Port=8080").unwrap();
        assert_eq!((target.id.as_str(), target.port), ("i-0abc", 8080));
        assert_eq!(parse_target("Id=i-1").unwrap().port, 0, "the group's port");
        assert!(parse_target("Port=80").is_err() && parse_target("Id=i-1,Port=x").is_err());
        let mapping = parse_subnet_mapping("SubnetId=subnet-1,AllocationId=eipalloc-2").unwrap();
        assert_eq!((mapping.subnet_id.as_str(), mapping.allocation_id.as_str()), ("subnet-1", "eipalloc-2"));
        assert!(parse_subnet_mapping("PrivateIPv4Address=10.0.0.1").is_err());
        assert!(parse_target("Name=web").is_err());
        assert_eq!(parse_forward("Type=forward,TargetGroupArn=arn:x").unwrap(), "arn:x");
        assert!(parse_forward("Type=redirect,TargetGroupArn=arn:x").is_err());
        assert!(parse_forward("Type=forward").is_err());
        let attribute = parse_attribute("Key=deregistration_delay.timeout_seconds,Value=30").unwrap();
        assert_eq!(
            (attribute.key.as_str(), attribute.value.as_str()),
            ("deregistration_delay.timeout_seconds", "30")
        );
        assert_eq!(parse_matcher("HttpCode=200-299").unwrap(), "200-299");
    }
}
