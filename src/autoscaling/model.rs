//! The groups' desired state, as one document: each change is a pure function that either
//! does what was asked or refuses and changes nothing, so the API and the reconcile loop
//! can race on it through compare and set.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::refresh::{InstanceRefresh, RefreshStatus, MAX_REFRESHES};
use super::schedule::{ScheduledAction, MAX_SCHEDULED_ACTIONS};
use super::AutoScalingError;
use crate::daemon::templates::VersionSpec;

/// The start of every group's ARN.
pub const ARN_PREFIX: &str = "arn:nuage:autoscaling:";
/// Groups on the host.
pub const MAX_GROUPS: usize = 50;
/// The largest max size (a single host runs no more instances for one group).
pub const MAX_GROUP_SIZE: u32 = 100;
/// Target groups per group.
pub const MAX_TARGET_GROUPS: usize = 10;
/// Subnets per group.
pub const MAX_SUBNETS: usize = 16;
/// Activities kept per group (the oldest go first).
pub const MAX_ACTIVITIES: usize = 100;
/// Scaling policies per group.
pub const MAX_POLICIES: usize = 10;
/// The longest health check grace period, in seconds (AWS allows up to 7200).
pub const MAX_GRACE_SECONDS: u32 = 7200;

/// Which health a group replaces instances on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HealthCheckType {
    /// The instance is pending or running.
    #[default]
    Ec2,
    /// That, and no target group of the group says it is unhealthy once its grace period
    /// is over.
    Elb,
}

impl HealthCheckType {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ec2 => "EC2",
            Self::Elb => "ELB",
        }
    }
}

impl std::str::FromStr for HealthCheckType {
    type Err = AutoScalingError;

    fn from_str(text: &str) -> Result<Self, AutoScalingError> {
        match text {
            "" | "EC2" => Ok(Self::Ec2),
            "ELB" => Ok(Self::Elb),
            _ => Err(AutoScalingError::Validation(format!("health check type {text:?}: EC2 or ELB"))),
        }
    }
}

/// The launch template version a group launches: the id is fixed when the group is made,
/// the version (`$Latest`, `$Default` or a number) is resolved at each launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    /// `lt-…`.
    pub id: String,
    /// Its name, for display.
    pub name: String,
    /// Which version.
    pub version: VersionSpec,
}

/// An instance the group is letting go of: deregistered first, terminated once drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaving {
    /// The instance.
    pub instance_id: String,
    /// Since when (seconds since the epoch).
    pub since: u64,
    /// Why, in words (the activity's cause).
    pub cause: String,
    /// It leaves because it failed a health check.
    #[serde(default)]
    pub unhealthy: bool,
}

/// One Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Unique on the host.
    pub name: String,
    /// `arn:nuage:autoscaling:<region>:000000000000:autoScalingGroup:<id>:autoScalingGroupName/<name>`.
    pub arn: String,
    /// When it was made.
    pub created: u64,
    /// What it launches.
    pub template: TemplateRef,
    /// Never fewer instances.
    pub min_size: u32,
    /// Never more.
    pub max_size: u32,
    /// How many it keeps.
    pub desired_capacity: u32,
    /// Where its instances go, spread evenly (none: the template's subnet).
    pub subnets: Vec<String>,
    /// Where its running instances are registered.
    pub target_group_arns: Vec<String>,
    /// Which health replaces instances.
    pub health_check_type: HealthCheckType,
    /// Seconds after launch before ELB health counts.
    pub health_check_grace_seconds: u32,
    /// Seconds a new instance takes to count in scaling metrics (none: the policies' own).
    pub default_instance_warmup: Option<u32>,
    /// Whether instances it launches are protected from scale-in.
    pub new_instances_protected_from_scale_in: bool,
    /// Instances protected from scale-in.
    pub protected: BTreeSet<String>,
    /// Instances on their way out.
    pub leaving: Vec<Leaving>,
    /// Deleted with --force-delete: everything goes, then the group.
    pub deleting: bool,
    /// Its scaling policies.
    #[serde(default)]
    pub policies: Vec<ScalingPolicy>,
    /// Its scheduled actions.
    #[serde(default)]
    pub scheduled: Vec<ScheduledAction>,
}

/// What a target tracking policy keeps at its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Metric {
    /// The average CPU use of the group's instances, in percent of their vCPUs.
    AverageCpuUtilization,
    /// Requests per minute per target of this target group (one of the group's).
    RequestCountPerTarget(String),
}

impl Metric {
    /// AWS's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AverageCpuUtilization => "ASGAverageCPUUtilization",
            Self::RequestCountPerTarget(_) => "ALBRequestCountPerTarget",
        }
    }
}

/// A target tracking scaling policy: the group grows at once when the metric is above
/// its target, and shrinks only after it has been below for the cooldown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// Unique in its group.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// The metric.
    pub metric: Metric,
    /// The value the metric is kept at.
    pub target_value: f64,
    /// This policy never shrinks the group.
    pub disable_scale_in: bool,
    /// Seconds a new instance takes before its metrics count (none: the group's default
    /// warmup, else 300).
    pub estimated_instance_warmup: Option<u32>,
    /// Seconds the metric must stay below the target before the group shrinks.
    pub scale_in_cooldown: u32,
}

impl Group {
    /// Whether `id` is on its way out.
    pub fn is_leaving(&self, id: &str) -> bool {
        self.leaving.iter().any(|l| l.instance_id == id)
    }

    fn check(&self) -> Result<(), AutoScalingError> {
        let invalid = |why: String| Err(AutoScalingError::Validation(why));
        let (min, max, desired) = (self.min_size, self.max_size, self.desired_capacity);
        if min > max {
            return invalid(format!("the min size {min} is more than the max size {max}"));
        }
        if max > MAX_GROUP_SIZE {
            return invalid(format!("the max size {max} is more than {MAX_GROUP_SIZE}"));
        }
        if !(min..=max).contains(&desired) {
            return invalid(format!(
                "the desired capacity {desired} is not between the min size {min} and the max size {max}"
            ));
        }
        if self.subnets.len() > MAX_SUBNETS {
            return invalid(format!("at most {MAX_SUBNETS} subnets"));
        }
        if self.target_group_arns.len() > MAX_TARGET_GROUPS {
            return invalid(format!("at most {MAX_TARGET_GROUPS} target groups"));
        }
        if self.health_check_grace_seconds > MAX_GRACE_SECONDS {
            return invalid(format!("the health check grace period is at most {MAX_GRACE_SECONDS} seconds"));
        }
        let unique = |items: &[String]| items.iter().collect::<BTreeSet<_>>().len() == items.len();
        if !unique(&self.subnets) || !unique(&self.target_group_arns) {
            return invalid("a subnet or target group is named twice".into());
        }
        Ok(())
    }
}

/// How an activity ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityStatus {
    /// It did what it said.
    Successful,
    /// It failed; the message says why.
    Failed,
}

impl ActivityStatus {
    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Successful => "Successful",
            Self::Failed => "Failed",
        }
    }
}

/// One thing a group did, as `describe-scaling-activities` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Unique.
    pub id: String,
    /// The group's name.
    pub group: String,
    /// What was done ("Launching a new EC2 instance: i-…").
    pub description: String,
    /// Why, in words.
    pub cause: String,
    /// How it ended.
    pub status: ActivityStatus,
    /// More on a failure.
    pub status_message: String,
    /// When it started.
    pub start: u64,
    /// When it ended.
    pub end: u64,
}

/// What `create-auto-scaling-group` asks for.
#[derive(Debug, Clone, Default)]
pub struct GroupSpec {
    /// The name.
    pub name: String,
    /// Min, max and desired (none: the min).
    pub min_size: u32,
    /// The max.
    pub max_size: u32,
    /// The desired capacity.
    pub desired_capacity: Option<u32>,
    /// Subnets.
    pub subnets: Vec<String>,
    /// Target groups.
    pub target_group_arns: Vec<String>,
    /// Health check type.
    pub health_check_type: HealthCheckType,
    /// Grace period.
    pub health_check_grace_seconds: u32,
    /// Default instance warmup.
    pub default_instance_warmup: Option<u32>,
    /// Scale-in protection for new instances.
    pub new_instances_protected_from_scale_in: bool,
}

/// What `update-auto-scaling-group` changes: each field given replaces the group's.
#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    /// New template version.
    pub template: Option<TemplateRef>,
    /// New min.
    pub min_size: Option<u32>,
    /// New max.
    pub max_size: Option<u32>,
    /// New desired capacity.
    pub desired_capacity: Option<u32>,
    /// New subnets.
    pub subnets: Option<Vec<String>>,
    /// New health check type.
    pub health_check_type: Option<HealthCheckType>,
    /// New grace period.
    pub health_check_grace_seconds: Option<u32>,
    /// New default warmup.
    pub default_instance_warmup: Option<u32>,
    /// New scale-in protection for new instances.
    pub new_instances_protected_from_scale_in: Option<bool>,
}

/// Every group and what they did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoScaling {
    /// The groups, in the order made.
    pub groups: Vec<Group>,
    /// Their activities, oldest first, at most [`MAX_ACTIVITIES`] per group.
    pub activities: Vec<Activity>,
    /// Their instance refreshes, oldest first, at most [`MAX_REFRESHES`] per group.
    #[serde(default)]
    pub refreshes: Vec<InstanceRefresh>,
}

fn check_name(name: &str) -> Result<(), AutoScalingError> {
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(|c| c.is_control() || c == ':') {
        return Err(AutoScalingError::Validation(format!(
            "group name {name:?}: 1 to 255 characters, no colon or control character"
        )));
    }
    Ok(())
}

impl AutoScaling {
    /// Group `name`.
    pub fn group(&self, name: &str) -> Result<&Group, AutoScalingError> {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .ok_or_else(|| AutoScalingError::GroupNotFound(name.into()))
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut Group, AutoScalingError> {
        self.groups
            .iter_mut()
            .find(|g| g.name == name)
            .ok_or_else(|| AutoScalingError::GroupNotFound(name.into()))
    }

    /// `create-auto-scaling-group`.
    pub fn create_group(
        &mut self,
        region: &str,
        spec: &GroupSpec,
        template: TemplateRef,
        now: u64,
    ) -> Result<Group, AutoScalingError> {
        check_name(&spec.name)?;
        if self.groups.iter().any(|g| g.name == spec.name) {
            return Err(AutoScalingError::AlreadyExists(spec.name.clone()));
        }
        if self.groups.len() >= MAX_GROUPS {
            return Err(AutoScalingError::LimitExceeded(format!("at most {MAX_GROUPS} Auto Scaling groups")));
        }
        let id = crate::state::id::new_id("asg");
        let group = Group {
            name: spec.name.clone(),
            arn: format!(
                "{ARN_PREFIX}{region}:000000000000:autoScalingGroup:{}:autoScalingGroupName/{}",
                id.trim_start_matches("asg-"),
                spec.name
            ),
            created: now,
            template,
            min_size: spec.min_size,
            max_size: spec.max_size,
            desired_capacity: spec.desired_capacity.unwrap_or(spec.min_size),
            subnets: spec.subnets.clone(),
            target_group_arns: spec.target_group_arns.clone(),
            health_check_type: spec.health_check_type,
            health_check_grace_seconds: spec.health_check_grace_seconds,
            default_instance_warmup: spec.default_instance_warmup,
            new_instances_protected_from_scale_in: spec.new_instances_protected_from_scale_in,
            protected: BTreeSet::new(),
            leaving: Vec::new(),
            deleting: false,
            policies: Vec::new(),
            scheduled: Vec::new(),
        };
        group.check()?;
        self.groups.push(group.clone());
        Ok(group)
    }

    /// `update-auto-scaling-group`: a desired capacity outside a new min or max follows
    /// it, as on AWS, unless one is given.
    pub fn update_group(&mut self, name: &str, update: &GroupUpdate) -> Result<Group, AutoScalingError> {
        let group = self.group_mut(name)?;
        check_alive(group)?;
        apply_update(group, update)?;
        Ok(group.clone())
    }

    /// `set-desired-capacity`.
    pub fn set_desired_capacity(&mut self, name: &str, desired: u32) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        check_alive(group)?;
        if desired > group.max_size || desired < group.min_size {
            return Err(AutoScalingError::Validation(format!(
                "the desired capacity {desired} is not between the min size {} and the max size {}",
                group.min_size, group.max_size
            )));
        }
        group.desired_capacity = desired;
        Ok(())
    }

    /// `delete-auto-scaling-group`: at once when it has no instances; with `force` its
    /// instances go first (the reconcile loop removes it once they have); otherwise
    /// refused while it has any.
    pub fn delete_group(
        &mut self,
        name: &str,
        force: bool,
        has_instances: bool,
    ) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        match (has_instances, force) {
            (false, _) => self.remove(name),
            (true, true) => {
                group.deleting = true;
                (group.min_size, group.desired_capacity) = (0, 0);
                for refresh in self.refreshes.iter_mut().filter(|r| r.group == name && r.status.is_active()) {
                    refresh.status = RefreshStatus::Cancelled;
                    refresh.status_reason = "The group is being deleted.".into();
                }
            }
            (true, false) => {
                return Err(AutoScalingError::ResourceInUse(format!(
                    "group {name} still has instances: delete them first, or delete it with --force-delete"
                )))
            }
        }
        Ok(())
    }

    /// `set-instance-protection` on members `ids` of group `name`.
    pub fn set_protection(
        &mut self,
        name: &str,
        ids: &[String],
        protected: bool,
    ) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        check_alive(group)?;
        for id in ids {
            if protected {
                group.protected.insert(id.clone());
            } else {
                group.protected.remove(id);
            }
        }
        Ok(())
    }

    /// `terminate-instance-in-auto-scaling-group`: member `id` leaves, replaced unless
    /// `decrement` lowers the desired capacity (never below the min).
    pub fn terminate_instance(
        &mut self,
        name: &str,
        id: &str,
        decrement: bool,
        now: u64,
    ) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        check_alive(group)?;
        if group.is_leaving(id) {
            return Ok(());
        }
        let cause = if decrement {
            if group.desired_capacity <= group.min_size {
                return Err(AutoScalingError::Validation(format!(
                    "the desired capacity {} is at the min size: it cannot be decremented",
                    group.desired_capacity
                )));
            }
            group.desired_capacity -= 1;
            format!(
                "An instance was taken out of service in response to a user request, shrinking the capacity from {} to {}.",
                group.desired_capacity + 1,
                group.desired_capacity
            )
        } else {
            "An instance was taken out of service in response to a user request.".to_owned()
        };
        group.leaving.push(Leaving { instance_id: id.to_owned(), since: now, cause, unhealthy: false });
        Ok(())
    }

    /// Marks members of group `name` as leaving (the reconcile loop's scale-in and
    /// replacement decisions), recorded before anything is done to them.
    pub fn start_leaving(&mut self, name: &str, leaving: &[Leaving]) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        for l in leaving {
            if !group.is_leaving(&l.instance_id) {
                group.leaving.push(l.clone());
            }
        }
        Ok(())
    }

    /// Forgets instances of group `name` that are gone: no longer leaving, protected or
    /// anything; a group being deleted that has nothing left goes too.
    pub fn forget(&mut self, name: &str, gone: &[String], empty: bool) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        group.leaving.retain(|l| !gone.contains(&l.instance_id));
        group.protected.retain(|id| !gone.contains(id));
        if group.deleting && empty && group.leaving.is_empty() {
            self.remove(name);
        }
        Ok(())
    }

    /// Group `name` and everything it did go.
    fn remove(&mut self, name: &str) {
        self.groups.retain(|g| g.name != name);
        self.activities.retain(|a| a.group != name);
        self.refreshes.retain(|r| r.group != name);
    }

    /// `put-scheduled-update-group-action`: adds `action` (checked) to group `name`, or
    /// replaces its namesake.
    pub fn put_scheduled_action(
        &mut self,
        name: &str,
        action: ScheduledAction,
    ) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        check_alive(group)?;
        let count = group.scheduled.len();
        match group.scheduled.iter_mut().find(|a| a.name == action.name) {
            Some(existing) => *existing = ScheduledAction { arn: existing.arn.clone(), ..action },
            None if count >= MAX_SCHEDULED_ACTIONS => {
                return Err(AutoScalingError::LimitExceeded(format!(
                    "at most {MAX_SCHEDULED_ACTIONS} scheduled actions per group"
                )))
            }
            None => group.scheduled.push(action),
        }
        Ok(())
    }

    /// `delete-scheduled-action`.
    pub fn delete_scheduled_action(&mut self, name: &str, action: &str) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        if !group.scheduled.iter().any(|a| a.name == action) {
            return Err(AutoScalingError::Validation(format!(
                "group {name} has no scheduled action {action}"
            )));
        }
        group.scheduled.retain(|a| a.name != action);
        Ok(())
    }

    /// Applies group `name`'s scheduled actions due at `now` and moves each on (those that
    /// fire no more go); returns, for each, what it did and whether the sizes it set were
    /// refused (then nothing of it applies).
    pub fn run_scheduled(&mut self, name: &str, now: u64) -> Result<Vec<Scheduled>, AutoScalingError> {
        let group = self.group_mut(name)?;
        if group.deleting {
            return Ok(Vec::new());
        }
        let mut ran = Vec::new();
        for n in 0..group.scheduled.len() {
            let action = group.scheduled[n].clone();
            if !action.due(now) {
                continue;
            }
            let update = GroupUpdate {
                min_size: action.min_size,
                max_size: action.max_size,
                desired_capacity: action.desired_capacity,
                ..GroupUpdate::default()
            };
            let before = group.desired_capacity;
            let result = apply_update(group, &update);
            let sizes = format!(
                "min: {}, max: {}, desired: {}",
                group.min_size, group.max_size, group.desired_capacity
            );
            ran.push(Scheduled {
                action: action.name.clone(),
                cause: format!(
                    "At {} a scheduled action update of AutoScalingGroup constraints to {sizes} changing the desired capacity from {before} to {}.",
                    crate::state::clock::format_utc(action.next_run.unwrap_or(now)),
                    group.desired_capacity
                ),
                refused: result.err().map(|e| e.to_string()),
            });
            group.scheduled[n].advance(now);
        }
        group.scheduled.retain(|a| a.next_run.is_some());
        Ok(ran)
    }

    /// Group `name`'s refresh in progress, if any.
    pub fn active_refresh(&self, name: &str) -> Option<&InstanceRefresh> {
        self.refreshes.iter().find(|r| r.group == name && r.status.is_active())
    }

    fn active_refresh_mut(&mut self, name: &str) -> Result<&mut InstanceRefresh, AutoScalingError> {
        self.refreshes.iter_mut().find(|r| r.group == name && r.status.is_active()).ok_or_else(|| {
            AutoScalingError::NoActiveRefresh(format!("group {name} has no instance refresh in progress"))
        })
    }

    /// `start-instance-refresh`: one at a time per group.
    pub fn start_refresh(&mut self, refresh: InstanceRefresh) -> Result<(), AutoScalingError> {
        let group = self.group(&refresh.group)?;
        check_alive(group)?;
        if let Some(active) = self.active_refresh(&refresh.group) {
            return Err(AutoScalingError::RefreshInProgress(format!(
                "instance refresh {} of group {} is in progress",
                active.id, refresh.group
            )));
        }
        let group = refresh.group.clone();
        self.refreshes.push(refresh);
        keep_newest(&mut self.refreshes, MAX_REFRESHES, |r| r.group == group, |r| !r.status.is_active());
        Ok(())
    }

    /// `cancel-instance-refresh`: what was replaced stays; returns the refresh's id.
    pub fn cancel_refresh(&mut self, name: &str, now: u64) -> Result<String, AutoScalingError> {
        self.group(name)?;
        let refresh = self.active_refresh_mut(name)?;
        if refresh.status == RefreshStatus::RollbackInProgress {
            return Err(AutoScalingError::NoActiveRefresh(format!(
                "instance refresh {} is rolling back: it cannot be cancelled",
                refresh.id
            )));
        }
        refresh.status = RefreshStatus::Cancelled;
        refresh.status_reason = "Cancelled by a user request.".into();
        refresh.end = Some(now);
        Ok(refresh.id.clone())
    }

    /// Turns group `name`'s refresh in progress back to the version the group had, for
    /// `reason`, with `total` instances to replace; returns its id.
    pub fn roll_back(&mut self, name: &str, reason: &str, total: u32) -> Result<String, AutoScalingError> {
        self.group(name)?;
        let refresh = self.active_refresh_mut(name)?;
        let previous = match (&refresh.status, &refresh.previous) {
            (RefreshStatus::InProgress, Some(previous)) => previous.clone(),
            (RefreshStatus::RollbackInProgress, _) => {
                return Err(AutoScalingError::Irreversible(format!("instance refresh {} is already rolling back", refresh.id)))
            }
            _ => {
                return Err(AutoScalingError::Irreversible(format!(
                    "instance refresh {} was started without a desired configuration: there is no earlier one to go back to",
                    refresh.id
                )))
            }
        };
        refresh.status = RefreshStatus::RollbackInProgress;
        refresh.status_reason = reason.to_owned();
        refresh.target = previous;
        refresh.replace.clear();
        (refresh.total, refresh.remaining) = (total, total);
        Ok(refresh.id.clone())
    }

    /// Records how many instances refresh `id` has left.
    pub fn set_refresh_remaining(&mut self, id: &str, remaining: u32) {
        if let Some(refresh) = self.refreshes.iter_mut().find(|r| r.id == id && r.status.is_active()) {
            refresh.remaining = remaining;
        }
    }

    /// Ends refresh `id` in `status` for `reason`; a refresh done with a desired
    /// configuration makes it the group's.
    pub fn end_refresh(&mut self, id: &str, status: RefreshStatus, reason: &str, now: u64) {
        let Some(refresh) = self.refreshes.iter_mut().find(|r| r.id == id && r.status.is_active()) else {
            return;
        };
        refresh.status = status;
        refresh.status_reason = reason.to_owned();
        refresh.end = Some(now);
        refresh.remaining = 0;
        let (group, desired) = (refresh.group.clone(), refresh.desired.clone());
        if let (RefreshStatus::Successful, Some(desired)) = (status, desired) {
            if let Ok(group) = self.group_mut(&group) {
                group.template = desired;
            }
        }
    }

    /// `put-scaling-policy`: adds `policy` to group `name`, or replaces its namesake.
    pub fn put_policy(
        &mut self,
        name: &str,
        policy: ScalingPolicy,
    ) -> Result<ScalingPolicy, AutoScalingError> {
        let group = self.group_mut(name)?;
        check_alive(group)?;
        let mut policy = policy;
        if let Metric::RequestCountPerTarget(label) = &policy.metric {
            // A target group's ARN, or ELB's resource label ending in targetgroup/NAME/ID.
            let wanted = label.find("targetgroup/").map_or(label.as_str(), |at| &label[at..]);
            let arn = group
                .target_group_arns
                .iter()
                .find(|arn| *arn == label || arn.ends_with(&format!(":{wanted}")))
                .ok_or_else(|| {
                    AutoScalingError::Validation(format!(
                        "{label} is not one of group {name}'s target groups"
                    ))
                })?;
            policy.metric = Metric::RequestCountPerTarget(arn.clone());
        }
        if !(policy.target_value.is_finite() && policy.target_value > 0.0) {
            return Err(AutoScalingError::Validation(format!(
                "the target value {} must be a number above 0",
                policy.target_value
            )));
        }
        let count = group.policies.len();
        match group.policies.iter_mut().find(|p| p.name == policy.name) {
            Some(existing) => {
                policy.arn.clone_from(&existing.arn);
                *existing = policy.clone();
            }
            None if count >= MAX_POLICIES => {
                return Err(AutoScalingError::LimitExceeded(format!(
                    "at most {MAX_POLICIES} policies per group"
                )))
            }
            None => group.policies.push(policy.clone()),
        }
        Ok(policy)
    }

    /// `delete-policy`.
    pub fn delete_policy(&mut self, name: &str, policy: &str) -> Result<(), AutoScalingError> {
        let group = self.group_mut(name)?;
        if !group.policies.iter().any(|p| p.name == policy) {
            return Err(AutoScalingError::Validation(format!("group {name} has no policy {policy}")));
        }
        group.policies.retain(|p| p.name != policy);
        Ok(())
    }

    /// Records `activity`, keeping its group's newest [`MAX_ACTIVITIES`].
    pub fn record(&mut self, activity: Activity) {
        let group = activity.group.clone();
        self.activities.push(activity);
        keep_newest(&mut self.activities, MAX_ACTIVITIES, |a| a.group == group, |_| true);
    }
}

/// Drops the oldest of `items` that `counted` picks, beyond `max` of them, taking only
/// those `droppable` lets go.
fn keep_newest<T>(
    items: &mut Vec<T>,
    max: usize,
    counted: impl Fn(&T) -> bool,
    droppable: impl Fn(&T) -> bool,
) {
    let mut extra = items.iter().filter(|i| counted(i)).count().saturating_sub(max);
    items.retain(|i| {
        let drop = extra > 0 && counted(i) && droppable(i);
        extra -= usize::from(drop);
        !drop
    });
}

/// What a scheduled action did when it fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// The action.
    pub action: String,
    /// What it set, in words.
    pub cause: String,
    /// Why the sizes were refused, if they were.
    pub refused: Option<String>,
}

/// Applies `update` to `group`, or refuses it and changes nothing: a desired capacity
/// outside a new min or max follows it, as on AWS, unless one is given.
fn apply_update(group: &mut Group, update: &GroupUpdate) -> Result<(), AutoScalingError> {
    let mut next = group.clone();
    if let Some(template) = &update.template {
        next.template = template.clone();
    }
    next.min_size = update.min_size.unwrap_or(next.min_size);
    next.max_size = update.max_size.unwrap_or(next.max_size);
    next.desired_capacity = match update.desired_capacity {
        Some(desired) => desired,
        None => next.desired_capacity.clamp(next.min_size, next.max_size.max(next.min_size)),
    };
    if let Some(subnets) = &update.subnets {
        next.subnets = subnets.clone();
    }
    next.health_check_type = update.health_check_type.unwrap_or(next.health_check_type);
    next.health_check_grace_seconds =
        update.health_check_grace_seconds.unwrap_or(next.health_check_grace_seconds);
    if update.default_instance_warmup.is_some() {
        next.default_instance_warmup = update.default_instance_warmup;
    }
    next.new_instances_protected_from_scale_in =
        update.new_instances_protected_from_scale_in.unwrap_or(next.new_instances_protected_from_scale_in);
    next.check()?;
    *group = next;
    Ok(())
}

/// Refuses a change to a group being deleted.
fn check_alive(group: &Group) -> Result<(), AutoScalingError> {
    if group.deleting {
        return Err(AutoScalingError::ScalingActivityInProgress(format!(
            "group {} is being deleted",
            group.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> TemplateRef {
        TemplateRef { id: "lt-1".into(), name: "web".into(), version: VersionSpec::Latest }
    }

    fn spec(name: &str, min: u32, max: u32, desired: Option<u32>) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            min_size: min,
            max_size: max,
            desired_capacity: desired,
            ..GroupSpec::default()
        }
    }

    #[test]
    fn sizes_are_checked_and_refusals_change_nothing() {
        let mut state = AutoScaling::default();
        let group = state.create_group("r", &spec("web", 1, 3, None), template(), 0).unwrap();
        assert_eq!(group.desired_capacity, 1, "desired defaults to the min");
        assert!(group.arn.starts_with(ARN_PREFIX) && group.arn.ends_with("autoScalingGroupName/web"));
        let before = state.clone();
        let refused = [
            state.create_group("r", &spec("web", 1, 3, None), template(), 0).map(|_| ()),
            state.create_group("r", &spec("big", 3, 1, None), template(), 0).map(|_| ()),
            state.create_group("r", &spec("out", 1, 3, Some(4)), template(), 0).map(|_| ()),
            state.create_group("r", &spec("huge", 0, MAX_GROUP_SIZE + 1, None), template(), 0).map(|_| ()),
            state.create_group("r", &spec("a:b", 0, 1, None), template(), 0).map(|_| ()),
            state.set_desired_capacity("web", 4),
            state.set_desired_capacity("nope", 1),
            state
                .update_group("web", &GroupUpdate { min_size: Some(5), ..GroupUpdate::default() })
                .map(|_| ()),
            state
                .update_group("web", &GroupUpdate { desired_capacity: Some(0), ..GroupUpdate::default() })
                .map(|_| ()),
            state.terminate_instance("web", "i-1", true, 0),
            state.delete_group("web", false, true),
        ];
        for result in refused {
            assert!(result.is_err());
        }
        assert_eq!(state, before);
        let raised = GroupUpdate { min_size: Some(2), ..GroupUpdate::default() };
        assert_eq!(
            state.update_group("web", &raised).unwrap().desired_capacity,
            2,
            "desired follows the min"
        );
    }

    #[test]
    fn a_forced_delete_empties_the_group_before_it_goes() {
        let mut state = AutoScaling::default();
        state.create_group("r", &spec("web", 2, 3, None), template(), 0).unwrap();
        state.delete_group("web", true, true).unwrap();
        let group = state.group("web").unwrap();
        assert!(group.deleting && group.desired_capacity == 0 && group.min_size == 0);
        assert!(state.set_desired_capacity("web", 1).is_err(), "a group being deleted takes no change");
        state.forget("web", &[], false).unwrap();
        assert!(state.group("web").is_ok(), "it still has instances");
        state.forget("web", &[], true).unwrap();
        assert!(state.group("web").is_err());
    }

    #[test]
    fn each_group_keeps_its_newest_activities() {
        let mut state = AutoScaling::default();
        let activity = |group: &str, n: usize| Activity {
            id: n.to_string(),
            group: group.into(),
            description: String::new(),
            cause: String::new(),
            status: ActivityStatus::Successful,
            status_message: String::new(),
            start: 0,
            end: 0,
        };
        state.record(activity("other", 0));
        for n in 1..=MAX_ACTIVITIES + 5 {
            state.record(activity("web", n));
        }
        let web: Vec<&str> =
            state.activities.iter().filter(|a| a.group == "web").map(|a| a.id.as_str()).collect();
        assert_eq!(web.len(), MAX_ACTIVITIES);
        assert_eq!(web[0], "6");
        assert!(state.activities.iter().any(|a| a.group == "other"), "another group's are kept");
    }
}
