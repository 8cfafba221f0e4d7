//! Elastic Beanstalk: the controller beside the daemon that will make a load-balanced,
//! auto-scaled application in one call. This first part keeps applications and their
//! versions ([`model::Beanstalk`], one document in the daemon's database, changed by
//! compare and set); each version names a source bundle the store keeps, reached through
//! [`Compute`] like everything else a controller does.
//!
//! A bundle is kept before the version that names it is recorded, and let go after the
//! last version naming it is deleted: a daemon killed between the two leaves a bundle no
//! version names, which the next start lets go ([`Environments::start`]).

pub mod bootstrap;
pub mod controller;
pub mod environment;
pub mod health;
pub mod model;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::autoscaling::AutoScalingGroups;
use crate::balancer::Balancers;
use crate::daemon::compute::{Compute, Reconciler};
use crate::daemon::templates::LaunchTemplateData;
use crate::daemon::{failpoint, DaemonError};
use crate::state::db::StateError;
use crate::state::document::{self, DocumentStore};
use crate::state::id::new_id;
use crate::state::id::now;
use environment::{DeploymentChange, Environment, EnvironmentSpec, Event};
use health::{Health, Requests, Window};
use model::{Application, ApplicationVersion, Beanstalk};

/// The document applications are kept in.
const DOCUMENT: &str = "beanstalk";

/// Why an Elastic Beanstalk request was refused or failed. The API maps each to AWS's name.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentsError {
    /// A malformed or impossible request (AWS says InvalidParameterValue, also for what
    /// does not exist).
    #[error("{0}")]
    InvalidParameter(String),
    /// The applications' cap.
    #[error("{0}")]
    TooManyApplications(String),
    /// The versions' cap.
    #[error("{0}")]
    TooManyApplicationVersions(String),
    /// The environments' cap (or their ports).
    #[error("{0}")]
    TooManyEnvironments(String),
    /// The daemon failed or refused (a bundle that is not an archive, a full disk).
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The database failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The Elastic Beanstalk service.
pub struct Environments {
    documents: Arc<dyn DocumentStore>,
    compute: Arc<dyn Compute>,
    balancers: Arc<Balancers>,
    groups: Arc<AutoScalingGroups>,
    region: String,
    reconciler: Reconciler,
    /// Held while a bundle is kept and recorded, or let go: nothing lets a bundle go
    /// between its keeping and its recording.
    bundles: Mutex<()>,
    /// Each live environment's last minute of request counts, by id.
    windows: Mutex<HashMap<String, Window>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Environments {
    /// The service over the daemon's `documents` and `compute`, making environments of
    /// the `balancers` and `groups` services.
    pub fn new(
        documents: Arc<dyn DocumentStore>,
        compute: Arc<dyn Compute>,
        balancers: Arc<Balancers>,
        groups: Arc<AutoScalingGroups>,
        region: &str,
    ) -> Self {
        Self {
            documents,
            compute,
            balancers,
            groups,
            region: region.to_owned(),
            reconciler: Reconciler::default(),
            bundles: Mutex::new(()),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Lets go of the bundles no version names (a create or delete cut short), then
    /// starts the reconcile loop.
    pub fn start(self: &Arc<Self>) -> Result<(), EnvironmentsError> {
        self.let_go_of_orphans()?;
        let pass = |this: &Self| {
            if let Err(e) = this.reconcile() {
                tracing::warn!("environments: {e}");
            }
        };
        let events = self.compute.instance_events();
        self.reconciler
            .start("beanstalk", self.clone(), events, controller::INTERVAL, pass)
            .map_err(|e| EnvironmentsError::Daemon(DaemonError::Internal(format!("starting the loop: {e}"))))
    }

    /// Lets go of the bundles no version names.
    fn let_go_of_orphans(&self) -> Result<(), EnvironmentsError> {
        let _bundles = lock(&self.bundles);
        let state = self.read()?;
        for sha256 in self.compute.bundles()? {
            if !state.uses(&sha256) {
                tracing::info!("letting go of source bundle {sha256}: no application version names it");
                self.compute.drop_bundle(&sha256)?;
            }
        }
        Ok(())
    }

    /// Every application as recorded.
    pub fn read(&self) -> Result<Beanstalk, EnvironmentsError> {
        Ok(document::read(self.documents.as_ref(), DOCUMENT)?)
    }

    fn change<T>(
        &self,
        change: impl FnMut(&mut Beanstalk) -> Result<T, EnvironmentsError>,
    ) -> Result<T, EnvironmentsError> {
        let result = document::change(self.documents.as_ref(), DOCUMENT, change)?;
        self.reconciler.wake();
        Ok(result)
    }

    /// `create-application`.
    pub fn create_application(
        &self,
        name: &str,
        description: &str,
    ) -> Result<Application, EnvironmentsError> {
        self.change(|b| b.create_application(&self.region, name, description, now()))
    }

    /// `describe-applications`: those named (none: all).
    pub fn applications(&self, names: &[String]) -> Result<Vec<Application>, EnvironmentsError> {
        let state = self.read()?;
        Ok(state.applications.into_iter().filter(|a| names.is_empty() || names.contains(&a.name)).collect())
    }

    /// `delete-application`, its versions' bundles let go.
    pub fn delete_application(&self, name: &str) -> Result<(), EnvironmentsError> {
        let _bundles = lock(&self.bundles);
        let unused = self.change(|b| b.delete_application(name))?;
        self.let_go(&unused);
        Ok(())
    }

    /// `create-application-version`: `bundle` kept (refused unless it is a whole tar.gz
    /// or zip), then recorded; a refused record lets the bundle go again.
    pub fn create_version(
        &self,
        application: &str,
        label: &str,
        description: &str,
        bundle: &[u8],
    ) -> Result<ApplicationVersion, EnvironmentsError> {
        let _bundles = lock(&self.bundles);
        // Checked first, so a request for no application keeps nothing.
        self.read()?.application(application)?;
        let kept = self.compute.keep_bundle(bundle)?;
        failpoint("bundle-after-keep");
        let made = self.change(|b| b.create_version(application, label, description, kept.clone(), now()));
        if made.is_err() && !self.read()?.uses(&kept.sha256) {
            self.let_go(std::slice::from_ref(&kept.sha256));
        }
        made
    }

    /// `describe-application-versions`: application `name`'s (none: every one's), those
    /// labelled in `labels` (none: all), newest first, as (application, version).
    pub fn versions(
        &self,
        name: Option<&str>,
        labels: &[String],
    ) -> Result<Vec<(String, ApplicationVersion)>, EnvironmentsError> {
        let state = self.read()?;
        if let Some(name) = name {
            state.application(name)?;
        }
        let mut found: Vec<(String, ApplicationVersion)> = state
            .applications
            .into_iter()
            .filter(|a| name.map_or(true, |n| n == a.name))
            .flat_map(|a| {
                let app = a.name;
                a.versions.into_iter().map(move |v| (app.clone(), v))
            })
            .filter(|(_, v)| labels.is_empty() || labels.contains(&v.label))
            .collect();
        found.sort_by_key(|(_, v)| std::cmp::Reverse(v.created));
        Ok(found)
    }

    /// `delete-application-version`, its bundle let go when no version names it.
    pub fn delete_version(&self, application: &str, label: &str) -> Result<(), EnvironmentsError> {
        let _bundles = lock(&self.bundles);
        let unused = self.change(|b| b.delete_version(application, label))?;
        self.let_go(&unused);
        Ok(())
    }

    /// `create-environment`: checked and recorded; the reconcile loop makes it.
    pub fn create_environment(&self, spec: &EnvironmentSpec) -> Result<Environment, EnvironmentsError> {
        // What the launches would refuse later is refused now, before anything is made.
        let s = &spec.settings;
        self.compute.check_launch(&LaunchTemplateData {
            image_id: s.image_id.clone(),
            instance_type: s.instance_type.clone(),
            key_name: s.key_name.clone(),
            subnet_id: s.subnet_id.clone(),
            ..LaunchTemplateData::default()
        })?;
        let id = format!("e-{}", &new_id("x")[2..12]);
        self.change(|b| b.create_environment(&self.region, spec, id.clone(), now()))
    }

    /// `describe-environments`: `application`'s (none: every one's), those named (none:
    /// all), terminated ones too with `include_deleted`.
    pub fn environments(
        &self,
        application: Option<&str>,
        names: &[String],
        include_deleted: bool,
    ) -> Result<Vec<(Environment, Health)>, EnvironmentsError> {
        let state = self.read()?;
        Ok(state
            .environments
            .into_iter()
            .filter(|e| include_deleted || e.is_live())
            .filter(|e| application.map_or(true, |a| a == e.application))
            .filter(|e| names.is_empty() || names.contains(&e.name))
            .map(|e| {
                let health = self.health_of(&e);
                (e, health)
            })
            .collect())
    }

    /// `describe-environment-health`.
    pub fn health(&self, name: &str) -> Result<(Environment, Health), EnvironmentsError> {
        let env = self.read()?.environment(name)?.clone();
        let health = self.health_of(&env);
        Ok((env, health))
    }

    /// What its target group's health checks say of an environment's instances.
    fn health_of(&self, env: &Environment) -> Health {
        let targets = env
            .made
            .target_group_arn
            .as_ref()
            .and_then(|tg| self.balancers.target_health(tg).ok())
            .unwrap_or_default();
        let recent = lock(&self.windows).get(&env.id).map(Window::recent).unwrap_or_default();
        Health::of(env, &targets, recent)
    }

    /// Samples each live environment's request counts from its balancer's status.
    fn sample_requests(&self, state: &Beanstalk) {
        let statuses = self.balancers.statuses();
        let mut windows = lock(&self.windows);
        windows.retain(|id, _| state.environments.iter().any(|e| &e.id == id && e.is_live()));
        for env in state.environments.iter().filter(|e| e.is_live()) {
            let Some(lb) = &env.made.load_balancer_arn else { continue };
            if let Some((_, status)) = statuses.iter().find(|(found, _)| &found.arn == lb) {
                windows.entry(env.id.clone()).or_default().push(now(), Requests::of(status));
            }
        }
    }

    /// `update-environment`: deployment settings, and a version to deploy when one is given.
    pub fn update_environment(
        &self,
        name: &str,
        version_label: Option<&str>,
        change: DeploymentChange,
    ) -> Result<Environment, EnvironmentsError> {
        self.change(|b| b.deploy(name, version_label, change, now()))
    }

    /// `swap-environment-cnames`.
    pub fn swap_cnames(&self, source: &str, destination: &str) -> Result<(), EnvironmentsError> {
        self.change(|b| b.swap_cnames(source, destination, now()))
    }

    /// `terminate-environment`.
    pub fn terminate_environment(&self, name: &str) -> Result<Environment, EnvironmentsError> {
        self.change(|b| b.terminate(name, now()))
    }

    /// `describe-events`: newest first, of `application` and `environment` when named, at
    /// most `max`.
    pub fn events(
        &self,
        application: Option<&str>,
        environment: Option<&str>,
        max: usize,
    ) -> Result<Vec<Event>, EnvironmentsError> {
        let state = self.read()?;
        Ok(state
            .events
            .into_iter()
            .rev()
            .filter(|e| application.map_or(true, |a| a == e.application))
            .filter(|e| environment.map_or(true, |n| n == e.environment))
            .take(max)
            .collect())
    }

    /// Drops `bundles` (a failure is logged: the next start tries again).
    fn let_go(&self, bundles: &[String]) {
        for sha256 in bundles {
            if let Err(e) = self.compute.drop_bundle(sha256) {
                tracing::warn!("source bundle {sha256}: {e} (let go at the next start)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::compute::fake::FakeCompute;
    use crate::daemon::templates::{VersionSpec, Which};
    use crate::state::db::Database;
    use environment::tests::spec;
    use environment::Status;

    fn tar_gz() -> Vec<u8> {
        crate::store::bundle::tests::tar_gz(&[("start", b"#!/bin/sh\n")])
    }

    /// The newest `count` events of environment `web-prod`, in words.
    fn said(service: &Environments, count: usize) -> Vec<String> {
        service.events(None, Some("web-prod"), count).unwrap().into_iter().map(|e| e.message).collect()
    }

    /// The service over a real database, a fake Compute, and real load balancing and
    /// Auto Scaling services over the same (their balancer processes never start).
    struct World {
        compute: Arc<FakeCompute>,
        db: Arc<Database>,
        balancers: Arc<Balancers>,
        groups: Arc<AutoScalingGroups>,
        dir: tempfile::TempDir,
    }

    impl World {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db = Arc::new(Database::open(&dir.path().join("nuage.db")).unwrap());
            let compute = Arc::new(FakeCompute::default());
            let config = crate::daemon::config::DaemonConfig {
                state_dir: dir.path().to_owned(),
                balancer: dir.path().join("no-nuage-lb"),
                ..Default::default()
            };
            let balancers = Arc::new(Balancers::new(db.clone(), compute.clone(), &config));
            let groups =
                Arc::new(AutoScalingGroups::new(db.clone(), compute.clone(), balancers.clone(), "r"));
            Self { compute, db, balancers, groups, dir }
        }

        /// A service as a (re)started daemon would have it.
        fn service(&self) -> Environments {
            Environments::new(
                self.db.clone(),
                self.compute.clone(),
                self.balancers.clone(),
                self.groups.clone(),
                "r",
            )
        }

        /// Passes until no environment is live (the instances drain for five seconds
        /// first), then checks that nothing named `name` is left.
        fn until_gone(&self, service: &Environments, name: &str) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !service.environments(None, &[], false).unwrap().is_empty()
                && std::time::Instant::now() < deadline
            {
                self.passes(service, 1);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            assert!(self.compute.live_instances().unwrap().is_empty(), "no instance left");
            let balancing = self.balancers.read().unwrap();
            assert!(balancing.load_balancers.is_empty() && balancing.target_groups.is_empty());
            assert!(balancing.listeners.is_empty());
            assert!(self.groups.read().unwrap().groups.is_empty());
            let template = self.compute.launch_template(&Which::Name(name.into()), VersionSpec::Latest);
            assert!(template.is_err(), "no launch template left");
        }

        /// Application `web` with versions v1 and v2, and environment `web-prod` launched
        /// on v1 (two passes made).
        fn launched_on_v1(&self, service: &Environments) -> Environment {
            service.create_application("web", "").unwrap();
            service.create_version("web", "v1", "", &tar_gz()).unwrap();
            let v2 = crate::store::bundle::tests::tar_gz(&[("start", b"v2")]);
            service.create_version("web", "v2", "", &v2).unwrap();
            let mut spec = spec("web-prod");
            spec.version_label = "v1".into();
            let env = service.create_environment(&spec).unwrap();
            self.passes(service, 2);
            env
        }

        /// Passes of every controller.
        fn passes(&self, service: &Environments, n: usize) {
            for _ in 0..n {
                service.reconcile().unwrap();
                self.groups.reconcile().unwrap();
                self.balancers.reconcile().unwrap();
            }
        }
    }

    #[test]
    fn an_environment_is_made_of_the_lower_resources_and_leaves_nothing() {
        let world = World::new();
        let service = world.service();
        service.create_application("web", "").unwrap();
        let v1 = service.create_version("web", "v1", "", &tar_gz()).unwrap();
        let mut imageless = spec("web-prod");
        imageless.settings.image_id = "nope".into();
        assert!(service.create_environment(&imageless).is_err(), "an image that is not there");
        assert!(service.environments(None, &[], true).unwrap().is_empty(), "a refusal makes nothing");

        let env = service.create_environment(&spec("web-prod")).unwrap();
        // A pass, then a daemon restarted: the second service finds what the first made.
        world.passes(&service, 1);
        let restarted = world.service();
        world.passes(&restarted, 3);
        let balancing = world.balancers.read().unwrap();
        let name = env.resource_name();
        assert_eq!(balancing.load_balancers.iter().filter(|lb| lb.name == name).count(), 1);
        assert_eq!(balancing.target_groups.iter().filter(|tg| tg.name == name).count(), 1);
        assert_eq!(balancing.listeners.len(), 1);
        assert_eq!(balancing.listeners[0].port, 8000);
        let members = world.compute.live_instances().unwrap();
        assert_eq!(members.len(), 2, "the group launched its minimum");
        let template =
            world.compute.launch_template(&Which::Name(name.clone()), VersionSpec::Latest).unwrap();
        assert_eq!(template.version, 1, "one version, however many passes");
        let (recorded, health) = restarted.health("web-prod").unwrap();
        assert_eq!(recorded.status, Status::Launching, "no health checks pass without balancer processes");
        assert!(recorded.made.group.is_some() && recorded.made.listener_arn.is_some());
        assert_eq!(health.colour, health::Colour::Grey);
        assert!(service.delete_version("web", "v1").is_err(), "an environment uses it");

        restarted.terminate_environment("web-prod").unwrap();
        world.until_gone(&restarted, &name);
        let gone = restarted.environments(None, &[], true).unwrap();
        assert_eq!(gone[0].0.status, Status::Terminated);
        let said = said(&restarted, 100);
        assert!(said.iter().any(|m| m.starts_with("Created Auto Scaling group")), "{said:?}");
        assert!(said[0].contains("terminateEnvironment completed"), "{said:?}");
        service.delete_version("web", "v1").unwrap();
        assert!(!world.compute.bundles().unwrap().contains(&v1.bundle.sha256));
        drop(world.dir);
    }

    #[test]
    fn a_launch_that_never_gets_healthy_is_rolled_back_and_leaves_nothing() {
        let world = World::new();
        let service = world.service();
        service.create_application("web", "").unwrap();
        service.create_version("web", "v1", "", &tar_gz()).unwrap();
        let env = service.create_environment(&spec("web-prod")).unwrap();
        world.passes(&service, 2);
        assert_eq!(world.compute.live_instances().unwrap().len(), 2, "launched");
        // Its instances have had the whole launch time and none passed.
        let late = controller::LAUNCH_TIMEOUT_SECONDS + 1;
        service.edit(&env.id, |e| e.created -= late).unwrap();
        world.until_gone(&service, &env.resource_name());
        let (gone, _) = service.environments(None, &[], true).unwrap().remove(0);
        assert_eq!(gone.status, Status::Terminated);
        let said = said(&service, 100);
        assert!(
            said[0].starts_with("Create environment failed and was rolled back: the instances did not pass"),
            "{said:?}"
        );
        // The name is free again.
        service.create_environment(&spec("web-prod")).unwrap();
    }

    #[test]
    fn deployments_that_add_instances_add_them_first() {
        use environment::{DeploymentChange, Policy};
        let world = World::new();
        let service = world.service();
        let env = world.launched_on_v1(&service);
        // Ready as if its health checks had passed (no balancer process runs here).
        let ready = |service: &Environments| {
            service.edit(&env.id, |e| e.status = Status::Ready).unwrap();
        };
        let group = || world.groups.read().unwrap().group(&env.resource_name()).unwrap().clone();
        for (policy, desired, max) in [(Policy::RollingWithAdditionalBatch, 3, 3), (Policy::Immutable, 4, 4)]
        {
            ready(&service);
            let change = DeploymentChange { policy: Some(policy), batch: None };
            let updating = service.update_environment("web-prod", Some("v2"), change).unwrap();
            assert_eq!(updating.status, Status::Updating);
            let recorded = || service.read().unwrap().environment("web-prod").unwrap().clone();
            // The capacity before is recorded first; the group grows on the next pass.
            service.reconcile().unwrap();
            assert_eq!(recorded().deployment.unwrap().added_batch_from, Some(2), "{policy:?}");
            assert_eq!(group().desired_capacity, 2, "{policy:?}: recorded before it grows");
            service.reconcile().unwrap();
            let group = group();
            assert_eq!((group.desired_capacity, group.max_size), (desired, max), "{policy:?}");
            if policy == Policy::Immutable {
                assert_eq!(group.template.version, VersionSpec::Number(2), "the new set is of v2");
                // A pass again (as after a crash) grows it no further.
                service.reconcile().unwrap();
                assert_eq!(
                    world.groups.read().unwrap().group(&env.resource_name()).unwrap().desired_capacity,
                    4
                );
            }
            let said = said(&service, 1);
            assert!(said[0].contains("instance(s)"), "{policy:?}: {said:?}");
            // Put back as it was for the next policy.
            let update = crate::autoscaling::model::GroupUpdate {
                desired_capacity: Some(2),
                max_size: Some(3),
                ..Default::default()
            };
            world.groups.update_group(&env.resource_name(), None, update).unwrap();
            service.edit(&env.id, |e| e.deployment = None).unwrap();
        }
    }

    #[test]
    fn an_immutable_deployment_whose_new_set_never_passes_lets_it_go() {
        use environment::{DeploymentChange, Policy};
        let world = World::new();
        let service = world.service();
        let env = world.launched_on_v1(&service);
        // Ready as if its health checks had passed (no balancer process runs here).
        service.edit(&env.id, |e| e.status = Status::Ready).unwrap();
        let change = DeploymentChange { policy: Some(Policy::Immutable), batch: None };
        service.update_environment("web-prod", Some("v2"), change).unwrap();
        world.passes(&service, 3);
        assert_eq!(world.compute.live_instances().unwrap().len(), 4, "a new set beside the old");
        // The new set has had its grace period and more, and none of it passed.
        let waited = u64::from(controller::GRACE_SECONDS) + controller::IMMUTABLE_PATIENCE_SECONDS + 1;
        service.edit(&env.id, |e| e.deployment.as_mut().map_or((), |d| d.started -= waited)).unwrap();
        let recorded = || service.read().unwrap().environment("web-prod").unwrap().clone();
        let mut verdicts = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while recorded().status == Status::Updating && std::time::Instant::now() < deadline {
            world.passes(&service, 1);
            verdicts.extend(recorded().deployment.map(|d| d.new_set_passed));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(verdicts.iter().all(|v| *v == Some(false)), "decided once, never turned round: {verdicts:?}");
        let done = recorded();
        assert_eq!((done.status, done.version_label.as_str()), (Status::Ready, "v1"));
        let group = world.groups.read().unwrap().group(&env.resource_name()).unwrap().clone();
        assert_eq!(group.template.version, VersionSpec::Number(1), "the group is back on v1");
        assert_eq!((group.desired_capacity, group.max_size), (2, env.settings.max_size));
        let members = world.groups.describe(std::slice::from_ref(&env.resource_name())).unwrap();
        let versions: Vec<Option<u32>> = members[0].instances.iter().map(|i| i.version).collect();
        assert_eq!(versions, [Some(1), Some(1)], "only the old set is left");
        let said = said(&service, 1);
        assert!(said[0].starts_with("Failed to deploy application version v2"), "{said:?}");
    }

    #[test]
    fn versions_keep_their_bundles_and_let_them_go() {
        let world = World::new();
        let (compute, service) = (world.compute.clone(), world.service());
        service.create_application("web", "").unwrap();
        let v1 = service.create_version("web", "v1", "first", &tar_gz()).unwrap();
        assert_eq!(compute.bundles().unwrap(), std::slice::from_ref(&v1.bundle.sha256));

        let refused = [
            service.create_version("web", "v2", "", b"not an archive").map(|_| ()),
            service.create_version("nope", "v2", "", &tar_gz()).map(|_| ()),
            service
                .create_version("web", "v1", "", &crate::store::bundle::tests::tar_gz(&[("other", b"x")]))
                .map(|_| ()),
        ];
        for result in refused {
            assert!(result.is_err());
        }
        assert_eq!(
            compute.bundles().unwrap(),
            std::slice::from_ref(&v1.bundle.sha256),
            "refusals keep nothing"
        );
        assert_eq!(service.versions(Some("web"), &[]).unwrap().len(), 1);

        // A bundle kept by a create cut short is let go at the next start.
        compute.keep_bundle(&crate::store::bundle::tests::tar_gz(&[("orphan", b"x")])).unwrap();
        service.let_go_of_orphans().unwrap();
        assert_eq!(compute.bundles().unwrap(), std::slice::from_ref(&v1.bundle.sha256));

        service.delete_version("web", "v1").unwrap();
        assert!(compute.bundles().unwrap().is_empty());
        service.delete_application("web").unwrap();
        assert!(service.applications(&[]).unwrap().is_empty());
    }
}
