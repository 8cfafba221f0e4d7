//! The Subnets service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::subnets_server::Subnets;
use super::pb::{
    CreateSubnetRequest, DeleteSubnetRequest, DeleteSubnetResponse, DescribeSubnetsRequest,
    DescribeSubnetsResponse, Subnet,
};
use super::{blocking, tags};
use crate::daemon::network::SubnetUse;
use crate::daemon::tags::ResourceType;
use crate::daemon::{Daemon, DaemonError};
use crate::state::tag::Tag;

/// Serves the daemon's subnets.
pub struct SubnetsService(pub Arc<Daemon>);

fn subnet(SubnetUse { subnet: s, leased }: SubnetUse, tags: Vec<Tag>) -> Subnet {
    Subnet {
        subnet_id: s.id,
        cidr_block: s.cidr.to_string(),
        gateway: s.gateway.to_string(),
        bridge: s.bridge,
        leased_addresses: u32::try_from(leased).unwrap_or(u32::MAX),
        tags: tags::to_pb(tags),
    }
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, DaemonError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| DaemonError::InvalidParameter(format!("{what} {text:?}: {e}")))
}

#[tonic::async_trait]
impl Subnets for SubnetsService {
    async fn create_subnet(&self, request: Request<CreateSubnetRequest>) -> Result<Response<Subnet>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let created = blocking(move || {
            let cidr = parse("CIDR", &r.cidr_block)?;
            let gateway = if r.gateway.is_empty() { None } else { Some(parse("gateway", &r.gateway)?) };
            let tags = tags::specified(r.tag_specifications, &[ResourceType::Subnet], ResourceType::Subnet)?;
            let created = daemon.network.create_subnet(cidr, gateway)?;
            let tags = tags::tag_new(&daemon, &created.subnet.id, tags)?;
            Ok(subnet(created, tags))
        })
        .await?;
        Ok(Response::new(created))
    }

    async fn describe_subnets(
        &self,
        request: Request<DescribeSubnetsRequest>,
    ) -> Result<Response<DescribeSubnetsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let listing = blocking(move || {
            let records = daemon.network.describe_subnets()?;
            daemon.tags.list(records, &tags::filters(r.filters), &tags::page(r.max_results, r.next_token))
        })
        .await?;
        Ok(Response::new(DescribeSubnetsResponse {
            subnets: listing.items.into_iter().map(|item| subnet(item.record, item.tags)).collect(),
            next_token: listing.next_token,
        }))
    }

    async fn delete_subnet(
        &self,
        request: Request<DeleteSubnetRequest>,
    ) -> Result<Response<DeleteSubnetResponse>, Status> {
        let id = request.into_inner().subnet_id;
        let daemon = self.0.clone();
        blocking(move || daemon.network.delete_subnet(&id)).await?;
        Ok(Response::new(DeleteSubnetResponse {}))
    }
}
