//! The Addresses (Elastic IP) service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::addresses_server::Addresses;
use super::pb::{
    Address, AllocateAddressRequest, AllocationId, AssociateAddressRequest, DescribeAddressesRequest,
    DescribeAddressesResponse, ReleaseAddressResponse,
};
use super::{blocking, tags};
use crate::daemon::network::AddressUse;
use crate::daemon::tags::ResourceType;
use crate::daemon::{Daemon, DaemonError};
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
        tags: tags::to_pb(tags),
    }
}

/// Runs `change` on an Elastic IP off the async runtime and replies with the address as
/// it then is, tags included.
async fn address_after(
    daemon: Arc<Daemon>,
    change: impl FnOnce(&Daemon) -> Result<AddressUse, DaemonError> + Send + 'static,
) -> Result<Response<Address>, Status> {
    let changed = blocking(move || {
        let record = change(&daemon)?;
        let tags = daemon.tags.index()?.remove(&record.eip.id).unwrap_or_default();
        Ok(address(record, tags))
    })
    .await?;
    Ok(Response::new(changed))
}

#[tonic::async_trait]
impl Addresses for AddressesService {
    async fn allocate_address(
        &self,
        request: Request<AllocateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let allocated = blocking(move || {
            let kind = ResourceType::ElasticIp;
            let tags = tags::specified(r.tag_specifications, &[kind], kind)?;
            let allocated = daemon.network.allocate_address()?;
            let tags = tags::tag_new(&daemon, &allocated.eip.id, tags)?;
            Ok(address(allocated, tags))
        })
        .await?;
        Ok(Response::new(allocated))
    }

    async fn describe_addresses(
        &self,
        request: Request<DescribeAddressesRequest>,
    ) -> Result<Response<DescribeAddressesResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let listing = blocking(move || {
            let records = daemon.network.describe_addresses()?;
            daemon.tags.list(records, &tags::filters(r.filters), &tags::page(r.max_results, r.next_token))
        })
        .await?;
        Ok(Response::new(DescribeAddressesResponse {
            addresses: listing.items.into_iter().map(|item| address(item.record, item.tags)).collect(),
            next_token: listing.next_token,
        }))
    }

    async fn associate_address(
        &self,
        request: Request<AssociateAddressRequest>,
    ) -> Result<Response<Address>, Status> {
        let r = request.into_inner();
        address_after(self.0.clone(), move |daemon| {
            daemon.network.associate_address(&r.allocation_id, &r.instance_id)
        })
        .await
    }

    async fn disassociate_address(
        &self,
        request: Request<AllocationId>,
    ) -> Result<Response<Address>, Status> {
        let id = request.into_inner().allocation_id;
        address_after(self.0.clone(), move |daemon| daemon.network.disassociate_address(&id)).await
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
