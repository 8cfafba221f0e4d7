//! The reconcile loop that makes an environment of the lower resources, deploys its
//! versions and removes it again, one pass at a time, each step found again by name on the
//! next pass (level-triggered: a daemon killed mid-step picks up where the record says).
//!
//! An environment `e-…` is made of: launch template `awseb-e-…` (one version per
//! application version it has run: the bootstrap user data and the bundle's disk), target
//! group `awseb-e-…` (HTTP on the application's port, health check on `/`), application
//! load balancer `awseb-e-…` with one listener on the environment's host port, and auto
//! scaling group `awseb-e-…` (ELB health checks) launching the instances, which carry tags
//! `elasticbeanstalk:environment-name` and `…-id`. A deployment is an instance refresh of
//! the group onto a new template version, rolled back automatically when a new instance
//! fails its health check.

use std::time::Duration;

use super::bootstrap;
use super::environment::{Deployment, Environment, Made, Policy, Severity, Status, APPLICATION_PORT};
use super::model::Beanstalk;
use super::{Environments, EnvironmentsError};
use crate::autoscaling::model::{GroupSpec, GroupUpdate, HealthCheckType};
use crate::autoscaling::refresh::{Preferences, RefreshStatus};
use crate::autoscaling::AutoScalingError;
use crate::balancer::model::{AttributesChange, HealthCheckChange, LoadBalancerType};
use crate::daemon::failpoint;
use crate::daemon::templates::{LaunchTemplateData, VersionSpec, Which};
use crate::lb::config::{Protocol, TargetHealth};
use crate::state::id::now;
use crate::state::tag::Tag;

/// How often a pass runs when nothing wakes it.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long an environment may take to launch before it is rolled back.
pub(super) const LAUNCH_TIMEOUT_SECONDS: u64 = 900;
/// Seconds a new instance has before its health checks count (boot and start).
pub(super) const GRACE_SECONDS: u32 = 90;
/// Seconds past the grace period an immutable deployment waits for its new instances.
pub(super) const IMMUTABLE_PATIENCE_SECONDS: u64 = 60;
/// Seconds a deregistered instance drains before it goes.
const DRAIN_SECONDS: u32 = 5;
/// The tags each instance carries, as Beanstalk's.
pub const NAME_TAG: &str = "elasticbeanstalk:environment-name";
/// The environment id's tag.
pub const ID_TAG: &str = "elasticbeanstalk:environment-id";

/// A step's failure, in words for the environment's events.
type StepResult<T> = Result<T, String>;

/// How a deployment's pass ended. A failing call (`Err`) is tried again on the next pass:
/// only what the deployment saw (a refresh ended unsuccessfully, new instances that never
/// passed) fails it.
enum Deploy {
    /// Under way, or done.
    Going,
    /// Failed for good (the group is back on the old version), for this reason.
    Failed(String),
}

/// How long a deployment may take before it is called off.
const DEPLOYMENT_TIMEOUT_SECONDS: u64 = 3600;

fn words(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The tags an environment's instances and volumes carry.
fn environment_tags(env: &Environment) -> Vec<Tag> {
    [(NAME_TAG, &env.name), (ID_TAG, &env.id)]
        .into_iter()
        .map(|(key, value)| Tag { key: key.to_owned(), value: value.clone() })
        .collect()
}

impl Environments {
    /// One pass over every environment not terminated.
    pub fn reconcile(&self) -> Result<(), EnvironmentsError> {
        let state = self.read()?;
        self.sample_requests(&state);
        for env in state.environments.iter().filter(|e| e.is_live()) {
            let result = match env.status {
                Status::Launching => self.launch(&state, env),
                Status::Updating => {
                    self.retry_later(env, self.follow_port(env));
                    match self.update(&state, env) {
                        Ok(Deploy::Going) => Ok(()),
                        Ok(Deploy::Failed(why)) => Err(why),
                        Err(e) => {
                            self.retry_later(env, Err(e));
                            Ok(())
                        }
                    }
                }
                Status::Ready => {
                    self.retry_later(env, self.follow_port(env));
                    Ok(())
                }
                Status::Terminating => self.tear_down(env),
                Status::Terminated => Ok(()),
            };
            if let Err(why) = result {
                self.fail(env, &why)?;
            }
        }
        Ok(())
    }

    /// Logs a step that failed and is tried again on the next pass.
    fn retry_later(&self, env: &Environment, result: StepResult<()>) {
        if let Err(why) = result {
            tracing::warn!("environment {}: {why} (tried again)", env.name);
        }
    }

    /// Applies `edit` to environment `id`'s record (gone: nothing happens).
    pub(super) fn edit(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut Environment),
    ) -> Result<(), EnvironmentsError> {
        self.change(|b| {
            if let Some(env) = b.environment_by_id_mut(id) {
                edit(env);
                env.updated = now();
            }
            Ok(())
        })
    }

    /// Notes a step in environment `env`'s record and says so in its events, in one change;
    /// `note` tells whether there was anything to note it in (nothing said otherwise).
    fn note(
        &self,
        env: &Environment,
        said: String,
        note: impl Fn(&mut Environment) -> bool,
    ) -> StepResult<()> {
        self.change(|b: &mut Beanstalk| {
            if let Some(found) = b.environment_by_id_mut(&env.id) {
                if note(found) {
                    let found = found.clone();
                    b.record(&found, Severity::Info, said.clone(), now());
                }
            }
            Ok(())
        })
        .map_err(words)
    }

    /// Records what was made, with an event saying so.
    fn made(&self, env: &Environment, what: String, note: impl Fn(&mut Made)) -> StepResult<()> {
        self.note(env, what, |found| {
            note(&mut found.made);
            true
        })
    }

    /// Notes a step of the environment's deployment under way, with an event saying so.
    fn note_deployment(
        &self,
        env: &Environment,
        said: String,
        note: impl Fn(&mut Deployment),
    ) -> StepResult<()> {
        self.note(env, said, |found| {
            let Some(deployment) = found.deployment.as_mut() else { return false };
            note(deployment);
            found.updated = now();
            true
        })
    }

    /// A failed launch or deployment: a launch is rolled back (everything made removed),
    /// a deployment was already rolled back by its refresh.
    fn fail(&self, env: &Environment, why: &str) -> Result<(), EnvironmentsError> {
        self.change(|b| {
            let Some(found) = b.environment_by_id_mut(&env.id) else { return Ok(()) };
            match found.status {
                Status::Launching => {
                    found.status = Status::Terminating;
                    found.failure = Some(why.to_owned());
                }
                Status::Updating => {
                    found.status = Status::Ready;
                    found.deployment = None;
                }
                // Tearing down tries again on the next pass; saying so each time would
                // only flood the events.
                _ => {
                    tracing::warn!("environment {}: {why} (tried again)", found.name);
                    return Ok(());
                }
            }
            found.updated = now();
            let found = found.clone();
            b.record(&found, Severity::Error, why.to_owned(), now());
            Ok(())
        })
    }

    /// The launch template data that runs version `label` of the environment's application.
    fn template_data(
        &self,
        state: &Beanstalk,
        env: &Environment,
        label: &str,
    ) -> StepResult<LaunchTemplateData> {
        let version = state.application(&env.application).and_then(|a| a.version(label)).map_err(words)?;
        let s = &env.settings;
        Ok(LaunchTemplateData {
            image_id: s.image_id.clone(),
            instance_type: s.instance_type.clone(),
            key_name: s.key_name.clone(),
            subnet_id: s.subnet_id.clone(),
            user_data: bootstrap::user_data(),
            instance_tags: environment_tags(env),
            volume_tags: environment_tags(env),
            bundle: Some(version.bundle.sha256.clone()),
            ..LaunchTemplateData::default()
        })
    }

    /// Makes whatever of the environment is missing, then waits for its instances to pass
    /// their health checks.
    fn launch(&self, state: &Beanstalk, env: &Environment) -> StepResult<()> {
        let name = env.resource_name();
        let data = self.template_data(state, env, &env.version_label)?;
        let (template_id, version) = self.compute.template_version_for(&name, &data).map_err(words)?;
        if env.made.template_id.is_none() {
            let id = template_id.clone();
            self.made(env, format!("Created launch template named: {name} ({template_id})."), move |m| {
                m.template_id = Some(id.clone())
            })?;
        }
        let balancing = self.balancers.read().map_err(words)?;
        let tg = match balancing.target_groups.iter().find(|tg| tg.name == name) {
            Some(tg) => tg.arn.clone(),
            None => {
                let check = HealthCheckChange {
                    protocol: Some(Protocol::Http),
                    path: Some("/".into()),
                    interval_seconds: Some(5),
                    timeout_seconds: Some(2),
                    healthy_threshold: Some(2),
                    unhealthy_threshold: Some(2),
                    ..HealthCheckChange::default()
                };
                self.balancers
                    .create_target_group(&name, Protocol::Http, APPLICATION_PORT, &check)
                    .map_err(words)?
                    .arn
            }
        };
        if env.made.target_group_arn.is_none() {
            // Set until it is recorded, so a pass cut short after the create sets it too.
            let drain = AttributesChange {
                deregistration_delay_seconds: Some(DRAIN_SECONDS),
                ..AttributesChange::default()
            };
            self.balancers.modify_attributes(&tg, &drain).map_err(words)?;
            let arn = tg.clone();
            self.made(env, format!("Created target group named: {name} ({tg})."), move |m| {
                m.target_group_arn = Some(arn.clone())
            })?;
        }
        let lb = match balancing.load_balancers.iter().find(|lb| lb.name == name) {
            Some(lb) => lb.arn.clone(),
            None => {
                self.balancers
                    .create_load_balancer(&name, LoadBalancerType::Application, None)
                    .map_err(words)?
                    .arn
            }
        };
        if env.made.load_balancer_arn.is_none() {
            let arn = lb.clone();
            self.made(env, format!("Created load balancer named: {name} ({lb})."), move |m| {
                m.load_balancer_arn = Some(arn.clone())
            })?;
        }
        self.ensure_listener(env, &lb, &tg)?;
        failpoint("environment-before-group");
        if self.groups.read().map_err(words)?.group(&name).is_err() {
            let spec = GroupSpec {
                name: name.clone(),
                min_size: env.settings.min_size,
                max_size: env.settings.max_size,
                desired_capacity: None,
                subnets: vec![env.settings.subnet_id.clone()],
                target_group_arns: vec![tg.clone()],
                health_check_type: HealthCheckType::Elb,
                health_check_grace_seconds: GRACE_SECONDS,
                default_instance_warmup: Some(5),
                new_instances_protected_from_scale_in: false,
            };
            self.groups
                .create_group(&spec, &Which::Id(template_id), VersionSpec::Number(version))
                .map_err(words)?;
        }
        if env.made.group.is_none() {
            let group = name.clone();
            self.made(env, format!("Created Auto Scaling group named: {name}."), move |m| {
                m.group = Some(group.clone())
            })?;
        }
        let healthy = self.healthy_targets(&tg).map_err(words)?;
        if healthy >= env.settings.min_size.max(1) {
            self.change(|b| {
                let Some(found) = b.environment_by_id_mut(&env.id) else { return Ok(()) };
                found.status = Status::Ready;
                found.updated = now();
                let found = found.clone();
                b.record(&found, Severity::Info, "Successfully launched environment.".into(), now());
                Ok(())
            })
            .map_err(words)?;
        } else if now().saturating_sub(env.created) > LAUNCH_TIMEOUT_SECONDS {
            return Err(format!(
                "the instances did not pass their health checks within {LAUNCH_TIMEOUT_SECONDS} seconds"
            ));
        }
        Ok(())
    }

    /// Makes the load balancer's listener on the environment's port, moving it there from
    /// another port (after a swap of CNAMEs) by deleting and making it again.
    fn ensure_listener(&self, env: &Environment, lb: &str, tg: &str) -> StepResult<()> {
        let balancing = self.balancers.read().map_err(words)?;
        let listener = balancing.listeners.iter().find(|l| l.load_balancer_arn == lb);
        if let Some(listener) = listener {
            if listener.port == env.port {
                if env.made.listener_arn.as_deref() != Some(listener.arn.as_str()) {
                    let arn = listener.arn.clone();
                    self.made(env, format!("Created listener on port {} of {lb}.", env.port), move |m| {
                        m.listener_arn = Some(arn.clone())
                    })?;
                }
                return Ok(());
            }
            self.balancers.delete_listener(&listener.arn).map_err(words)?;
            self.edit(&env.id, |e| e.made.listener_arn = None).map_err(words)?;
        }
        let made = self.balancers.create_listener(lb, Protocol::Http, env.port, tg).map_err(words)?;
        self.made(env, format!("Created listener on port {} of {lb}.", env.port), move |m| {
            m.listener_arn = Some(made.arn.clone())
        })
    }

    /// A ready environment's listener follows its port (it moves when CNAMEs are swapped;
    /// the other environment's listener may hold the port until its own pass).
    fn follow_port(&self, env: &Environment) -> StepResult<()> {
        let (Some(lb), Some(tg)) = (&env.made.load_balancer_arn, &env.made.target_group_arn) else {
            return Ok(());
        };
        self.ensure_listener(env, lb, tg)
    }

    /// Targets of `tg` passing their health checks.
    fn healthy_targets(&self, tg: &str) -> StepResult<u32> {
        let health = self.balancers.target_health(tg).map_err(words)?;
        Ok(u32::try_from(health.iter().filter(|t| t.state == TargetHealth::Healthy).count())
            .unwrap_or(u32::MAX))
    }

    /// Moves a deployment on: an extra batch first where the policy asks for one, the
    /// refresh started, then watched to its end.
    fn update(&self, state: &Beanstalk, env: &Environment) -> StepResult<Deploy> {
        let Some(deployment) = &env.deployment else { return Ok(Deploy::Going) };
        let name = env.resource_name();
        if now() > deployment.started + DEPLOYMENT_TIMEOUT_SECONDS {
            if self.groups.read().map_err(words)?.active_refresh(&name).is_some() {
                self.groups.rollback_refresh(&name).map_err(words)?;
            }
            return Ok(Deploy::Failed(format!(
                "Failed to deploy application version {}: it did not finish within {DEPLOYMENT_TIMEOUT_SECONDS} seconds.",
                deployment.version_label
            )));
        }
        let group = self.groups.read().map_err(words)?.group(&name).map_err(words)?.clone();
        let capacity = group.desired_capacity;
        if deployment.policy == Policy::Immutable {
            return self.immutable(state, env, deployment, &group);
        }
        let batch = env.settings.batch.of(deployment.added_batch_from.unwrap_or(capacity));
        if deployment.policy == Policy::RollingWithAdditionalBatch && deployment.refresh_id.is_none() {
            let Some(from) = deployment.added_batch_from else {
                let said = format!(
                    "Rolling with an additional batch: adding {batch} instance(s) first, so that capacity never drops."
                );
                self.note_deployment(env, said, |d| d.added_batch_from = Some(capacity))?;
                return Ok(Deploy::Going);
            };
            if capacity != from + batch {
                let update = GroupUpdate {
                    max_size: Some(group.max_size.max(from + batch)),
                    desired_capacity: Some(from + batch),
                    ..GroupUpdate::default()
                };
                self.groups.update_group(&name, None, update).map_err(words)?;
                return Ok(Deploy::Going);
            }
        }
        let Some(refresh_id) = &deployment.refresh_id else {
            self.start_deployment(state, env, deployment, &group, batch)?;
            return Ok(Deploy::Going);
        };
        let refresh =
            self.groups.refreshes(&name, std::slice::from_ref(refresh_id)).map_err(words)?.into_iter().next();
        let Some(refresh) = refresh else {
            return Ok(Deploy::Failed(format!("Failed to deploy: instance refresh {refresh_id} is gone.")));
        };
        if refresh.status.is_active() {
            return Ok(Deploy::Going);
        }
        if let Some(from) = deployment.added_batch_from {
            let update = GroupUpdate {
                max_size: Some(env.settings.max_size),
                desired_capacity: Some(from),
                ..GroupUpdate::default()
            };
            self.groups.update_group(&name, None, update).map_err(words)?;
        }
        if refresh.status != RefreshStatus::Successful {
            return Ok(Deploy::Failed(format!(
                "Failed to deploy application version {}: {} ({}); the environment runs {} again.",
                deployment.version_label,
                refresh.status_reason,
                refresh.status.as_str(),
                deployment.previous_label
            )));
        }
        self.deployed(env, &deployment.version_label)?;
        Ok(Deploy::Going)
    }

    /// A deployment done: the environment runs version `label`.
    fn deployed(&self, env: &Environment, label: &str) -> StepResult<()> {
        self.change(|b| {
            let Some(found) = b.environment_by_id_mut(&env.id) else { return Ok(()) };
            found.version_label = label.to_owned();
            found.deployment = None;
            found.status = Status::Ready;
            found.updated = now();
            let found = found.clone();
            b.record(
                &found,
                Severity::Info,
                format!("New application version {label} was deployed to running EC2 instances."),
                now(),
            );
            Ok(())
        })
        .map_err(words)
    }

    /// An immutable deployment: the group, on the new version, launches a whole new set
    /// beside the old; once every new instance passes its health checks the old set goes,
    /// and if they do not in time the new set goes and the group returns to the old
    /// version. Each step is found again from the group's instances and their versions.
    fn immutable(
        &self,
        state: &Beanstalk,
        env: &Environment,
        deployment: &Deployment,
        group: &crate::autoscaling::model::Group,
    ) -> StepResult<Deploy> {
        let name = env.resource_name();
        let data = self.template_data(state, env, &deployment.version_label)?;
        let (template_id, version) = self.compute.template_version_for(&name, &data).map_err(words)?;
        let Some(capacity) = deployment.added_batch_from else {
            let capacity = group.desired_capacity;
            let said = format!(
                "Immutable deployment: launching {capacity} instance(s) of version {} beside the old ones.",
                deployment.version_label
            );
            self.note_deployment(env, said, |d| d.added_batch_from = Some(capacity))?;
            return Ok(Deploy::Going);
        };
        let on_new =
            group.template.id == template_id && group.template.version == VersionSpec::Number(version);
        if deployment.new_set_passed.is_none() && (!on_new || group.desired_capacity != capacity * 2) {
            let update = GroupUpdate {
                max_size: Some(group.max_size.max(capacity * 2)),
                desired_capacity: Some(capacity * 2),
                ..GroupUpdate::default()
            };
            let to_new = Some((Which::Id(template_id), VersionSpec::Number(version)));
            self.groups.update_group(&name, to_new, update).map_err(words)?;
            return Ok(Deploy::Going);
        }
        let view = self.groups.describe(std::slice::from_ref(&name)).map_err(words)?;
        let all: Vec<_> = view.into_iter().flat_map(|g| g.instances).collect();
        let members: Vec<_> = all.iter().filter(|i| i.lifecycle_state != "Terminating").collect();
        let tg = env.made.target_group_arn.clone().unwrap_or_default();
        let healthy: Vec<String> = self
            .balancers
            .target_health(&tg)
            .map_err(words)?
            .into_iter()
            .filter(|t| t.state == TargetHealth::Healthy)
            .map(|t| t.instance_id)
            .collect();
        let is_new = |v: Option<u32>| v == Some(version);
        let new_healthy =
            members.iter().filter(|m| is_new(m.version) && healthy.contains(&m.instance_id)).count();
        let succeeded = match deployment.new_set_passed {
            Some(passed) => passed,
            None => {
                let passed = new_healthy >= capacity as usize;
                let late = now() > deployment.started + u64::from(GRACE_SECONDS) + IMMUTABLE_PATIENCE_SECONDS;
                if !passed && !late {
                    return Ok(Deploy::Going);
                }
                self.edit(&env.id, |e| {
                    if let Some(d) = &mut e.deployment {
                        d.new_set_passed = Some(passed);
                    }
                })
                .map_err(words)?;
                passed
            }
        };
        if !succeeded {
            let previous = self.template_data(state, env, &deployment.previous_label)?;
            let (id, number) = self.compute.template_version_for(&name, &previous).map_err(words)?;
            let back = Some((Which::Id(id), VersionSpec::Number(number)));
            self.groups.update_group(&name, back, GroupUpdate::default()).map_err(words)?;
        }
        // The set that lost goes, each one taking the group's desired capacity down with it.
        for member in members.iter().filter(|m| is_new(m.version) != succeeded) {
            self.groups.terminate_instance(&member.instance_id, true).map_err(words)?;
        }
        let update = GroupUpdate { max_size: Some(env.settings.max_size), ..GroupUpdate::default() };
        self.groups.update_group(&name, None, update).map_err(words)?;
        // Done once the losing set has drained and gone.
        if all.iter().any(|m| is_new(m.version) != succeeded) {
            return Ok(Deploy::Going);
        }
        if !succeeded {
            return Ok(Deploy::Failed(format!(
                "Failed to deploy application version {}: its instances did not pass their health checks in time; \
                 they were terminated and the environment runs {} again.",
                deployment.version_label, deployment.previous_label
            )));
        }
        self.deployed(env, &deployment.version_label)?;
        Ok(Deploy::Going)
    }

    /// Starts the refresh of a deployment (or finds the one a pass cut short started).
    fn start_deployment(
        &self,
        state: &Beanstalk,
        env: &Environment,
        deployment: &Deployment,
        group: &crate::autoscaling::model::Group,
        batch: u32,
    ) -> StepResult<()> {
        let name = env.resource_name();
        let data = self.template_data(state, env, &deployment.version_label)?;
        let (template_id, version) = self.compute.template_version_for(&name, &data).map_err(words)?;
        let serving = deployment.added_batch_from.unwrap_or(group.desired_capacity).max(1);
        let total = group.desired_capacity.max(1);
        let min_healthy_percentage = match deployment.policy {
            Policy::AllAtOnce => 0,
            Policy::Rolling => 100 * serving.saturating_sub(batch) / total,
            // (An immutable deployment starts no refresh; were it to, it would keep all.)
            Policy::RollingWithAdditionalBatch | Policy::Immutable => 100 * serving / total,
        };
        let preferences = Preferences {
            min_healthy_percentage,
            instance_warmup: Some(5),
            skip_matching: false,
            auto_rollback: true,
        };
        let desired = Some((Which::Id(template_id), VersionSpec::Number(version)));
        let id = match self.groups.start_refresh(&name, preferences, desired) {
            Ok(id) => id,
            Err(AutoScalingError::RefreshInProgress(_)) => self
                .groups
                .refreshes(&name, &[])
                .map_err(words)?
                .into_iter()
                .find(|r| r.status.is_active())
                .map(|r| r.id)
                .ok_or("the group's refresh ended before it was recorded")?,
            Err(e) => return Err(words(e)),
        };
        failpoint("environment-after-refresh");
        let said = format!(
            "Deploying version {} to {} instance(s), {batch} at a time (instance refresh {id}).",
            deployment.version_label, group.desired_capacity
        );
        self.note_deployment(env, said, |d| d.refresh_id = Some(id.clone()))
    }

    /// Removes what the environment made, the group first (its instances drain and go),
    /// then the balancer, the target group and the template; then it is terminated.
    fn tear_down(&self, env: &Environment) -> StepResult<()> {
        let name = env.resource_name();
        if self.groups.read().map_err(words)?.group(&name).is_ok() {
            match self.groups.delete_group(&name, true) {
                Ok(()) | Err(AutoScalingError::GroupNotFound(_)) => {}
                Err(e) => return Err(words(e)),
            }
            if self.groups.read().map_err(words)?.group(&name).is_ok() {
                // Its instances are still going: the next pass looks again.
                return Ok(());
            }
        }
        let balancing = self.balancers.read().map_err(words)?;
        if let Some(lb) = balancing.load_balancers.iter().find(|lb| lb.name == name) {
            self.balancers.delete_load_balancer(&lb.arn).map_err(words)?;
        }
        if let Some(tg) = balancing.target_groups.iter().find(|tg| tg.name == name) {
            self.balancers.delete_target_group(&tg.arn).map_err(words)?;
        }
        self.compute.delete_launch_template(&name).map_err(words)?;
        self.change(|b| {
            b.terminated(&env.id, now());
            Ok(())
        })
        .map_err(words)
    }
}
