//! The Addresses (Elastic IP) service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::addresses_server::Addresses;
use super::pb::{
    Address, AllocateAddressRequest, AllocationId, AssociateAddressRequest, DescribeAddressesRequest,
    DescribeAddressesResponse, ReleaseAddressResponse,
};
use super::resources::{self, Query};
use crate::daemon::network::AddressUse;
use crate::daemon::tags::ResourceType;
use crate::daemon::Daemon;
use crate::state::tag::Tag;

/// Serves the daemon's Elastic IPs.
pub struct AddressesService(pub Arc<Daemon>);

/// The API form of an Elastic IP.
fn address(AddressUse { eip, instance_id }: AddressUse, tags: Vec<Tag>) -> Address {
    Address {
        allocation_id: eip.id,
        public_ip: eip.public_ip.to_string(),
        instance_id: instance_id.unwrap_or_default(),
        private_ip_address: eip.private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        load_balancer_arn: eip.holder.unwrap_or_default(),
        tags: resources::to_pb(tags),
    }
}

#[tonic::async_trait]
impl Addresses for AddressesService {
    async fn allocate_address(
        &self,
        request: Request<AllocateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let specifications = request.into_inner().tag_specifications;
        let make = |daemon: &Daemon| daemon.network.allocate_address();
        resources::create(self.0.clone(), specifications, ResourceType::ElasticIp, make, address).await
    }

    async fn describe_addresses(
        &self,
        request: Request<DescribeAddressesRequest>,
    ) -> Result<Response<DescribeAddressesResponse>, Status> {
        let DescribeAddressesRequest { filters, max_results, next_token } = request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = |daemon: &Daemon| daemon.network.describe_addresses();
        let (addresses, next_token) = resources::describe(self.0.clone(), query, find, address).await?;
        Ok(Response::new(DescribeAddressesResponse { addresses, next_token }))
    }

    async fn associate_address(
        &self,
        request: Request<AssociateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let r = request.into_inner();
        let associate =
            move |daemon: &Daemon| daemon.network.associate_address(&r.allocation_id, &r.instance_id);
        resources::changed(self.0.clone(), associate, address).await
    }

    async fn disassociate_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<Address>, Status> {
        let id = request.into_inner().allocation_id;
        resources::changed(self.0.clone(), move |daemon| daemon.network.disassociate_address(&id), address)
            .await
    }

    async fn release_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<ReleaseAddressResponse>, Status> {
        let id = request.into_inner().allocation_id;
        resources::done(self.0.clone(), move |daemon| daemon.network.release_address(&id)).await
    }
}
