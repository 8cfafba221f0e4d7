//! The Subnets service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::subnets_server::Subnets;
use super::pb::{
    CreateSubnetRequest, DeleteSubnetRequest, DeleteSubnetResponse, DescribeSubnetsRequest,
    DescribeSubnetsResponse, Subnet,
};
use crate::daemon::{Daemon, DaemonError};
use crate::net::ipam;

/// Serves the daemon's network plane's subnets.
pub struct SubnetsService(pub Arc<Daemon>);

fn subnet(daemon: &Daemon, s: ipam::Subnet) -> Result<Subnet, DaemonError> {
    let leased = daemon.plane.ipam().leases(&s.id)?.len() as u32;
    Ok(Subnet {
        subnet_id: s.id,
        cidr_block: s.cidr.to_string(),
        gateway: s.gateway.to_string(),
        bridge: s.bridge,
        leased_addresses: leased,
    })
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
            let created = daemon.plane.create_subnet(cidr, gateway)?;
            subnet(&daemon, created)
        })
        .await?;
        Ok(Response::new(created))
    }

    async fn describe_subnets(
        &self,
        _request: Request<DescribeSubnetsRequest>,
    ) -> Result<Response<DescribeSubnetsResponse>, Status> {
        let daemon = self.0.clone();
        let subnets = blocking(move || {
            daemon
                .plane
                .ipam()
                .subnets()?
                .into_iter()
                .map(|s| subnet(&daemon, s))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        Ok(Response::new(DescribeSubnetsResponse { subnets }))
    }

    async fn delete_subnet(
        &self,
        request: Request<DeleteSubnetRequest>,
    ) -> Result<Response<DeleteSubnetResponse>, Status> {
        let id = request.into_inner().subnet_id;
        let daemon = self.0.clone();
        blocking(move || Ok(daemon.plane.delete_subnet(&id)?)).await?;
        Ok(Response::new(DeleteSubnetResponse {}))
    }
}
