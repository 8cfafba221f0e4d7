//! The Environments service (`aws elasticbeanstalk`): requests checked and turned into the
//! controller's terms, its records into AWS's shapes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::environments_server::Environments as EnvironmentsApi;
use super::pb::{
    ApplicationDescription, ApplicationVersionDescription, CreateApplicationRequest,
    CreateApplicationVersionRequest, CreateEnvironmentRequest, DeleteApplicationRequest,
    DeleteApplicationResponse, DeleteApplicationVersionRequest, DeleteApplicationVersionResponse,
    DescribeApplicationVersionsRequest, DescribeApplicationVersionsResponse, DescribeApplicationsRequest,
    DescribeApplicationsResponse, DescribeEnvironmentHealthRequest, DescribeEnvironmentHealthResponse,
    DescribeEnvironmentsRequest, DescribeEnvironmentsResponse, DescribeEventsRequest, DescribeEventsResponse,
    EnvironmentDescription, EnvironmentResources, EventDescription, OptionSetting,
    SwapEnvironmentCnamesRequest, SwapEnvironmentCnamesResponse, TerminateEnvironmentRequest,
    UpdateEnvironmentRequest,
};
use crate::environments::environment::{
    BatchSize, DeploymentChange, Environment, EnvironmentSpec, Event, Policy, Settings, MAX_EVENTS,
};
use crate::environments::health::{Health, Requests};
use crate::environments::model::{Application, ApplicationVersion};
use crate::environments::{Environments, EnvironmentsError};

/// The largest request: a source bundle at its cap, and room for the rest.
pub const MAX_REQUEST_BYTES: usize = crate::store::bundle::MAX_BUNDLE_BYTES + (1 << 20);

/// Serves applications and their versions.
pub struct EnvironmentsService(pub Arc<Environments>);

async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, EnvironmentsError> + Send + 'static,
    T: Send + 'static,
{
    super::off_runtime(work).await
}

fn seconds(time: u64) -> i64 {
    i64::try_from(time).unwrap_or(i64::MAX)
}

fn application(a: Application) -> ApplicationDescription {
    ApplicationDescription {
        versions: a.versions.iter().rev().map(|v| v.label.clone()).collect(),
        application_name: a.name,
        application_arn: a.arn,
        description: a.description,
        date_created: seconds(a.created),
    }
}

fn version(application: String, v: ApplicationVersion) -> ApplicationVersionDescription {
    ApplicationVersionDescription {
        application_name: application,
        version_label: v.label,
        description: v.description,
        source_bundle_format: v.bundle.format.extension().into(),
        source_bundle_sha256: v.bundle.sha256,
        source_bundle_size: v.bundle.size,
        source_bundle_entries: v.bundle.entries,
        date_created: seconds(v.created),
        status: "Processed".into(),
    }
}

fn invalid(why: String) -> EnvironmentsError {
    EnvironmentsError::InvalidParameter(why)
}

/// Option `namespace`/`name`'s value, if set (the last one wins, as in AWS).
fn option<'a>(options: &'a [OptionSetting], namespace: &str, name: &str) -> Option<&'a str> {
    options.iter().rev().find(|o| o.namespace == namespace && o.option_name == name).map(|o| o.value.as_str())
}

fn number(options: &[OptionSetting], namespace: &str, name: &str) -> Result<Option<u32>, EnvironmentsError> {
    option(options, namespace, name)
        .map(|v| v.parse().map_err(|_| invalid(format!("option {namespace} {name}: {v:?} is not a number"))))
        .transpose()
}

const COMMAND: &str = "aws:elasticbeanstalk:command";
const LAUNCH: &str = "aws:autoscaling:launchconfiguration";
const ASG: &str = "aws:autoscaling:asg";

/// The deployment options among `options`.
fn deployment_change(options: &[OptionSetting]) -> Result<DeploymentChange, EnvironmentsError> {
    let policy = option(options, COMMAND, "DeploymentPolicy").map(Policy::parse).transpose()?;
    let size = number(options, COMMAND, "BatchSize")?;
    let batch = match (option(options, COMMAND, "BatchSizeType").unwrap_or("Percentage"), size) {
        (_, None) => None,
        ("Percentage", Some(p)) => Some(BatchSize::Percentage(p)),
        ("Fixed", Some(n)) => Some(BatchSize::Fixed(n)),
        (other, _) => return Err(invalid(format!("BatchSizeType {other:?}: Percentage or Fixed"))),
    };
    Ok(DeploymentChange { policy, batch })
}

/// An environment's settings from its options; what is not given takes Beanstalk's
/// defaults (1 to 4 instances, Rolling deployments 30 % at a time).
fn settings(options: &[OptionSetting]) -> Result<Settings, EnvironmentsError> {
    let known = [
        (LAUNCH, "ImageId"),
        (LAUNCH, "InstanceType"),
        (LAUNCH, "EC2KeyName"),
        ("aws:ec2:vpc", "Subnets"),
        (ASG, "MinSize"),
        (ASG, "MaxSize"),
        (COMMAND, "DeploymentPolicy"),
        (COMMAND, "BatchSize"),
        (COMMAND, "BatchSizeType"),
    ];
    if let Some(o) = options.iter().find(|o| !known.contains(&(o.namespace.as_str(), o.option_name.as_str())))
    {
        return Err(invalid(format!("option {} {} is not one nuage reads", o.namespace, o.option_name)));
    }
    let text = |namespace, name| option(options, namespace, name).unwrap_or_default().to_owned();
    let subnets = text("aws:ec2:vpc", "Subnets");
    if subnets.contains(',') {
        return Err(invalid(
            "an environment's instances are on one subnet: give one in aws:ec2:vpc Subnets".into(),
        ));
    }
    let change = deployment_change(options)?;
    Ok(Settings {
        image_id: text(LAUNCH, "ImageId"),
        instance_type: text(LAUNCH, "InstanceType"),
        key_name: text(LAUNCH, "EC2KeyName"),
        subnet_id: subnets,
        min_size: number(options, ASG, "MinSize")?.unwrap_or(1),
        max_size: number(options, ASG, "MaxSize")?.unwrap_or(4),
        policy: change.policy.unwrap_or(Policy::Rolling),
        batch: change.batch.unwrap_or(BatchSize::Percentage(30)),
    })
}

fn environment(env: Environment, health: &Health) -> EnvironmentDescription {
    EnvironmentDescription {
        environment_id: env.id,
        environment_name: env.name,
        environment_arn: env.arn,
        application_name: env.application,
        version_label: env.version_label,
        description: env.description,
        status: env.status.as_str().into(),
        health: health.colour.as_str().into(),
        health_status: health.colour.status().into(),
        endpoint_url: format!("localhost:{}", env.port),
        cname: env.cname,
        date_created: seconds(env.created),
        date_updated: seconds(env.updated),
        resources: Some(EnvironmentResources {
            launch_template_id: env.made.template_id.unwrap_or_default(),
            target_group_arn: env.made.target_group_arn.unwrap_or_default(),
            load_balancer_arn: env.made.load_balancer_arn.unwrap_or_default(),
            auto_scaling_group_name: env.made.group.unwrap_or_default(),
        }),
        deploying_version_label: env.deployment.map(|d| d.version_label).unwrap_or_default(),
    }
}

fn event(e: Event) -> EventDescription {
    EventDescription {
        event_date: seconds(e.time),
        application_name: e.application,
        environment_name: e.environment,
        version_label: e.version_label,
        severity: e.severity.as_str().into(),
        message: e.message,
    }
}

/// An environment as its controller answers a change: health not yet known.
fn changed(env: Environment) -> EnvironmentDescription {
    let health = Health::of(&env, &[], Requests::default());
    environment(env, &health)
}

#[tonic::async_trait]
impl EnvironmentsApi for EnvironmentsService {
    async fn create_environment(
        &self,
        request: Request<CreateEnvironmentRequest>,
    ) -> Result<Response<EnvironmentDescription>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let made = blocking(move || {
            let spec = EnvironmentSpec {
                name: r.environment_name,
                application: r.application_name,
                version_label: r.version_label,
                description: r.description,
                settings: settings(&r.option_settings)?,
            };
            service.create_environment(&spec)
        })
        .await?;
        Ok(Response::new(changed(made)))
    }

    async fn describe_environments(
        &self,
        request: Request<DescribeEnvironmentsRequest>,
    ) -> Result<Response<DescribeEnvironmentsResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let found = blocking(move || {
            let application = Some(r.application_name.as_str()).filter(|n| !n.is_empty());
            service.environments(application, &r.environment_names, r.include_deleted)
        })
        .await?;
        Ok(Response::new(DescribeEnvironmentsResponse {
            environments: found.into_iter().map(|(env, health)| environment(env, &health)).collect(),
        }))
    }

    async fn update_environment(
        &self,
        request: Request<UpdateEnvironmentRequest>,
    ) -> Result<Response<EnvironmentDescription>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let updated = blocking(move || {
            let known = ["DeploymentPolicy", "BatchSize", "BatchSizeType"];
            if let Some(o) = r
                .option_settings
                .iter()
                .find(|o| o.namespace != COMMAND || !known.contains(&o.option_name.as_str()))
            {
                return Err(invalid(format!(
                    "option {} {} cannot be changed by update-environment",
                    o.namespace, o.option_name
                )));
            }
            let change = deployment_change(&r.option_settings)?;
            let label = Some(r.version_label.as_str()).filter(|l| !l.is_empty());
            service.update_environment(&r.environment_name, label, change)
        })
        .await?;
        Ok(Response::new(changed(updated)))
    }

    async fn terminate_environment(
        &self,
        request: Request<TerminateEnvironmentRequest>,
    ) -> Result<Response<EnvironmentDescription>, Status> {
        let name = request.into_inner().environment_name;
        let service = self.0.clone();
        let env = blocking(move || service.terminate_environment(&name)).await?;
        Ok(Response::new(changed(env)))
    }

    async fn describe_environment_health(
        &self,
        request: Request<DescribeEnvironmentHealthRequest>,
    ) -> Result<Response<DescribeEnvironmentHealthResponse>, Status> {
        let name = request.into_inner().environment_name;
        let service = self.0.clone();
        let (env, health) = blocking(move || service.health(&name)).await?;
        Ok(Response::new(DescribeEnvironmentHealthResponse {
            environment_name: env.name,
            color: health.colour.as_str().into(),
            health_status: health.colour.status().into(),
            status: env.status.as_str().into(),
            causes: health.causes,
            instances: health.instances,
            healthy_instances: health.healthy,
        }))
    }

    async fn swap_environment_cnames(
        &self,
        request: Request<SwapEnvironmentCnamesRequest>,
    ) -> Result<Response<SwapEnvironmentCnamesResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        blocking(move || service.swap_cnames(&r.source_environment_name, &r.destination_environment_name))
            .await?;
        Ok(Response::new(SwapEnvironmentCnamesResponse {}))
    }

    async fn describe_events(
        &self,
        request: Request<DescribeEventsRequest>,
    ) -> Result<Response<DescribeEventsResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let found = blocking(move || {
            let max = match r.max_records {
                0 => 100,
                n => usize::try_from(n).unwrap_or(MAX_EVENTS).min(MAX_EVENTS),
            };
            let application = Some(r.application_name.as_str()).filter(|n| !n.is_empty());
            let environment = Some(r.environment_name.as_str()).filter(|n| !n.is_empty());
            service.events(application, environment, max)
        })
        .await?;
        Ok(Response::new(DescribeEventsResponse { events: found.into_iter().map(event).collect() }))
    }

    async fn create_application(
        &self,
        request: Request<CreateApplicationRequest>,
    ) -> Result<Response<ApplicationDescription>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let made = blocking(move || service.create_application(&r.application_name, &r.description)).await?;
        Ok(Response::new(application(made)))
    }

    async fn describe_applications(
        &self,
        request: Request<DescribeApplicationsRequest>,
    ) -> Result<Response<DescribeApplicationsResponse>, Status> {
        let names = request.into_inner().application_names;
        let service = self.0.clone();
        let found = blocking(move || service.applications(&names)).await?;
        Ok(Response::new(DescribeApplicationsResponse {
            applications: found.into_iter().map(application).collect(),
        }))
    }

    async fn delete_application(
        &self,
        request: Request<DeleteApplicationRequest>,
    ) -> Result<Response<DeleteApplicationResponse>, Status> {
        let name = request.into_inner().application_name;
        let service = self.0.clone();
        blocking(move || service.delete_application(&name)).await?;
        Ok(Response::new(DeleteApplicationResponse {}))
    }

    async fn create_application_version(
        &self,
        request: Request<CreateApplicationVersionRequest>,
    ) -> Result<Response<ApplicationVersionDescription>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let app = r.application_name.clone();
        let made = blocking(move || {
            service.create_version(&r.application_name, &r.version_label, &r.description, &r.source_bundle)
        })
        .await?;
        Ok(Response::new(version(app, made)))
    }

    async fn describe_application_versions(
        &self,
        request: Request<DescribeApplicationVersionsRequest>,
    ) -> Result<Response<DescribeApplicationVersionsResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        let found = blocking(move || {
            let name = Some(r.application_name.as_str()).filter(|n| !n.is_empty());
            service.versions(name, &r.version_labels)
        })
        .await?;
        Ok(Response::new(DescribeApplicationVersionsResponse {
            application_versions: found.into_iter().map(|(app, v)| version(app, v)).collect(),
        }))
    }

    async fn delete_application_version(
        &self,
        request: Request<DeleteApplicationVersionRequest>,
    ) -> Result<Response<DeleteApplicationVersionResponse>, Status> {
        let r = request.into_inner();
        let service = self.0.clone();
        blocking(move || service.delete_version(&r.application_name, &r.version_label)).await?;
        Ok(Response::new(DeleteApplicationVersionResponse {}))
    }
}
