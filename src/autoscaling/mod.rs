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
pub mod refresh;
pub mod schedule;
pub mod targets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::daemon::compute::{Compute, Reconciler};
use crate::daemon::describe::Tagged;
use crate::daemon::templates::{template_tags, VersionSpec, Which, TEMPLATE_ID_TAG, TEMPLATE_VERSION_TAG};
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
use refresh::{InstanceRefresh, Outcome, Preferences, RefreshStatus};
use schedule::ScheduledAction;
pub use targets::TargetGroups;

/// The document the groups are kept in.
const DOCUMENT: &str = "autoscaling";
/// The tag every instance of a group carries, its value the group's name.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";
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
    /// The group has an instance refresh in progress.
    #[error("{0}")]
    RefreshInProgress(String),
    /// The group has no instance refresh in progress.
    #[error("{0}")]
    NoActiveRefresh(String),
    /// The refresh cannot be rolled back.
    #[error("{0}")]
    Irreversible(String),
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

    /// `terminate-instance-in-auto-scaling-group`: the group the instance is in (its tag
    /// says which) lets it go.
    pub fn terminate_instance(&self, id: &str, decrement: bool) -> Result<String, AutoScalingError> {
        let group = self
            .compute
            .instances_tagged(GROUP_TAG, None)?
            .into_iter()
            .find(|m| m.record.id == id)
            .and_then(|m| m.tags.into_iter().find(|t| t.key == GROUP_TAG))
            .map(|t| t.value)
            .ok_or_else(|| {
                AutoScalingError::Validation(format!("instance {id} is not in an Auto Scaling group"))
            })?;
        self.change(|a| a.terminate_instance(&group, id, decrement, now()))?;
        Ok(group)
    }

    fn members_of(&self, name: &str) -> Result<Vec<Tagged<InstanceRecord>>, AutoScalingError> {
        Ok(self.compute.instances_tagged(GROUP_TAG, Some(name))?)
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
                let members = self.observe(&group, false)?;
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
        let state = self.read()?;
        for group in &state.groups {
            if let Err(e) = self.reconcile_group(&state, group, at) {
                tracing::warn!("auto scaling group {}: {e}", group.name);
            }
        }
        Ok(())
    }

    /// The group's live instances as the planner sees them, with the CPU time each has
    /// used when `metrics` asks for it.
    fn observe(&self, group: &Group, metrics: bool) -> Result<Vec<Member>, AutoScalingError> {
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
                let cpu_seconds = if metrics { self.compute.cpu_seconds(&record) } else { None };
                let registered = health.iter().filter(|h| **h != TargetHealth::Draining).count();
                let healthy = health.iter().filter(|h| **h == TargetHealth::Healthy).count();
                let tag = |key: &str| tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
                Member {
                    template_id: tag(TEMPLATE_ID_TAG),
                    version: tag(TEMPLATE_VERSION_TAG).and_then(|v| v.parse().ok()),
                    state: record.state,
                    launch_time: u64::try_from(record.launch_time).unwrap_or(0),
                    subnet: record.subnet_id,
                    vcpus: record.vcpus,
                    cpu_seconds,
                    registered_in_all: registered >= groups,
                    registered_in_any: registered > 0,
                    healthy_in_all: healthy >= groups,
                    draining: health.contains(&TargetHealth::Draining),
                    elb_unhealthy: health.contains(&TargetHealth::Unhealthy),
                    id: record.id,
                }
            })
            .collect())
    }

    fn reconcile_group(
        &self,
        state: &AutoScaling,
        group: &Group,
        at: Instant,
    ) -> Result<(), AutoScalingError> {
        let now = now();
        // Each change below wakes the loop: the next pass plans with what it changed.
        if group.scheduled.iter().any(|a| a.due(now)) {
            return self.run_scheduled(group, now);
        }
        let members = self.observe(group, !group.policies.is_empty())?;
        if self.scale(group, &members, now, at)? {
            return Ok(());
        }
        let mut plan = plan::plan(group, &members, now);
        let refresh = state.active_refresh(&group.name);
        let mut remaining = None;
        if let Some(refresh) = refresh {
            let step = refresh::step(group, refresh, &members, &plan.leave, now);
            match step.outcome {
                Some(outcome) => return self.end_refresh(group, refresh, &members, outcome, now),
                None => {
                    plan.leave.extend(step.leave);
                    remaining = Some(step.remaining).filter(|n| *n != refresh.remaining);
                }
            }
        }
        if plan == Plan::default() && remaining.is_none() {
            return Ok(());
        }
        // What leaves is recorded before anything is done to it.
        if !plan.leave.is_empty() || remaining.is_some() {
            self.change(|a| {
                if let (Some(refresh), Some(remaining)) = (refresh, remaining) {
                    a.set_refresh_remaining(&refresh.id, remaining);
                }
                a.start_leaving(&group.name, &plan.leave)
            })?;
            if !plan.leave.is_empty() {
                failpoint("asg-after-leave");
            }
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
                result.err().map(|e| e.to_string()),
            ));
        }
        let launching = refresh.map_or(&group.template, |r| &r.target);
        let (launched, failure) = self.launch(group, launching, &plan, now, &mut activities);
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
        // The new version failing to launch fails the refresh.
        if let (Some(refresh), Some(why)) = (refresh, failure) {
            let why = format!("an instance of the new version failed to launch: {why}");
            self.end_refresh(group, refresh, &members, Outcome::Failed(why), now)?;
        }
        Ok(())
    }

    /// Applies group `group`'s scheduled actions due at `now`, each recorded as an activity.
    fn run_scheduled(&self, group: &Group, now: u64) -> Result<(), AutoScalingError> {
        let ran = self.change(|a| {
            let ran = a.run_scheduled(&group.name, now)?;
            for r in &ran {
                let what = format!("Executing scheduled action {}", r.action);
                a.record(activity(group, &what, &r.cause, now, r.refused.clone()));
            }
            Ok(ran)
        })?;
        for r in ran {
            tracing::info!("auto scaling group {}: scheduled action {}: {}", group.name, r.action, r.cause);
        }
        Ok(())
    }

    /// Ends `refresh` as `outcome` says: done, or failed and then rolled back when it asked
    /// for that and has a version to go back to.
    fn end_refresh(
        &self,
        group: &Group,
        refresh: &InstanceRefresh,
        members: &[Member],
        outcome: Outcome,
        now: u64,
    ) -> Result<(), AutoScalingError> {
        let rolling_back = refresh.status == RefreshStatus::RollbackInProgress;
        match outcome {
            Outcome::Done => {
                let (status, reason) = if rolling_back {
                    (RefreshStatus::RollbackSuccessful, refresh.status_reason.clone())
                } else {
                    (RefreshStatus::Successful, String::new())
                };
                self.change(|a| {
                    a.end_refresh(&refresh.id, status, &reason, now);
                    Ok(())
                })?;
            }
            Outcome::Failed(why) => {
                tracing::warn!("auto scaling group {}: instance refresh {}: {why}", group.name, refresh.id);
                let reason = format!("The instance refresh failed: {why}.");
                let back = refresh.preferences.auto_rollback && !rolling_back && refresh.previous.is_some();
                let total = rollback_total(group, refresh, members, now);
                self.change(|a| {
                    if back {
                        a.roll_back(&group.name, &reason, total)?;
                    } else {
                        a.end_refresh(&refresh.id, RefreshStatus::Failed, &reason, now);
                    }
                    Ok(())
                })?;
            }
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

    /// `put-scheduled-update-group-action`: `action` checked, its first run set.
    pub fn put_scheduled_action(&self, group: &str, action: ScheduledAction) -> Result<(), AutoScalingError> {
        let arn = format!(
            "{}{}:000000000000:scheduledUpdateGroupAction:{}:autoScalingGroupName/{group}:scheduledActionName/{}",
            model::ARN_PREFIX,
            self.region,
            uuid(),
            action.name
        );
        let action = ScheduledAction { arn, ..action }.checked(now())?;
        self.change(|a| a.put_scheduled_action(group, action.clone()))
    }

    /// `delete-scheduled-action`.
    pub fn delete_scheduled_action(&self, group: &str, action: &str) -> Result<(), AutoScalingError> {
        self.change(|a| a.delete_scheduled_action(group, action))
    }

    /// `describe-scheduled-actions`: a group's (none named: every group's), as (group,
    /// action).
    pub fn scheduled_actions(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<(String, ScheduledAction)>, AutoScalingError> {
        let state = self.read()?;
        if let Some(name) = name {
            state.group(name)?;
        }
        Ok(state
            .groups
            .into_iter()
            .filter(|g| name.map_or(true, |n| n == g.name))
            .flat_map(|g| {
                let group = g.name;
                g.scheduled.into_iter().map(move |a| (group.clone(), a))
            })
            .collect())
    }

    /// `start-instance-refresh`: group `name` rolled onto `desired` (none: its own
    /// template, every instance replaced unless `skip_matching`); returns the refresh's id.
    pub fn start_refresh(
        &self,
        name: &str,
        preferences: Preferences,
        desired: Option<(Which, VersionSpec)>,
    ) -> Result<String, AutoScalingError> {
        if preferences.min_healthy_percentage > 100 {
            return Err(AutoScalingError::Validation("the minimum healthy percentage is 0 to 100".into()));
        }
        if preferences.instance_warmup.is_some_and(|w| w > model::MAX_GRACE_SECONDS) {
            return Err(AutoScalingError::Validation(format!(
                "the instance warmup is at most {} seconds",
                model::MAX_GRACE_SECONDS
            )));
        }
        let group = self.read()?.group(name)?.clone();
        let desired = desired.map(|(which, version)| self.template(&which, version)).transpose()?;
        let by_number = |t: &TemplateRef| -> Result<TemplateRef, AutoScalingError> {
            let found = self.compute.launch_template(&Which::Id(t.id.clone()), t.version)?;
            Ok(TemplateRef { version: VersionSpec::Number(found.version), ..t.clone() })
        };
        let target = by_number(desired.as_ref().unwrap_or(&group.template))?;
        let previous = desired.as_ref().map(|_| by_number(&group.template)).transpose()?;
        let members = self.observe(&group, false)?;
        let now = now();
        let replace = if preferences.skip_matching {
            Vec::new()
        } else {
            members.iter().filter(|m| !group.is_leaving(&m.id)).map(|m| m.id.clone()).collect()
        };
        let mut refresh = InstanceRefresh {
            id: uuid(),
            group: name.to_owned(),
            status: RefreshStatus::InProgress,
            status_reason: String::new(),
            start: now,
            end: None,
            preferences,
            target,
            desired,
            previous,
            replace,
            total: 0,
            remaining: 0,
        };
        let total = u32::try_from(refresh.outdated_members(&group, &members, now).len()).unwrap_or(u32::MAX);
        (refresh.total, refresh.remaining) = (total, total);
        self.change(|a| a.start_refresh(refresh.clone()))?;
        tracing::info!(
            "auto scaling group {name}: instance refresh {} started, {total} to replace",
            refresh.id
        );
        Ok(refresh.id)
    }

    /// `describe-instance-refreshes`: group `name`'s, newest first (those in `ids`, if any).
    pub fn refreshes(&self, name: &str, ids: &[String]) -> Result<Vec<InstanceRefresh>, AutoScalingError> {
        let state = self.read()?;
        state.group(name)?;
        let mut found: Vec<InstanceRefresh> = state
            .refreshes
            .into_iter()
            .filter(|r| r.group == name && (ids.is_empty() || ids.contains(&r.id)))
            .collect();
        found.reverse();
        Ok(found)
    }

    /// `cancel-instance-refresh`: returns the refresh's id.
    pub fn cancel_refresh(&self, name: &str) -> Result<String, AutoScalingError> {
        self.change(|a| a.cancel_refresh(name, now()))
    }

    /// `rollback-instance-refresh`: back to the version the group had; returns the id.
    pub fn rollback_refresh(&self, name: &str) -> Result<String, AutoScalingError> {
        let state = self.read()?;
        let group = state.group(name)?;
        let total = match state.active_refresh(name) {
            Some(refresh) => rollback_total(group, refresh, &self.observe(group, false)?, now()),
            None => 0,
        };
        self.change(|a| a.roll_back(name, "Rolled back by a user request.", total))
    }

    /// Launches what `plan` asks for from `template`, one instance at a time (each tagged
    /// from the start, so a crash between two leaves the first counted); returns the ids
    /// launched and, if one failed, why. After a failure the group waits, longer each
    /// time, before it tries again.
    fn launch(
        &self,
        group: &Group,
        template: &TemplateRef,
        plan: &Plan,
        now: u64,
        activities: &mut Vec<Activity>,
    ) -> (Vec<String>, Option<String>) {
        let mut launched = Vec::new();
        if plan.launch.is_empty() || self.backing_off(&group.name) {
            return (launched, None);
        }
        let cause = |from: u32| {
            format!(
                "An instance was started in response to a difference between desired and actual capacity, increasing the capacity from {from} to {}.",
                from + 1
            )
        };
        let resolved = self.compute.launch_template(&Which::Id(template.id.clone()), template.version);
        let mut failure = None;
        for (n, subnet) in plan.launch.iter().enumerate() {
            let from = plan.launch_from + u32::try_from(n).unwrap_or(u32::MAX);
            let result = resolved.as_ref().map_err(|e| e.to_string()).and_then(|template| {
                let mut spec = template.spec.clone();
                spec.count = 1;
                if !subnet.is_empty() {
                    spec.subnet_id.clone_from(subnet);
                }
                spec.reserved_tags = vec![Tag { key: GROUP_TAG.into(), value: group.name.clone() }];
                spec.reserved_tags.extend(template_tags(&template.template_id, template.version));
                self.compute.run_instances(&spec).map_err(|e| e.to_string())
            });
            match result {
                Ok(records) => {
                    failpoint("asg-after-launch");
                    for record in records {
                        let what = format!("Launching a new EC2 instance: {}", record.id);
                        activities.push(activity(group, &what, &cause(from), now, None));
                        launched.push(record.id);
                    }
                    self.lock_backoff().remove(&group.name);
                }
                Err(e) => {
                    activities.push(activity(
                        group,
                        "Launching a new EC2 instance",
                        &cause(from),
                        now,
                        Some(e.clone()),
                    ));
                    self.back_off(&group.name);
                    failure = Some(e);
                    break;
                }
            }
        }
        (launched, failure)
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

/// Instances a rollback of `refresh` has to replace: those not on the version the group had.
fn rollback_total(group: &Group, refresh: &InstanceRefresh, members: &[Member], now: u64) -> u32 {
    let Some(previous) = &refresh.previous else {
        return 0;
    };
    let back = InstanceRefresh { target: previous.clone(), replace: Vec::new(), ..refresh.clone() };
    u32::try_from(back.outdated_members(group, members, now).len()).unwrap_or(u32::MAX)
}

/// An activity of `group` that started and ended `now`, failed if `error` says why.
fn activity(group: &Group, description: &str, cause: &str, now: u64, error: Option<String>) -> Activity {
    Activity {
        id: uuid(),
        group: group.name.clone(),
        description: description.to_owned(),
        cause: cause.to_owned(),
        status: if error.is_some() { ActivityStatus::Failed } else { ActivityStatus::Successful },
        status_message: error.unwrap_or_default(),
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
