//! An environment as recorded: what the caller asked for (application version, platform,
//! capacity, deployment policy), what the controller has made for it so far, the
//! deployment under way, and its events. The record is the intent: it is written before
//! anything is made, and the reconcile loop makes, repairs or removes the rest from it.

use serde::{Deserialize, Serialize};

use super::model::{check_name, Beanstalk};
use super::EnvironmentsError;

/// Environments on the host, terminated ones not counted.
pub const MAX_ENVIRONMENTS: usize = 20;
/// Terminated environments kept for `describe-environments --include-deleted`.
const MAX_TERMINATED: usize = 20;
/// Events kept, newest last (older ones go first).
pub const MAX_EVENTS: usize = 1000;
/// Host ports environments' load balancers listen on, one each.
pub const PORTS: std::ops::RangeInclusive<u16> = 8000..=8999;
/// The port an application serves on inside its instances (`$PORT`), as Beanstalk's.
pub const APPLICATION_PORT: u16 = 5000;
/// The longest environment name (AWS's limit; 4 at least).
const NAME_LENGTH: std::ops::RangeInclusive<usize> = 4..=40;

/// Where an environment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Its resources are being made.
    Launching,
    /// A deployment is under way.
    Updating,
    /// Made and serving its version.
    Ready,
    /// Its resources are being removed.
    Terminating,
    /// Nothing of it is left.
    Terminated,
}

impl Status {
    /// AWS's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Launching => "Launching",
            Self::Updating => "Updating",
            Self::Ready => "Ready",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
        }
    }
}

/// How a deployment replaces the instances (AWS's `DeploymentPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// Every instance at once: the quickest, with a gap in service.
    AllAtOnce,
    /// A batch at a time, the rest serving.
    Rolling,
    /// A batch at a time, one extra batch launched first so capacity never drops.
    RollingWithAdditionalBatch,
    /// A whole new set of instances beside the old, which go only once every new one
    /// passes its health checks (a failure lets the new set go instead).
    Immutable,
}

impl Policy {
    /// From AWS's name.
    pub fn parse(text: &str) -> Result<Self, EnvironmentsError> {
        match text {
            "AllAtOnce" => Ok(Self::AllAtOnce),
            "Rolling" => Ok(Self::Rolling),
            "RollingWithAdditionalBatch" => Ok(Self::RollingWithAdditionalBatch),
            "Immutable" => Ok(Self::Immutable),
            other => Err(EnvironmentsError::InvalidParameter(format!(
                "deployment policy {other:?}: AllAtOnce, Rolling, RollingWithAdditionalBatch or Immutable"
            ))),
        }
    }

    /// AWS's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllAtOnce => "AllAtOnce",
            Self::Rolling => "Rolling",
            Self::RollingWithAdditionalBatch => "RollingWithAdditionalBatch",
            Self::Immutable => "Immutable",
        }
    }
}

/// A deployment's batch: a share of the instances or a number of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchSize {
    /// This percentage of the instances (1 to 100).
    Percentage(u32),
    /// This many instances (1 at least).
    Fixed(u32),
}

impl BatchSize {
    /// Instances per batch out of `capacity` (1 at least, `capacity` at most).
    pub fn of(self, capacity: u32) -> u32 {
        let n = match self {
            Self::Percentage(p) => (u64::from(capacity) * u64::from(p)).div_ceil(100) as u32,
            Self::Fixed(n) => n,
        };
        n.clamp(1, capacity.max(1))
    }
}

/// What `update-environment` changes of how deployments go (each given replaces).
#[derive(Debug, Clone, Copy, Default)]
pub struct DeploymentChange {
    /// A new policy.
    pub policy: Option<Policy>,
    /// A new batch size.
    pub batch: Option<BatchSize>,
}

/// What an environment runs on and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The image its instances boot (`aws:autoscaling:launchconfiguration ImageId`).
    pub image_id: String,
    /// Their type (`… InstanceType`; empty: the daemon's default).
    pub instance_type: String,
    /// Their key pair (`… EC2KeyName`; empty: none).
    pub key_name: String,
    /// Their subnet (`aws:ec2:vpc Subnets`).
    pub subnet_id: String,
    /// `aws:autoscaling:asg MinSize`.
    pub min_size: u32,
    /// `aws:autoscaling:asg MaxSize`.
    pub max_size: u32,
    /// `aws:elasticbeanstalk:command DeploymentPolicy`.
    pub policy: Policy,
    /// `aws:elasticbeanstalk:command BatchSize` and `BatchSizeType`.
    pub batch: BatchSize,
}

impl Settings {
    /// Refuses what cannot work.
    pub fn check(&self) -> Result<(), EnvironmentsError> {
        let bad = |why: String| Err(EnvironmentsError::InvalidParameter(why));
        if self.image_id.is_empty() {
            return bad(
                "an environment needs an image: option aws:autoscaling:launchconfiguration ImageId".into()
            );
        }
        if self.subnet_id.is_empty() {
            return bad("an environment needs a subnet: option aws:ec2:vpc Subnets".into());
        }
        if self.min_size > self.max_size || self.max_size == 0 || self.max_size > 100 {
            return bad(format!(
                "MinSize {} and MaxSize {}: 0 <= MinSize <= MaxSize, MaxSize 1 to 100",
                self.min_size, self.max_size
            ));
        }
        match self.batch {
            BatchSize::Percentage(p) if !(1..=100).contains(&p) => bad(format!("BatchSize {p}%: 1 to 100")),
            BatchSize::Fixed(0) => bad("BatchSize 0: 1 at least".into()),
            _ => Ok(()),
        }
    }
}

/// What the controller has made for an environment, each named once made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    /// Its launch template's id.
    pub template_id: Option<String>,
    /// Its target group.
    pub target_group_arn: Option<String>,
    /// Its load balancer.
    pub load_balancer_arn: Option<String>,
    /// Its listener.
    pub listener_arn: Option<String>,
    /// Its auto scaling group.
    pub group: Option<String>,
}

/// A deployment under way: from one version to another by an instance refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The version deployed.
    pub version_label: String,
    /// The version it replaces, and what a failure returns to.
    pub previous_label: String,
    /// How.
    pub policy: Policy,
    /// The group's desired capacity before instances were added for the deployment (an
    /// additional batch, or an immutable deployment's new set). Recorded before the group
    /// grows, which later passes make it do (to an absolute size, so twice is once).
    pub added_batch_from: Option<u32>,
    /// The refresh doing it, once started.
    pub refresh_id: Option<String>,
    /// An immutable deployment's verdict, once given: whether the new set passed (the old
    /// set goes) or not (the new set goes). Recorded before either set is let go, so a
    /// later pass never turns it round.
    #[serde(default)]
    pub new_set_passed: Option<bool>,
    /// When it began.
    pub started: u64,
}

/// An environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// `e-` and ten characters.
    pub id: String,
    /// Unique among the host's environments not terminated.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// The application.
    pub application: String,
    /// The version it serves.
    pub version_label: String,
    /// Free text.
    pub description: String,
    /// What it runs on.
    pub settings: Settings,
    /// The host port its load balancer listens on.
    pub port: u16,
    /// Its name in DNS form (`<name>.<region>.elasticbeanstalk.nuage`), as AWS's CNAME.
    pub cname: String,
    /// Where it is in its life.
    pub status: Status,
    /// Why it is terminating, when a failure caused it.
    pub failure: Option<String>,
    /// What has been made.
    pub made: Made,
    /// The deployment under way.
    pub deployment: Option<Deployment>,
    /// When it was created.
    pub created: u64,
    /// When it last changed.
    pub updated: u64,
}

impl Environment {
    /// The names its resources get: the same on every pass, so a pass cut short finds
    /// what it made before.
    pub fn resource_name(&self) -> String {
        format!("awseb-{}", self.id)
    }

    /// Whether it is still there (not terminated).
    pub fn is_live(&self) -> bool {
        self.status != Status::Terminated
    }
}

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    /// A step done.
    Info,
    /// Something to look at.
    Warn,
    /// A step failed.
    Error,
}

impl Severity {
    /// AWS's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }
}

/// One step of an environment's life, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (seconds since the epoch).
    pub time: u64,
    /// The application.
    pub application: String,
    /// The environment's name.
    pub environment: String,
    /// The version involved, if any.
    pub version_label: String,
    /// How bad.
    pub severity: Severity,
    /// What happened.
    pub message: String,
}

/// What `create-environment` asks for.
#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    /// The name.
    pub name: String,
    /// The application.
    pub application: String,
    /// The version (empty: the application's newest).
    pub version_label: String,
    /// Free text.
    pub description: String,
    /// The platform and capacity.
    pub settings: Settings,
}

/// AWS's refusal of an environment name that names none.
fn no_environment(name: &str) -> EnvironmentsError {
    EnvironmentsError::InvalidParameter(format!("No Environment found for EnvironmentName = '{name}'."))
}

impl Beanstalk {
    /// Environment `name` (not terminated).
    pub fn environment(&self, name: &str) -> Result<&Environment, EnvironmentsError> {
        self.environments.iter().find(|e| e.name == name && e.is_live()).ok_or_else(|| no_environment(name))
    }

    /// Environment `name` (not terminated), to change.
    fn environment_mut(&mut self, name: &str) -> Result<&mut Environment, EnvironmentsError> {
        self.environments
            .iter_mut()
            .find(|e| e.name == name && e.is_live())
            .ok_or_else(|| no_environment(name))
    }

    /// Environment `id`, terminated or not.
    pub fn environment_by_id_mut(&mut self, id: &str) -> Option<&mut Environment> {
        self.environments.iter_mut().find(|e| e.id == id)
    }

    /// Records an event.
    pub fn record(&mut self, env: &Environment, severity: Severity, message: String, now: u64) {
        match severity {
            Severity::Error => tracing::warn!("environment {}: {message}", env.name),
            _ => tracing::info!("environment {}: {message}", env.name),
        }
        self.events.push(Event {
            time: now,
            application: env.application.clone(),
            environment: env.name.clone(),
            version_label: env.version_label.clone(),
            severity,
            message,
        });
        let excess = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..excess);
    }

    /// `create-environment`: recorded as launching; the reconcile loop makes the rest.
    pub fn create_environment(
        &mut self,
        region: &str,
        spec: &EnvironmentSpec,
        id: String,
        now: u64,
    ) -> Result<Environment, EnvironmentsError> {
        check_name("environment name", &spec.name)?;
        let length = spec.name.chars().count();
        if !NAME_LENGTH.contains(&length)
            || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || spec.name.starts_with('-')
            || spec.name.ends_with('-')
        {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "environment name {:?}: 4 to 40 letters, digits and hyphens, not starting or ending with a hyphen",
                spec.name
            )));
        }
        spec.settings.check()?;
        let application = self.application(&spec.application)?;
        let version = match spec.version_label.as_str() {
            "" => application.versions.last().ok_or_else(|| {
                EnvironmentsError::InvalidParameter(format!(
                    "application {} has no version to deploy",
                    spec.application
                ))
            })?,
            label => application.version(label)?,
        };
        let version_label = version.label.clone();
        let live: Vec<&Environment> = self.environments.iter().filter(|e| e.is_live()).collect();
        if live.iter().any(|e| e.name == spec.name) {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "Environment {} already exists.",
                spec.name
            )));
        }
        if live.len() >= MAX_ENVIRONMENTS {
            return Err(EnvironmentsError::TooManyEnvironments(format!(
                "at most {MAX_ENVIRONMENTS} environments"
            )));
        }
        let port = PORTS.clone().find(|p| !live.iter().any(|e| e.port == *p)).ok_or_else(|| {
            EnvironmentsError::TooManyEnvironments("every environment port is taken".into())
        })?;
        let env = Environment {
            arn: format!(
                "arn:nuage:elasticbeanstalk:{region}:000000000000:environment/{}/{}",
                spec.application, spec.name
            ),
            cname: format!("{}.{region}.elasticbeanstalk.nuage", spec.name),
            id,
            name: spec.name.clone(),
            application: spec.application.clone(),
            version_label,
            description: spec.description.clone(),
            settings: spec.settings.clone(),
            port,
            status: Status::Launching,
            failure: None,
            made: Made::default(),
            deployment: None,
            created: now,
            updated: now,
        };
        self.environments.push(env.clone());
        self.record(&env, Severity::Info, "createEnvironment is starting.".into(), now);
        Ok(env)
    }

    /// `update-environment`: the deployment settings changed, and with a `label`, a
    /// deployment of that version recorded; the loop does it.
    pub fn deploy(
        &mut self,
        name: &str,
        label: Option<&str>,
        change: DeploymentChange,
        now: u64,
    ) -> Result<Environment, EnvironmentsError> {
        let env = self.environment(name)?;
        let mut settings = env.settings.clone();
        settings.policy = change.policy.unwrap_or(settings.policy);
        settings.batch = change.batch.unwrap_or(settings.batch);
        settings.check()?;
        if let Some(label) = label {
            self.application(&env.application)?.version(label)?;
        }
        if env.status != Status::Ready {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "Environment named {name} is in an invalid state for this operation. Must be Ready (it is {}).",
                env.status.as_str()
            )));
        }
        let env = self.environment_mut(name)?;
        env.settings = settings;
        env.updated = now;
        let Some(label) = label else { return Ok(env.clone()) };
        env.deployment = Some(Deployment {
            version_label: label.to_owned(),
            previous_label: env.version_label.clone(),
            policy: env.settings.policy,
            added_batch_from: None,
            refresh_id: None,
            new_set_passed: None,
            started: now,
        });
        env.status = Status::Updating;
        env.updated = now;
        let env = env.clone();
        self.record(
            &env,
            Severity::Info,
            format!(
                "Environment update is starting: deploying version {label} ({}).",
                env.settings.policy.as_str()
            ),
            now,
        );
        Ok(env)
    }

    /// `terminate-environment`: recorded as terminating; the loop removes what it made.
    pub fn terminate(&mut self, name: &str, now: u64) -> Result<Environment, EnvironmentsError> {
        let env = self.environment_mut(name)?;
        if env.status != Status::Terminating {
            env.status = Status::Terminating;
            env.deployment = None;
            env.updated = now;
        }
        let env = env.clone();
        self.record(&env, Severity::Info, "terminateEnvironment is starting.".into(), now);
        Ok(env)
    }

    /// `swap-environment-cnames`: the two environments trade names and host ports (their
    /// listeners follow on the next pass).
    pub fn swap_cnames(
        &mut self,
        source: &str,
        destination: &str,
        now: u64,
    ) -> Result<(), EnvironmentsError> {
        let found = |name: &str| self.environment(name).map(|e| (e.id.clone(), e.status));
        let ((a, a_status), (b, b_status)) = (found(source)?, found(destination)?);
        if a == b {
            return Err(EnvironmentsError::InvalidParameter("an environment cannot swap with itself".into()));
        }
        if let Some(status) =
            [a_status, b_status].into_iter().find(|s| !matches!(s, Status::Ready | Status::Updating))
        {
            return Err(EnvironmentsError::InvalidParameter(format!(
                "both environments must be Ready or Updating to swap (one is {})",
                status.as_str()
            )));
        }
        let taken = |id: &str| {
            self.environments
                .iter()
                .find(|e| e.id == id)
                .map(|e| (e.port, e.cname.clone()))
                .unwrap_or_default()
        };
        let (a_side, b_side) = (taken(&a), taken(&b));
        for (id, (port, cname)) in [(&a, b_side), (&b, a_side)] {
            let Some(env) = self.environment_by_id_mut(id) else { continue };
            (env.port, env.cname) = (port, cname);
            env.updated = now;
            let env = env.clone();
            self.record(
                &env,
                Severity::Info,
                format!("Swapped CNAMEs: now {} on port {}.", env.cname, env.port),
                now,
            );
        }
        Ok(())
    }

    /// Marks environment `id` terminated, keeping the newest terminated few.
    pub fn terminated(&mut self, id: &str, now: u64) {
        let Some(env) = self.environment_by_id_mut(id) else { return };
        env.status = Status::Terminated;
        env.made = Made::default();
        env.updated = now;
        let env = env.clone();
        let message = match &env.failure {
            Some(why) => format!("Create environment failed and was rolled back: {why}"),
            None => "terminateEnvironment completed successfully.".into(),
        };
        let severity = if env.failure.is_some() { Severity::Error } else { Severity::Info };
        self.record(&env, severity, message, now);
        let dead = self.environments.iter().filter(|e| !e.is_live()).count();
        let mut excess = dead.saturating_sub(MAX_TERMINATED);
        self.environments.retain(|e| {
            let drop = excess > 0 && !e.is_live();
            excess -= usize::from(drop);
            !drop
        });
    }

    /// Whether a live environment deploys, or may return to, version `label` of `application`.
    pub fn version_in_use(&self, application: &str, label: &str) -> Option<&Environment> {
        self.environments.iter().filter(|e| e.is_live() && e.application == application).find(|e| {
            e.version_label == label
                || e.deployment
                    .as_ref()
                    .is_some_and(|d| d.version_label == label || d.previous_label == label)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::bundle::{Bundle, BundleFormat};

    /// Two to three instances of `ami-1` on `subnet-1`, deployed one at a time.
    pub(crate) fn settings() -> Settings {
        Settings {
            image_id: "ami-1".into(),
            instance_type: String::new(),
            key_name: String::new(),
            subnet_id: "subnet-1".into(),
            min_size: 2,
            max_size: 3,
            policy: Policy::Rolling,
            batch: BatchSize::Fixed(1),
        }
    }

    /// Environment `name` of application `web`'s newest version, on [`settings`].
    pub(crate) fn spec(name: &str) -> EnvironmentSpec {
        EnvironmentSpec {
            name: name.into(),
            application: "web".into(),
            version_label: String::new(),
            description: String::new(),
            settings: settings(),
        }
    }

    fn state() -> Beanstalk {
        let mut state = Beanstalk::default();
        state.create_application("r", "web", "", 0).unwrap();
        let bundle = Bundle { sha256: "a".repeat(64), size: 1, format: BundleFormat::TarGz, entries: 1 };
        state.create_version("web", "v1", "", bundle.clone(), 0).unwrap();
        state.create_version("web", "v2", "", bundle, 0).unwrap();
        state
    }

    #[test]
    fn bad_requests_are_refused_and_make_nothing() {
        let mut state = state();
        state.create_environment("r", &spec("web-prod"), "e-1".into(), 0).unwrap();
        let before = state.clone();
        let mut versionless = spec("web-two");
        versionless.version_label = "v9".into();
        let mut inverted = spec("web-three");
        inverted.settings.min_size = 4;
        let mut imageless = spec("web-four");
        imageless.settings.image_id.clear();
        let mut orphan = spec("web-five");
        orphan.application = "nope".into();
        for bad in [
            spec("web-prod"),
            spec("ab"),
            spec("-web"),
            spec("web_prod"),
            versionless,
            inverted,
            imageless,
            orphan,
        ] {
            let result = state.create_environment("r", &bad, "e-2".into(), 0);
            assert!(
                matches!(result, Err(EnvironmentsError::InvalidParameter(_))),
                "{}: {result:?}",
                bad.name
            );
        }
        assert_eq!(state, before);
    }

    #[test]
    fn an_environment_gets_the_newest_version_and_its_own_port() {
        let mut state = state();
        let first = state.create_environment("r", &spec("web-prod"), "e-1".into(), 0).unwrap();
        let second = state.create_environment("r", &spec("web-test"), "e-2".into(), 0).unwrap();
        assert_eq!(first.version_label, "v2");
        assert_eq!((first.port, second.port), (8000, 8001));
        assert_eq!(first.cname, "web-prod.r.elasticbeanstalk.nuage");
        // A deployment needs a ready environment; a version in use cannot go.
        let keep = DeploymentChange::default();
        assert!(state.deploy("web-prod", Some("v1"), keep, 1).is_err(), "still launching");
        state.environment_by_id_mut("e-1").unwrap().status = Status::Ready;
        assert!(state.deploy("web-prod", Some("v9"), keep, 1).is_err());
        let zero = DeploymentChange { batch: Some(BatchSize::Fixed(0)), ..keep };
        assert!(state.deploy("web-prod", Some("v1"), zero, 1).is_err());
        let all = DeploymentChange { policy: Some(Policy::AllAtOnce), ..keep };
        let updating = state.deploy("web-prod", Some("v1"), all, 1).unwrap();
        assert_eq!(updating.deployment.as_ref().unwrap().policy, Policy::AllAtOnce);
        assert_eq!(updating.status, Status::Updating);
        assert!(state.version_in_use("web", "v1").is_some() && state.version_in_use("web", "v2").is_some());
        // A terminated environment frees its name and port.
        state.terminate("web-prod", 2).unwrap();
        state.terminated("e-1", 3);
        assert!(state.environment("web-prod").is_err());
        let again = state.create_environment("r", &spec("web-prod"), "e-3".into(), 4).unwrap();
        assert_eq!(again.port, 8000);
        assert!(state.events.iter().any(|e| e.message.contains("terminateEnvironment completed")));
    }

    #[test]
    fn swapped_environments_trade_names_and_ports() {
        let mut state = state();
        state.create_environment("r", &spec("blue"), "e-1".into(), 0).unwrap();
        state.create_environment("r", &spec("green"), "e-2".into(), 0).unwrap();
        assert!(state.swap_cnames("blue", "green", 1).is_err(), "both still launching");
        for id in ["e-1", "e-2"] {
            state.environment_by_id_mut(id).unwrap().status = Status::Ready;
        }
        assert!(state.swap_cnames("blue", "blue", 1).is_err());
        assert!(state.swap_cnames("blue", "nope", 1).is_err());
        state.swap_cnames("blue", "green", 1).unwrap();
        let (blue, green) = (state.environment("blue").unwrap(), state.environment("green").unwrap());
        assert_eq!((blue.port, green.port), (8001, 8000));
        assert_eq!(blue.cname, "green.r.elasticbeanstalk.nuage");
    }

    #[test]
    fn batches_are_at_least_one_instance() {
        assert_eq!(BatchSize::Percentage(30).of(2), 1);
        assert_eq!(BatchSize::Percentage(50).of(4), 2);
        assert_eq!(BatchSize::Percentage(100).of(3), 3);
        assert_eq!(BatchSize::Fixed(5).of(2), 2);
        assert_eq!(BatchSize::Fixed(1).of(0), 1);
    }
}
