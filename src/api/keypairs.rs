//! The KeyPairs service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::key_pairs_server::KeyPairs;
use super::pb::{
    CreateKeyPairRequest, CreateKeyPairResponse, DeleteKeyPairRequest, DeleteKeyPairResponse,
    DescribeKeyPairsRequest, DescribeKeyPairsResponse, ImportKeyPairRequest, KeyPair,
};
use crate::daemon::keypairs::KeyType;
use crate::daemon::Daemon;
use crate::state::keypair::KeyPairRecord;

/// Serves the daemon's key pairs.
pub struct KeyPairsService(pub Arc<Daemon>);

fn key_pair(r: KeyPairRecord) -> KeyPair {
    KeyPair {
        key_pair_id: r.id,
        key_name: r.name,
        key_type: r.key_type,
        key_fingerprint: r.fingerprint,
        public_key: r.public_key,
        create_time: r.create_time,
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
        let (record, material) =
            blocking(move || daemon.key_pairs.create(&r.key_name, r.key_type.parse::<KeyType>()?)).await?;
        Ok(Response::new(CreateKeyPairResponse { key_pair: Some(key_pair(record)), key_material: material }))
    }

    async fn import_key_pair(
        &self,
        request: Request<ImportKeyPairRequest>,
    ) -> Result<Response<KeyPair>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let record = blocking(move || daemon.key_pairs.import(&r.key_name, &r.public_key_material)).await?;
        Ok(Response::new(key_pair(record)))
    }

    async fn describe_key_pairs(
        &self,
        request: Request<DescribeKeyPairsRequest>,
    ) -> Result<Response<DescribeKeyPairsResponse>, Status> {
        let names = request.into_inner().key_names;
        let daemon = self.0.clone();
        let records = blocking(move || daemon.key_pairs.describe(&names)).await?;
        Ok(Response::new(DescribeKeyPairsResponse { key_pairs: records.into_iter().map(key_pair).collect() }))
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
