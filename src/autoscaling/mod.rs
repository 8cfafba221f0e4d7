//! Auto Scaling: the controller beside the daemon that keeps each group at its desired
//! capacity. The API changes the desired state ([`model::AutoScaling`], one document in
//! the daemon's database, changed by compare and set); a reconcile loop compares each
//! group with its instances, decides ([`plan`], pure) and acts through the daemon's
//! services, woken by every change and every instance event, and once a second
//! regardless.
//!
//! Its instances are the record of what it launched: each carries the tag
//! `aws:autoscaling:groupName` from the moment it exists, so a daemon killed at any step
//! counts them again on its next pass and launches only what is missing. What it is about
//! to let go of is recorded before it acts ([`model::Leaving`]). It reaches instances
//! through [`Compute`] and target groups through [`TargetGroups`], never the store or the
//! network plane.

pub mod model;
pub mod plan;
pub mod policy;
pub mod targets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::daemon::compute::{Compute, Reconciler};
use crate::daemon::describe::Tagged;
use crate::daemon::templates::{VersionSpec, Which};
use crate::daemon::{failpoint, DaemonError};
use crate::lb::config::TargetHealth;
use crate::state::db::StateError;
use crate::state::document::{self, DocumentStore};
use crate::state::id::now;
use crate::state::instance::{InstanceRecord, InstanceState};
use crate::state::tag::Tag;
use model::{
    Activity, ActivityStatus, AutoScaling, Group, GroupSpec, GroupUpdate, Metric, ScalingPolicy, TemplateRef,
};
use plan::{Member, Plan};
pub use targets::TargetGroups;

/// The document the groups are kept in.
const DOCUMENT: &str = "autoscaling";
/// The tag every instance of a group carries, its value the group's name.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";
/// The tag giving the launch template version an instance was launched from.
const VERSION_TAG: &str = "aws:ec2launchtemplate:version";
/// How often a pass runs when nothing wakes it.
const PASS_INTERVAL: Duration = Duration::from_secs(1);
/// The first wait after a failed launch, doubled on each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between launch attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why an Auto Scaling request was refused or failed. The API maps each to AWS's name.
#[derive(Debug, thiserror::Error)]
pub enum AutoScalingError {
    /// A malformed or impossible request.
    #[error("{0}")]
    Validation(String),
    /// No such group (AWS says so in a ValidationError).
    #[error("Auto Scaling group {0} does not exist")]
    GroupNotFound(String),
    /// The name is taken.
    #[error("an Auto Scaling group named {0} exists")]
    AlreadyExists(String),
    /// The group has instances.
    #[error("{0}")]
    ResourceInUse(String),
    /// The group is being deleted.
    #[error("{0}")]
    ScalingActivityInProgress(String),
    /// A cap would be passed.
    #[error("{0}")]
    LimitExceeded(String),
    /// The daemon failed or refused.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A group's instance as `describe-auto-scaling-groups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// The instance.
    pub instance_id: String,
    /// Pending, InService or Terminating.
    pub lifecycle_state: &'static str,
    /// Healthy or Unhealthy.
    pub health_status: &'static str,
    /// The launch template version it came from.
    pub version: Option<u32>,
    /// Its subnet.
    pub subnet: String,
    /// Protected from scale-in.
    pub protected_from_scale_in: bool,
}

/// A group and its instances.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The group as recorded.
    pub group: Group,
    /// Its instances.
    pub instances: Vec<InstanceView>,
}

/// The wait before a group's next launch after failures.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    wait: Duration,
}

/// The Auto Scaling service: the API's entry point, and the reconcile loop's owner.
pub struct AutoScalingGroups {
    documents: Arc<dyn DocumentStore>,
    compute: Arc<dyn Compute>,
    targets: Arc<dyn TargetGroups>,
    region: String,
    reconciler: Reconciler,
    backoff: Mutex<HashMap<String, Backoff>>,
    /// Each group's metrics.
    samplers: Mutex<HashMap<String, policy::Sampler>>,
    /// One pass at a time (the loop's, or a test's).
    passing: Mutex<()>,
}

impl AutoScalingGroups {
    /// The service over the daemon's `documents`, `compute` and the load balancers' `targets`.
    pub fn new(
        documents: Arc<dyn DocumentStore>,
        compute: Arc<dyn Compute>,
        targets: Arc<dyn TargetGroups>,
        region: &str,
    ) -> Self {
        Self {
            documents,
            compute,
            targets,
            region: region.to_owned(),
            reconciler: Reconciler::default(),
            backoff: Mutex::new(HashMap::new()),
            samplers: Mutex::new(HashMap::new()),
            passing: Mutex::new(()),
        }
    }

    /// Every group and activity as recorded.
    pub fn read(&self) -> Result<AutoScaling, AutoScalingError> {
        Ok(document::read(self.documents.as_ref(), DOCUMENT)?)
    }

    /// Applies `change` to the record (see [`document::change`]) and wakes the loop.
    fn change<T>(
        &self,
        change: impl FnMut(&mut AutoScaling) -> Result<T, AutoScalingError>,
    ) -> Result<T, AutoScalingError> {
        let result = document::change(self.documents.as_ref(), DOCUMENT, change)?;
        self.reconciler.wake();
        Ok(result)
    }

    /// The template a request names, checked to exist with that version.
    fn template(&self, which: &Which, version: VersionSpec) -> Result<TemplateRef, AutoScalingError> {
        let found = self
            .compute
            .launch_template(which, version)
            .map_err(|e| AutoScalingError::Validation(format!("the launch template cannot be used: {e}")))?;
        Ok(TemplateRef { id: found.template_id, name: found.template_name, version })
    }

    /// `create-auto-scaling-group`.
    pub fn create_group(
        &self,
        spec: &GroupSpec,
        which: &Which,
        version: VersionSpec,
    ) -> Result<Group, AutoScalingError> {
        let template = self.template(which, version)?;
        self.targets.check(&spec.target_group_arns)?;
        self.change(|a| a.create_group(&self.region, spec, template.clone(), now()))
    }

    /// `update-auto-scaling-group`, with the template version (if any) checked first.
    pub fn update_group(
        &self,
        name: &str,
        template: Option<(Which, VersionSpec)>,
        update: GroupUpdate,
    ) -> Result<Group, AutoScalingError> {
        let template = template.map(|(which, version)| self.template(&which, version)).transpose()?;
        let update = GroupUpdate { template, ..update };
        self.change(|a| a.update_group(name, &update))
    }

    /// `set-desired-capacity`.
    pub fn set_desired_capacity(&self, name: &str, desired: u32) -> Result<(), AutoScalingError> {
        self.change(|a| a.set_desired_capacity(name, desired))
    }

    /// `delete-auto-scaling-group [--force-delete]`.
    pub fn delete_group(&self, name: &str, force: bool) -> Result<(), AutoScalingError> {
        let has_instances = !self.members_of(name)?.is_empty();
        self.change(|a| a.delete_group(name, force, has_instances))
    }

    /// `set-instance-protection`: each instance must be in the group.
    pub fn set_protection(
        &self,
        name: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<(), AutoScalingError> {
        self.read()?.group(name)?;
        let members = self.members_of(name)?;
        if let Some(id) = ids.iter().find(|id| !members.iter().any(|m| &m.record.id == *id)) {
            return Err(AutoScalingError::Validation(format!(
                "instance {id} is not in Auto Scaling group {name}"
            )));
        }
        self.change(|a| a.set_protection(name, ids, protected))
    }

    /// `terminate-instance-in-auto-scaling-group`: the group the instance is in lets it go.
    pub fn terminate_instance(&self, id: &str, decrement: bool) -> Result<String, AutoScalingError> {
        let group = self
            .compute
            .live_instances()?
            .iter()
            .any(|i| i.id == id)
            .then(|| self.group_of(id))
            .transpose()?
            .flatten()
            .ok_or_else(|| {
                AutoScalingError::Validation(format!("instance {id} is not in an Auto Scaling group"))
            })?;
        self.change(|a| a.terminate_instance(&group, id, decrement, now()))?;
        Ok(group)
    }

    /// The group instance `id` is in, if any.
    fn group_of(&self, id: &str) -> Result<Option<String>, AutoScalingError> {
        for group in self.read()?.groups {
            if self.members_of(&group.name)?.iter().any(|m| m.record.id == id) {
                return Ok(Some(group.name));
            }
        }
        Ok(None)
    }

    fn members_of(&self, name: &str) -> Result<Vec<Tagged<InstanceRecord>>, AutoScalingError> {
        Ok(self.compute.instances_tagged(GROUP_TAG, name)?)
    }

    /// `describe-auto-scaling-groups`: those named (none: all), with their instances.
    pub fn describe(&self, names: &[String]) -> Result<Vec<GroupView>, AutoScalingError> {
        let state = self.read()?;
        let groups: Vec<Group> = if names.is_empty() {
            state.groups
        } else {
            names.iter().map(|n| state.group(n).cloned()).collect::<Result<_, _>>()?
        };
        groups
            .into_iter()
            .map(|group| {
                let members = self.observe(&group)?;
                let now = now();
                let instances = members
                    .iter()
                    .map(|m| {
                        let failed = group.leaving.iter().any(|l| l.instance_id == m.id && l.unhealthy);
                        let healthy = !failed && plan::unhealthy(&group, m, now).is_none();
                        InstanceView {
                            instance_id: m.id.clone(),
                            lifecycle_state: if group.is_leaving(&m.id) {
                                "Terminating"
                            } else if m.state == InstanceState::Pending {
                                "Pending"
                            } else {
                                "InService"
                            },
                            health_status: if healthy { "Healthy" } else { "Unhealthy" },
                            version: m.version,
                            subnet: m.subnet.clone(),
                            protected_from_scale_in: group.protected.contains(&m.id),
                        }
                    })
                    .collect();
                Ok(GroupView { group, instances })
            })
            .collect()
    }

    /// `describe-scaling-activities`: a group's (none named: every group's), newest first.
    pub fn activities(&self, name: Option<&str>) -> Result<Vec<Activity>, AutoScalingError> {
        let state = self.read()?;
        if let Some(name) = name {
            state.group(name)?;
        }
        let mut found: Vec<Activity> = state
            .activities
            .into_iter()
            .filter(|a| name.is_none() || name == Some(a.group.as_str()))
            .collect();
        found.reverse();
        Ok(found)
    }

    /// Starts the reconcile loop.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let pass = |this: &Self| {
            if let Err(e) = this.reconcile() {
                tracing::warn!("auto scaling: {e}");
            }
        };
        self.reconciler.start("asg", self.clone(), self.compute.instance_events(), PASS_INTERVAL, pass)
    }

    /// One pass over every group.
    pub fn reconcile(&self) -> Result<(), AutoScalingError> {
        self.reconcile_at(Instant::now())
    }

    /// One pass, its metrics sampled as at `at` (tests move time on).
    fn reconcile_at(&self, at: Instant) -> Result<(), AutoScalingError> {
        let _passing = self.passing.lock().unwrap_or_else(PoisonError::into_inner);
        for group in self.read()?.groups {
            if let Err(e) = self.reconcile_group(&group, at) {
                tracing::warn!("auto scaling group {}: {e}", group.name);
            }
        }
        Ok(())
    }

    /// The group's live instances as the planner sees them.
    fn observe(&self, group: &Group) -> Result<Vec<Member>, AutoScalingError> {
        let mut seen: HashMap<String, Vec<TargetHealth>> = HashMap::new();
        for arn in &group.target_group_arns {
            match self.targets.targets(arn) {
                Ok(targets) => {
                    for (id, health) in targets {
                        seen.entry(id).or_default().push(health);
                    }
                }
                Err(e) => tracing::warn!("auto scaling group {}: target group {arn}: {e}", group.name),
            }
        }
        let groups = group.target_group_arns.len();
        Ok(self
            .members_of(&group.name)?
            .into_iter()
            .map(|Tagged { record, tags }| {
                let health = seen.remove(&record.id).unwrap_or_default();
                let cpu_seconds = self.compute.cpu_seconds(&record);
                let registered = health.iter().filter(|h| **h != TargetHealth::Draining).count();
                Member {
                    version: tags.iter().find(|t| t.key == VERSION_TAG).and_then(|t| t.value.parse().ok()),
                    state: record.state,
                    launch_time: u64::try_from(record.launch_time).unwrap_or(0),
                    subnet: record.subnet_id,
                    vcpus: record.vcpus,
                    cpu_seconds,
                    registered_in_all: registered >= groups,
                    registered_in_any: registered > 0,
                    draining: health.contains(&TargetHealth::Draining),
                    elb_unhealthy: health.contains(&TargetHealth::Unhealthy),
                    id: record.id,
                }
            })
            .collect())
    }

    fn reconcile_group(&self, group: &Group, at: Instant) -> Result<(), AutoScalingError> {
        let now = now();
        let members = self.observe(group)?;
        if self.scale(group, &members, now, at)? {
            // The change wakes the loop: the next pass plans with the new capacity.
            return Ok(());
        }
        let plan = plan::plan(group, &members, now);
        if plan == Plan::default() {
            return Ok(());
        }
        // What leaves is recorded before anything is done to it.
        if !plan.leave.is_empty() {
            self.change(|a| a.start_leaving(&group.name, &plan.leave))?;
            failpoint("asg-after-leave");
        }
        let mut activities = Vec::new();
        if !plan.deregister.is_empty() {
            for arn in &group.target_group_arns {
                self.targets.deregister(arn, &plan.deregister)?;
            }
        }
        let causes: HashMap<&str, &str> = group
            .leaving
            .iter()
            .chain(&plan.leave)
            .map(|l| (l.instance_id.as_str(), l.cause.as_str()))
            .collect();
        for id in &plan.terminate {
            let result = self.compute.terminate_instances(std::slice::from_ref(id));
            let cause = causes.get(id.as_str()).copied().unwrap_or_default();
            activities.push(activity(
                group,
                &format!("Terminating EC2 instance: {id}"),
                cause,
                now,
                result.err(),
            ));
        }
        let launched = self.launch(group, &plan, now, &mut activities);
        if !plan.register.is_empty() {
            for arn in &group.target_group_arns {
                self.targets.register(arn, &plan.register)?;
            }
        }
        let remember = !activities.is_empty() || !plan.gone.is_empty() || (group.deleting && plan.empty);
        if remember || (!launched.is_empty() && group.new_instances_protected_from_scale_in) {
            self.change(|a| {
                if group.new_instances_protected_from_scale_in && a.group(&group.name).is_ok() {
                    a.set_protection(&group.name, &launched, true).ok();
                }
                for activity in &activities {
                    a.record(activity.clone());
                }
                a.forget(&group.name, &plan.gone, plan.empty && plan.launch.is_empty())
            })?;
        }
        Ok(())
    }

    /// Samples the group's metrics and, when its policies agree on a new capacity, sets
    /// it; returns whether it did.
    fn scale(
        &self,
        group: &Group,
        members: &[Member],
        now: u64,
        at: Instant,
    ) -> Result<bool, AutoScalingError> {
        if group.policies.is_empty() || group.deleting {
            return Ok(false);
        }
        let mut samplers = self.samplers.lock().unwrap_or_else(PoisonError::into_inner);
        let sampler = samplers.entry(group.name.clone()).or_default();
        let in_service: Vec<&Member> = members
            .iter()
            .filter(|m| !group.is_leaving(&m.id) && m.state == InstanceState::Running)
            .collect();
        for member in &in_service {
            if let Some(seconds) = member.cpu_seconds {
                sampler.add_cpu(&member.id, at, seconds);
            }
        }
        sampler.retain_instances(&members.iter().map(|m| m.id.as_str()).collect::<Vec<_>>());
        let mut read = Vec::new();
        for policy in &group.policies {
            if let Metric::RequestCountPerTarget(arn) = &policy.metric {
                if !read.contains(arn) {
                    match self.targets.request_counts(arn) {
                        Ok(counts) => sampler.add_requests(arn, at, &counts),
                        Err(e) => tracing::warn!("auto scaling group {}: requests of {arn}: {e}", group.name),
                    }
                    read.push(arn.clone());
                }
            }
        }
        let current = group.desired_capacity;
        let mut proposals = Vec::new();
        let mut readings = Vec::new();
        for policy in &group.policies {
            let warmup = policy
                .estimated_instance_warmup
                .or(group.default_instance_warmup)
                .unwrap_or(policy::DEFAULT_WARMUP);
            let reading = match &policy.metric {
                Metric::AverageCpuUtilization => {
                    let warm: Vec<f64> = in_service
                        .iter()
                        .filter(|m| m.launch_time.saturating_add(u64::from(warmup)) <= now)
                        .filter_map(|m| sampler.cpu_percent(&m.id, m.vcpus))
                        .collect();
                    let counted = u32::try_from(warm.len()).unwrap_or(u32::MAX);
                    (counted > 0).then(|| (counted, warm.iter().sum::<f64>() / f64::from(counted)))
                }
                Metric::RequestCountPerTarget(arn) => sampler.requests_per_minute(arn).map(|per_minute| {
                    let targets = u32::try_from(in_service.len().max(1)).unwrap_or(u32::MAX);
                    (targets, per_minute / f64::from(targets))
                }),
            };
            // No reading yet: the policy holds the capacity as it is.
            let Some((counted, value)) = reading else {
                proposals.push(policy::Proposal {
                    policy: policy.name.clone(),
                    capacity: current,
                    may_scale_in: false,
                });
                continue;
            };
            let capacity = policy::capacity_for(counted, value, policy.target_value);
            let cooldown = Duration::from_secs(u64::from(policy.scale_in_cooldown));
            let cooled = sampler.below_for(&policy.name, capacity < current, at, cooldown);
            proposals.push(policy::Proposal {
                policy: policy.name.clone(),
                capacity,
                may_scale_in: cooled && !policy.disable_scale_in,
            });
            readings.push(format!(
                "policy {} found {} at {value:.1} (target {}) and asked for {capacity}",
                policy.name,
                policy.metric.name(),
                policy.target_value
            ));
        }
        let Some(next) = policy::combine(current, &proposals, group.min_size, group.max_size) else {
            return Ok(false);
        };
        sampler.restart_cooldowns();
        drop(samplers);
        let cause = format!(
            "A target tracking policy changed the desired capacity from {current} to {next}: {}.",
            readings.join("; ")
        );
        let what = format!("Setting the desired capacity to {next}");
        let change = activity(group, &what, &cause, now, None);
        self.change(|a| {
            a.set_desired_capacity(&group.name, next)?;
            a.record(change.clone());
            Ok(())
        })?;
        tracing::info!("auto scaling group {}: {cause}", group.name);
        Ok(true)
    }

    /// `put-scaling-policy` (target tracking).
    pub fn put_policy(&self, group: &str, policy: ScalingPolicy) -> Result<ScalingPolicy, AutoScalingError> {
        let arn = format!(
            "{}{}:000000000000:scalingPolicy:{}:autoScalingGroupName/{group}:policyName/{}",
            model::ARN_PREFIX,
            self.region,
            uuid(),
            policy.name
        );
        let policy = ScalingPolicy { arn, ..policy };
        self.change(|a| a.put_policy(group, policy.clone()))
    }

    /// `delete-policy`.
    pub fn delete_policy(&self, group: &str, policy: &str) -> Result<(), AutoScalingError> {
        self.change(|a| a.delete_policy(group, policy))
    }

    /// Launches what `plan` asks for, one instance at a time (each tagged from the start,
    /// so a crash between two leaves the first counted); returns the ids launched. After a
    /// failure the group waits, longer each time, before it tries again.
    fn launch(&self, group: &Group, plan: &Plan, now: u64, activities: &mut Vec<Activity>) -> Vec<String> {
        let mut launched = Vec::new();
        if plan.launch.is_empty() || self.backing_off(&group.name) {
            return launched;
        }
        let which = Which::Id(group.template.id.clone());
        for (n, subnet) in plan.launch.iter().enumerate() {
            let from = plan.launch_from + u32::try_from(n).unwrap_or(u32::MAX);
            let cause = format!(
                "An instance was started in response to a difference between desired and actual capacity, increasing the capacity from {from} to {}.",
                from + 1
            );
            let result = self.compute.launch_template(&which, group.template.version).and_then(|template| {
                let mut spec = template.spec;
                spec.count = 1;
                if !subnet.is_empty() {
                    spec.subnet_id.clone_from(subnet);
                }
                spec.reserved_tags = vec![
                    Tag { key: GROUP_TAG.into(), value: group.name.clone() },
                    Tag { key: "aws:ec2launchtemplate:id".into(), value: template.template_id },
                    Tag { key: VERSION_TAG.into(), value: template.version.to_string() },
                ];
                self.compute.run_instances(&spec)
            });
            match result {
                Ok(records) => {
                    failpoint("asg-after-launch");
                    for record in records {
                        let what = format!("Launching a new EC2 instance: {}", record.id);
                        activities.push(activity(group, &what, &cause, now, None));
                        launched.push(record.id);
                    }
                    self.lock_backoff().remove(&group.name);
                }
                Err(e) => {
                    activities.push(activity(group, "Launching a new EC2 instance", &cause, now, Some(e)));
                    self.back_off(&group.name);
                    break;
                }
            }
        }
        launched
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backoff>> {
        self.backoff.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn backing_off(&self, name: &str) -> bool {
        self.lock_backoff().get(name).is_some_and(|b| Instant::now() < b.until)
    }

    fn back_off(&self, name: &str) {
        let mut backoff = self.lock_backoff();
        let wait = backoff.get(name).map_or(FIRST_BACKOFF, |b| (b.wait * 2).min(MAX_BACKOFF));
        backoff.insert(name.to_owned(), Backoff { until: Instant::now() + wait, wait });
    }
}

/// An activity of `group` that started and ended `now`, failed if `error` says so.
fn activity(group: &Group, description: &str, cause: &str, now: u64, error: Option<DaemonError>) -> Activity {
    Activity {
        id: uuid(),
        group: group.name.clone(),
        description: description.to_owned(),
        cause: cause.to_owned(),
        status: if error.is_some() { ActivityStatus::Failed } else { ActivityStatus::Successful },
        status_message: error.map(|e| e.to_string()).unwrap_or_default(),
        start: now,
        end: now,
    }
}

/// A random id in the UUID shape AWS gives activities.
fn uuid() -> String {
    let hex = crate::state::id::new_id("x");
    let more = crate::state::id::new_id("x");
    let digits: String = hex[2..].chars().chain(more[2..].chars()).take(32).collect();
    format!("{}-{}-{}-{}-{}", &digits[..8], &digits[8..12], &digits[12..16], &digits[16..20], &digits[20..32])
}

#[cfg(test)]
mod tests;
