//! The AutoScaling service (`aws autoscaling`): requests checked and turned into the
//! group controller's terms, its records into AWS's shapes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::auto_scaling_server::AutoScaling;
use super::pb::{
    self, CancelInstanceRefreshRequest, CreateAutoScalingGroupRequest, DeleteAutoScalingGroupRequest,
    DeleteAutoScalingGroupResponse, DeletePolicyRequest, DeletePolicyResponse, DeleteScheduledActionRequest,
    DeleteScheduledActionResponse, DescribeAutoScalingGroupsRequest, DescribeAutoScalingGroupsResponse,
    DescribeInstanceRefreshesRequest, DescribeInstanceRefreshesResponse, DescribePoliciesRequest,
    DescribePoliciesResponse, DescribeScalingActivitiesRequest, DescribeScalingActivitiesResponse,
    DescribeScheduledActionsRequest, DescribeScheduledActionsResponse, InstanceRefreshIdResponse,
    LaunchTemplateSpecification, PutScalingPolicyRequest, PutScalingPolicyResponse,
    PutScheduledUpdateGroupActionRequest, PutScheduledUpdateGroupActionResponse,
    RollbackInstanceRefreshRequest, SetDesiredCapacityRequest, SetDesiredCapacityResponse,
    SetInstanceProtectionRequest, SetInstanceProtectionResponse, StartInstanceRefreshRequest,
    StartInstanceRefreshResponse, TerminateInstanceInAutoScalingGroupRequest,
    TerminateInstanceInAutoScalingGroupResponse, UpdateAutoScalingGroupRequest,
};
use crate::autoscaling::model::{Activity, GroupSpec, GroupUpdate, HealthCheckType, Metric, ScalingPolicy};
use crate::autoscaling::refresh::{InstanceRefresh, Preferences, DEFAULT_MIN_HEALTHY_PERCENTAGE};
use crate::autoscaling::schedule::ScheduledAction;
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

/// A time in a request: seconds since the epoch, not before it.
fn time(field: &str, seconds: Option<i64>) -> Result<Option<u64>, AutoScalingError> {
    seconds
        .map(|s| {
            u64::try_from(s).map_err(|_| AutoScalingError::Validation(format!("the {field} is before 1970")))
        })
        .transpose()
}

fn scheduled_action(group: String, a: ScheduledAction) -> pb::ScheduledUpdateGroupAction {
    pb::ScheduledUpdateGroupAction {
        auto_scaling_group_name: group,
        scheduled_action_name: a.name,
        scheduled_action_arn: a.arn,
        start_time: a.start_time.map(seconds),
        end_time: a.end_time.map(seconds),
        recurrence: a.recurrence.unwrap_or_default(),
        min_size: a.min_size,
        max_size: a.max_size,
        desired_capacity: a.desired_capacity,
        next_run_time: a.next_run.map(seconds),
    }
}

fn refresh(r: InstanceRefresh) -> pb::InstanceRefresh {
    pb::InstanceRefresh {
        percentage_complete: r.percentage_complete(),
        instance_refresh_id: r.id,
        auto_scaling_group_name: r.group,
        status: r.status.as_str().into(),
        status_reason: r.status_reason,
        start_time: seconds(r.start),
        end_time: r.end.map(seconds),
        instances_to_update: r.remaining,
        preferences: Some(pb::RefreshPreferences {
            min_healthy_percentage: Some(r.preferences.min_healthy_percentage),
            instance_warmup: r.preferences.instance_warmup,
            skip_matching: r.preferences.skip_matching,
            auto_rollback: r.preferences.auto_rollback,
        }),
        desired_configuration: r.desired.map(|t| LaunchTemplateSpecification {
            launch_template_id: t.id,
            launch_template_name: t.name,
            version: t.version.to_string(),
        }),
    }
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

    async fn put_scheduled_update_group_action(
        &self,
        request: Request<PutScheduledUpdateGroupActionRequest>,
    ) -> Result<Response<PutScheduledUpdateGroupActionResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        blocking(move || {
            if !matches!(r.time_zone.as_str(), "" | "UTC" | "Etc/UTC") {
                return Err(AutoScalingError::Validation(format!(
                    "time zone {:?}: schedules run in UTC",
                    r.time_zone
                )));
            }
            let action = ScheduledAction {
                name: r.scheduled_action_name,
                arn: String::new(),
                start_time: time("start time", r.start_time)?,
                end_time: time("end time", r.end_time)?,
                recurrence: Some(r.recurrence).filter(|c| !c.is_empty()),
                min_size: r.min_size,
                max_size: r.max_size,
                desired_capacity: r.desired_capacity,
                next_run: None,
            };
            groups.put_scheduled_action(&r.auto_scaling_group_name, action)
        })
        .await?;
        Ok(Response::new(PutScheduledUpdateGroupActionResponse {}))
    }

    async fn describe_scheduled_actions(
        &self,
        request: Request<DescribeScheduledActionsRequest>,
    ) -> Result<Response<DescribeScheduledActionsResponse>, Status> {
        let name = request.into_inner().auto_scaling_group_name;
        let groups = self.0.clone();
        let found =
            blocking(move || groups.scheduled_actions(Some(name.as_str()).filter(|n| !n.is_empty()))).await?;
        Ok(Response::new(DescribeScheduledActionsResponse {
            scheduled_update_group_actions: found.into_iter().map(|(g, a)| scheduled_action(g, a)).collect(),
        }))
    }

    async fn delete_scheduled_action(
        &self,
        request: Request<DeleteScheduledActionRequest>,
    ) -> Result<Response<DeleteScheduledActionResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        blocking(move || {
            groups.delete_scheduled_action(&r.auto_scaling_group_name, &r.scheduled_action_name)
        })
        .await?;
        Ok(Response::new(DeleteScheduledActionResponse {}))
    }

    async fn start_instance_refresh(
        &self,
        request: Request<StartInstanceRefreshRequest>,
    ) -> Result<Response<StartInstanceRefreshResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let instance_refresh_id = blocking(move || {
            if !matches!(r.strategy.as_str(), "" | "Rolling") {
                return Err(AutoScalingError::Validation(format!("strategy {:?}: only Rolling", r.strategy)));
            }
            let p = r.preferences.unwrap_or_default();
            let preferences = Preferences {
                min_healthy_percentage: p.min_healthy_percentage.unwrap_or(DEFAULT_MIN_HEALTHY_PERCENTAGE),
                instance_warmup: p.instance_warmup,
                skip_matching: p.skip_matching,
                auto_rollback: p.auto_rollback,
            };
            let desired = r.desired_configuration.map(template).transpose()?;
            groups.start_refresh(&r.auto_scaling_group_name, preferences, desired)
        })
        .await?;
        Ok(Response::new(StartInstanceRefreshResponse { instance_refresh_id }))
    }

    async fn describe_instance_refreshes(
        &self,
        request: Request<DescribeInstanceRefreshesRequest>,
    ) -> Result<Response<DescribeInstanceRefreshesResponse>, Status> {
        let r = request.into_inner();
        let groups = self.0.clone();
        let found =
            blocking(move || groups.refreshes(&r.auto_scaling_group_name, &r.instance_refresh_ids)).await?;
        Ok(Response::new(DescribeInstanceRefreshesResponse {
            instance_refreshes: found.into_iter().map(refresh).collect(),
        }))
    }

    async fn cancel_instance_refresh(
        &self,
        request: Request<CancelInstanceRefreshRequest>,
    ) -> Result<Response<InstanceRefreshIdResponse>, Status> {
        let name = request.into_inner().auto_scaling_group_name;
        let groups = self.0.clone();
        let instance_refresh_id = blocking(move || groups.cancel_refresh(&name)).await?;
        Ok(Response::new(InstanceRefreshIdResponse { instance_refresh_id }))
    }

    async fn rollback_instance_refresh(
        &self,
        request: Request<RollbackInstanceRefreshRequest>,
    ) -> Result<Response<InstanceRefreshIdResponse>, Status> {
        let name = request.into_inner().auto_scaling_group_name;
        let groups = self.0.clone();
        let instance_refresh_id = blocking(move || groups.rollback_refresh(&name)).await?;
        Ok(Response::new(InstanceRefreshIdResponse { instance_refresh_id }))
    }
}
