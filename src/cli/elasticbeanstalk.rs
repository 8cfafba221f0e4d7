//! `nuage elasticbeanstalk ...`: applications, their versions and environments, named and
//! shaped as `aws elasticbeanstalk`'s. A version's source bundle is a local tar.gz or zip
//! the CLI reads and sends (`--source-bundle file://app.tar.gz`): the daemon keeps its own
//! copy. Option settings take the aws CLI's shorthand,
//! `Namespace=aws:autoscaling:asg,OptionName=MinSize,Value=2`.

use clap::Subcommand;
use tonic::transport::Channel;

use super::elbv2::shorthand;
use super::output::{json, table, Format};
use super::text_or_file;
use crate::api::pb::environments_client::EnvironmentsClient;
use crate::api::pb::{
    ApplicationDescription, ApplicationVersionDescription, CreateApplicationRequest,
    CreateApplicationVersionRequest, CreateEnvironmentRequest, DeleteApplicationRequest,
    DeleteApplicationVersionRequest, DescribeApplicationVersionsRequest, DescribeApplicationsRequest,
    DescribeEnvironmentHealthRequest, DescribeEnvironmentsRequest, DescribeEventsRequest,
    EnvironmentDescription, OptionSetting, SwapEnvironmentCnamesRequest, TerminateEnvironmentRequest,
    UpdateEnvironmentRequest,
};

/// `aws elasticbeanstalk` commands.
#[derive(Debug, Subcommand)]
pub enum ElasticBeanstalk {
    /// Makes an application: a name its versions (and environments) share.
    CreateApplication {
        /// Its name.
        #[arg(long)]
        application_name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Lists applications.
    DescribeApplications {
        /// Only these.
        #[arg(long, num_args = 1..)]
        application_names: Vec<String>,
    },
    /// Deletes an application and its versions.
    DeleteApplication {
        /// The application.
        #[arg(long)]
        application_name: String,
    },
    /// Makes a version of an application from a source bundle.
    CreateApplicationVersion {
        /// The application.
        #[arg(long)]
        application_name: String,
        /// The version's label.
        #[arg(long)]
        version_label: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// The bundle: a tar.gz or zip, file://PATH (or a plain PATH).
        #[arg(long)]
        source_bundle: String,
    },
    /// Lists versions, newest first.
    DescribeApplicationVersions {
        /// Only this application's.
        #[arg(long, default_value = "")]
        application_name: String,
        /// Only these.
        #[arg(long, num_args = 1..)]
        version_labels: Vec<String>,
    },
    /// Deletes a version.
    DeleteApplicationVersion {
        /// The application.
        #[arg(long)]
        application_name: String,
        /// The version.
        #[arg(long)]
        version_label: String,
    },
    /// Makes an environment: a load balancer, target group, launch template and Auto
    /// Scaling group running a version, on a host port.
    CreateEnvironment {
        /// The application.
        #[arg(long)]
        application_name: String,
        /// The environment's name.
        #[arg(long)]
        environment_name: String,
        /// The version (default: the newest).
        #[arg(long, default_value = "")]
        version_label: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Namespace=…,OptionName=…,Value=… ...
        #[arg(long, num_args = 1.., value_parser = parse_option)]
        option_settings: Vec<OptionSetting>,
    },
    /// Lists environments.
    DescribeEnvironments {
        /// Only this application's.
        #[arg(long, default_value = "")]
        application_name: String,
        /// Only these.
        #[arg(long, num_args = 1..)]
        environment_names: Vec<String>,
        /// Terminated ones too.
        #[arg(long)]
        include_deleted: bool,
    },
    /// Deploys a version (and/or changes the deployment options).
    UpdateEnvironment {
        /// The environment.
        #[arg(long)]
        environment_name: String,
        /// The version to deploy.
        #[arg(long, default_value = "")]
        version_label: String,
        /// aws:elasticbeanstalk:command options: DeploymentPolicy, BatchSize, BatchSizeType.
        #[arg(long, num_args = 1.., value_parser = parse_option)]
        option_settings: Vec<OptionSetting>,
    },
    /// Swaps two environments' CNAMEs and host ports (blue/green).
    SwapEnvironmentCnames {
        /// One environment.
        #[arg(long)]
        source_environment_name: String,
        /// The other.
        #[arg(long)]
        destination_environment_name: String,
    },
    /// Removes an environment and everything it made.
    TerminateEnvironment {
        /// The environment.
        #[arg(long)]
        environment_name: String,
    },
    /// An environment's health colour and its causes.
    DescribeEnvironmentHealth {
        /// The environment.
        #[arg(long)]
        environment_name: String,
    },
    /// What happened, newest first.
    DescribeEvents {
        /// Only this application's.
        #[arg(long, default_value = "")]
        application_name: String,
        /// Only this environment's.
        #[arg(long, default_value = "")]
        environment_name: String,
        /// At most this many (default 100).
        #[arg(long, default_value_t = 0)]
        max_records: u32,
    },
}

fn parse_option(text: &str) -> Result<OptionSetting, String> {
    // A value may hold commas (a list of subnets): everything after `Value=` is the value.
    let (head, value) = text.split_once(",Value=").ok_or_else(|| format!("{text:?} has no Value="))?;
    let mut option = OptionSetting { value: value.to_owned(), ..OptionSetting::default() };
    for (key, found) in shorthand(head, &["Namespace", "OptionName"])? {
        match key {
            "Namespace" => option.namespace = found.to_owned(),
            _ => option.option_name = found.to_owned(),
        }
    }
    if option.namespace.is_empty() || option.option_name.is_empty() {
        return Err(format!("{text:?}: Namespace=…,OptionName=…,Value=…"));
    }
    Ok(option)
}

fn print_environments(format: Format, environments: Vec<EnvironmentDescription>) {
    match format {
        Format::Json => json("Environments", environments),
        Format::Table => table(
            &["NAME", "ID", "APPLICATION", "VERSION", "STATUS", "HEALTH", "ENDPOINT"],
            environments
                .into_iter()
                .map(|e| {
                    vec![
                        e.environment_name,
                        e.environment_id,
                        e.application_name,
                        e.version_label,
                        e.status,
                        e.health,
                        e.endpoint_url,
                    ]
                })
                .collect(),
        ),
    }
}

fn print_applications(format: Format, applications: Vec<ApplicationDescription>) {
    match format {
        Format::Json => json("Applications", applications),
        Format::Table => table(
            &["NAME", "VERSIONS", "DESCRIPTION"],
            applications
                .into_iter()
                .map(|a| vec![a.application_name, a.versions.join(","), a.description])
                .collect(),
        ),
    }
}

fn print_versions(format: Format, versions: Vec<ApplicationVersionDescription>) {
    match format {
        Format::Json => json("ApplicationVersions", versions),
        Format::Table => table(
            &["APPLICATION", "LABEL", "BUNDLE", "SIZE", "SHA256"],
            versions
                .into_iter()
                .map(|v| {
                    vec![
                        v.application_name,
                        v.version_label,
                        v.source_bundle_format,
                        v.source_bundle_size.to_string(),
                        v.source_bundle_sha256,
                    ]
                })
                .collect(),
        ),
    }
}

/// Runs `command` against the daemon on `channel`.
pub async fn run(command: ElasticBeanstalk, channel: Channel, format: Format) -> anyhow::Result<()> {
    let mut client = EnvironmentsClient::new(channel).max_encoding_message_size(usize::MAX);
    match command {
        ElasticBeanstalk::CreateApplication { application_name, description } => {
            let request = CreateApplicationRequest { application_name, description };
            print_applications(format, vec![client.create_application(request).await?.into_inner()]);
        }
        ElasticBeanstalk::DescribeApplications { application_names } => {
            let request = DescribeApplicationsRequest { application_names };
            print_applications(
                format,
                client.describe_applications(request).await?.into_inner().applications,
            );
        }
        ElasticBeanstalk::DeleteApplication { application_name } => {
            client.delete_application(DeleteApplicationRequest { application_name }).await?;
        }
        ElasticBeanstalk::CreateApplicationVersion {
            application_name,
            version_label,
            description,
            source_bundle,
        } => {
            let path =
                if source_bundle.contains("://") { source_bundle } else { format!("file://{source_bundle}") };
            let source_bundle = text_or_file(&path)?;
            let request = CreateApplicationVersionRequest {
                application_name,
                version_label,
                description,
                source_bundle,
            };
            print_versions(format, vec![client.create_application_version(request).await?.into_inner()]);
        }
        ElasticBeanstalk::DescribeApplicationVersions { application_name, version_labels } => {
            let request = DescribeApplicationVersionsRequest { application_name, version_labels };
            let versions =
                client.describe_application_versions(request).await?.into_inner().application_versions;
            print_versions(format, versions);
        }
        ElasticBeanstalk::DeleteApplicationVersion { application_name, version_label } => {
            let request = DeleteApplicationVersionRequest { application_name, version_label };
            client.delete_application_version(request).await?;
        }
        ElasticBeanstalk::CreateEnvironment {
            application_name,
            environment_name,
            version_label,
            description,
            option_settings,
        } => {
            let request = CreateEnvironmentRequest {
                application_name,
                environment_name,
                version_label,
                description,
                option_settings,
            };
            print_environments(format, vec![client.create_environment(request).await?.into_inner()]);
        }
        ElasticBeanstalk::DescribeEnvironments { application_name, environment_names, include_deleted } => {
            let request =
                DescribeEnvironmentsRequest { application_name, environment_names, include_deleted };
            print_environments(
                format,
                client.describe_environments(request).await?.into_inner().environments,
            );
        }
        ElasticBeanstalk::UpdateEnvironment { environment_name, version_label, option_settings } => {
            let request = UpdateEnvironmentRequest { environment_name, version_label, option_settings };
            print_environments(format, vec![client.update_environment(request).await?.into_inner()]);
        }
        ElasticBeanstalk::SwapEnvironmentCnames { source_environment_name, destination_environment_name } => {
            let request =
                SwapEnvironmentCnamesRequest { source_environment_name, destination_environment_name };
            client.swap_environment_cnames(request).await?;
        }
        ElasticBeanstalk::TerminateEnvironment { environment_name } => {
            let request = TerminateEnvironmentRequest { environment_name };
            print_environments(format, vec![client.terminate_environment(request).await?.into_inner()]);
        }
        ElasticBeanstalk::DescribeEnvironmentHealth { environment_name } => {
            let request = DescribeEnvironmentHealthRequest { environment_name };
            let health = client.describe_environment_health(request).await?.into_inner();
            match format {
                Format::Json => json("EnvironmentHealth", health),
                Format::Table => table(
                    &["NAME", "STATUS", "COLOR", "HEALTHY", "CAUSES"],
                    vec![vec![
                        health.environment_name,
                        health.status,
                        health.color,
                        format!("{}/{}", health.healthy_instances, health.instances),
                        health.causes.join(" "),
                    ]],
                ),
            }
        }
        ElasticBeanstalk::DescribeEvents { application_name, environment_name, max_records } => {
            let request = DescribeEventsRequest { application_name, environment_name, max_records };
            let events = client.describe_events(request).await?.into_inner().events;
            match format {
                Format::Json => json("Events", events),
                Format::Table => table(
                    &["DATE", "ENVIRONMENT", "SEVERITY", "MESSAGE"],
                    events
                        .into_iter()
                        .map(|e| {
                            let date =
                                crate::state::clock::format_utc(u64::try_from(e.event_date).unwrap_or(0));
                            vec![date, e.environment_name, e.severity, e.message]
                        })
                        .collect(),
                ),
            }
        }
    }
    Ok(())
}
