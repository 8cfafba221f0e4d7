//! What every service shares of the resource model (`resources.proto`): the Tags service;
//! describe calls (filters, tags and a page over what a daemon service finds), create
//! calls (tag specifications checked first, the new resource tagged) and calls that
//! change one resource (shown with its tags).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::tags_server;
use super::pb::{
    CreateTagsRequest, CreateTagsResponse, DeleteTagsRequest, DeleteTagsResponse, DescribeTagsRequest,
    DescribeTagsResponse, TagDescription, TagSpecification,
};
use crate::daemon::describe::{Describable, Filter, Page};
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

/// What a describe call asks for besides ids: filters and a page.
pub struct Query {
    filters: Vec<Filter>,
    page: Page,
}

impl Query {
    /// The query of a request's `filters`, `max_results` and `next_token`.
    pub fn new(filters: Vec<super::pb::Filter>, max_results: u32, next_token: String) -> Self {
        let filters = filters.into_iter().map(|f| Filter { name: f.name, values: f.values }).collect();
        Self { filters, page: Page { max_results, next_token } }
    }
}

/// A describe call: the records `find` returns (all, or those named), filtered, tagged and
/// cut to a page, each shown by `show`; with the next page's token.
pub async fn describe<T, M>(
    daemon: Arc<Daemon>,
    query: Query,
    find: impl FnOnce(&Daemon) -> Result<Vec<T>, DaemonError> + Send + 'static,
    show: fn(T, Vec<Tag>) -> M,
) -> Result<(Vec<M>, String), Status>
where
    T: Describable + Send + 'static,
    M: Send + 'static,
{
    blocking(move || {
        let listing = daemon.tags.list(find(&daemon)?, &query.filters, &query.page)?;
        let shown = listing.items.into_iter().map(|item| show(item.record, item.tags)).collect();
        Ok((shown, listing.next_token))
    })
    .await
}

/// A create call: its tag specifications are checked before `make` makes a resource of
/// kind `kind`, which is then tagged and shown by `show`.
pub async fn create<T, M>(
    daemon: Arc<Daemon>,
    specifications: Vec<TagSpecification>,
    kind: ResourceType,
    make: impl FnOnce(&Daemon) -> Result<T, DaemonError> + Send + 'static,
    show: fn(T, Vec<Tag>) -> M,
) -> Result<Response<M>, Status>
where
    T: Describable + Send + 'static,
    M: Send + 'static,
{
    let made = blocking(move || {
        let tags = specified(specifications, &[kind], kind)?;
        let made = make(&daemon)?;
        let tags = tag_new(&daemon, made.id(), tags)?;
        Ok(show(made, tags))
    })
    .await?;
    Ok(Response::new(made))
}

/// A call that changes one resource: `change` does it, and the resource is shown by
/// `show` as it then is, with its tags.
pub async fn changed<T, M>(
    daemon: Arc<Daemon>,
    change: impl FnOnce(&Daemon) -> Result<T, DaemonError> + Send + 'static,
    show: fn(T, Vec<Tag>) -> M,
) -> Result<Response<M>, Status>
where
    T: Describable + Send + 'static,
    M: Send + 'static,
{
    let changed = blocking(move || {
        let record = change(&daemon)?;
        let tags = daemon.tags.of(record.id())?;
        Ok(show(record, tags))
    })
    .await?;
    Ok(Response::new(changed))
}

/// A call that only acts (deletes, releases, tags): `act` does it; the reply is empty.
pub async fn done<R: Default>(
    daemon: Arc<Daemon>,
    act: impl FnOnce(&Daemon) -> Result<(), DaemonError> + Send + 'static,
) -> Result<Response<R>, Status> {
    blocking(move || act(&daemon)).await?;
    Ok(Response::new(R::default()))
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
        done(self.0.clone(), move |daemon| daemon.tags.create(&r.resources, &from_pb(r.tags))).await
    }

    async fn delete_tags(
        &self,
        request: Request<DeleteTagsRequest>,
    ) -> Result<Response<DeleteTagsResponse>, Status> {
        let r = request.into_inner();
        let keys: Vec<TagKey> = r.tags.into_iter().map(|t| TagKey { key: t.key, value: t.value }).collect();
        done(self.0.clone(), move |daemon| daemon.tags.delete(&r.resources, &keys)).await
    }

    async fn describe_tags(
        &self,
        request: Request<DescribeTagsRequest>,
    ) -> Result<Response<DescribeTagsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let Query { filters, page } = Query::new(r.filters, r.max_results, r.next_token);
        let listing = blocking(move || daemon.tags.describe(&filters, &page)).await?;
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
