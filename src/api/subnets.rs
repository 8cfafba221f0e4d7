//! The Subnets service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::subnets_server::Subnets;
use super::pb::{
    CreateSubnetRequest, DeleteSubnetRequest, DeleteSubnetResponse, DescribeSubnetsRequest,
    DescribeSubnetsResponse, Subnet,
};
use crate::daemon::network::SubnetUse;
use crate::daemon::{Daemon, DaemonError};

/// Serves the daemon's subnets.
pub struct SubnetsService(pub Arc<Daemon>);

fn subnet(SubnetUse { subnet: s, leased }: SubnetUse) -> Subnet {
    Subnet {
        subnet_id: s.id,
        cidr_block: s.cidr.to_string(),
        gateway: s.gateway.to_string(),
        bridge: s.bridge,
        leased_addresses: u32::try_from(leased).unwrap_or(u32::MAX),
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
            daemon.network.create_subnet(cidr, gateway)
        })
        .await?;
        Ok(Response::new(subnet(created)))
    }

    async fn describe_subnets(
        &self,
        _request: Request<DescribeSubnetsRequest>,
    ) -> Result<Response<DescribeSubnetsResponse>, Status> {
        let daemon = self.0.clone();
        let subnets = blocking(move || daemon.network.describe_subnets()).await?;
        Ok(Response::new(DescribeSubnetsResponse { subnets: subnets.into_iter().map(subnet).collect() }))
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
