//! `nuage autoscaling ...`: the Auto Scaling commands, named and shaped as `aws
//! autoscaling`'s (`--launch-template LaunchTemplateName=web,Version='$Latest'`,
//! `--vpc-zone-identifier subnet-a,subnet-b`).

use anyhow::Context;
use clap::{Args, Subcommand};
use tonic::transport::Channel;

use super::launch_templates::parse_specification;
use super::output::{json, table, Format};
use super::text_or_file;
use crate::api::pb::auto_scaling_client::AutoScalingClient;
use crate::api::pb::{
    Activity, AutoScalingGroup, CancelInstanceRefreshRequest, CreateAutoScalingGroupRequest,
    DeleteAutoScalingGroupRequest, DeletePolicyRequest, DeleteScheduledActionRequest,
    DescribeAutoScalingGroupsRequest, DescribeInstanceRefreshesRequest, DescribePoliciesRequest,
    DescribeScalingActivitiesRequest, DescribeScheduledActionsRequest, LaunchTemplateSpecification,
    PutScalingPolicyRequest, PutScheduledUpdateGroupActionRequest, RefreshPreferences,
    RollbackInstanceRefreshRequest, SetDesiredCapacityRequest, SetInstanceProtectionRequest,
    StartInstanceRefreshRequest, TargetTrackingConfiguration, TerminateInstanceInAutoScalingGroupRequest,
    UpdateAutoScalingGroupRequest,
};
use crate::state::clock::{format_utc, parse_utc};

/// `aws autoscaling` commands.
#[derive(Debug, Subcommand)]
pub enum AutoScaling {
    /// Makes a group that keeps its desired number of healthy instances.
    CreateAutoScalingGroup(CreateGroup),
    /// Changes a group: what is given replaces the group's.
    UpdateAutoScalingGroup(UpdateGroup),
    /// Sets how many instances a group keeps.
    SetDesiredCapacity {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// Between its min and max size.
        #[arg(long)]
        desired_capacity: u32,
    },
    /// Lists groups and their instances.
    DescribeAutoScalingGroups {
        /// Only these.
        #[arg(long, num_args = 1..)]
        auto_scaling_group_names: Vec<String>,
    },
    /// Deletes a group (refused while it has instances, unless forced).
    DeleteAutoScalingGroup {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// Terminate its instances, then delete it.
        #[arg(long)]
        force_delete: bool,
    },
    /// Protects instances from scale-in, or ends their protection.
    SetInstanceProtection {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// Its instances.
        #[arg(long, num_args = 1.., required = true)]
        instance_ids: Vec<String>,
        /// Protect them.
        #[arg(long, conflicts_with = "no_protected_from_scale_in")]
        protected_from_scale_in: bool,
        /// End their protection.
        #[arg(long)]
        no_protected_from_scale_in: bool,
    },
    /// Takes an instance out of its group: drained, terminated and (unless the desired
    /// capacity is decremented) replaced.
    TerminateInstanceInAutoScalingGroup {
        /// The instance.
        #[arg(long)]
        instance_id: String,
        /// Lower the desired capacity instead of replacing it.
        #[arg(long, conflicts_with = "no_should_decrement_desired_capacity")]
        should_decrement_desired_capacity: bool,
        /// Replace it (the default).
        #[arg(long)]
        no_should_decrement_desired_capacity: bool,
    },
    /// Adds or replaces a target tracking policy.
    PutScalingPolicy {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// The policy's name.
        #[arg(long)]
        policy_name: String,
        /// TargetTrackingScaling (the only kind).
        #[arg(long, default_value = "TargetTrackingScaling")]
        policy_type: String,
        /// The aws CLI's JSON: {"PredefinedMetricSpecification":{"PredefinedMetricType":
        /// "ASGAverageCPUUtilization"|"ALBRequestCountPerTarget","ResourceLabel":"…"},
        /// "TargetValue":N,"DisableScaleIn":false}. Text or file://PATH.
        #[arg(long)]
        target_tracking_configuration: String,
        /// Seconds a new instance needs before its metrics count.
        #[arg(long)]
        estimated_instance_warmup: Option<u32>,
        /// Seconds the metric must stay below the target before the group shrinks (300).
        #[arg(long)]
        cooldown: Option<u32>,
    },
    /// Lists scaling policies.
    DescribePolicies {
        /// Only this group's.
        #[arg(long, default_value = "")]
        auto_scaling_group_name: String,
    },
    /// Deletes a scaling policy.
    DeletePolicy {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// The policy.
        #[arg(long)]
        policy_name: String,
    },
    /// What groups did and why, newest first.
    DescribeScalingActivities {
        /// Only this group's.
        #[arg(long, default_value = "")]
        auto_scaling_group_name: String,
        /// At most this many.
        #[arg(long, default_value_t = 0)]
        max_records: u32,
    },
    /// Adds or replaces an action that sets a group's sizes at a time, once or on a
    /// schedule.
    PutScheduledUpdateGroupAction(PutScheduledAction),
    /// Lists scheduled actions.
    DescribeScheduledActions {
        /// Only this group's.
        #[arg(long, default_value = "")]
        auto_scaling_group_name: String,
    },
    /// Deletes a scheduled action.
    DeleteScheduledAction {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// The action.
        #[arg(long)]
        scheduled_action_name: String,
    },
    /// Replaces a group's instances batch by batch, onto a new version or afresh.
    StartInstanceRefresh {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// Rolling, the only strategy.
        #[arg(long, default_value = "Rolling")]
        strategy: String,
        /// The aws CLI's JSON: {"MinHealthyPercentage":90,"InstanceWarmup":N,
        /// "SkipMatching":false,"AutoRollback":false}. Text or file://PATH.
        #[arg(long)]
        preferences: Option<String>,
        /// The aws CLI's JSON: {"LaunchTemplate":{"LaunchTemplateName":"web","Version":"2"}}
        /// (or LaunchTemplateId). Text or file://PATH.
        #[arg(long)]
        desired_configuration: Option<String>,
    },
    /// A group's instance refreshes, newest first.
    DescribeInstanceRefreshes {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// Only these.
        #[arg(long, num_args = 1..)]
        instance_refresh_ids: Vec<String>,
    },
    /// Stops a group's instance refresh: what was replaced stays.
    CancelInstanceRefresh {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
    },
    /// Rolls a group's instance refresh back to the version the group had.
    RollbackInstanceRefresh {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
    },
}

/// What `create-auto-scaling-group` takes.
#[derive(Debug, Args)]
pub struct CreateGroup {
    /// Its name.
    #[arg(long)]
    pub auto_scaling_group_name: String,
    /// LaunchTemplateId=lt-…|LaunchTemplateName=NAME,Version=N|$Latest|$Default.
    #[arg(long, value_parser = parse_specification)]
    pub launch_template: LaunchTemplateSpecification,
    /// Never fewer instances.
    #[arg(long)]
    pub min_size: u32,
    /// Never more.
    #[arg(long)]
    pub max_size: u32,
    /// How many to keep (default: the min size).
    #[arg(long)]
    pub desired_capacity: Option<u32>,
    /// Subnets, comma-separated; instances are spread over them.
    #[arg(long, default_value = "")]
    pub vpc_zone_identifier: String,
    /// Target groups its running instances are registered in.
    #[arg(long, num_args = 1..)]
    pub target_group_arns: Vec<String>,
    /// EC2 (replace instances not running) or ELB (also those a target group finds
    /// unhealthy).
    #[arg(long, default_value = "EC2")]
    pub health_check_type: String,
    /// Seconds after launch before ELB health counts.
    #[arg(long, default_value_t = 0)]
    pub health_check_grace_period: u32,
    /// Seconds a new instance needs before it counts in scaling metrics.
    #[arg(long)]
    pub default_instance_warmup: Option<u32>,
    /// Protect the instances it launches from scale-in.
    #[arg(long)]
    pub new_instances_protected_from_scale_in: bool,
}

/// What `update-auto-scaling-group` takes.
#[derive(Debug, Args)]
pub struct UpdateGroup {
    /// The group.
    #[arg(long)]
    pub auto_scaling_group_name: String,
    /// A new launch template version for instances launched from now on.
    #[arg(long, value_parser = parse_specification)]
    pub launch_template: Option<LaunchTemplateSpecification>,
    /// The sizes.
    #[command(flatten)]
    pub sizes: Sizes,
    /// Subnets, comma-separated.
    #[arg(long)]
    pub vpc_zone_identifier: Option<String>,
    /// EC2 or ELB.
    #[arg(long)]
    pub health_check_type: Option<String>,
    /// Seconds after launch before ELB health counts.
    #[arg(long)]
    pub health_check_grace_period: Option<u32>,
    /// Seconds a new instance needs before it counts in scaling metrics.
    #[arg(long)]
    pub default_instance_warmup: Option<u32>,
    /// Protect the instances it launches from now on from scale-in (true or false).
    #[arg(long)]
    pub new_instances_protected_from_scale_in: Option<bool>,
}

/// What `put-scheduled-update-group-action` takes.
#[derive(Debug, Args)]
pub struct PutScheduledAction {
    /// The group.
    #[arg(long)]
    pub auto_scaling_group_name: String,
    /// The action's name.
    #[arg(long)]
    pub scheduled_action_name: String,
    /// When it (first) fires: 2026-12-03T12:00:00Z, or seconds since the epoch.
    #[arg(long, value_parser = parse_time)]
    pub start_time: Option<i64>,
    /// After this it fires no more.
    #[arg(long, value_parser = parse_time)]
    pub end_time: Option<i64>,
    /// Cron, five fields, in UTC: "0 8 * * 1-5".
    #[arg(long, default_value = "")]
    pub recurrence: String,
    /// UTC, the only zone.
    #[arg(long, default_value = "")]
    pub time_zone: String,
    /// The sizes it sets.
    #[command(flatten)]
    pub sizes: Sizes,
}

/// A group's sizes, each optional: those given replace the group's.
#[derive(Debug, Args)]
pub struct Sizes {
    /// The min size.
    #[arg(long)]
    pub min_size: Option<u32>,
    /// The max size.
    #[arg(long)]
    pub max_size: Option<u32>,
    /// The desired capacity.
    #[arg(long)]
    pub desired_capacity: Option<u32>,
}

/// A time as the aws CLI takes it: ISO 8601 in UTC, or seconds since the epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .or_else(|| parse_utc(text).and_then(|t| i64::try_from(t).ok()))
        .ok_or_else(|| format!("{text:?}: a time as 2026-12-03T12:00:00Z or seconds since the epoch"))
}

/// A time from the daemon, as AWS shows it.
fn shown(seconds: i64) -> String {
    u64::try_from(seconds).map(format_utc).unwrap_or_default()
}

/// `--preferences` as the aws CLI writes it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Preferences {
    min_healthy_percentage: Option<u32>,
    instance_warmup: Option<u32>,
    #[serde(default)]
    skip_matching: bool,
    #[serde(default)]
    auto_rollback: bool,
}

/// `--desired-configuration` as the aws CLI writes it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DesiredConfiguration {
    launch_template: Template,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Template {
    #[serde(default)]
    launch_template_id: String,
    #[serde(default)]
    launch_template_name: String,
    #[serde(default)]
    version: String,
}

/// Reads the aws CLI's JSON for `flag` (text or file://PATH).
fn aws_json<T: serde::de::DeserializeOwned>(flag: &str, text: &str) -> anyhow::Result<T> {
    serde_json::from_slice(&text_or_file(text)?).with_context(|| format!("--{flag}"))
}

/// `--target-tracking-configuration` as the aws CLI writes it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Tracking {
    predefined_metric_specification: PredefinedMetric,
    target_value: f64,
    #[serde(default)]
    disable_scale_in: bool,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PredefinedMetric {
    predefined_metric_type: String,
    #[serde(default)]
    resource_label: String,
}

fn tracking(text: &str) -> anyhow::Result<TargetTrackingConfiguration> {
    let t: Tracking = aws_json("target-tracking-configuration", text)?;
    Ok(TargetTrackingConfiguration {
        predefined_metric_type: t.predefined_metric_specification.predefined_metric_type,
        resource_label: t.predefined_metric_specification.resource_label,
        target_value: t.target_value,
        disable_scale_in: t.disable_scale_in,
    })
}

fn print_groups(format: Format, groups: Vec<AutoScalingGroup>) {
    match format {
        Format::Json => json("AutoScalingGroups", groups),
        Format::Table => table(
            &["NAME", "MIN", "DESIRED", "MAX", "INSTANCES", "TEMPLATE", "STATUS"],
            groups
                .into_iter()
                .map(|g| {
                    let template = g.launch_template.unwrap_or_default();
                    let in_service = g.instances.iter().filter(|i| i.lifecycle_state == "InService").count();
                    vec![
                        g.auto_scaling_group_name,
                        g.min_size.to_string(),
                        g.desired_capacity.to_string(),
                        g.max_size.to_string(),
                        format!("{in_service} in service of {}", g.instances.len()),
                        format!("{} {}", template.launch_template_name, template.version),
                        g.status,
                    ]
                })
                .collect(),
        ),
    }
}

fn print_activities(format: Format, activities: Vec<Activity>) {
    match format {
        Format::Json => json("Activities", activities),
        Format::Table => table(
            &["STARTED", "STATUS", "DESCRIPTION", "CAUSE"],
            activities
                .into_iter()
                .map(|a| {
                    let status = if a.status_message.is_empty() {
                        a.status_code
                    } else {
                        format!("{}: {}", a.status_code, a.status_message)
                    };
                    vec![shown(a.start_time), status, a.description, a.cause]
                })
                .collect(),
        ),
    }
}

/// Runs `command` against the daemon on `channel`.
pub async fn run(command: AutoScaling, channel: Channel, format: Format) -> anyhow::Result<()> {
    let mut client = AutoScalingClient::new(channel);
    match command {
        AutoScaling::CreateAutoScalingGroup(a) => {
            let request = CreateAutoScalingGroupRequest {
                auto_scaling_group_name: a.auto_scaling_group_name,
                launch_template: Some(a.launch_template),
                min_size: a.min_size,
                max_size: a.max_size,
                desired_capacity: a.desired_capacity,
                vpc_zone_identifier: a.vpc_zone_identifier,
                target_group_arns: a.target_group_arns,
                health_check_type: a.health_check_type,
                health_check_grace_period: a.health_check_grace_period,
                default_instance_warmup: a.default_instance_warmup,
                new_instances_protected_from_scale_in: a.new_instances_protected_from_scale_in,
            };
            print_groups(format, vec![client.create_auto_scaling_group(request).await?.into_inner()]);
        }
        AutoScaling::UpdateAutoScalingGroup(a) => {
            let request = UpdateAutoScalingGroupRequest {
                auto_scaling_group_name: a.auto_scaling_group_name,
                launch_template: a.launch_template,
                min_size: a.sizes.min_size,
                max_size: a.sizes.max_size,
                desired_capacity: a.sizes.desired_capacity,
                vpc_zone_identifier: a.vpc_zone_identifier,
                health_check_type: a.health_check_type,
                health_check_grace_period: a.health_check_grace_period,
                default_instance_warmup: a.default_instance_warmup,
                new_instances_protected_from_scale_in: a.new_instances_protected_from_scale_in,
            };
            print_groups(format, vec![client.update_auto_scaling_group(request).await?.into_inner()]);
        }
        AutoScaling::SetDesiredCapacity { auto_scaling_group_name, desired_capacity } => {
            let request = SetDesiredCapacityRequest { auto_scaling_group_name, desired_capacity };
            client.set_desired_capacity(request).await?;
        }
        AutoScaling::DescribeAutoScalingGroups { auto_scaling_group_names } => {
            let request = DescribeAutoScalingGroupsRequest { auto_scaling_group_names };
            print_groups(
                format,
                client.describe_auto_scaling_groups(request).await?.into_inner().auto_scaling_groups,
            );
        }
        AutoScaling::DeleteAutoScalingGroup { auto_scaling_group_name, force_delete } => {
            let request = DeleteAutoScalingGroupRequest { auto_scaling_group_name, force_delete };
            client.delete_auto_scaling_group(request).await?;
        }
        AutoScaling::SetInstanceProtection {
            auto_scaling_group_name,
            instance_ids,
            protected_from_scale_in,
            no_protected_from_scale_in,
        } => {
            if protected_from_scale_in == no_protected_from_scale_in {
                anyhow::bail!("give --protected-from-scale-in or --no-protected-from-scale-in");
            }
            let request = SetInstanceProtectionRequest {
                auto_scaling_group_name,
                instance_ids,
                protected_from_scale_in,
            };
            client.set_instance_protection(request).await?;
        }
        AutoScaling::TerminateInstanceInAutoScalingGroup {
            instance_id,
            should_decrement_desired_capacity,
            no_should_decrement_desired_capacity: _,
        } => {
            let request =
                TerminateInstanceInAutoScalingGroupRequest { instance_id, should_decrement_desired_capacity };
            let group = client.terminate_instance_in_auto_scaling_group(request).await?.into_inner();
            match format {
                Format::Json => json("AutoScalingGroupName", group.auto_scaling_group_name),
                Format::Table => println!("{}", group.auto_scaling_group_name),
            }
        }
        AutoScaling::PutScalingPolicy {
            auto_scaling_group_name,
            policy_name,
            policy_type,
            target_tracking_configuration,
            estimated_instance_warmup,
            cooldown,
        } => {
            let request = PutScalingPolicyRequest {
                auto_scaling_group_name,
                policy_name,
                policy_type,
                target_tracking_configuration: Some(tracking(&target_tracking_configuration)?),
                estimated_instance_warmup,
                cooldown,
            };
            let made = client.put_scaling_policy(request).await?.into_inner();
            match format {
                Format::Json => json("PolicyARN", made.policy_arn),
                Format::Table => println!("{}", made.policy_arn),
            }
        }
        AutoScaling::DescribePolicies { auto_scaling_group_name } => {
            let request = DescribePoliciesRequest { auto_scaling_group_name };
            let policies = client.describe_policies(request).await?.into_inner().scaling_policies;
            match format {
                Format::Json => json("ScalingPolicies", policies),
                Format::Table => table(
                    &["GROUP", "POLICY", "METRIC", "TARGET", "SCALE-IN"],
                    policies
                        .into_iter()
                        .map(|p| {
                            let c = p.target_tracking_configuration.unwrap_or_default();
                            let scale_in = if c.disable_scale_in {
                                "off".to_owned()
                            } else {
                                format!("after {}s", p.cooldown)
                            };
                            vec![
                                p.auto_scaling_group_name,
                                p.policy_name,
                                c.predefined_metric_type,
                                c.target_value.to_string(),
                                scale_in,
                            ]
                        })
                        .collect(),
                ),
            }
        }
        AutoScaling::DeletePolicy { auto_scaling_group_name, policy_name } => {
            client.delete_policy(DeletePolicyRequest { auto_scaling_group_name, policy_name }).await?;
        }
        AutoScaling::DescribeScalingActivities { auto_scaling_group_name, max_records } => {
            let request = DescribeScalingActivitiesRequest { auto_scaling_group_name, max_records };
            print_activities(
                format,
                client.describe_scaling_activities(request).await?.into_inner().activities,
            );
        }
        AutoScaling::PutScheduledUpdateGroupAction(a) => {
            let request = PutScheduledUpdateGroupActionRequest {
                auto_scaling_group_name: a.auto_scaling_group_name,
                scheduled_action_name: a.scheduled_action_name,
                start_time: a.start_time,
                end_time: a.end_time,
                recurrence: a.recurrence,
                time_zone: a.time_zone,
                min_size: a.sizes.min_size,
                max_size: a.sizes.max_size,
                desired_capacity: a.sizes.desired_capacity,
            };
            client.put_scheduled_update_group_action(request).await?;
        }
        AutoScaling::DescribeScheduledActions { auto_scaling_group_name } => {
            let request = DescribeScheduledActionsRequest { auto_scaling_group_name };
            let actions =
                client.describe_scheduled_actions(request).await?.into_inner().scheduled_update_group_actions;
            let size = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
            match format {
                Format::Json => json("ScheduledUpdateGroupActions", actions),
                Format::Table => table(
                    &["GROUP", "ACTION", "RECURRENCE", "NEXT", "MIN", "MAX", "DESIRED"],
                    actions
                        .into_iter()
                        .map(|a| {
                            vec![
                                a.auto_scaling_group_name,
                                a.scheduled_action_name,
                                a.recurrence,
                                a.next_run_time.map(shown).unwrap_or_default(),
                                size(a.min_size),
                                size(a.max_size),
                                size(a.desired_capacity),
                            ]
                        })
                        .collect(),
                ),
            }
        }
        AutoScaling::DeleteScheduledAction { auto_scaling_group_name, scheduled_action_name } => {
            let request = DeleteScheduledActionRequest { auto_scaling_group_name, scheduled_action_name };
            client.delete_scheduled_action(request).await?;
        }
        AutoScaling::StartInstanceRefresh {
            auto_scaling_group_name,
            strategy,
            preferences,
            desired_configuration,
        } => {
            let p: Preferences =
                preferences.map(|p| aws_json("preferences", &p)).transpose()?.unwrap_or_default();
            let desired = desired_configuration
                .map(|d| aws_json::<DesiredConfiguration>("desired-configuration", &d))
                .transpose()?;
            let request = StartInstanceRefreshRequest {
                auto_scaling_group_name,
                strategy,
                preferences: Some(RefreshPreferences {
                    min_healthy_percentage: p.min_healthy_percentage,
                    instance_warmup: p.instance_warmup,
                    skip_matching: p.skip_matching,
                    auto_rollback: p.auto_rollback,
                }),
                desired_configuration: desired.map(|d| LaunchTemplateSpecification {
                    launch_template_id: d.launch_template.launch_template_id,
                    launch_template_name: d.launch_template.launch_template_name,
                    version: d.launch_template.version,
                }),
            };
            let id = client.start_instance_refresh(request).await?.into_inner().instance_refresh_id;
            print_refresh_id(format, id);
        }
        AutoScaling::DescribeInstanceRefreshes { auto_scaling_group_name, instance_refresh_ids } => {
            let request = DescribeInstanceRefreshesRequest { auto_scaling_group_name, instance_refresh_ids };
            let refreshes =
                client.describe_instance_refreshes(request).await?.into_inner().instance_refreshes;
            match format {
                Format::Json => json("InstanceRefreshes", refreshes),
                Format::Table => table(
                    &["ID", "STATUS", "DONE", "TO-UPDATE", "STARTED", "REASON"],
                    refreshes
                        .into_iter()
                        .map(|r| {
                            vec![
                                r.instance_refresh_id,
                                r.status,
                                format!("{}%", r.percentage_complete),
                                r.instances_to_update.to_string(),
                                shown(r.start_time),
                                r.status_reason,
                            ]
                        })
                        .collect(),
                ),
            }
        }
        AutoScaling::CancelInstanceRefresh { auto_scaling_group_name } => {
            let request = CancelInstanceRefreshRequest { auto_scaling_group_name };
            print_refresh_id(
                format,
                client.cancel_instance_refresh(request).await?.into_inner().instance_refresh_id,
            );
        }
        AutoScaling::RollbackInstanceRefresh { auto_scaling_group_name } => {
            let request = RollbackInstanceRefreshRequest { auto_scaling_group_name };
            print_refresh_id(
                format,
                client.rollback_instance_refresh(request).await?.into_inner().instance_refresh_id,
            );
        }
    }
    Ok(())
}

fn print_refresh_id(format: Format, id: String) {
    match format {
        Format::Json => json("InstanceRefreshId", id),
        Format::Table => println!("{id}"),
    }
}
