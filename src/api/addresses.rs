//! The Addresses (Elastic IP) service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::addresses_server::Addresses;
use super::pb::{
    Address, AllocateAddressRequest, AllocationId, AssociateAddressRequest, DescribeAddressesRequest,
    DescribeAddressesResponse, ReleaseAddressResponse,
};
use crate::daemon::network::AddressUse;
use crate::daemon::Daemon;

/// Serves the daemon's Elastic IPs.
pub struct AddressesService(pub Arc<Daemon>);

/// The API form of an Elastic IP.
fn address(AddressUse { eip, instance_id }: AddressUse) -> Address {
    Address {
        allocation_id: eip.id,
        public_ip: eip.public_ip.to_string(),
        instance_id: instance_id.unwrap_or_default(),
        private_ip_address: eip.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Addresses for AddressesService {
    async fn allocate_address(
        &self,
        _request: Request<AllocateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let daemon = self.0.clone();
        Ok(Response::new(address(blocking(move || daemon.network.allocate_address()).await?)))
    }

    async fn describe_addresses(
        &self,
        _request: Request<DescribeAddressesRequest>,
    ) -> Result<Response<DescribeAddressesResponse>, Status> {
        let daemon = self.0.clone();
        let addresses = blocking(move || daemon.network.describe_addresses()).await?;
        Ok(Response::new(DescribeAddressesResponse {
            addresses: addresses.into_iter().map(address).collect(),
        }))
    }

    async fn associate_address(
        &self,
        request: Request<AssociateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let associated =
            blocking(move || daemon.network.associate_address(&r.allocation_id, &r.instance_id)).await?;
        Ok(Response::new(address(associated)))
    }

    async fn disassociate_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<Address>, Status> {
        let id = request.into_inner().allocation_id;
        let daemon = self.0.clone();
        Ok(Response::new(address(blocking(move || daemon.network.disassociate_address(&id)).await?)))
    }

    async fn release_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<ReleaseAddressResponse>, Status> {
        let id = request.into_inner().allocation_id;
        let daemon = self.0.clone();
        blocking(move || daemon.network.release_address(&id)).await?;
        Ok(Response::new(ReleaseAddressResponse {}))
    }
}
