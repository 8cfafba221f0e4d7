//! Elastic Load Balancing: the controller beside the daemon. The API changes the desired
//! state (load balancers, target groups, targets, listeners: [`model::Balancing`], one
//! document in the daemon's database, changed by compare and set); a reconcile loop
//! ([`supervisor`]) makes each load balancer's `nuage-lb` process ([`crate::lb`]) serve
//! it, woken by every change and every instance event, and once a second regardless
//! (level-triggered: whatever was missed is caught up on the next pass).
//!
//! It reads instances only through [`Compute`], the seam every controller uses, and never
//! touches the store or the network plane: targets are reached at the addresses the
//! instances were given, from the network plane's namespace.

pub mod model;
pub mod supervisor;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::daemon::compute::{Compute, Reconciler};
use crate::daemon::config::DaemonConfig;
use crate::daemon::DaemonError;
use crate::lb::config::{BalancerStatus, Protocol, TargetHealth};
use crate::net::NetError;
use crate::state::db::StateError;
use crate::state::document::{self, DocumentStore};
use crate::state::id::now;
use crate::state::instance::InstanceState;
use model::{
    AttributesChange, Balancing, ElasticAddress, HealthCheckChange, Listener, LoadBalancer, LoadBalancerType,
    TargetGroup, TargetGroupAttributes,
};
use supervisor::Supervisor;

/// The document the resources are kept in.
const DOCUMENT: &str = "elasticloadbalancing";

/// How stale a balancer's status may be before its targets' health is unknown.
const STATUS_STALE_SECONDS: u64 = 10;

/// Why a load balancing request was refused or failed. The API maps each to ELB's error
/// name (`api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// A malformed request.
    #[error("{0}")]
    Validation(String),
    /// No such load balancer.
    #[error("load balancer {0} does not exist")]
    LoadBalancerNotFound(String),
    /// No such target group.
    #[error("target group {0} does not exist")]
    TargetGroupNotFound(String),
    /// No such listener.
    #[error("listener {0} does not exist")]
    ListenerNotFound(String),
    /// The name is taken.
    #[error("a load balancer named {0} exists")]
    DuplicateLoadBalancerName(String),
    /// The name is taken.
    #[error("a target group named {0} exists")]
    DuplicateTargetGroupName(String),
    /// The port is taken.
    #[error("{0}")]
    DuplicateListener(String),
    /// A listener and what it forwards to, or a load balancer and its listener, differ.
    #[error("{0}")]
    IncompatibleProtocols(String),
    /// The target group already serves another load balancer.
    #[error("{0}")]
    TargetGroupAssociationLimit(String),
    /// A target is not an instance that can be one.
    #[error("{0}")]
    InvalidTarget(String),
    /// The resource is in use.
    #[error("{0}")]
    ResourceInUse(String),
    /// No such Elastic IP.
    #[error("Elastic IP {0} does not exist")]
    AllocationIdNotFound(String),
    /// The Elastic IP is someone else's.
    #[error("{0}")]
    InvalidConfigurationRequest(String),
    /// A cap would be passed.
    #[error("{1}")]
    TooMany(Cap, String),
    /// The daemon failed to answer about instances.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What there would be too many of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Load balancers on the host.
    LoadBalancers,
    /// Target groups on the host.
    TargetGroups,
    /// Listeners of a load balancer.
    Listeners,
    /// Targets of a target group.
    Targets,
}

/// One target's health as `describe-target-health` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealthView {
    /// The instance.
    pub instance_id: String,
    /// Its port.
    pub port: u16,
    /// Its state.
    pub state: TargetHealth,
    /// ELB's reason code, where not healthy.
    pub reason: Option<String>,
    /// The reason in words.
    pub description: String,
}

/// The load balancing service: the API's entry point, and the reconcile loop's owner.
pub struct Balancers {
    documents: Arc<dyn DocumentStore>,
    compute: Arc<dyn Compute>,
    region: String,
    supervisor: Supervisor,
    reconciler: Reconciler,
    /// Held while Elastic IP holds and the record are changed together, so the reconcile
    /// loop never lets go of an address a create has held and not yet recorded.
    addresses: Mutex<()>,
}

impl Balancers {
    /// The service over the daemon's `documents` and `compute`, with each load balancer's
    /// process under `config.state_dir/balancers`.
    pub fn new(documents: Arc<dyn DocumentStore>, compute: Arc<dyn Compute>, config: &DaemonConfig) -> Self {
        Self {
            documents,
            compute,
            region: config.region.clone(),
            supervisor: Supervisor::new(config),
            reconciler: Reconciler::default(),
            addresses: Mutex::new(()),
        }
    }

    /// Every resource as recorded.
    pub fn read(&self) -> Result<Balancing, BalancerError> {
        Ok(document::read(self.documents.as_ref(), DOCUMENT)?)
    }

    /// Applies `change` to the record and keeps the result (see [`document::change`]);
    /// wakes the reconcile loop.
    fn change<T>(
        &self,
        change: impl FnMut(&mut Balancing) -> Result<T, BalancerError>,
    ) -> Result<T, BalancerError> {
        let result = document::change(self.documents.as_ref(), DOCUMENT, change)?;
        self.reconciler.wake();
        Ok(result)
    }

    /// `create-load-balancer`: on Elastic IP `allocation_id` when one is named (held for
    /// it until it is deleted), else on every address of the network plane's namespace.
    pub fn create_load_balancer(
        &self,
        name: &str,
        kind: LoadBalancerType,
        allocation_id: Option<&str>,
    ) -> Result<LoadBalancer, BalancerError> {
        let mut lb = LoadBalancer::new(&self.region, name, kind, now());
        let Some(allocation_id) = allocation_id else {
            return self.change(|b| b.create_load_balancer(lb.clone()));
        };
        let _addresses = lock(&self.addresses);
        // Refused before the address is touched; the change below checks again on the
        // record it writes.
        self.read()?.check_new_load_balancer(&lb)?;
        let ip = self.compute.hold_address(allocation_id, &lb.arn).map_err(address_error)?;
        lb.address = Some(ElasticAddress { allocation_id: allocation_id.into(), ip });
        self.change(|b| b.create_load_balancer(lb.clone()))
            .inspect_err(|_| self.let_go(allocation_id, &lb.arn))
    }

    /// `delete-load-balancer`: its Elastic IP is let go at once, its process stops on the
    /// next pass.
    pub fn delete_load_balancer(&self, arn: &str) -> Result<(), BalancerError> {
        let _addresses = lock(&self.addresses);
        let lb = self.change(|b| b.delete_load_balancer(arn))?;
        if let Some(address) = lb.address {
            self.let_go(&address.allocation_id, &lb.arn);
        }
        Ok(())
    }

    /// Ends a hold, leaving a failure to the reconcile loop's next pass.
    fn let_go(&self, allocation_id: &str, holder: &str) {
        if let Err(e) = self.compute.unhold_address(allocation_id, holder) {
            tracing::warn!("load balancers: letting go of {allocation_id}: {e}");
        }
    }

    /// `create-target-group`.
    pub fn create_target_group(
        &self,
        name: &str,
        protocol: Protocol,
        port: u16,
        health_check: &HealthCheckChange,
    ) -> Result<TargetGroup, BalancerError> {
        self.change(|b| b.create_target_group(&self.region, name, protocol, port, health_check, now()))
    }

    /// `modify-target-group`.
    pub fn modify_target_group(
        &self,
        arn: &str,
        change: &HealthCheckChange,
    ) -> Result<TargetGroup, BalancerError> {
        self.change(|b| b.modify_target_group(arn, change))
    }

    /// `modify-target-group-attributes`.
    pub fn modify_attributes(
        &self,
        arn: &str,
        change: &AttributesChange,
    ) -> Result<TargetGroupAttributes, BalancerError> {
        self.change(|b| b.modify_attributes(arn, change))
    }

    /// `delete-target-group`.
    pub fn delete_target_group(&self, arn: &str) -> Result<(), BalancerError> {
        self.change(|b| b.delete_target_group(arn))
    }

    /// `create-listener`.
    pub fn create_listener(
        &self,
        lb_arn: &str,
        protocol: Protocol,
        port: u16,
        tg_arn: &str,
    ) -> Result<Listener, BalancerError> {
        self.change(|b| b.create_listener(lb_arn, protocol, port, tg_arn))
    }

    /// `delete-listener`.
    pub fn delete_listener(&self, arn: &str) -> Result<(), BalancerError> {
        self.change(|b| b.delete_listener(arn))
    }

    /// `register-targets`: each must be an instance, not terminated, with an address on a
    /// subnet (where the balancer reaches it).
    pub fn register_targets(
        &self,
        arn: &str,
        targets: &[(String, Option<u16>)],
    ) -> Result<(), BalancerError> {
        let instances = self.compute.live_instances()?;
        for (id, _) in targets {
            match instances.iter().find(|i| &i.id == id) {
                None => {
                    return Err(BalancerError::InvalidTarget(format!(
                        "instance {id} does not exist or is terminated"
                    )))
                }
                Some(i) if i.private_ip.is_none() => {
                    return Err(BalancerError::InvalidTarget(format!(
                        "instance {id} is on no subnet: nothing can reach it"
                    )))
                }
                Some(_) => {}
            }
        }
        self.change(|b| b.register_targets(arn, targets))
    }

    /// `deregister-targets`: each drains for the group's deregistration delay.
    pub fn deregister_targets(
        &self,
        arn: &str,
        targets: &[(String, Option<u16>)],
    ) -> Result<(), BalancerError> {
        self.change(|b| b.deregister_targets(arn, targets, now()))
    }

    /// `describe-target-health`: what the group's balancer sees, or why it routes nothing
    /// to a target.
    pub fn target_health(&self, arn: &str) -> Result<Vec<TargetHealthView>, BalancerError> {
        let balancing = self.read()?;
        let group = balancing.target_group(arn)?;
        let states: HashMap<String, InstanceState> =
            self.compute.live_instances()?.into_iter().map(|i| (i.id, i.state)).collect();
        let balancer =
            balancing.load_balancers_of(arn).first().and_then(|lb| balancing.load_balancer(lb).ok().cloned());
        let status = balancer.as_ref().and_then(|lb| self.supervisor.status(lb.id()));
        let now = now();
        Ok(group
            .targets
            .iter()
            .map(|target| {
                let view = |state, reason: &str, description: &str| TargetHealthView {
                    instance_id: target.instance_id.clone(),
                    port: target.port,
                    state,
                    reason: Some(reason.into()),
                    description: description.into(),
                };
                let instance_state =
                    states.get(&target.instance_id).copied().unwrap_or(InstanceState::Terminated);
                if target.deregistered_at.is_some() {
                    return view(
                        TargetHealth::Draining,
                        "Target.DeregistrationInProgress",
                        "Target deregistration is in progress",
                    );
                }
                if instance_state != InstanceState::Running {
                    return view(
                        TargetHealth::Unused,
                        "Target.InvalidState",
                        &format!("Target is in the {instance_state} state"),
                    );
                }
                if balancer.is_none() {
                    return view(
                        TargetHealth::Unused,
                        "Target.NotInUse",
                        "Target group is not configured to receive traffic from the load balancer",
                    );
                }
                let Some(status) =
                    status.as_ref().filter(|s| now.saturating_sub(s.written_at) <= STATUS_STALE_SECONDS)
                else {
                    return view(
                        TargetHealth::Unavailable,
                        "Elb.InternalError",
                        "The load balancer is not running",
                    );
                };
                let seen = status.target_groups.iter().find(|g| g.id == arn).and_then(|g| {
                    g.targets.iter().find(|t| t.id == target.instance_id && t.address.port() == target.port)
                });
                match seen {
                    Some(seen) => TargetHealthView {
                        instance_id: target.instance_id.clone(),
                        port: target.port,
                        state: seen.health,
                        reason: seen.reason.clone(),
                        description: seen.description.clone(),
                    },
                    None => view(
                        TargetHealth::Initial,
                        "Elb.RegistrationInProgress",
                        "Target registration is in progress",
                    ),
                }
            })
            .collect())
    }

    /// Each load balancer with what its process last reported, for the metrics page.
    pub fn statuses(&self) -> Vec<(LoadBalancer, BalancerStatus)> {
        let Ok(balancing) = self.read() else { return Vec::new() };
        balancing
            .load_balancers
            .into_iter()
            .filter_map(|lb| {
                let status = self.supervisor.status(lb.id())?;
                Some((lb, status))
            })
            .collect()
    }

    /// Starts the reconcile loop; the balancers a previous daemon started are adopted on
    /// its first pass.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let pass = |this: &Self| {
            if let Err(e) = this.reconcile() {
                tracing::warn!("load balancers: {e}");
            }
        };
        self.reconciler.start(
            "elb",
            self.clone(),
            self.compute.instance_events(),
            supervisor::PASS_INTERVAL,
            pass,
        )
    }

    /// One pass: drained and orphaned targets forgotten, then every balancer process made
    /// to serve its part of the record.
    pub fn reconcile(&self) -> Result<(), BalancerError> {
        let instances = self.compute.live_instances()?;
        let exists = |id: &str| instances.iter().any(|i| i.id == id);
        let now = now();
        if self.read()?.expire(now, exists) {
            self.change(|b| {
                b.expire(now, exists);
                Ok(())
            })?;
        }
        self.converge_addresses()?;
        let balancing = self.read()?;
        let running: HashMap<String, std::net::Ipv4Addr> = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .filter_map(|i| Some((i.id.clone(), i.private_ip?)))
            .collect();
        let wanted: Vec<(String, crate::lb::config::BalancerConfig)> = balancing
            .load_balancers
            .iter()
            .map(|lb| (lb.id().to_owned(), balancing.balancer_config(lb, &running)))
            .collect();
        self.supervisor.converge(&wanted);
        Ok(())
    }

    /// Makes the Elastic IP holds match the record: each balancer's address held for it,
    /// and no other held by a balancer (a create or delete cut short by a crash leaves one).
    fn converge_addresses(&self) -> Result<(), BalancerError> {
        let _addresses = lock(&self.addresses);
        let balancing = self.read()?;
        let held = self.compute.held_addresses()?;
        let wanted = |allocation_id: &str, holder: &str| {
            balancing.load_balancers.iter().any(|lb| {
                lb.arn == holder && lb.address.as_ref().is_some_and(|a| a.allocation_id == allocation_id)
            })
        };
        for (allocation_id, holder) in &held {
            if holder.starts_with(model::ARN_PREFIX) && !wanted(allocation_id, holder) {
                tracing::info!(
                    "load balancers: letting go of {allocation_id}, which {holder} no longer holds"
                );
                self.compute.unhold_address(allocation_id, holder)?;
            }
        }
        for lb in &balancing.load_balancers {
            let Some(address) = &lb.address else { continue };
            if !held.iter().any(|(id, holder)| *id == address.allocation_id && *holder == lb.arn) {
                if let Err(e) = self.compute.hold_address(&address.allocation_id, &lb.arn) {
                    tracing::warn!("load balancers: {} cannot hold {}: {e}", lb.arn, address.allocation_id);
                }
            }
        }
        Ok(())
    }
}

fn lock(mutex: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An Elastic IP refusal in ELB's words.
fn address_error(error: DaemonError) -> BalancerError {
    match error {
        DaemonError::Net(NetError::AllocationNotFound(id)) => BalancerError::AllocationIdNotFound(id),
        DaemonError::Net(NetError::AddressInUse(what)) => {
            BalancerError::InvalidConfigurationRequest(format!("the Elastic IP is in use: {what}"))
        }
        other => BalancerError::Daemon(other),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::daemon::compute::fake::FakeCompute;
    use crate::daemon::instances::RunSpec;
    use crate::lb::config::{TargetGroupStatus, TargetStatus};
    use crate::state::db::Database;

    /// The service over a real database and a fake Compute; its balancer binary does not
    /// exist, so no process starts (the supervisor says so and carries on).
    fn service(dir: &Path) -> (Arc<FakeCompute>, Balancers) {
        let db = Arc::new(Database::open(&dir.join("nuage.db")).unwrap());
        let compute = Arc::new(FakeCompute::default());
        let config = DaemonConfig {
            state_dir: dir.to_owned(),
            balancer: dir.join("no-nuage-lb"),
            ..DaemonConfig::default()
        };
        (compute.clone(), Balancers::new(db, compute, &config))
    }

    fn launch(compute: &FakeCompute, subnet: &str) -> String {
        let spec = RunSpec { subnet_id: subnet.into(), ..RunSpec::default() };
        compute.run_instances(&spec).unwrap().remove(0).id
    }

    fn states(balancers: &Balancers, tg: &str) -> Vec<(String, TargetHealth, String)> {
        let health = balancers.target_health(tg).unwrap();
        health.into_iter().map(|h| (h.instance_id, h.state, h.reason.unwrap_or_default())).collect()
    }

    /// A balancer on an Elastic IP holds it from creation to deletion; a refused create
    /// holds nothing, and a pass lets go of holds the record does not know (a create cut
    /// short) and takes back one the record wants.
    #[test]
    fn a_balancer_holds_its_elastic_ip_exactly_while_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (compute, balancers) = service(dir.path());
        let (first, second) = (compute.allocate_address(), compute.allocate_address());
        let lb = balancers.create_load_balancer("web", LoadBalancerType::Network, Some(&first)).unwrap();
        assert_eq!(lb.address.as_ref().map(|a| a.allocation_id.as_str()), Some(first.as_str()));
        assert_eq!(compute.held_addresses().unwrap(), [(first.clone(), lb.arn.clone())]);
        let before = (balancers.read().unwrap(), compute.held_addresses().unwrap());
        let refused = [
            (balancers.create_load_balancer("other", LoadBalancerType::Network, Some(&first)), "held"),
            (
                balancers.create_load_balancer("other", LoadBalancerType::Network, Some("eipalloc-0")),
                "unknown",
            ),
            (balancers.create_load_balancer("web", LoadBalancerType::Network, Some(&second)), "name"),
        ];
        for (result, what) in refused {
            let err = result.unwrap_err();
            let expected = match what {
                "held" => matches!(err, BalancerError::InvalidConfigurationRequest(_)),
                "unknown" => matches!(err, BalancerError::AllocationIdNotFound(_)),
                _ => matches!(err, BalancerError::DuplicateLoadBalancerName(_)),
            };
            assert!(expected, "{what}: {err}");
        }
        assert_eq!((balancers.read().unwrap(), compute.held_addresses().unwrap()), before);

        let orphan = format!("{}r:000000000000:loadbalancer/net/gone/0123456789abcdef", model::ARN_PREFIX);
        compute.hold_address(&second, &orphan).unwrap();
        compute.unhold_address(&first, &lb.arn).unwrap();
        balancers.reconcile().unwrap();
        assert_eq!(compute.held_addresses().unwrap(), [(first.clone(), lb.arn.clone())]);

        balancers.delete_load_balancer(&lb.arn).unwrap();
        assert!(compute.held_addresses().unwrap().is_empty());
    }

    #[test]
    fn targets_are_instances_on_a_subnet_and_their_health_says_why_nothing_reaches_them() {
        let dir = tempfile::tempdir().unwrap();
        let (compute, balancers) = service(dir.path());
        let (a, b, unplugged) =
            (launch(&compute, "subnet-1"), launch(&compute, "subnet-1"), launch(&compute, ""));
        let lb = balancers.create_load_balancer("web", LoadBalancerType::Application, None).unwrap();
        let tg =
            balancers.create_target_group("web", Protocol::Http, 80, &HealthCheckChange::default()).unwrap();
        let before = balancers.read().unwrap();
        for (id, why) in [(unplugged.as_str(), "on no subnet"), ("i-00000000000000000", "does not exist")] {
            let err = balancers.register_targets(&tg.arn, &[(id.to_owned(), None)]).unwrap_err();
            assert!(matches!(&err, BalancerError::InvalidTarget(m) if m.contains(why)), "{err}");
        }
        assert_eq!(balancers.read().unwrap(), before, "refusals change nothing");
        balancers.register_targets(&tg.arn, &[(a.clone(), None), (b.clone(), None)]).unwrap();
        let unused = |id: &str, reason: &str| (id.to_owned(), TargetHealth::Unused, reason.to_owned());
        assert_eq!(
            states(&balancers, &tg.arn),
            [unused(&a, "Target.NotInUse"), unused(&b, "Target.NotInUse")]
        );

        balancers.create_listener(&lb.arn, Protocol::Http, 80, &tg.arn).unwrap();
        compute.set_state(&b, InstanceState::Stopped);
        let unavailable = (a.clone(), TargetHealth::Unavailable, "Elb.InternalError".to_owned());
        assert_eq!(states(&balancers, &tg.arn), [unavailable, unused(&b, "Target.InvalidState")]);
        // What the balancer process reports is what the caller sees.
        let seen = |health, reason: Option<&str>| TargetStatus {
            id: a.clone(),
            address: "10.0.0.2:80".parse().unwrap(),
            health,
            reason: reason.map(str::to_owned),
            description: String::new(),
            counters: Default::default(),
        };
        let status = BalancerStatus {
            written_at: now(),
            listeners: vec![],
            target_groups: vec![TargetGroupStatus {
                id: tg.arn.clone(),
                unrouted: 0,
                targets: vec![seen(TargetHealth::Unhealthy, Some("Target.Timeout"))],
            }],
        };
        let status_file = dir.path().join("balancers").join(lb.id()).join("status.json");
        std::fs::create_dir_all(status_file.parent().unwrap()).unwrap();
        crate::state::file::write_json(&status_file, &status).unwrap();
        assert_eq!(
            states(&balancers, &tg.arn)[0],
            (a.clone(), TargetHealth::Unhealthy, "Target.Timeout".to_owned())
        );
        let stale = BalancerStatus { written_at: now() - 60, ..status };
        crate::state::file::write_json(&status_file, &stale).unwrap();
        assert_eq!(
            states(&balancers, &tg.arn)[0].1,
            TargetHealth::Unavailable,
            "a stale report is not believed"
        );
    }

    #[test]
    fn a_pass_serves_running_instances_and_forgets_drained_and_terminated_targets() {
        let dir = tempfile::tempdir().unwrap();
        let (compute, balancers) = service(dir.path());
        let (a, b, c) = (launch(&compute, "s"), launch(&compute, "s"), launch(&compute, "s"));
        let lb = balancers.create_load_balancer("web", LoadBalancerType::Application, None).unwrap();
        let tg =
            balancers.create_target_group("web", Protocol::Http, 80, &HealthCheckChange::default()).unwrap();
        balancers.create_listener(&lb.arn, Protocol::Http, 8080, &tg.arn).unwrap();
        let targets: Vec<(String, Option<u16>)> =
            [&a, &b, &c].iter().map(|id| ((*id).clone(), None)).collect();
        balancers.register_targets(&tg.arn, &targets).unwrap();
        let zero = AttributesChange { deregistration_delay_seconds: Some(0), ..AttributesChange::default() };
        balancers.modify_attributes(&tg.arn, &zero).unwrap();
        balancers.deregister_targets(&tg.arn, &[(b.clone(), None)]).unwrap();
        compute.terminate_instances(std::slice::from_ref(&c)).unwrap();
        balancers.reconcile().unwrap();
        let left: Vec<String> = balancers.read().unwrap().target_groups[0]
            .targets
            .iter()
            .map(|t| t.instance_id.clone())
            .collect();
        assert_eq!(left, std::slice::from_ref(&a), "B drained (no delay), C's instance is gone");
        let written: crate::lb::config::BalancerConfig =
            crate::state::file::read_json(&dir.path().join("balancers").join(lb.id()).join("lb.json"))
                .unwrap();
        assert_eq!(written.listeners[0].address.port(), 8080);
        assert_eq!(written.target_groups[0].targets.len(), 1);
        assert_eq!(written.target_groups[0].targets[0].id, a);
        balancers.delete_load_balancer(&lb.arn).unwrap();
        balancers.reconcile().unwrap();
        assert!(!dir.path().join("balancers").join(lb.id()).exists(), "a deleted balancer's files go");
    }

    #[test]
    fn racing_callers_lose_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let (_, balancers) = service(dir.path());
        std::thread::scope(|s| {
            for i in 0..8 {
                let balancers = &balancers;
                s.spawn(move || {
                    balancers
                        .create_load_balancer(&format!("lb-{i}"), LoadBalancerType::Network, None)
                        .unwrap()
                });
            }
        });
        assert_eq!(balancers.read().unwrap().load_balancers.len(), 8);
    }
}
