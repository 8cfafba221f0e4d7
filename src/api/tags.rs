//! The Tags service, and what every other service shares of the resource model: tags in
//! and out of messages, tag specifications on create calls, filters and pages.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::tags_server;
use super::pb::{
    CreateTagsRequest, CreateTagsResponse, DeleteTagsRequest, DeleteTagsResponse, DescribeTagsRequest,
    DescribeTagsResponse, TagDescription, TagSpecification,
};
use crate::daemon::describe::{Filter, Page};
use crate::daemon::tags::{ResourceType, Tags};
use crate::daemon::{Daemon, DaemonError};
use crate::state::tag::{Tag, TagKey};

/// Serves the daemon's tags.
pub struct TagsService(pub Arc<Daemon>);

/// Tags as messages.
pub fn to_pb(tags: Vec<Tag>) -> Vec<super::pb::Tag> {
    tags.into_iter().map(|t| super::pb::Tag { key: t.key, value: t.value }).collect()
}

fn from_pb(tags: Vec<super::pb::Tag>) -> Vec<Tag> {
    tags.into_iter().map(|t| Tag { key: t.key, value: t.value }).collect()
}

/// Filters from a request.
pub fn filters(filters: Vec<super::pb::Filter>) -> Vec<Filter> {
    filters.into_iter().map(|f| Filter { name: f.name, values: f.values }).collect()
}

/// A page from a request's `max_results` and `next_token`.
pub fn page(max_results: u32, next_token: String) -> Page {
    Page { max_results, next_token }
}

/// The tags a create call's specifications give resources of kind `wanted`, checked;
/// a specification for a kind the call does not make (`makes`) is refused.
pub fn specified(
    specifications: Vec<TagSpecification>,
    makes: &[ResourceType],
    wanted: ResourceType,
) -> Result<Vec<Tag>, DaemonError> {
    let mut tags = Vec::new();
    for specification in specifications {
        let kind = ResourceType::named(&specification.resource_type)
            .filter(|kind| makes.contains(kind))
            .ok_or_else(|| {
                let names: Vec<&str> = makes.iter().map(|kind| kind.name()).collect();
                DaemonError::InvalidParameter(format!(
                    "tag specification for {:?}; this call makes {}",
                    specification.resource_type,
                    names.join(", ")
                ))
            })?;
        if kind == wanted {
            tags.extend(from_pb(specification.tags));
        }
    }
    Tags::check(&tags)?;
    Ok(tags)
}

/// Tags `id`, just made, with `tags` (if any) and returns them, for the reply.
pub fn tag_new(daemon: &Daemon, id: &str, tags: Vec<Tag>) -> Result<Vec<Tag>, DaemonError> {
    if !tags.is_empty() {
        daemon.tags.create(&[id.to_owned()], &tags)?;
    }
    Ok(tags)
}

#[tonic::async_trait]
impl tags_server::Tags for TagsService {
    async fn create_tags(
        &self,
        request: Request<CreateTagsRequest>,
    ) -> Result<Response<CreateTagsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        blocking(move || daemon.tags.create(&r.resources, &from_pb(r.tags))).await?;
        Ok(Response::new(CreateTagsResponse {}))
    }

    async fn delete_tags(
        &self,
        request: Request<DeleteTagsRequest>,
    ) -> Result<Response<DeleteTagsResponse>, Status> {
        let r = request.into_inner();
        let keys: Vec<TagKey> = r.tags.into_iter().map(|t| TagKey { key: t.key, value: t.value }).collect();
        let daemon = self.0.clone();
        blocking(move || daemon.tags.delete(&r.resources, &keys)).await?;
        Ok(Response::new(DeleteTagsResponse {}))
    }

    async fn describe_tags(
        &self,
        request: Request<DescribeTagsRequest>,
    ) -> Result<Response<DescribeTagsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let listing =
            blocking(move || daemon.tags.describe(&filters(r.filters), &page(r.max_results, r.next_token)))
                .await?;
        let tags = listing
            .items
            .into_iter()
            .map(|item| TagDescription {
                resource_id: item.record.resource_id,
                resource_type: item.record.resource_type.name().to_owned(),
                key: item.record.tag.key,
                value: item.record.tag.value,
            })
            .collect();
        Ok(Response::new(DescribeTagsResponse { tags, next_token: listing.next_token }))
    }
}
