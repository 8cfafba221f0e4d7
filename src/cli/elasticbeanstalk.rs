//! `nuage elasticbeanstalk ...`: applications and their versions, named and shaped as `aws
//! elasticbeanstalk`'s. A version's source bundle is a local tar.gz or zip the CLI reads
//! and sends (`--source-bundle file://app.tar.gz`): the daemon keeps its own copy.

use clap::Subcommand;
use tonic::transport::Channel;

use super::output::{json, table, Format};
use super::text_or_file;
use crate::api::pb::environments_client::EnvironmentsClient;
use crate::api::pb::{
    ApplicationDescription, ApplicationVersionDescription, CreateApplicationRequest,
    CreateApplicationVersionRequest, DeleteApplicationRequest, DeleteApplicationVersionRequest,
    DescribeApplicationVersionsRequest, DescribeApplicationsRequest,
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
    }
    Ok(())
}
