//! The load balancing resources as the daemon records them (one document, see
//! [`crate::state::document`]), and every change the API can make to them as a pure
//! function that either changes the record as asked or refuses and changes nothing.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{BalancerError, Cap};
use crate::lb::config::{
    Algorithm, BalancerConfig, HealthCheck, ListenerConfig, Protocol, TargetConfig, TargetGroupConfig,
};

/// Load balancers on one host.
pub const MAX_LOAD_BALANCERS: usize = 50;
/// Target groups on one host.
pub const MAX_TARGET_GROUPS: usize = 100;
/// Listeners of one load balancer.
pub const MAX_LISTENERS: usize = crate::lb::config::MAX_LISTENERS;
/// Targets of one target group.
pub const MAX_TARGETS: usize = crate::lb::config::MAX_TARGETS;
/// The longest deregistration delay ELB takes, in seconds.
pub const MAX_DEREGISTRATION_DELAY: u32 = 3600;
/// The slow start durations ELB takes, in seconds (0 turns it off).
pub const SLOW_START_SECONDS: std::ops::RangeInclusive<u32> = 30..=900;

/// Every load balancing resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Balancing {
    /// Load balancers, oldest first.
    pub load_balancers: Vec<LoadBalancer>,
    /// Target groups, oldest first.
    pub target_groups: Vec<TargetGroup>,
    /// Listeners, oldest first.
    pub listeners: Vec<Listener>,
}

/// What a load balancer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancerType {
    /// HTTP (ALB).
    Application,
    /// TCP (NLB).
    Network,
}

impl LoadBalancerType {
    /// ELB's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Network => "network",
        }
    }

    /// The protocol its listeners take.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::Application => Protocol::Http,
            Self::Network => Protocol::Tcp,
        }
    }

    fn arn_part(self) -> &'static str {
        match self {
            Self::Application => "app",
            Self::Network => "net",
        }
    }
}

impl std::str::FromStr for LoadBalancerType {
    type Err = BalancerError;
    fn from_str(text: &str) -> Result<Self, BalancerError> {
        match text {
            "" | "application" => Ok(Self::Application),
            "network" => Ok(Self::Network),
            other => Err(BalancerError::Validation(format!(
                "load balancer type {other:?} is not one of application, network"
            ))),
        }
    }
}

/// A load balancer: a `nuage-lb` process serving its listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// Its ARN.
    pub arn: String,
    /// Its name, unique on the host.
    pub name: String,
    /// Application or network.
    pub kind: LoadBalancerType,
    /// Seconds since the epoch.
    pub created: u64,
    /// The Elastic IP it listens on; `None`: every address of the network plane's
    /// namespace (host ports on the uplink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<ElasticAddress>,
}

/// An Elastic IP a load balancer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElasticAddress {
    /// `eipalloc-…`.
    pub allocation_id: String,
    /// The address.
    pub ip: Ipv4Addr,
}

impl LoadBalancer {
    /// A load balancer not yet recorded, with a new ARN in ELB's form.
    pub fn new(region: &str, name: &str, kind: LoadBalancerType, now: u64) -> Self {
        let arn = new_arn(region, &format!("loadbalancer/{}/{name}", kind.arn_part()));
        Self { arn, name: name.into(), kind, created: now, address: None }
    }

    /// The address its listeners bind.
    fn bind_ip(&self) -> Ipv4Addr {
        self.address.as_ref().map_or(Ipv4Addr::UNSPECIFIED, |a| a.ip)
    }

    /// The short id that names its directory and process (the ARN's last part).
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }
}

/// A target group's attributes (`modify-target-group-attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupAttributes {
    /// Seconds a deregistered target keeps its work in flight (0–3600, default 300).
    pub deregistration_delay_seconds: u32,
    /// How a target is picked.
    pub algorithm: Algorithm,
    /// Seconds over which a target that became healthy ramps up to its full share of new
    /// work (0: off, the default; else 30–900).
    #[serde(default)]
    pub slow_start_seconds: u32,
}

impl Default for TargetGroupAttributes {
    fn default() -> Self {
        Self { deregistration_delay_seconds: 300, algorithm: Algorithm::default(), slow_start_seconds: 0 }
    }
}

/// A registered instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The instance.
    pub instance_id: String,
    /// The port traffic goes to.
    pub port: u16,
    /// When it was deregistered (it drains until the delay is over), if it was.
    pub deregistered_at: Option<u64>,
}

/// A target group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// Its ARN.
    pub arn: String,
    /// Its name, unique on the host.
    pub name: String,
    /// What its targets speak.
    pub protocol: Protocol,
    /// The targets' default port.
    pub port: u16,
    /// How its targets are checked.
    pub health_check: HealthCheck,
    /// Its attributes.
    pub attributes: TargetGroupAttributes,
    /// Its targets, registered or draining.
    pub targets: Vec<Target>,
    /// Seconds since the epoch.
    pub created: u64,
}

/// A listener: a port of a load balancer forwarding to a target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Its ARN.
    pub arn: String,
    /// Its load balancer.
    pub load_balancer_arn: String,
    /// What it takes.
    pub protocol: Protocol,
    /// The port it listens on.
    pub port: u16,
    /// Where it forwards (its default action).
    pub target_group_arn: String,
}

/// What a target group's health check may change (`modify-target-group`); `None` keeps.
#[derive(Debug, Clone, Default)]
pub struct HealthCheckChange {
    /// TCP or HTTP.
    pub protocol: Option<Protocol>,
    /// The port (`None` inside: the traffic port).
    pub port: Option<Option<u16>>,
    /// The HTTP path.
    pub path: Option<String>,
    /// The passing codes.
    pub matcher: Option<crate::lb::config::Matcher>,
    /// Seconds between checks.
    pub interval_seconds: Option<u32>,
    /// Seconds a check may take.
    pub timeout_seconds: Option<u32>,
    /// Passes to be healthy.
    pub healthy_threshold: Option<u32>,
    /// Failures to be unhealthy.
    pub unhealthy_threshold: Option<u32>,
}

impl HealthCheckChange {
    fn apply(&self, check: &mut HealthCheck) {
        let HealthCheck {
            protocol,
            port,
            path,
            matcher,
            interval_seconds,
            timeout_seconds,
            healthy_threshold,
            unhealthy_threshold,
        } = check;
        set(protocol, self.protocol);
        set(port, self.port);
        set(path, self.path.clone());
        set(matcher, self.matcher.clone());
        set(interval_seconds, self.interval_seconds);
        set(timeout_seconds, self.timeout_seconds);
        set(healthy_threshold, self.healthy_threshold);
        set(unhealthy_threshold, self.unhealthy_threshold);
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// A target group's attributes to change; `None` keeps.
#[derive(Debug, Clone, Default)]
pub struct AttributesChange {
    /// `deregistration_delay.timeout_seconds`.
    pub deregistration_delay_seconds: Option<u32>,
    /// `load_balancing.algorithm.type`.
    pub algorithm: Option<Algorithm>,
    /// `slow_start.duration_seconds`.
    pub slow_start_seconds: Option<u32>,
}

/// ELB's rule for load balancer and target group names: 1–32 letters, digits and
/// hyphens, not starting or ending with a hyphen (nor, for load balancers, `internal-`).
fn check_name(kind: &str, name: &str) -> Result<(), BalancerError> {
    let fits = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.starts_with("internal-");
    if fits {
        Ok(())
    } else {
        Err(BalancerError::Validation(format!(
            "{kind} name {name:?} must be 1-32 letters, digits and hyphens, not starting or ending with a hyphen"
        )))
    }
}

/// 16 random hex digits, as ELB ends its ARNs.
fn random_hex16() -> String {
    crate::state::id::new_id("x")[2..18].to_owned()
}

/// How every load balancing ARN begins.
pub const ARN_PREFIX: &str = "arn:nuage:elasticloadbalancing:";

/// A new ARN of `resource` under `region`.
fn new_arn(region: &str, resource: &str) -> String {
    format!("{ARN_PREFIX}{region}:000000000000:{resource}/{}", random_hex16())
}

impl Balancing {
    /// The load balancer `arn`.
    pub fn load_balancer(&self, arn: &str) -> Result<&LoadBalancer, BalancerError> {
        self.load_balancers
            .iter()
            .find(|lb| lb.arn == arn)
            .ok_or_else(|| BalancerError::LoadBalancerNotFound(arn.into()))
    }

    /// The target group `arn`.
    pub fn target_group(&self, arn: &str) -> Result<&TargetGroup, BalancerError> {
        self.target_groups
            .iter()
            .find(|tg| tg.arn == arn)
            .ok_or_else(|| BalancerError::TargetGroupNotFound(arn.into()))
    }

    fn target_group_mut(&mut self, arn: &str) -> Result<&mut TargetGroup, BalancerError> {
        self.target_groups
            .iter_mut()
            .find(|tg| tg.arn == arn)
            .ok_or_else(|| BalancerError::TargetGroupNotFound(arn.into()))
    }

    /// The load balancers whose listeners forward to target group `arn`.
    pub fn load_balancers_of(&self, arn: &str) -> Vec<String> {
        let mut arns: Vec<String> = self
            .listeners
            .iter()
            .filter(|l| l.target_group_arn == arn)
            .map(|l| l.load_balancer_arn.clone())
            .collect();
        arns.dedup();
        arns
    }

    /// Refuses a load balancer that could not be added: a bad or taken name, one too many,
    /// or an Elastic IP another one holds.
    pub fn check_new_load_balancer(&self, lb: &LoadBalancer) -> Result<(), BalancerError> {
        check_name("load balancer", &lb.name)?;
        if self.load_balancers.iter().any(|other| other.name == lb.name) {
            return Err(BalancerError::DuplicateLoadBalancerName(lb.name.clone()));
        }
        if self.load_balancers.len() >= MAX_LOAD_BALANCERS {
            return Err(BalancerError::TooMany(
                Cap::LoadBalancers,
                format!("at most {MAX_LOAD_BALANCERS} load balancers"),
            ));
        }
        if let Some(address) = &lb.address {
            let holder = self.load_balancers.iter().find(|other| other.address.as_ref() == Some(address));
            if let Some(holder) = holder {
                return Err(BalancerError::InvalidConfigurationRequest(format!(
                    "{} is held by load balancer {}",
                    address.allocation_id, holder.arn
                )));
            }
        }
        Ok(())
    }

    /// Adds load balancer `lb` (made by [`LoadBalancer::new`]).
    pub fn create_load_balancer(&mut self, lb: LoadBalancer) -> Result<LoadBalancer, BalancerError> {
        self.check_new_load_balancer(&lb)?;
        self.load_balancers.push(lb.clone());
        Ok(lb)
    }

    /// Removes a load balancer and its listeners; returns what it was.
    pub fn delete_load_balancer(&mut self, arn: &str) -> Result<LoadBalancer, BalancerError> {
        let lb = self.load_balancer(arn)?.clone();
        self.load_balancers.retain(|lb| lb.arn != arn);
        self.listeners.retain(|l| l.load_balancer_arn != arn);
        Ok(lb)
    }

    /// Adds a target group.
    pub fn create_target_group(
        &mut self,
        region: &str,
        name: &str,
        protocol: Protocol,
        port: u16,
        health_check: &HealthCheckChange,
        now: u64,
    ) -> Result<TargetGroup, BalancerError> {
        check_name("target group", name)?;
        if port == 0 {
            return Err(BalancerError::Validation("a target group's port must be from 1 to 65535".into()));
        }
        if self.target_groups.iter().any(|tg| tg.name == name) {
            return Err(BalancerError::DuplicateTargetGroupName(name.into()));
        }
        if self.target_groups.len() >= MAX_TARGET_GROUPS {
            return Err(BalancerError::TooMany(
                Cap::TargetGroups,
                format!("at most {MAX_TARGET_GROUPS} target groups"),
            ));
        }
        let mut check = HealthCheck::defaults(protocol);
        health_check.apply(&mut check);
        check.check().map_err(BalancerError::Validation)?;
        let group = TargetGroup {
            arn: new_arn(region, &format!("targetgroup/{name}")),
            name: name.into(),
            protocol,
            port,
            health_check: check,
            attributes: TargetGroupAttributes::default(),
            targets: Vec::new(),
            created: now,
        };
        self.target_groups.push(group.clone());
        Ok(group)
    }

    /// Changes a target group's health check.
    pub fn modify_target_group(
        &mut self,
        arn: &str,
        change: &HealthCheckChange,
    ) -> Result<TargetGroup, BalancerError> {
        let group = self.target_group_mut(arn)?;
        let mut check = group.health_check.clone();
        change.apply(&mut check);
        check.check().map_err(BalancerError::Validation)?;
        group.health_check = check;
        Ok(group.clone())
    }

    /// Changes a target group's attributes.
    pub fn modify_attributes(
        &mut self,
        arn: &str,
        change: &AttributesChange,
    ) -> Result<TargetGroupAttributes, BalancerError> {
        if let Some(delay) = change.deregistration_delay_seconds {
            if delay > MAX_DEREGISTRATION_DELAY {
                return Err(BalancerError::Validation(format!(
                    "deregistration_delay.timeout_seconds must be from 0 to {MAX_DEREGISTRATION_DELAY}"
                )));
            }
        }
        if let Some(seconds) = change.slow_start_seconds {
            if seconds != 0 && !SLOW_START_SECONDS.contains(&seconds) {
                return Err(BalancerError::Validation(format!(
                    "slow_start.duration_seconds must be 0 (off) or from {} to {}",
                    SLOW_START_SECONDS.start(),
                    SLOW_START_SECONDS.end()
                )));
            }
        }
        let group = self.target_group_mut(arn)?;
        set(&mut group.attributes.deregistration_delay_seconds, change.deregistration_delay_seconds);
        set(&mut group.attributes.algorithm, change.algorithm);
        set(&mut group.attributes.slow_start_seconds, change.slow_start_seconds);
        Ok(group.attributes.clone())
    }

    /// Removes a target group no listener forwards to.
    pub fn delete_target_group(&mut self, arn: &str) -> Result<(), BalancerError> {
        self.target_group(arn)?;
        if let Some(listener) = self.listeners.iter().find(|l| l.target_group_arn == arn) {
            return Err(BalancerError::ResourceInUse(format!(
                "target group {arn} is in use by listener {}",
                listener.arn
            )));
        }
        self.target_groups.retain(|tg| tg.arn != arn);
        Ok(())
    }

    /// Adds a listener on `port` of load balancer `lb_arn`, forwarding to `tg_arn`. Every
    /// balancer listens in the network plane's namespace, so a port is taken once per
    /// address, and a balancer on every address takes it from all the others.
    pub fn create_listener(
        &mut self,
        lb_arn: &str,
        protocol: Protocol,
        port: u16,
        tg_arn: &str,
    ) -> Result<Listener, BalancerError> {
        let lb = self.load_balancer(lb_arn)?.clone();
        let group = self.target_group(tg_arn)?;
        if port == 0 {
            return Err(BalancerError::Validation("a listener's port must be from 1 to 65535".into()));
        }
        if protocol != lb.kind.protocol() {
            return Err(BalancerError::IncompatibleProtocols(format!(
                "an {} load balancer takes {:?} listeners",
                lb.kind.as_str(),
                lb.kind.protocol()
            )));
        }
        if group.protocol != protocol {
            return Err(BalancerError::IncompatibleProtocols(format!(
                "listener protocol {protocol:?} and target group protocol {:?} differ",
                group.protocol
            )));
        }
        if let Some(other) = self.load_balancers_of(tg_arn).into_iter().find(|arn| arn != lb_arn) {
            return Err(BalancerError::TargetGroupAssociationLimit(format!(
                "target group {tg_arn} already receives traffic from load balancer {other}"
            )));
        }
        let clashes = |other: &Listener| {
            let other_ip =
                self.load_balancer(&other.load_balancer_arn).map_or(Ipv4Addr::UNSPECIFIED, |o| o.bind_ip());
            let ip = lb.bind_ip();
            other.port == port && (ip.is_unspecified() || other_ip.is_unspecified() || ip == other_ip)
        };
        if let Some(taken) = self.listeners.iter().find(|l| clashes(l)) {
            return Err(BalancerError::DuplicateListener(format!(
                "port {port} is taken by listener {}",
                taken.arn
            )));
        }
        if self.listeners.iter().filter(|l| l.load_balancer_arn == lb_arn).count() >= MAX_LISTENERS {
            return Err(BalancerError::TooMany(
                Cap::Listeners,
                format!("at most {MAX_LISTENERS} listeners per load balancer"),
            ));
        }
        // ELB's form: the load balancer's ARN with `listener/` for `loadbalancer/`, and an id.
        let (head, rest) = lb_arn.split_once(":loadbalancer/").unwrap_or((lb_arn, ""));
        let listener = Listener {
            arn: format!("{head}:listener/{rest}/{}", random_hex16()),
            load_balancer_arn: lb_arn.into(),
            protocol,
            port,
            target_group_arn: tg_arn.into(),
        };
        self.listeners.push(listener.clone());
        Ok(listener)
    }

    /// Removes a listener.
    pub fn delete_listener(&mut self, arn: &str) -> Result<(), BalancerError> {
        if !self.listeners.iter().any(|l| l.arn == arn) {
            return Err(BalancerError::ListenerNotFound(arn.into()));
        }
        self.listeners.retain(|l| l.arn != arn);
        Ok(())
    }

    /// Registers `targets` (instance, port; `None`: the group's port), which the caller
    /// has checked are instances on a subnet. A draining target registered again is back
    /// in rotation; one already registered stays as it is.
    pub fn register_targets(
        &mut self,
        arn: &str,
        targets: &[(String, Option<u16>)],
    ) -> Result<(), BalancerError> {
        let group = self.target_group_mut(arn)?;
        let mut next = group.targets.clone();
        for (instance_id, port) in targets {
            let port = port.unwrap_or(group.port);
            if port == 0 {
                return Err(BalancerError::InvalidTarget(format!("target {instance_id}: port 0")));
            }
            match next.iter_mut().find(|t| &t.instance_id == instance_id && t.port == port) {
                Some(target) => target.deregistered_at = None,
                None => next.push(Target { instance_id: instance_id.clone(), port, deregistered_at: None }),
            }
        }
        if next.len() > MAX_TARGETS {
            return Err(BalancerError::TooMany(
                Cap::Targets,
                format!("at most {MAX_TARGETS} targets per target group"),
            ));
        }
        group.targets = next;
        Ok(())
    }

    /// Deregisters `targets` at `now`: each drains for the group's delay, then goes.
    pub fn deregister_targets(
        &mut self,
        arn: &str,
        targets: &[(String, Option<u16>)],
        now: u64,
    ) -> Result<(), BalancerError> {
        let group = self.target_group_mut(arn)?;
        let mut next = group.targets.clone();
        for (instance_id, port) in targets {
            let port = port.unwrap_or(group.port);
            let target =
                next.iter_mut().find(|t| &t.instance_id == instance_id && t.port == port).ok_or_else(
                    || BalancerError::InvalidTarget(format!("target {instance_id}:{port} is not registered")),
                )?;
            target.deregistered_at.get_or_insert(now);
        }
        group.targets = next;
        Ok(())
    }

    /// Forgets targets whose drain is over at `now`, and those of instances that are
    /// gone (`exists` false); true when anything went.
    pub fn expire(&mut self, now: u64, exists: impl Fn(&str) -> bool) -> bool {
        let mut changed = false;
        for group in &mut self.target_groups {
            let delay = u64::from(group.attributes.deregistration_delay_seconds);
            let before = group.targets.len();
            group.targets.retain(|t| {
                exists(&t.instance_id) && t.deregistered_at.map_or(true, |at| now < at.saturating_add(delay))
            });
            changed |= group.targets.len() != before;
        }
        changed
    }

    /// What load balancer `lb` serves, given where each running instance is reached
    /// (`running`: instance id → private address). Targets of instances not running are
    /// left out, so a stopped instance leaves rotation at once.
    pub fn balancer_config(&self, lb: &LoadBalancer, running: &HashMap<String, Ipv4Addr>) -> BalancerConfig {
        let listeners: Vec<&Listener> =
            self.listeners.iter().filter(|l| l.load_balancer_arn == lb.arn).collect();
        let mut groups: Vec<&TargetGroup> = Vec::new();
        for listener in &listeners {
            if let Ok(group) = self.target_group(&listener.target_group_arn) {
                if !groups.iter().any(|g| g.arn == group.arn) {
                    groups.push(group);
                }
            }
        }
        BalancerConfig {
            name: lb.name.clone(),
            listeners: listeners
                .iter()
                .map(|l| ListenerConfig {
                    address: SocketAddr::from((lb.bind_ip(), l.port)),
                    protocol: l.protocol,
                    target_group: l.target_group_arn.clone(),
                })
                .collect(),
            target_groups: groups
                .into_iter()
                .map(|g| TargetGroupConfig {
                    id: g.arn.clone(),
                    protocol: g.protocol,
                    algorithm: g.attributes.algorithm,
                    slow_start_seconds: g.attributes.slow_start_seconds,
                    health_check: g.health_check.clone(),
                    targets: g
                        .targets
                        .iter()
                        .filter_map(|t| {
                            let ip = running.get(&t.instance_id)?;
                            Some(TargetConfig {
                                id: t.instance_id.clone(),
                                address: SocketAddr::from((*ip, t.port)),
                                draining: t.deregistered_at.is_some(),
                            })
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Balancing, LoadBalancer, TargetGroup) {
        let mut b = Balancing::default();
        let lb =
            b.create_load_balancer(LoadBalancer::new("r", "web", LoadBalancerType::Application, 1)).unwrap();
        let tg = b
            .create_target_group("r", "web-80", Protocol::Http, 80, &HealthCheckChange::default(), 1)
            .unwrap();
        (b, lb, tg)
    }

    #[test]
    fn names_and_arns_are_as_elb_makes_them() {
        let (mut b, lb, tg) = setup();
        assert!(
            lb.arn.starts_with("arn:nuage:elasticloadbalancing:r:000000000000:loadbalancer/app/web/"),
            "{}",
            lb.arn
        );
        assert_eq!(lb.id().len(), 16);
        assert!(tg.arn.contains(":targetgroup/web-80/"), "{}", tg.arn);
        for bad in ["", "-web", "web-", "internal-web", "a_b", &"x".repeat(33)] {
            assert!(
                matches!(
                    b.create_load_balancer(LoadBalancer::new("r", bad, LoadBalancerType::Network, 1)),
                    Err(BalancerError::Validation(_))
                ),
                "{bad:?}"
            );
        }
        let before = b.clone();
        assert!(matches!(
            b.create_load_balancer(LoadBalancer::new("r", "web", LoadBalancerType::Network, 1)),
            Err(BalancerError::DuplicateLoadBalancerName(_))
        ));
        assert!(matches!(
            b.create_target_group("r", "web-80", Protocol::Http, 80, &HealthCheckChange::default(), 1),
            Err(BalancerError::DuplicateTargetGroupName(_))
        ));
        let bad_check = HealthCheckChange { interval_seconds: Some(1), ..Default::default() };
        assert!(matches!(
            b.create_target_group("r", "other", Protocol::Http, 80, &bad_check, 1),
            Err(BalancerError::Validation(_))
        ));
        assert_eq!(b, before, "refusals change nothing");
    }

    #[test]
    fn listeners_check_protocols_ports_and_groups() {
        let (mut b, lb, tg) = setup();
        let tcp =
            b.create_target_group("r", "tcp", Protocol::Tcp, 22, &HealthCheckChange::default(), 1).unwrap();
        let listener = b.create_listener(&lb.arn, Protocol::Http, 8080, &tg.arn).unwrap();
        assert!(listener.arn.contains(":listener/app/web/"), "{}", listener.arn);
        let before = b.clone();
        assert!(matches!(
            b.create_listener(&lb.arn, Protocol::Tcp, 22, &tcp.arn),
            Err(BalancerError::IncompatibleProtocols(_))
        ));
        assert!(matches!(
            b.create_listener(&lb.arn, Protocol::Http, 8080, &tg.arn),
            Err(BalancerError::DuplicateListener(_))
        ));
        assert!(matches!(
            b.create_listener(&lb.arn, Protocol::Http, 0, &tg.arn),
            Err(BalancerError::Validation(_))
        ));
        assert!(matches!(
            b.create_listener("arn:nope", Protocol::Http, 81, &tg.arn),
            Err(BalancerError::LoadBalancerNotFound(_))
        ));
        assert!(matches!(
            b.create_listener(&lb.arn, Protocol::Http, 81, "arn:nope"),
            Err(BalancerError::TargetGroupNotFound(_))
        ));
        let other = b
            .create_load_balancer(LoadBalancer::new("r", "other", LoadBalancerType::Application, 1))
            .unwrap();
        assert!(matches!(
            b.create_listener(&other.arn, Protocol::Http, 81, &tg.arn),
            Err(BalancerError::TargetGroupAssociationLimit(_))
        ));
        b.delete_load_balancer(&other.arn).unwrap();
        assert_eq!(b, before);
        assert!(matches!(b.delete_target_group(&tg.arn), Err(BalancerError::ResourceInUse(_))));
        b.delete_load_balancer(&lb.arn).unwrap();
        assert!(b.listeners.is_empty(), "its listeners go with it");
        b.delete_target_group(&tg.arn).unwrap();
    }

    /// Balancers on Elastic IPs share a port; one on every address takes it from all.
    #[test]
    fn a_port_is_taken_per_address() {
        let (mut b, _, tg) = setup();
        let on = |b: &mut Balancing, name: &str, last: u8| {
            let mut lb = LoadBalancer::new("r", name, LoadBalancerType::Application, 1);
            let ip = Ipv4Addr::new(192, 168, 0, last);
            lb.address = Some(ElasticAddress { allocation_id: format!("eipalloc-{last}"), ip });
            b.create_load_balancer(lb)
        };
        let (a, c) = (on(&mut b, "a", 10).unwrap(), on(&mut b, "c", 11).unwrap());
        let group = |b: &mut Balancing, name: &str| {
            b.create_target_group("r", name, Protocol::Http, 80, &HealthCheckChange::default(), 1)
                .unwrap()
                .arn
        };
        let (tg_a, tg_c) = (group(&mut b, "ga"), group(&mut b, "gc"));
        b.create_listener(&a.arn, Protocol::Http, 80, &tg_a).unwrap();
        b.create_listener(&c.arn, Protocol::Http, 80, &tg_c).unwrap();
        let before = b.clone();
        assert!(matches!(on(&mut b, "again", 10), Err(BalancerError::InvalidConfigurationRequest(_))));
        let everywhere = b.load_balancers[0].arn.clone();
        assert!(matches!(
            b.create_listener(&everywhere, Protocol::Http, 80, &tg.arn),
            Err(BalancerError::DuplicateListener(_))
        ));
        assert_eq!(b, before);
        b.create_listener(&everywhere, Protocol::Http, 81, &tg.arn).unwrap();
        assert!(matches!(
            b.create_listener(&a.arn, Protocol::Http, 81, &tg_a),
            Err(BalancerError::DuplicateListener(_))
        ));
        let config = b.balancer_config(&a, &HashMap::new());
        assert_eq!(config.listeners[0].address, "192.168.0.10:80".parse().unwrap());
        let config = b.balancer_config(&b.load_balancers[0], &HashMap::new());
        assert_eq!(config.listeners[0].address, "0.0.0.0:81".parse().unwrap());
    }

    #[test]
    fn targets_register_drain_and_expire() {
        let (mut b, lb, tg) = setup();
        b.create_listener(&lb.arn, Protocol::Http, 80, &tg.arn).unwrap();
        b.modify_attributes(
            &tg.arn,
            &AttributesChange { deregistration_delay_seconds: Some(10), ..Default::default() },
        )
        .unwrap();
        b.register_targets(&tg.arn, &[("i-a".into(), None), ("i-b".into(), Some(8080))]).unwrap();
        b.register_targets(&tg.arn, &[("i-a".into(), None)]).unwrap();
        assert_eq!(b.target_group(&tg.arn).unwrap().targets.len(), 2, "registering twice adds nothing");
        let running = HashMap::from([("i-a".to_string(), Ipv4Addr::new(10, 0, 0, 2))]);
        let config = b.balancer_config(&lb, &running);
        assert_eq!(config.listeners[0].address, "0.0.0.0:80".parse().unwrap());
        let targets = &config.target_groups[0].targets;
        assert_eq!(targets.len(), 1, "i-b is not running: out of rotation");
        assert_eq!((targets[0].address, targets[0].draining), ("10.0.0.2:80".parse().unwrap(), false));
        assert_eq!(config.check(), Ok(()));

        assert!(matches!(
            b.deregister_targets(&tg.arn, &[("i-c".into(), None)], 100),
            Err(BalancerError::InvalidTarget(_))
        ));
        b.deregister_targets(&tg.arn, &[("i-a".into(), None)], 100).unwrap();
        assert!(b.balancer_config(&lb, &running).target_groups[0].targets[0].draining);
        assert!(!b.expire(109, |_| true), "still draining");
        assert!(b.expire(110, |_| true), "drained");
        assert_eq!(b.target_group(&tg.arn).unwrap().targets.len(), 1);
        assert!(b.expire(110, |id| id != "i-b"), "a terminated instance's targets go");
        assert!(b.target_group(&tg.arn).unwrap().targets.is_empty());

        b.register_targets(&tg.arn, &[("i-a".into(), None)]).unwrap();
        b.deregister_targets(&tg.arn, &[("i-a".into(), None)], 200).unwrap();
        b.register_targets(&tg.arn, &[("i-a".into(), None)]).unwrap();
        assert_eq!(b.target_group(&tg.arn).unwrap().targets[0].deregistered_at, None, "back in rotation");
        let before = b.clone();
        for bad in [
            AttributesChange { deregistration_delay_seconds: Some(3601), ..Default::default() },
            AttributesChange { slow_start_seconds: Some(29), ..Default::default() },
            AttributesChange { slow_start_seconds: Some(901), ..Default::default() },
        ] {
            assert!(
                matches!(b.modify_attributes(&tg.arn, &bad), Err(BalancerError::Validation(_))),
                "{bad:?}"
            );
        }
        assert_eq!(b, before);
        for (seconds, kept) in [(30, 30), (0, 0), (900, 900)] {
            let change = AttributesChange { slow_start_seconds: Some(seconds), ..Default::default() };
            assert_eq!(b.modify_attributes(&tg.arn, &change).unwrap().slow_start_seconds, kept);
        }
        assert_eq!(b.balancer_config(&lb, &running).target_groups[0].slow_start_seconds, 900);
    }

    #[test]
    fn health_checks_change_within_range() {
        let (mut b, _, tg) = setup();
        let change = HealthCheckChange {
            path: Some("/health".into()),
            interval_seconds: Some(5),
            timeout_seconds: Some(2),
            ..Default::default()
        };
        assert_eq!(b.modify_target_group(&tg.arn, &change).unwrap().health_check.path, "/health");
        let before = b.clone();
        let bad = HealthCheckChange { timeout_seconds: Some(5), ..Default::default() };
        assert!(
            matches!(b.modify_target_group(&tg.arn, &bad), Err(BalancerError::Validation(_))),
            "timeout ≥ interval"
        );
        assert_eq!(b, before);
    }
}
