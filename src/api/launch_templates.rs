//! The LaunchTemplates service, and the launch parameters RunInstances and templates share.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::instances::metadata_change;
use super::pb::launch_templates_server::LaunchTemplates;
use super::pb::{
    self, CreateLaunchTemplateRequest, CreateLaunchTemplateVersionRequest, DeleteLaunchTemplateRequest,
    DescribeLaunchTemplateVersionsRequest, DescribeLaunchTemplateVersionsResponse,
    DescribeLaunchTemplatesRequest, DescribeLaunchTemplatesResponse, LaunchVolume as PbLaunchVolume,
    ModifyLaunchTemplateRequest, RequestLaunchTemplateData, TagSpecification,
};
use super::resources;
use crate::daemon::instances::LaunchVolume;
use crate::daemon::tags::ResourceType;
use crate::daemon::templates::{LaunchTemplate, LaunchTemplateData, TemplateVersion, VersionSpec, Which};
use crate::daemon::{Daemon, DaemonError};
use crate::state::instance::{HttpTokens, MetadataOptions};

/// Serves the daemon's launch templates.
pub struct LaunchTemplatesService(pub Arc<Daemon>);

/// Launch parameters as the daemon keeps them, checked where a message can be wrong.
pub(super) fn launch_data(data: RequestLaunchTemplateData) -> Result<LaunchTemplateData, DaemonError> {
    let made = [ResourceType::Instance, ResourceType::Volume];
    Ok(LaunchTemplateData {
        volume_tags: resources::specified(data.tag_specifications.clone(), &made, ResourceType::Volume)?,
        instance_tags: resources::specified(data.tag_specifications, &made, ResourceType::Instance)?,
        image_id: data.image_id,
        instance_type: data.instance_type,
        key_name: data.key_name,
        subnet_id: data.subnet_id,
        user_data: data.user_data,
        volumes: data
            .volumes
            .into_iter()
            .map(|v| LaunchVolume {
                size: (v.size_bytes > 0).then_some(v.size_bytes),
                snapshot_id: (!v.snapshot_id.is_empty()).then_some(v.snapshot_id),
                keep_on_termination: v.keep_on_termination,
            })
            .collect(),
        security_group_ids: data.security_group_ids,
        metadata_options: metadata_change(data.metadata_options)?,
        bundle: None,
    })
}

/// The parameters as a message (a field the version leaves open stays empty).
fn request_data(data: LaunchTemplateData) -> RequestLaunchTemplateData {
    let mut tag_specifications = Vec::new();
    for (kind, tags) in
        [(ResourceType::Instance, data.instance_tags), (ResourceType::Volume, data.volume_tags)]
    {
        if !tags.is_empty() {
            tag_specifications
                .push(TagSpecification { resource_type: kind.name().into(), tags: resources::to_pb(tags) });
        }
    }
    let options = data.metadata_options;
    let metadata_options = (options != Default::default()).then(|| pb::MetadataOptions {
        http_tokens: options.http_tokens.map(HttpTokens::as_str).unwrap_or_default().into(),
        http_endpoint: options
            .http_endpoint
            .map(|on| MetadataOptions { http_endpoint: on, ..MetadataOptions::default() }.endpoint_str())
            .unwrap_or_default()
            .into(),
        http_put_response_hop_limit: options.hop_limit.map_or(0, u32::from),
    });
    RequestLaunchTemplateData {
        image_id: data.image_id,
        instance_type: data.instance_type,
        key_name: data.key_name,
        subnet_id: data.subnet_id,
        user_data: data.user_data,
        volumes: data
            .volumes
            .into_iter()
            .map(|v| PbLaunchVolume {
                size_bytes: v.size.unwrap_or(0),
                snapshot_id: v.snapshot_id.unwrap_or_default(),
                keep_on_termination: v.keep_on_termination,
            })
            .collect(),
        security_group_ids: data.security_group_ids,
        metadata_options,
        tag_specifications,
    }
}

fn seconds(time: u64) -> i64 {
    i64::try_from(time).unwrap_or(i64::MAX)
}

fn template(t: &LaunchTemplate) -> pb::LaunchTemplate {
    pb::LaunchTemplate {
        launch_template_id: t.id.clone(),
        launch_template_name: t.name.clone(),
        create_time: seconds(t.created),
        default_version_number: t.default_version,
        latest_version_number: t.latest_version(),
    }
}

fn version(t: &LaunchTemplate, v: TemplateVersion) -> pb::LaunchTemplateVersion {
    pb::LaunchTemplateVersion {
        launch_template_id: t.id.clone(),
        launch_template_name: t.name.clone(),
        version_number: v.number,
        version_description: v.description,
        default_version: v.number == t.default_version,
        create_time: seconds(v.created),
        launch_template_data: Some(request_data(v.data)),
    }
}

#[tonic::async_trait]
impl LaunchTemplates for LaunchTemplatesService {
    async fn create_launch_template(
        &self,
        request: Request<CreateLaunchTemplateRequest>,
    ) -> Result<Response<pb::LaunchTemplate>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let made = blocking(move || {
            let data = launch_data(r.launch_template_data.unwrap_or_default())?;
            daemon.templates.create(&r.launch_template_name, &r.version_description, data)
        })
        .await?;
        Ok(Response::new(template(&made)))
    }

    async fn create_launch_template_version(
        &self,
        request: Request<CreateLaunchTemplateVersionRequest>,
    ) -> Result<Response<pb::LaunchTemplateVersion>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let (made, new) = blocking(move || {
            let which = Which::new(&r.launch_template_id, &r.launch_template_name)?;
            let source = match r.source_version.as_str() {
                "" => None,
                text => Some(text.parse::<VersionSpec>()?),
            };
            let data = launch_data(r.launch_template_data.unwrap_or_default())?;
            daemon.templates.create_version(&which, source, &r.version_description, data)
        })
        .await?;
        Ok(Response::new(version(&made, new)))
    }

    async fn modify_launch_template(
        &self,
        request: Request<ModifyLaunchTemplateRequest>,
    ) -> Result<Response<pb::LaunchTemplate>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let changed = blocking(move || {
            let which = Which::new(&r.launch_template_id, &r.launch_template_name)?;
            if r.default_version.is_empty() || r.default_version == "$Default" {
                return Err(DaemonError::InvalidParameter(
                    "give the default version: a number or $Latest".into(),
                ));
            }
            daemon.templates.set_default_version(&which, r.default_version.parse()?)
        })
        .await?;
        Ok(Response::new(template(&changed)))
    }

    async fn describe_launch_templates(
        &self,
        request: Request<DescribeLaunchTemplatesRequest>,
    ) -> Result<Response<DescribeLaunchTemplatesResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let launch_templates = blocking(move || {
            let named = r
                .launch_template_ids
                .into_iter()
                .map(Which::Id)
                .chain(r.launch_template_names.into_iter().map(Which::Name))
                .collect::<Vec<_>>();
            if named.is_empty() {
                return Ok(daemon.templates.list()?.iter().map(template).collect());
            }
            named.iter().map(|which| Ok(template(&daemon.templates.get(which)?))).collect()
        })
        .await?;
        Ok(Response::new(DescribeLaunchTemplatesResponse { launch_templates }))
    }

    async fn describe_launch_template_versions(
        &self,
        request: Request<DescribeLaunchTemplateVersionsRequest>,
    ) -> Result<Response<DescribeLaunchTemplateVersionsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let launch_template_versions = blocking(move || {
            let which = Which::new(&r.launch_template_id, &r.launch_template_name)?;
            let found = daemon.templates.get(&which)?;
            if r.versions.is_empty() {
                return Ok(found.versions.iter().map(|v| version(&found, v.clone())).collect());
            }
            r.versions
                .iter()
                .map(|text| Ok(version(&found, found.version(text.parse()?)?.clone())))
                .collect::<Result<Vec<_>, DaemonError>>()
        })
        .await?;
        Ok(Response::new(DescribeLaunchTemplateVersionsResponse { launch_template_versions }))
    }

    async fn delete_launch_template(
        &self,
        request: Request<DeleteLaunchTemplateRequest>,
    ) -> Result<Response<pb::LaunchTemplate>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let deleted = blocking(move || {
            let which = Which::new(&r.launch_template_id, &r.launch_template_name)?;
            daemon.templates.delete(&which)
        })
        .await?;
        Ok(Response::new(template(&deleted)))
    }
}
