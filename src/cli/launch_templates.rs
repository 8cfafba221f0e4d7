//! The launch template commands, named and shaped as `aws ec2`'s: `--launch-template-data`
//! is the JSON the aws CLI takes (text or file://PATH), user data base64 within it.

use anyhow::Context;
use clap::Subcommand;
use serde::Deserialize;
use tonic::transport::Channel;

use super::output::{json, table, Format};
use super::{text_or_file, GIB};
use crate::api::pb::launch_templates_client::LaunchTemplatesClient;
use crate::api::pb::{
    CreateLaunchTemplateRequest, CreateLaunchTemplateVersionRequest, DeleteLaunchTemplateRequest,
    DescribeLaunchTemplateVersionsRequest, DescribeLaunchTemplatesRequest, LaunchTemplate,
    LaunchTemplateSpecification, LaunchTemplateVersion, LaunchVolume, MetadataOptions,
    ModifyLaunchTemplateRequest, RequestLaunchTemplateData, Tag, TagSpecification,
};

/// A template named by id or by name, as each command takes it.
#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    /// The template's id (lt-…).
    #[arg(long, default_value = "")]
    launch_template_id: String,
    /// Or its name.
    #[arg(long, default_value = "")]
    launch_template_name: String,
}

/// Launch template commands (`aws ec2 …-launch-template…`).
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Makes a launch template; its version 1 is the default.
    CreateLaunchTemplate {
        /// 3 to 128 letters, digits and ( ) . / _ -.
        #[arg(long)]
        launch_template_name: String,
        /// Version 1's description.
        #[arg(long, default_value = "")]
        version_description: String,
        /// The aws CLI's JSON: ImageId, InstanceType, KeyName, SubnetId (or
        /// NetworkInterfaces[0].SubnetId and .Groups), SecurityGroupIds, UserData (base64),
        /// BlockDeviceMappings[].Ebs.{VolumeSize,SnapshotId,DeleteOnTermination},
        /// MetadataOptions, TagSpecifications. Text or file://PATH.
        #[arg(long)]
        launch_template_data: String,
    },
    /// Adds the next version of a template (earlier versions never change).
    CreateLaunchTemplateVersion {
        #[command(flatten)]
        template: TemplateArgs,
        /// Start from this version's data (a number, $Latest or $Default).
        #[arg(long, default_value = "")]
        source_version: String,
        /// What the version is.
        #[arg(long, default_value = "")]
        version_description: String,
        /// As for create-launch-template (with --source-version: only what changes).
        #[arg(long)]
        launch_template_data: String,
    },
    /// Chooses a template's default version.
    ModifyLaunchTemplate {
        #[command(flatten)]
        template: TemplateArgs,
        /// A number or $Latest.
        #[arg(long)]
        default_version: String,
    },
    /// Lists launch templates.
    DescribeLaunchTemplates {
        /// Only these.
        #[arg(long, num_args = 1..)]
        launch_template_ids: Vec<String>,
        /// Only these names.
        #[arg(long, num_args = 1..)]
        launch_template_names: Vec<String>,
    },
    /// Lists a template's versions.
    DescribeLaunchTemplateVersions {
        #[command(flatten)]
        template: TemplateArgs,
        /// Only these (numbers, $Latest, $Default).
        #[arg(long, num_args = 1..)]
        versions: Vec<String>,
    },
    /// Deletes a template and all its versions.
    DeleteLaunchTemplate {
        #[command(flatten)]
        template: TemplateArgs,
    },
}

/// `--launch-template-data` as the aws CLI writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TemplateData {
    #[serde(default)]
    image_id: String,
    #[serde(default)]
    instance_type: String,
    #[serde(default)]
    key_name: String,
    #[serde(default)]
    subnet_id: String,
    #[serde(default)]
    network_interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    security_group_ids: Vec<String>,
    #[serde(default)]
    user_data: String,
    #[serde(default)]
    block_device_mappings: Vec<BlockDeviceMapping>,
    #[serde(default)]
    metadata_options: Option<Metadata>,
    #[serde(default)]
    tag_specifications: Vec<TagSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NetworkInterface {
    #[serde(default)]
    device_index: u32,
    #[serde(default)]
    subnet_id: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlockDeviceMapping {
    ebs: Ebs,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Ebs {
    #[serde(default)]
    volume_size: u64,
    #[serde(default)]
    snapshot_id: String,
    #[serde(default = "yes")]
    delete_on_termination: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Metadata {
    #[serde(default)]
    http_tokens: String,
    #[serde(default)]
    http_endpoint: String,
    #[serde(default)]
    http_put_response_hop_limit: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TagSpec {
    resource_type: String,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

/// Reads `--launch-template-data` (text or file://PATH).
fn template_data(text: &str) -> anyhow::Result<RequestLaunchTemplateData> {
    let text = text_or_file(text)?;
    let data: TemplateData = serde_json::from_slice(&text).context("--launch-template-data")?;
    let user_data = <base64ct::Base64 as base64ct::Encoding>::decode_vec(data.user_data.trim())
        .map_err(|e| anyhow::anyhow!("UserData is not base64: {e}"))?;
    let first = data.network_interfaces.into_iter().find(|n| n.device_index == 0);
    let (subnet_id, groups) = match first {
        Some(interface) => (interface.subnet_id, interface.groups),
        None => (String::new(), Vec::new()),
    };
    let volumes = data
        .block_device_mappings
        .into_iter()
        .map(|m| {
            Ok(LaunchVolume {
                size_bytes: m.ebs.volume_size.checked_mul(GIB).context("VolumeSize is too large")?,
                snapshot_id: m.ebs.snapshot_id,
                keep_on_termination: !m.ebs.delete_on_termination,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(RequestLaunchTemplateData {
        image_id: data.image_id,
        instance_type: data.instance_type,
        key_name: data.key_name,
        subnet_id: if data.subnet_id.is_empty() { subnet_id } else { data.subnet_id },
        user_data,
        volumes,
        security_group_ids: if data.security_group_ids.is_empty() { groups } else { data.security_group_ids },
        metadata_options: data.metadata_options.map(|m| MetadataOptions {
            http_tokens: m.http_tokens,
            http_endpoint: m.http_endpoint,
            http_put_response_hop_limit: m.http_put_response_hop_limit,
        }),
        tag_specifications: data
            .tag_specifications
            .into_iter()
            .map(|t| TagSpecification {
                resource_type: t.resource_type,
                tags: t.tags.into_iter().map(|kv| Tag { key: kv.key, value: kv.value }).collect(),
            })
            .collect(),
    })
}

/// Parses `--launch-template LaunchTemplateId=lt-…,Version=N` (or LaunchTemplateName=).
pub fn parse_specification(text: &str) -> Result<LaunchTemplateSpecification, String> {
    let mut spec = LaunchTemplateSpecification::default();
    for item in text.split(',') {
        let bad =
            || format!("{item:?}: expected LaunchTemplateId=ID or LaunchTemplateName=NAME, and Version=V");
        match item.split_once('=').ok_or_else(bad)? {
            ("LaunchTemplateId", id) => id.clone_into(&mut spec.launch_template_id),
            ("LaunchTemplateName", name) => name.clone_into(&mut spec.launch_template_name),
            ("Version", version) => version.clone_into(&mut spec.version),
            _ => return Err(bad()),
        }
    }
    Ok(spec)
}

fn print_templates(format: Format, templates: Vec<LaunchTemplate>) {
    match format {
        Format::Json => json("LaunchTemplates", templates),
        Format::Table => table(
            &["ID", "NAME", "DEFAULT", "LATEST"],
            templates
                .into_iter()
                .map(|t| {
                    vec![
                        t.launch_template_id,
                        t.launch_template_name,
                        t.default_version_number.to_string(),
                        t.latest_version_number.to_string(),
                    ]
                })
                .collect(),
        ),
    }
}

fn print_versions(format: Format, versions: Vec<LaunchTemplateVersion>) {
    match format {
        Format::Json => json("LaunchTemplateVersions", versions),
        Format::Table => table(
            &["TEMPLATE", "VERSION", "DEFAULT", "IMAGE", "TYPE", "DESCRIPTION"],
            versions
                .into_iter()
                .map(|v| {
                    let data = v.launch_template_data.unwrap_or_default();
                    vec![
                        v.launch_template_id,
                        v.version_number.to_string(),
                        v.default_version.to_string(),
                        data.image_id,
                        data.instance_type,
                        v.version_description,
                    ]
                })
                .collect(),
        ),
    }
}

/// Runs `command` against the daemon on `channel`.
pub async fn run(command: TemplateCommand, channel: Channel, format: Format) -> anyhow::Result<()> {
    let mut client = LaunchTemplatesClient::new(channel);
    match command {
        TemplateCommand::CreateLaunchTemplate {
            launch_template_name,
            version_description,
            launch_template_data,
        } => {
            let request = CreateLaunchTemplateRequest {
                launch_template_name,
                version_description,
                launch_template_data: Some(template_data(&launch_template_data)?),
            };
            print_templates(format, vec![client.create_launch_template(request).await?.into_inner()]);
        }
        TemplateCommand::CreateLaunchTemplateVersion {
            template,
            source_version,
            version_description,
            launch_template_data,
        } => {
            let request = CreateLaunchTemplateVersionRequest {
                launch_template_id: template.launch_template_id,
                launch_template_name: template.launch_template_name,
                source_version,
                version_description,
                launch_template_data: Some(template_data(&launch_template_data)?),
            };
            print_versions(format, vec![client.create_launch_template_version(request).await?.into_inner()]);
        }
        TemplateCommand::ModifyLaunchTemplate { template, default_version } => {
            let request = ModifyLaunchTemplateRequest {
                launch_template_id: template.launch_template_id,
                launch_template_name: template.launch_template_name,
                default_version,
            };
            print_templates(format, vec![client.modify_launch_template(request).await?.into_inner()]);
        }
        TemplateCommand::DescribeLaunchTemplates { launch_template_ids, launch_template_names } => {
            let request = DescribeLaunchTemplatesRequest { launch_template_ids, launch_template_names };
            print_templates(
                format,
                client.describe_launch_templates(request).await?.into_inner().launch_templates,
            );
        }
        TemplateCommand::DescribeLaunchTemplateVersions { template, versions } => {
            let request = DescribeLaunchTemplateVersionsRequest {
                launch_template_id: template.launch_template_id,
                launch_template_name: template.launch_template_name,
                versions,
            };
            let found = client.describe_launch_template_versions(request).await?.into_inner();
            print_versions(format, found.launch_template_versions);
        }
        TemplateCommand::DeleteLaunchTemplate { template } => {
            let request = DeleteLaunchTemplateRequest {
                launch_template_id: template.launch_template_id,
                launch_template_name: template.launch_template_name,
            };
            print_templates(format, vec![client.delete_launch_template(request).await?.into_inner()]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_data_reads_as_the_aws_cli_writes_it() {
        let data = template_data(
            r#"{"ImageId":"ami-1","InstanceType":"t.nano","UserData":"aGk=",
                "NetworkInterfaces":[{"DeviceIndex":0,"SubnetId":"subnet-1","Groups":["sg-1"]}],
                "BlockDeviceMappings":[{"DeviceName":"/dev/vdb","Ebs":{"VolumeSize":2,"DeleteOnTermination":false}}],
                "MetadataOptions":{"HttpTokens":"optional"},
                "TagSpecifications":[{"ResourceType":"instance","Tags":[{"Key":"role","Value":"web"}]}]}"#,
        )
        .unwrap();
        assert_eq!((data.image_id.as_str(), data.subnet_id.as_str()), ("ami-1", "subnet-1"));
        assert_eq!(data.user_data, b"hi");
        assert_eq!(data.security_group_ids, ["sg-1"]);
        assert_eq!(data.volumes[0].size_bytes, 2 * GIB);
        assert!(data.volumes[0].keep_on_termination);
        assert_eq!(data.metadata_options.unwrap().http_tokens, "optional");
        assert_eq!(data.tag_specifications[0].tags[0].value, "web");
        assert!(template_data(r#"{"ImageID":"ami-1"}"#).is_err(), "an unknown key is refused");
        assert!(template_data(r#"{"UserData":"not base64!"}"#).is_err());
        let spec = parse_specification("LaunchTemplateName=web,Version=$Latest").unwrap();
        assert_eq!((spec.launch_template_name.as_str(), spec.version.as_str()), ("web", "$Latest"));
        assert!(parse_specification("Name=web").is_err());
    }
}
