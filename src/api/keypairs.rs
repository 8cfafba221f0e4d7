//! The KeyPairs service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::key_pairs_server::KeyPairs;
use super::pb::{
    CreateKeyPairRequest, CreateKeyPairResponse, DeleteKeyPairRequest, DeleteKeyPairResponse,
    DescribeKeyPairsRequest, DescribeKeyPairsResponse, ImportKeyPairRequest, KeyPair,
};
use super::resources::{self, Query};
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
        tags: resources::to_pb(tags),
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
            // Not resources::create: the reply carries the private key beside the record.
            let kind = ResourceType::KeyPair;
            let tags = resources::specified(r.tag_specifications, &[kind], kind)?;
            let (record, material) = daemon.key_pairs.create(&r.key_name, r.key_type.parse::<KeyType>()?)?;
            let tags = resources::tag_new(&daemon, &record.id, tags)?;
            Ok((key_pair(record, tags), material))
        })
        .await?;
        Ok(Response::new(CreateKeyPairResponse { key_pair: Some(created), key_material: material }))
    }

    async fn import_key_pair(
        &self,
        request: Request<ImportKeyPairRequest>,
    ) -> Result<Response<KeyPair>, Status> {
        let ImportKeyPairRequest { key_name, public_key_material, tag_specifications } = request.into_inner();
        let make = move |daemon: &Daemon| daemon.key_pairs.import(&key_name, &public_key_material);
        resources::create(self.0.clone(), tag_specifications, ResourceType::KeyPair, make, key_pair).await
    }

    async fn describe_key_pairs(
        &self,
        request: Request<DescribeKeyPairsRequest>,
    ) -> Result<Response<DescribeKeyPairsResponse>, Status> {
        let DescribeKeyPairsRequest { key_names, filters, max_results, next_token } = request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = move |daemon: &Daemon| daemon.key_pairs.describe(&key_names);
        let (key_pairs, next_token) = resources::describe(self.0.clone(), query, find, key_pair).await?;
        Ok(Response::new(DescribeKeyPairsResponse { key_pairs, next_token }))
    }

    async fn delete_key_pair(
        &self,
        request: Request<DeleteKeyPairRequest>,
    ) -> Result<Response<DeleteKeyPairResponse>, Status> {
        let name = request.into_inner().key_name;
        resources::done(self.0.clone(), move |daemon| daemon.key_pairs.delete(&name)).await
    }
}
