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
use crate::state::instance::{InstanceRecord, InstanceState};

/// Serves the network plane's Elastic IPs.
pub struct AddressesService(pub Arc<Daemon>);

/// The API form of `eip`, naming the live instance in `instances` that holds its private
/// address.
fn address(instances: &[InstanceRecord], eip: ElasticIp) -> Address {
    let instance_id = eip
        .private_ip
        .and_then(|ip| {
            instances.iter().find(|i| i.private_ip == Some(ip) && i.state != InstanceState::Terminated)
        })
        .map(|i| i.id.clone())
        .unwrap_or_default();
    Address {
        allocation_id: eip.id,
        public_ip: eip.public_ip.to_string(),
        instance_id,
        private_ip_address: eip.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
    }
}

/// The API form of one Elastic IP.
fn one_address(daemon: &Daemon, eip: ElasticIp) -> Result<Address, DaemonError> {
    Ok(address(&daemon.instances.describe(&[], &[])?, eip))
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
            one_address(&daemon, eip)
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
                .map(|eip| one_address(&daemon, eip))
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
            one_address(&daemon, eip)
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
            one_address(&daemon, eip)
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
