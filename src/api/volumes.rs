//! The Volumes and Snapshots services.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking;
use super::pb::snapshots_server::Snapshots;
use super::pb::volumes_server::Volumes;
use super::pb::{
    AttachVolumeRequest, CreateVolumeRequest, DeleteSnapshotRequest, DeleteSnapshotResponse,
    DeleteVolumeResponse, DescribeSnapshotsRequest, DescribeSnapshotsResponse, DescribeVolumesRequest,
    DescribeVolumesResponse, ModifyVolumeRequest, Snapshot, Volume, VolumeId,
};
use crate::daemon::process::disk_serial;
use crate::daemon::{Daemon, DaemonError};
use crate::store::volume::{Parent, SnapshotRecord, VolumeRecord};

/// Serves the daemon's volumes.
pub struct VolumesService(pub Arc<Daemon>);

/// Serves the daemon's snapshots.
pub struct SnapshotsService(pub Arc<Daemon>);

fn volume(v: VolumeRecord) -> Volume {
    let (snapshot_id, image_id) = match v.parent {
        Parent::None => (String::new(), String::new()),
        Parent::Snapshot(id) => (id, String::new()),
        Parent::Image(id) => (String::new(), id),
    };
    Volume {
        device_serial: disk_serial(&v.id),
        volume_id: v.id,
        size_bytes: v.size,
        state: if v.attached_to.is_some() { "in-use" } else { "available" }.into(),
        instance_id: v.attached_to.unwrap_or_default(),
        snapshot_id,
        image_id,
        create_time: v.created as i64,
        delete_on_termination: v.delete_on_termination,
    }
}

fn snapshot(s: SnapshotRecord) -> Snapshot {
    Snapshot { snapshot_id: s.id, volume_id: s.volume_id, size_bytes: s.size, start_time: s.created as i64 }
}

#[tonic::async_trait]
impl Volumes for VolumesService {
    async fn create_volume(&self, request: Request<CreateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let created = blocking(move || {
            let parent = match (r.snapshot_id.is_empty(), r.image_id.is_empty()) {
                (true, true) => Parent::None,
                (false, true) => Parent::Snapshot(r.snapshot_id),
                (true, false) => Parent::Image(r.image_id),
                (false, false) => {
                    return Err(DaemonError::InvalidParameter("give a snapshot or an image, not both".into()))
                }
            };
            daemon.volumes.create(parent, (r.size_bytes > 0).then_some(r.size_bytes))
        })
        .await?;
        Ok(Response::new(volume(created)))
    }

    async fn describe_volumes(
        &self,
        request: Request<DescribeVolumesRequest>,
    ) -> Result<Response<DescribeVolumesResponse>, Status> {
        let ids = request.into_inner().volume_ids;
        let daemon = self.0.clone();
        let records = blocking(move || daemon.volumes.describe(&ids)).await?;
        Ok(Response::new(DescribeVolumesResponse { volumes: records.into_iter().map(volume).collect() }))
    }

    async fn attach_volume(&self, request: Request<AttachVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        Ok(Response::new(volume(
            blocking(move || daemon.volumes.attach(&r.volume_id, &r.instance_id)).await?,
        )))
    }

    async fn detach_volume(&self, request: Request<VolumeId>) -> Result<Response<Volume>, Status> {
        let id = request.into_inner().volume_id;
        let daemon = self.0.clone();
        Ok(Response::new(volume(blocking(move || daemon.volumes.detach(&id)).await?)))
    }

    async fn delete_volume(
        &self,
        request: Request<VolumeId>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        let daemon = self.0.clone();
        blocking(move || daemon.volumes.delete(&id)).await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn modify_volume(&self, request: Request<ModifyVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        Ok(Response::new(volume(blocking(move || daemon.volumes.resize(&r.volume_id, r.size_bytes)).await?)))
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn create_snapshot(&self, request: Request<VolumeId>) -> Result<Response<Snapshot>, Status> {
        let id = request.into_inner().volume_id;
        let daemon = self.0.clone();
        Ok(Response::new(snapshot(blocking(move || daemon.volumes.snapshot(&id)).await?)))
    }

    async fn describe_snapshots(
        &self,
        request: Request<DescribeSnapshotsRequest>,
    ) -> Result<Response<DescribeSnapshotsResponse>, Status> {
        let ids = request.into_inner().snapshot_ids;
        let daemon = self.0.clone();
        let records = blocking(move || daemon.volumes.describe_snapshots(&ids)).await?;
        Ok(Response::new(DescribeSnapshotsResponse {
            snapshots: records.into_iter().map(snapshot).collect(),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        let daemon = self.0.clone();
        blocking(move || daemon.volumes.delete_snapshot(&id)).await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }
}
