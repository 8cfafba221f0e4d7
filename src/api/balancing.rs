//! The LoadBalancing service (`aws elbv2`): requests checked and turned into the
//! balancer controller's terms, its records into ELB's shapes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::load_balancing_server::LoadBalancing;
use super::pb::{
    self, Attribute, CreateListenerRequest, CreateLoadBalancerRequest, CreateTargetGroupRequest,
    DeleteListenerRequest, DeleteListenerResponse, DeleteLoadBalancerRequest, DeleteLoadBalancerResponse,
    DeleteTargetGroupRequest, DeleteTargetGroupResponse, DeregisterTargetsRequest, DeregisterTargetsResponse,
    DescribeListenersRequest, DescribeListenersResponse, DescribeLoadBalancersRequest,
    DescribeLoadBalancersResponse, DescribeTargetGroupAttributesRequest, DescribeTargetGroupsRequest,
    DescribeTargetGroupsResponse, DescribeTargetHealthRequest, DescribeTargetHealthResponse,
    ModifyTargetGroupAttributesRequest, ModifyTargetGroupRequest, RegisterTargetsRequest,
    RegisterTargetsResponse, TargetDescription, TargetGroupAttributes, TargetHealthDescription,
};
use crate::balancer::model::{
    AttributesChange, Balancing, HealthCheckChange, Listener, LoadBalancer, TargetGroup,
    TargetGroupAttributes as Attributes,
};
use crate::balancer::{BalancerError, Balancers};
use crate::lb::config::{Algorithm, HealthCheck, Matcher, Protocol};

/// Serves the load balancers.
pub struct LoadBalancingService(pub Arc<Balancers>);

/// Runs blocking controller work (the database, processes) off the async runtime.
async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, BalancerError> + Send + 'static,
    T: Send + 'static,
{
    super::off_runtime(work).await
}

const DELAY_KEY: &str = "deregistration_delay.timeout_seconds";
const ALGORITHM_KEY: &str = "load_balancing.algorithm.type";
const SLOW_START_KEY: &str = "slow_start.duration_seconds";

fn invalid(message: String) -> BalancerError {
    BalancerError::Validation(message)
}

fn protocol(text: &str) -> Result<Protocol, BalancerError> {
    match text.to_ascii_uppercase().as_str() {
        "HTTP" => Ok(Protocol::Http),
        "TCP" => Ok(Protocol::Tcp),
        _ => Err(invalid(format!("protocol {text:?} is not one of HTTP, TCP"))),
    }
}

fn protocol_name(protocol: Protocol) -> String {
    match protocol {
        Protocol::Http => "HTTP".into(),
        Protocol::Tcp => "TCP".into(),
    }
}

fn port(value: u32, what: &str) -> Result<u16, BalancerError> {
    u16::try_from(value)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| invalid(format!("{what} must be from 1 to 65535, not {value}")))
}

fn health_check_change(check: Option<pb::HealthCheck>) -> Result<HealthCheckChange, BalancerError> {
    let Some(c) = check else { return Ok(HealthCheckChange::default()) };
    let port = match c.port.as_deref() {
        None => None,
        Some("traffic-port") => Some(None),
        Some(text) => Some(Some(
            text.parse::<u32>()
                .map_err(|_| invalid(format!("health check port {text:?}")))
                .and_then(|p| port(p, "the health check port"))?,
        )),
    };
    Ok(HealthCheckChange {
        protocol: c.protocol.as_deref().map(protocol).transpose()?,
        port,
        path: c.path,
        matcher: c.matcher.as_deref().map(Matcher::parse).transpose().map_err(invalid)?,
        interval_seconds: c.interval_seconds,
        timeout_seconds: c.timeout_seconds,
        healthy_threshold: c.healthy_threshold,
        unhealthy_threshold: c.unhealthy_threshold,
    })
}

fn health_check(c: &HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        protocol: Some(protocol_name(c.protocol)),
        port: Some(c.port.map_or_else(|| "traffic-port".to_owned(), |p| p.to_string())),
        path: Some(c.path.clone()),
        matcher: Some(String::from(c.matcher.clone())),
        interval_seconds: Some(c.interval_seconds),
        timeout_seconds: Some(c.timeout_seconds),
        healthy_threshold: Some(c.healthy_threshold),
        unhealthy_threshold: Some(c.unhealthy_threshold),
    }
}

fn load_balancer(lb: LoadBalancer) -> pb::LoadBalancer {
    pb::LoadBalancer {
        load_balancer_arn: lb.arn,
        load_balancer_name: lb.name,
        r#type: lb.kind.as_str().into(),
        state: "active".into(),
        created_time: i64::try_from(lb.created).unwrap_or(i64::MAX),
        load_balancer_addresses: lb
            .address
            .into_iter()
            .map(|a| pb::LoadBalancerAddress { ip_address: a.ip.to_string(), allocation_id: a.allocation_id })
            .collect(),
    }
}

/// The one Elastic IP `mappings` name, if any.
fn allocation_id(mappings: &[pb::SubnetMapping]) -> Result<Option<String>, BalancerError> {
    let mut named = mappings.iter().map(|m| m.allocation_id.as_str()).filter(|id| !id.is_empty());
    match (named.next(), named.next()) {
        (_, Some(_)) => {
            Err(BalancerError::Validation("a load balancer listens on at most one Elastic IP".into()))
        }
        (first, None) => Ok(first.map(str::to_owned)),
    }
}

fn target_group(tg: &TargetGroup, balancing: &Balancing) -> pb::TargetGroup {
    pb::TargetGroup {
        target_group_arn: tg.arn.clone(),
        target_group_name: tg.name.clone(),
        protocol: protocol_name(tg.protocol),
        port: u32::from(tg.port),
        health_check: Some(health_check(&tg.health_check)),
        load_balancer_arns: balancing.load_balancers_of(&tg.arn),
        target_type: "instance".into(),
    }
}

fn listener(l: Listener) -> pb::Listener {
    pb::Listener {
        listener_arn: l.arn,
        load_balancer_arn: l.load_balancer_arn,
        protocol: protocol_name(l.protocol),
        port: u32::from(l.port),
        target_group_arn: l.target_group_arn,
    }
}

fn attributes(a: &Attributes) -> TargetGroupAttributes {
    let algorithm = match a.algorithm {
        Algorithm::LeastOutstandingRequests => "least_outstanding_requests",
        Algorithm::RoundRobin => "round_robin",
    };
    TargetGroupAttributes {
        attributes: vec![
            Attribute { key: DELAY_KEY.into(), value: a.deregistration_delay_seconds.to_string() },
            Attribute { key: ALGORITHM_KEY.into(), value: algorithm.into() },
            Attribute { key: SLOW_START_KEY.into(), value: a.slow_start_seconds.to_string() },
        ],
    }
}

fn attributes_change(given: Vec<Attribute>) -> Result<AttributesChange, BalancerError> {
    let mut change = AttributesChange::default();
    for Attribute { key, value } in given {
        let seconds = |key: &str| {
            value.parse().map_err(|_| invalid(format!("{key} {value:?} is not a number of seconds")))
        };
        match key.as_str() {
            DELAY_KEY => change.deregistration_delay_seconds = Some(seconds(DELAY_KEY)?),
            SLOW_START_KEY => change.slow_start_seconds = Some(seconds(SLOW_START_KEY)?),
            ALGORITHM_KEY => {
                change.algorithm = Some(match value.as_str() {
                    "least_outstanding_requests" => Algorithm::LeastOutstandingRequests,
                    "round_robin" => Algorithm::RoundRobin,
                    _ => {
                        return Err(invalid(format!(
                            "{ALGORITHM_KEY} {value:?} is not one of round_robin, least_outstanding_requests"
                        )))
                    }
                })
            }
            _ => {
                return Err(invalid(format!(
                    "attribute {key:?} is not one of {DELAY_KEY}, {ALGORITHM_KEY}, {SLOW_START_KEY}"
                )))
            }
        }
    }
    Ok(change)
}

fn targets(given: Vec<TargetDescription>) -> Result<Vec<(String, Option<u16>)>, BalancerError> {
    if given.is_empty() {
        return Err(invalid("name at least one target".into()));
    }
    given
        .into_iter()
        .map(|t| {
            let port = if t.port == 0 { None } else { Some(port(t.port, "a target's port")?) };
            Ok((t.id, port))
        })
        .collect()
}

/// The records named by ARN or name (all when neither is given); each named must exist.
fn named<'a, T>(
    all: &'a [T],
    arns: &[String],
    names: &[String],
    key: impl Fn(&T) -> (&str, &str),
    missing: impl Fn(String) -> BalancerError,
) -> Result<Vec<&'a T>, BalancerError> {
    if arns.is_empty() && names.is_empty() {
        return Ok(all.iter().collect());
    }
    let mut found = Vec::new();
    for wanted in arns {
        found.push(all.iter().find(|r| key(r).0 == wanted).ok_or_else(|| missing(wanted.clone()))?);
    }
    for wanted in names {
        found.push(all.iter().find(|r| key(r).1 == wanted).ok_or_else(|| missing(wanted.clone()))?);
    }
    Ok(found)
}

#[tonic::async_trait]
impl LoadBalancing for LoadBalancingService {
    async fn create_load_balancer(
        &self,
        request: Request<CreateLoadBalancerRequest>,
    ) -> Result<Response<pb::LoadBalancer>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let lb = blocking(move || {
            let allocation_id = allocation_id(&r.subnet_mappings)?;
            balancers.create_load_balancer(&r.name, r.r#type.parse()?, allocation_id.as_deref())
        })
        .await?;
        Ok(Response::new(load_balancer(lb)))
    }

    async fn describe_load_balancers(
        &self,
        request: Request<DescribeLoadBalancersRequest>,
    ) -> Result<Response<DescribeLoadBalancersResponse>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let load_balancers = blocking(move || {
            let balancing = balancers.read()?;
            let found = named(
                &balancing.load_balancers,
                &r.load_balancer_arns,
                &r.names,
                |lb| (&lb.arn, &lb.name),
                BalancerError::LoadBalancerNotFound,
            )?;
            Ok(found.into_iter().cloned().map(load_balancer).collect())
        })
        .await?;
        Ok(Response::new(DescribeLoadBalancersResponse { load_balancers }))
    }

    async fn delete_load_balancer(
        &self,
        request: Request<DeleteLoadBalancerRequest>,
    ) -> Result<Response<DeleteLoadBalancerResponse>, Status> {
        let arn = request.into_inner().load_balancer_arn;
        let balancers = self.0.clone();
        blocking(move || balancers.delete_load_balancer(&arn)).await?;
        Ok(Response::new(DeleteLoadBalancerResponse {}))
    }

    async fn create_target_group(
        &self,
        request: Request<CreateTargetGroupRequest>,
    ) -> Result<Response<pb::TargetGroup>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let created = blocking(move || {
            if !r.target_type.is_empty() && r.target_type != "instance" {
                return Err(invalid(format!("target type {:?}: only instance targets exist", r.target_type)));
            }
            let protocol = protocol(&r.protocol)?;
            let port = port(r.port, "a target group's port")?;
            let mut check = health_check_change(r.health_check)?;
            // A TCP group's checks are TCP unless asked otherwise, as ELB's.
            check.protocol = check.protocol.or(Some(protocol));
            let group = balancers.create_target_group(&r.name, protocol, port, &check)?;
            Ok(target_group(&group, &balancers.read()?))
        })
        .await?;
        Ok(Response::new(created))
    }

    async fn describe_target_groups(
        &self,
        request: Request<DescribeTargetGroupsRequest>,
    ) -> Result<Response<DescribeTargetGroupsResponse>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let target_groups = blocking(move || {
            let balancing = balancers.read()?;
            if !r.load_balancer_arn.is_empty() {
                balancing.load_balancer(&r.load_balancer_arn)?;
            }
            let found = named(
                &balancing.target_groups,
                &r.target_group_arns,
                &r.names,
                |tg| (&tg.arn, &tg.name),
                BalancerError::TargetGroupNotFound,
            )?;
            Ok(found
                .into_iter()
                .filter(|tg| {
                    r.load_balancer_arn.is_empty()
                        || balancing.load_balancers_of(&tg.arn).contains(&r.load_balancer_arn)
                })
                .map(|tg| target_group(tg, &balancing))
                .collect())
        })
        .await?;
        Ok(Response::new(DescribeTargetGroupsResponse { target_groups }))
    }

    async fn modify_target_group(
        &self,
        request: Request<ModifyTargetGroupRequest>,
    ) -> Result<Response<pb::TargetGroup>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let modified = blocking(move || {
            let group =
                balancers.modify_target_group(&r.target_group_arn, &health_check_change(r.health_check)?)?;
            Ok(target_group(&group, &balancers.read()?))
        })
        .await?;
        Ok(Response::new(modified))
    }

    async fn modify_target_group_attributes(
        &self,
        request: Request<ModifyTargetGroupAttributesRequest>,
    ) -> Result<Response<TargetGroupAttributes>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let now = blocking(move || {
            balancers.modify_attributes(&r.target_group_arn, &attributes_change(r.attributes)?)
        })
        .await?;
        Ok(Response::new(attributes(&now)))
    }

    async fn describe_target_group_attributes(
        &self,
        request: Request<DescribeTargetGroupAttributesRequest>,
    ) -> Result<Response<TargetGroupAttributes>, Status> {
        let arn = request.into_inner().target_group_arn;
        let balancers = self.0.clone();
        let now = blocking(move || Ok(balancers.read()?.target_group(&arn)?.attributes.clone())).await?;
        Ok(Response::new(attributes(&now)))
    }

    async fn delete_target_group(
        &self,
        request: Request<DeleteTargetGroupRequest>,
    ) -> Result<Response<DeleteTargetGroupResponse>, Status> {
        let arn = request.into_inner().target_group_arn;
        let balancers = self.0.clone();
        blocking(move || balancers.delete_target_group(&arn)).await?;
        Ok(Response::new(DeleteTargetGroupResponse {}))
    }

    async fn register_targets(
        &self,
        request: Request<RegisterTargetsRequest>,
    ) -> Result<Response<RegisterTargetsResponse>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        blocking(move || balancers.register_targets(&r.target_group_arn, &targets(r.targets)?)).await?;
        Ok(Response::new(RegisterTargetsResponse {}))
    }

    async fn deregister_targets(
        &self,
        request: Request<DeregisterTargetsRequest>,
    ) -> Result<Response<DeregisterTargetsResponse>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        blocking(move || balancers.deregister_targets(&r.target_group_arn, &targets(r.targets)?)).await?;
        Ok(Response::new(DeregisterTargetsResponse {}))
    }

    async fn describe_target_health(
        &self,
        request: Request<DescribeTargetHealthRequest>,
    ) -> Result<Response<DescribeTargetHealthResponse>, Status> {
        let arn = request.into_inner().target_group_arn;
        let balancers = self.0.clone();
        let health = blocking(move || balancers.target_health(&arn)).await?;
        let target_health_descriptions = health
            .into_iter()
            .map(|h| TargetHealthDescription {
                target: Some(TargetDescription { id: h.instance_id, port: u32::from(h.port) }),
                target_health: Some(pb::TargetHealth {
                    state: h.state.as_str().into(),
                    reason: h.reason.unwrap_or_default(),
                    description: h.description,
                }),
            })
            .collect();
        Ok(Response::new(DescribeTargetHealthResponse { target_health_descriptions }))
    }

    async fn create_listener(
        &self,
        request: Request<CreateListenerRequest>,
    ) -> Result<Response<pb::Listener>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let created = blocking(move || {
            let port = port(r.port, "a listener's port")?;
            balancers.create_listener(&r.load_balancer_arn, protocol(&r.protocol)?, port, &r.target_group_arn)
        })
        .await?;
        Ok(Response::new(listener(created)))
    }

    async fn describe_listeners(
        &self,
        request: Request<DescribeListenersRequest>,
    ) -> Result<Response<DescribeListenersResponse>, Status> {
        let r = request.into_inner();
        let balancers = self.0.clone();
        let listeners = blocking(move || {
            let balancing = balancers.read()?;
            if !r.load_balancer_arn.is_empty() {
                balancing.load_balancer(&r.load_balancer_arn)?;
            }
            let found = named(
                &balancing.listeners,
                &r.listener_arns,
                &[],
                |l| (&l.arn, ""),
                BalancerError::ListenerNotFound,
            )?;
            Ok(found
                .into_iter()
                .filter(|l| r.load_balancer_arn.is_empty() || l.load_balancer_arn == r.load_balancer_arn)
                .cloned()
                .map(listener)
                .collect())
        })
        .await?;
        Ok(Response::new(DescribeListenersResponse { listeners }))
    }

    async fn delete_listener(
        &self,
        request: Request<DeleteListenerRequest>,
    ) -> Result<Response<DeleteListenerResponse>, Status> {
        let arn = request.into_inner().listener_arn;
        let balancers = self.0.clone();
        blocking(move || balancers.delete_listener(&arn)).await?;
        Ok(Response::new(DeleteListenerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_they_reach_the_controller() {
        assert_eq!(protocol("http").unwrap(), Protocol::Http);
        assert!(matches!(protocol("UDP"), Err(BalancerError::Validation(_))));
        assert!(port(0, "p").is_err() && port(65536, "p").is_err() && port(80, "p").is_ok());
        let check = pb::HealthCheck {
            port: Some("traffic-port".into()),
            matcher: Some("200-299".into()),
            ..Default::default()
        };
        let change = health_check_change(Some(check)).unwrap();
        assert_eq!(change.port, Some(None));
        assert!(health_check_change(Some(pb::HealthCheck { port: Some("x".into()), ..Default::default() }))
            .is_err());
        assert!(health_check_change(Some(pb::HealthCheck {
            matcher: Some("600".into()),
            ..Default::default()
        }))
        .is_err());
        let change = attributes_change(vec![
            Attribute { key: DELAY_KEY.into(), value: "30".into() },
            Attribute { key: ALGORITHM_KEY.into(), value: "round_robin".into() },
            Attribute { key: SLOW_START_KEY.into(), value: "60".into() },
        ])
        .unwrap();
        assert_eq!(
            (change.deregistration_delay_seconds, change.algorithm, change.slow_start_seconds),
            (Some(30), Some(Algorithm::RoundRobin), Some(60))
        );
        for bad in [
            (DELAY_KEY, "soon"),
            (ALGORITHM_KEY, "random"),
            (SLOW_START_KEY, "-1"),
            ("stickiness.enabled", "true"),
        ] {
            let given = vec![Attribute { key: bad.0.into(), value: bad.1.into() }];
            assert!(attributes_change(given).is_err(), "{bad:?}");
        }
        assert!(targets(vec![]).is_err());
        assert_eq!(
            targets(vec![TargetDescription { id: "i-1".into(), port: 0 }]).unwrap(),
            [("i-1".to_string(), None)]
        );
    }
}
