//! The AutoScaling service (`aws autoscaling`): requests checked and turned into the
//! group controller's terms, its records into AWS's shapes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::auto_scaling_server::AutoScaling;
use super::pb::{
    self, CreateAutoScalingGroupRequest, DeleteAutoScalingGroupRequest, DeleteAutoScalingGroupResponse,
    DeletePolicyRequest, DeletePolicyResponse, DescribeAutoScalingGroupsRequest,
    DescribeAutoScalingGroupsResponse, DescribePoliciesRequest, DescribePoliciesResponse,
    DescribeScalingActivitiesRequest, DescribeScalingActivitiesResponse, LaunchTemplateSpecification,
    PutScalingPolicyRequest, PutScalingPolicyResponse, SetDesiredCapacityRequest, SetDesiredCapacityResponse,
    SetInstanceProtectionRequest, SetInstanceProtectionResponse, TerminateInstanceInAutoScalingGroupRequest,
    TerminateInstanceInAutoScalingGroupResponse, UpdateAutoScalingGroupRequest,
};
use crate::autoscaling::model::{Activity, GroupSpec, GroupUpdate, HealthCheckType, Metric, ScalingPolicy};
use crate::autoscaling::{AutoScalingError, AutoScalingGroups, GroupView};
use crate::daemon::templates::{VersionSpec, Which};

/// Seconds a policy's metric stays below its target before the group shrinks, unless
/// `--cooldown` says otherwise (AWS's default cooldown).
const DEFAULT_SCALE_IN_COOLDOWN: u32 = 300;

/// Serves the Auto Scaling groups.
pub struct AutoScalingService(pub Arc<AutoScalingGroups>);

/// Runs blocking controller work (the database, the daemon's services) off the runtime.
async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, AutoScalingError> + Send + 'static,
    T: Send + 'static,
{
    super::off_runtime(work).await
}

/// The template version a request names.
fn template(spec: LaunchTemplateSpecification) -> Result<(Which, VersionSpec), AutoScalingError> {
    let which = Which::new(&spec.launch_template_id, &spec.launch_template_name)?;
    let version = if spec.version.is_empty() { VersionSpec::Default } else { spec.version.parse()? };
    Ok((which, version))
}

/// `VPCZoneIdentifier`: subnet ids, comma-separated.
fn subnets(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn seconds(time: u64) -> i64 {
    i64::try_from(time).unwrap_or(i64::MAX)
}

fn group(view: GroupView) -> pb::AutoScalingGroup {
    let GroupView { group: g, instances } = view;
    let spec = |version: String| LaunchTemplateSpecification {
        launch_template_id: g.template.id.clone(),
        launch_template_name: g.template.name.clone(),
        version,
    };
    pb::AutoScalingGroup {
        launch_template: Some(spec(g.template.version.to_string())),
        instances: instances
            .into_iter()
            .map(|i| pb::GroupInstance {
                instance_id: i.instance_id,
                lifecycle_state: i.lifecycle_state.into(),
                health_status: i.health_status.into(),
                launch_template: Some(spec(i.version.map(|v| v.to_string()).unwrap_or_default())),
                subnet_id: i.subnet,
                protected_from_scale_in: i.protected_from_scale_in,
            })
            .collect(),
        auto_scaling_group_name: g.name,
        auto_scaling_group_arn: g.arn,
        min_size: g.min_size,
        max_size: g.max_size,
        desired_capacity: g.desired_capacity,
        vpc_zone_identifier: g.subnets.join(","),
        target_group_arns: g.target_group_arns,
        health_check_type: g.health_check_type.as_str().into(),
        health_check_grace_period: g.health_check_grace_seconds,
        default_instance_warmup: g.default_instance_warmup,
        new_instances_protected_from_scale_in: g.new_instances_protected_from_scale_in,
        created_time: seconds(g.created),
        status: if g.deleting { "Delete in progress".into() } else { String::new() },
    }
}

fn activity(a: Activity) -> pb::Activity {
    pb::Activity {
        activity_id: a.id,
        auto_scaling_group_name: a.group,
        description: a.description,
        cause: a.cause,
        status_code: a.status.as_str().into(),
        status_message: a.status_message,
        start_time: seconds(a.start),
        end_time: seconds(a.end),
        progress: 100,
    }
}

fn policy(group: &str, p: ScalingPolicy) -> pb::ScalingPolicy {
    let (predefined_metric_type, resource_label) = match p.metric {
        Metric::AverageCpuUtilization => ("ASGAverageCPUUtilization".to_owned(), String::new()),
        Metric::RequestCountPerTarget(arn) => ("ALBRequestCountPerTarget".to_owned(), arn),
    };
    pb::ScalingPolicy {
        auto_scaling_group_name: group.to_owned(),
        policy_name: p.name,
        policy_arn: p.arn,
        policy_type: "TargetTrackingScaling".into(),
        target_tracking_configuration: Some(pb::TargetTrackingConfiguration {
            predefined_metric_type,
            resource_label,
            target_value: p.target_value,
            disable_scale_in: p.disable_scale_in,
        }),
        estimated_instance_warmup: p.estimated_instance_warmup,
        cooldown: p.scale_in_cooldown,
    }
}

/// The group `name` as it is now.
fn described(groups: &AutoScalingGroups, name: &str) -> Result<pb::AutoScalingGroup, AutoScalingError> {
    let mut found = groups.describe(&[name.to_owned()])?;
    found.pop().map(group).ok_or_else(|| AutoScalingError::GroupNotFound(name.to_owned()))
}

#[tonic::async_trait]
impl AutoScaling for AutoScalingService {
    async fn create_auto_scaling_group(
        &self,
        request: Request<CreateAutoScalingGroupRequest>,
    ) -> Result<Response<pb::AutoScalingGroup>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let made = blocking(move || {
            let launch_template = r.launch_template.ok_or_else(|| {
                AutoScalingError::Validation("a group needs a launch template (--launch-template)".into())
            })?;
            let (which, version) = template(launch_template)?;
            let spec = GroupSpec {
                name: r.auto_scaling_group_name,
                min_size: r.min_size,
                max_size: r.max_size,
                desired_capacity: r.desired_capacity,
                subnets: subnets(&r.vpc_zone_identifier),
                target_group_arns: r.target_group_arns,
                health_check_type: r.health_check_type.parse()?,
                health_check_grace_seconds: r.health_check_grace_period,
                default_instance_warmup: r.default_instance_warmup,
                new_instances_protected_from_scale_in: r.new_instances_protected_from_scale_in,
            };
            let made = groups.create_group(&spec, &which, version)?;
            described(&groups, &made.name)
        })
        .await?;
        Ok(Response::new(made))
    }

    async fn update_auto_scaling_group(
        &self,
        request: Request<UpdateAutoScalingGroupRequest>,
    ) -> Result<Response<pb::AutoScalingGroup>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let changed = blocking(move || {
            let update = GroupUpdate {
                template: None,
                min_size: r.min_size,
                max_size: r.max_size,
                desired_capacity: r.desired_capacity,
                subnets: r.vpc_zone_identifier.as_deref().map(subnets),
                health_check_type: r
                    .health_check_type
                    .as_deref()
                    .map(str::parse::<HealthCheckType>)
                    .transpose()?,
                health_check_grace_seconds: r.health_check_grace_period,
                default_instance_warmup: r.default_instance_warmup,
                new_instances_protected_from_scale_in: r.new_instances_protected_from_scale_in,
            };
            let template = r.launch_template.map(template).transpose()?;
            groups.update_group(&r.auto_scaling_group_name, template, update)?;
            described(&groups, &r.auto_scaling_group_name)
        })
        .await?;
        Ok(Response::new(changed))
    }

    async fn set_desired_capacity(
        &self,
        request: Request<SetDesiredCapacityRequest>,
    ) -> Result<Response<SetDesiredCapacityResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        blocking(move || groups.set_desired_capacity(&r.auto_scaling_group_name, r.desired_capacity)).await?;
        Ok(Response::new(SetDesiredCapacityResponse {}))
    }

    async fn describe_auto_scaling_groups(
        &self,
        request: Request<DescribeAutoScalingGroupsRequest>,
    ) -> Result<Response<DescribeAutoScalingGroupsResponse>, Status> {
        let names = request.into_inner().auto_scaling_group_names;
        let groups = self.0.clone();
        let found = blocking(move || groups.describe(&names)).await?;
        Ok(Response::new(DescribeAutoScalingGroupsResponse {
            auto_scaling_groups: found.into_iter().map(group).collect(),
        }))
    }

    async fn delete_auto_scaling_group(
        &self,
        request: Request<DeleteAutoScalingGroupRequest>,
    ) -> Result<Response<DeleteAutoScalingGroupResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        blocking(move || groups.delete_group(&r.auto_scaling_group_name, r.force_delete)).await?;
        Ok(Response::new(DeleteAutoScalingGroupResponse {}))
    }

    async fn set_instance_protection(
        &self,
        request: Request<SetInstanceProtectionRequest>,
    ) -> Result<Response<SetInstanceProtectionResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        blocking(move || {
            groups.set_protection(&r.auto_scaling_group_name, &r.instance_ids, r.protected_from_scale_in)
        })
        .await?;
        Ok(Response::new(SetInstanceProtectionResponse {}))
    }

    async fn terminate_instance_in_auto_scaling_group(
        &self,
        request: Request<TerminateInstanceInAutoScalingGroupRequest>,
    ) -> Result<Response<TerminateInstanceInAutoScalingGroupResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let auto_scaling_group_name =
            blocking(move || groups.terminate_instance(&r.instance_id, r.should_decrement_desired_capacity))
                .await?;
        Ok(Response::new(TerminateInstanceInAutoScalingGroupResponse { auto_scaling_group_name }))
    }

    async fn put_scaling_policy(
        &self,
        request: Request<PutScalingPolicyRequest>,
    ) -> Result<Response<PutScalingPolicyResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let made = blocking(move || {
            if !matches!(r.policy_type.as_str(), "" | "TargetTrackingScaling") {
                return Err(AutoScalingError::Validation(format!(
                    "policy type {:?}: only TargetTrackingScaling",
                    r.policy_type
                )));
            }
            let config = r.target_tracking_configuration.ok_or_else(|| {
                AutoScalingError::Validation("a target tracking policy needs its configuration".into())
            })?;
            let metric = match config.predefined_metric_type.as_str() {
                "ASGAverageCPUUtilization" => Metric::AverageCpuUtilization,
                "ALBRequestCountPerTarget" => Metric::RequestCountPerTarget(config.resource_label),
                other => {
                    return Err(AutoScalingError::Validation(format!(
                        "metric {other:?}: ASGAverageCPUUtilization or ALBRequestCountPerTarget"
                    )))
                }
            };
            if r.policy_name.is_empty() || r.policy_name.chars().count() > 255 {
                return Err(AutoScalingError::Validation("a policy name is 1 to 255 characters".into()));
            }
            let policy = ScalingPolicy {
                name: r.policy_name,
                arn: String::new(),
                metric,
                target_value: config.target_value,
                disable_scale_in: config.disable_scale_in,
                estimated_instance_warmup: r.estimated_instance_warmup,
                scale_in_cooldown: r.cooldown.unwrap_or(DEFAULT_SCALE_IN_COOLDOWN),
            };
            groups.put_policy(&r.auto_scaling_group_name, policy)
        })
        .await?;
        Ok(Response::new(PutScalingPolicyResponse { policy_arn: made.arn }))
    }

    async fn describe_policies(
        &self,
        request: Request<DescribePoliciesRequest>,
    ) -> Result<Response<DescribePoliciesResponse>, Status> {
        let name = request.into_inner().auto_scaling_group_name;
        let groups = self.0.clone();
        let state = blocking(move || {
            let state = groups.read()?;
            if !name.is_empty() {
                state.group(&name)?;
            }
            Ok(state.groups.into_iter().filter(|g| name.is_empty() || g.name == name).collect::<Vec<_>>())
        })
        .await?;
        let scaling_policies = state
            .into_iter()
            .flat_map(|g| {
                let group = g.name.clone();
                g.policies.into_iter().map(move |p| policy(&group, p))
            })
            .collect();
        Ok(Response::new(DescribePoliciesResponse { scaling_policies }))
    }

    async fn delete_policy(
        &self,
        request: Request<DeletePolicyRequest>,
    ) -> Result<Response<DeletePolicyResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        blocking(move || groups.delete_policy(&r.auto_scaling_group_name, &r.policy_name)).await?;
        Ok(Response::new(DeletePolicyResponse {}))
    }

    async fn describe_scaling_activities(
        &self,
        request: Request<DescribeScalingActivitiesRequest>,
    ) -> Result<Response<DescribeScalingActivitiesResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let mut found = blocking(move || {
            let name = Some(r.auto_scaling_group_name.as_str()).filter(|n| !n.is_empty());
            groups.activities(name)
        })
        .await?;
        if r.max_records > 0 {
            found.truncate(r.max_records as usize);
        }
        Ok(Response::new(DescribeScalingActivitiesResponse {
            activities: found.into_iter().map(activity).collect(),
        }))
    }
}
