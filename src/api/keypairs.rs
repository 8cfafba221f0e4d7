//! The KeyPairs service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::key_pairs_server::KeyPairs;
use super::pb::{
    CreateKeyPairRequest, CreateKeyPairResponse, DeleteKeyPairRequest, DeleteKeyPairResponse,
    DescribeKeyPairsRequest, DescribeKeyPairsResponse, ImportKeyPairRequest, KeyPair,
};
use super::{blocking, tags};
use crate::daemon::keypairs::KeyType;
use crate::daemon::tags::ResourceType;
use crate::daemon::Daemon;
use crate::state::keypair::KeyPairRecord;
use crate::state::tag::Tag;

/// Serves the daemon's key pairs.
pub struct KeyPairsService(pub Arc<Daemon>);

fn key_pair(r: KeyPairRecord, tags: Vec<Tag>) -> KeyPair {
    KeyPair {
        key_pair_id: r.id,
        key_name: r.name,
        key_type: r.key_type,
        key_fingerprint: r.fingerprint,
        public_key: r.public_key,
        create_time: r.create_time,
        tags: tags::to_pb(tags),
    }
}

#[tonic::async_trait]
impl KeyPairs for KeyPairsService {
    async fn create_key_pair(
        &self,
        request: Request<CreateKeyPairRequest>,
    ) -> Result<Response<CreateKeyPairResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let (created, material) = blocking(move || {
            let tags =
                tags::specified(r.tag_specifications, &[ResourceType::KeyPair], ResourceType::KeyPair)?;
            let (record, material) = daemon.key_pairs.create(&r.key_name, r.key_type.parse::<KeyType>()?)?;
            let tags = tags::tag_new(&daemon, &record.id, tags)?;
            Ok((key_pair(record, tags), material))
        })
        .await?;
        Ok(Response::new(CreateKeyPairResponse { key_pair: Some(created), key_material: material }))
    }

    async fn import_key_pair(
        &self,
        request: Request<ImportKeyPairRequest>,
    ) -> Result<Response<KeyPair>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let imported = blocking(move || {
            let tags =
                tags::specified(r.tag_specifications, &[ResourceType::KeyPair], ResourceType::KeyPair)?;
            let record = daemon.key_pairs.import(&r.key_name, &r.public_key_material)?;
            let tags = tags::tag_new(&daemon, &record.id, tags)?;
            Ok(key_pair(record, tags))
        })
        .await?;
        Ok(Response::new(imported))
    }

    async fn describe_key_pairs(
        &self,
        request: Request<DescribeKeyPairsRequest>,
    ) -> Result<Response<DescribeKeyPairsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let listing = blocking(move || {
            let records = daemon.key_pairs.describe(&r.key_names)?;
            daemon.tags.list(records, &tags::filters(r.filters), &tags::page(r.max_results, r.next_token))
        })
        .await?;
        Ok(Response::new(DescribeKeyPairsResponse {
            key_pairs: listing.items.into_iter().map(|item| key_pair(item.record, item.tags)).collect(),
            next_token: listing.next_token,
        }))
    }

    async fn delete_key_pair(
        &self,
        request: Request<DeleteKeyPairRequest>,
    ) -> Result<Response<DeleteKeyPairResponse>, Status> {
        let name = request.into_inner().key_name;
        let daemon = self.0.clone();
        blocking(move || daemon.key_pairs.delete(&name)).await?;
        Ok(Response::new(DeleteKeyPairResponse {}))
    }
}
