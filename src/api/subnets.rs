//! The Subnets service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::subnets_server::Subnets;
use super::pb::{
    CreateSubnetRequest, DeleteSubnetRequest, DeleteSubnetResponse, DescribeSubnetsRequest,
    DescribeSubnetsResponse, Subnet,
};
use super::resources::{self, Query};
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
        tags: resources::to_pb(tags),
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
        let CreateSubnetRequest { cidr_block, gateway, tag_specifications } = request.into_inner();
        let make = move |daemon: &Daemon| {
            let cidr = parse("CIDR", &cidr_block)?;
            let gateway = if gateway.is_empty() { None } else { Some(parse("gateway", &gateway)?) };
            daemon.network.create_subnet(cidr, gateway)
        };
        resources::create(self.0.clone(), tag_specifications, ResourceType::Subnet, make, subnet).await
    }

    async fn describe_subnets(
        &self,
        request: Request<DescribeSubnetsRequest>,
    ) -> Result<Response<DescribeSubnetsResponse>, Status> {
        let DescribeSubnetsRequest { filters, max_results, next_token } = request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = |daemon: &Daemon| daemon.network.describe_subnets();
        let (subnets, next_token) = resources::describe(self.0.clone(), query, find, subnet).await?;
        Ok(Response::new(DescribeSubnetsResponse { subnets, next_token }))
    }

    async fn delete_subnet(
        &self,
        request: Request<DeleteSubnetRequest>,
    ) -> Result<Response<DeleteSubnetResponse>, Status> {
        let id = request.into_inner().subnet_id;
        resources::done(self.0.clone(), move |daemon| daemon.network.delete_subnet(&id)).await
    }
}
