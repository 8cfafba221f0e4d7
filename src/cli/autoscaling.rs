//! `nuage autoscaling ...`: the Auto Scaling commands, named and shaped as `aws
//! autoscaling`'s (`--launch-template LaunchTemplateName=web,Version='$Latest'`,
//! `--vpc-zone-identifier subnet-a,subnet-b`).

use anyhow::Context;
use clap::Subcommand;
use tonic::transport::Channel;

use super::launch_templates::parse_specification;
use super::output::{json, table, Format};
use super::text_or_file;
use crate::api::pb::auto_scaling_client::AutoScalingClient;
use crate::api::pb::{
    Activity, AutoScalingGroup, CreateAutoScalingGroupRequest, DeleteAutoScalingGroupRequest,
    DeletePolicyRequest, DescribeAutoScalingGroupsRequest, DescribePoliciesRequest,
    DescribeScalingActivitiesRequest, LaunchTemplateSpecification, PutScalingPolicyRequest,
    SetDesiredCapacityRequest, SetInstanceProtectionRequest, TargetTrackingConfiguration,
    TerminateInstanceInAutoScalingGroupRequest, UpdateAutoScalingGroupRequest,
};

/// `aws autoscaling` commands.
#[derive(Debug, Subcommand)]
pub enum AutoScaling {
    /// Makes a group that keeps its desired number of healthy instances.
    CreateAutoScalingGroup {
        /// Its name.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// LaunchTemplateId=lt-…|LaunchTemplateName=NAME,Version=N|$Latest|$Default.
        #[arg(long, value_parser = parse_specification)]
        launch_template: LaunchTemplateSpecification,
        /// Never fewer instances.
        #[arg(long)]
        min_size: u32,
        /// Never more.
        #[arg(long)]
        max_size: u32,
        /// How many to keep (default: the min size).
        #[arg(long)]
        desired_capacity: Option<u32>,
        /// Subnets, comma-separated; instances are spread over them.
        #[arg(long, default_value = "")]
        vpc_zone_identifier: String,
        /// Target groups its running instances are registered in.
        #[arg(long, num_args = 1..)]
        target_group_arns: Vec<String>,
        /// EC2 (replace instances not running) or ELB (also those a target group finds
        /// unhealthy).
        #[arg(long, default_value = "EC2")]
        health_check_type: String,
        /// Seconds after launch before ELB health counts.
        #[arg(long, default_value_t = 0)]
        health_check_grace_period: u32,
        /// Seconds a new instance needs before it counts in scaling metrics.
        #[arg(long)]
        default_instance_warmup: Option<u32>,
        /// Protect the instances it launches from scale-in.
        #[arg(long)]
        new_instances_protected_from_scale_in: bool,
    },
    /// Changes a group: what is given replaces the group's.
    UpdateAutoScalingGroup {
        /// The group.
        #[arg(long)]
        auto_scaling_group_name: String,
        /// A new launch template version for instances launched from now on.
        #[arg(long, value_parser = parse_specification)]
        launch_template: Option<LaunchTemplateSpecification>,
        /// The min size.
        #[arg(long)]
        min_size: Option<u32>,
        /// The max size.
        #[arg(long)]
        max_size: Option<u32>,
        /// The desired capacity.
        #[arg(long)]
        desired_capacity: Option<u32>,
        /// Subnets, comma-separated.
        #[arg(long)]
        vpc_zone_identifier: Option<String>,
        /// EC2 or ELB.
        #[arg(long)]
        health_check_type: Option<String>,
        /// Seconds after launch before ELB health counts.
        #[arg(long)]
        health_check_grace_period: Option<u32>,
        /// Seconds a new instance needs before it counts in scaling metrics.
        #[arg(long)]
        default_instance_warmup: Option<u32>,
        /// Protect the instances it launches from now on from scale-in (true or false).
        #[arg(long)]
        new_instances_protected_from_scale_in: Option<bool>,
    },
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
    let text = text_or_file(text)?;
    let t: Tracking = serde_json::from_slice(&text).context("--target-tracking-configuration")?;
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
                    vec![a.start_time.to_string(), status, a.description, a.cause]
                })
                .collect(),
        ),
    }
}

/// Runs `command` against the daemon on `channel`.
pub async fn run(command: AutoScaling, channel: Channel, format: Format) -> anyhow::Result<()> {
    let mut client = AutoScalingClient::new(channel);
    match command {
        AutoScaling::CreateAutoScalingGroup {
            auto_scaling_group_name,
            launch_template,
            min_size,
            max_size,
            desired_capacity,
            vpc_zone_identifier,
            target_group_arns,
            health_check_type,
            health_check_grace_period,
            default_instance_warmup,
            new_instances_protected_from_scale_in,
        } => {
            let request = CreateAutoScalingGroupRequest {
                auto_scaling_group_name,
                launch_template: Some(launch_template),
                min_size,
                max_size,
                desired_capacity,
                vpc_zone_identifier,
                target_group_arns,
                health_check_type,
                health_check_grace_period,
                default_instance_warmup,
                new_instances_protected_from_scale_in,
            };
            print_groups(format, vec![client.create_auto_scaling_group(request).await?.into_inner()]);
        }
        AutoScaling::UpdateAutoScalingGroup {
            auto_scaling_group_name,
            launch_template,
            min_size,
            max_size,
            desired_capacity,
            vpc_zone_identifier,
            health_check_type,
            health_check_grace_period,
            default_instance_warmup,
            new_instances_protected_from_scale_in,
        } => {
            let request = UpdateAutoScalingGroupRequest {
                auto_scaling_group_name,
                launch_template,
                min_size,
                max_size,
                desired_capacity,
                vpc_zone_identifier,
                health_check_type,
                health_check_grace_period,
                default_instance_warmup,
                new_instances_protected_from_scale_in,
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
    }
    Ok(())
}
