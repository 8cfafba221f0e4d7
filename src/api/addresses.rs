//! The Addresses (Elastic IP) service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::addresses_server::Addresses;
use super::pb::{
    Address, AllocateAddressRequest, AllocationId, AssociateAddressRequest, DescribeAddressesRequest,
    DescribeAddressesResponse, ReleaseAddressResponse,
};
use crate::daemon::{Daemon, DaemonError};
use crate::net::ipam::ElasticIp;
use crate::state::instance::InstanceState;

/// Serves the network plane's Elastic IPs.
pub struct AddressesService(pub Arc<Daemon>);

/// The API form of `eip`, naming the instance that holds its private address.
fn address(daemon: &Daemon, eip: ElasticIp) -> Result<Address, DaemonError> {
    let instance_id = match eip.private_ip {
        None => String::new(),
        Some(ip) => daemon
            .instances
            .describe(&[], &[])?
            .into_iter()
            .find(|i| i.private_ip == Some(ip) && i.state != InstanceState::Terminated)
            .map(|i| i.id)
            .unwrap_or_default(),
    };
    Ok(Address {
        allocation_id: eip.id,
        public_ip: eip.public_ip.to_string(),
        instance_id,
        private_ip_address: eip.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
    })
}

#[tonic::async_trait]
impl Addresses for AddressesService {
    async fn allocate_address(
        &self,
        _request: Request<AllocateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let daemon = self.0.clone();
        let allocated = blocking(move || {
            let eip = daemon.plane.allocate_address()?;
            address(&daemon, eip)
        })
        .await?;
        Ok(Response::new(allocated))
    }

    async fn describe_addresses(
        &self,
        _request: Request<DescribeAddressesRequest>,
    ) -> Result<Response<DescribeAddressesResponse>, Status> {
        let daemon = self.0.clone();
        let addresses = blocking(move || {
            daemon
                .plane
                .ipam()
                .elastic_ips()?
                .into_iter()
                .map(|eip| address(&daemon, eip))
                .collect::<Result<_, _>>()
        })
        .await?;
        Ok(Response::new(DescribeAddressesResponse { addresses }))
    }

    async fn associate_address(
        &self,
        request: Request<AssociateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let associated = blocking(move || {
            let instance =
                daemon.instances.describe(std::slice::from_ref(&r.instance_id), &[])?.into_iter().next();
            let ip = instance.and_then(|i| i.private_ip).ok_or_else(|| {
                DaemonError::InvalidParameter(format!("{} has no network interface", r.instance_id))
            })?;
            let eip = daemon.plane.associate_address(&r.allocation_id, ip)?;
            address(&daemon, eip)
        })
        .await?;
        Ok(Response::new(associated))
    }

    async fn disassociate_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<Address>, Status> {
        let id = request.into_inner().allocation_id;
        let daemon = self.0.clone();
        let eip = blocking(move || {
            let eip = daemon.plane.disassociate_address(&id)?;
            address(&daemon, eip)
        })
        .await?;
        Ok(Response::new(eip))
    }

    async fn release_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<ReleaseAddressResponse>, Status> {
        let id = request.into_inner().allocation_id;
        let daemon = self.0.clone();
        blocking(move || Ok(daemon.plane.release_address(&id)?)).await?;
        Ok(Response::new(ReleaseAddressResponse {}))
    }
}
