//! The Volumes and Snapshots services.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::snapshots_server::Snapshots;
use super::pb::volumes_server::Volumes;
use super::pb::{
    AttachVolumeRequest, CreateSnapshotRequest, CreateVolumeRequest, DeleteSnapshotRequest,
    DeleteSnapshotResponse, DeleteVolumeResponse, DescribeSnapshotsRequest, DescribeSnapshotsResponse,
    DescribeVolumesRequest, DescribeVolumesResponse, ModifyVolumeRequest, Snapshot, Volume, VolumeId,
};
use super::resources::{self, Query};
use crate::daemon::process::disk_serial;
use crate::daemon::tags::ResourceType;
use crate::daemon::{Daemon, DaemonError};
use crate::state::tag::Tag;
use crate::store::volume::{Parent, SnapshotRecord, VolumeRecord};

/// Serves the daemon's volumes.
pub struct VolumesService(pub Arc<Daemon>);

/// Serves the daemon's snapshots.
pub struct SnapshotsService(pub Arc<Daemon>);

fn volume(v: VolumeRecord, tags: Vec<Tag>) -> Volume {
    let (snapshot_id, image_id) = match &v.parent {
        Parent::None => (String::new(), String::new()),
        Parent::Snapshot(id) => (id.clone(), String::new()),
        Parent::Image(id) => (String::new(), id.clone()),
    };
    Volume {
        device_serial: disk_serial(&v.id),
        state: v.status().into(),
        volume_id: v.id,
        size_bytes: v.size,
        instance_id: v.attached_to.unwrap_or_default(),
        snapshot_id,
        image_id,
        create_time: v.created as i64,
        delete_on_termination: v.delete_on_termination,
        tags: resources::to_pb(tags),
    }
}

fn snapshot(s: SnapshotRecord, tags: Vec<Tag>) -> Snapshot {
    Snapshot {
        snapshot_id: s.id,
        volume_id: s.volume_id,
        size_bytes: s.size,
        start_time: s.created as i64,
        tags: resources::to_pb(tags),
    }
}

#[tonic::async_trait]
impl Volumes for VolumesService {
    async fn create_volume(&self, request: Request<CreateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let make = move |daemon: &Daemon| {
            let parent = match (r.snapshot_id.is_empty(), r.image_id.is_empty()) {
                (true, true) => Parent::None,
                (false, true) => Parent::Snapshot(r.snapshot_id),
                (true, false) => Parent::Image(r.image_id),
                (false, false) => {
                    return Err(DaemonError::InvalidParameter("give a snapshot or an image, not both".into()))
                }
            };
            daemon.volumes.create(parent, (r.size_bytes > 0).then_some(r.size_bytes))
        };
        resources::create(self.0.clone(), r.tag_specifications, ResourceType::Volume, make, volume).await
    }

    async fn describe_volumes(
        &self,
        request: Request<DescribeVolumesRequest>,
    ) -> Result<Response<DescribeVolumesResponse>, Status> {
        let DescribeVolumesRequest { volume_ids, filters, max_results, next_token } = request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = move |daemon: &Daemon| daemon.volumes.describe(&volume_ids);
        let (volumes, next_token) = resources::describe(self.0.clone(), query, find, volume).await?;
        Ok(Response::new(DescribeVolumesResponse { volumes, next_token }))
    }

    async fn attach_volume(&self, request: Request<AttachVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let attach = move |daemon: &Daemon| daemon.volumes.attach(&r.volume_id, &r.instance_id);
        resources::changed(self.0.clone(), attach, volume).await
    }

    async fn detach_volume(&self, request: Request<VolumeId>) -> Result<Response<Volume>, Status> {
        let id = request.into_inner().volume_id;
        resources::changed(self.0.clone(), move |daemon| daemon.volumes.detach(&id), volume).await
    }

    async fn delete_volume(
        &self,
        request: Request<VolumeId>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        resources::done(self.0.clone(), move |daemon| daemon.volumes.delete(&id)).await
    }

    async fn modify_volume(&self, request: Request<ModifyVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let resize = move |daemon: &Daemon| daemon.volumes.resize(&r.volume_id, r.size_bytes);
        resources::changed(self.0.clone(), resize, volume).await
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let CreateSnapshotRequest { volume_id, tag_specifications } = request.into_inner();
        let make = move |daemon: &Daemon| daemon.volumes.snapshot(&volume_id);
        resources::create(self.0.clone(), tag_specifications, ResourceType::Snapshot, make, snapshot).await
    }

    async fn describe_snapshots(
        &self,
        request: Request<DescribeSnapshotsRequest>,
    ) -> Result<Response<DescribeSnapshotsResponse>, Status> {
        let DescribeSnapshotsRequest { snapshot_ids, filters, max_results, next_token } =
            request.into_inner();
        let query = Query::new(filters, max_results, next_token);
        let find = move |daemon: &Daemon| daemon.volumes.describe_snapshots(&snapshot_ids);
        let (snapshots, next_token) = resources::describe(self.0.clone(), query, find, snapshot).await?;
        Ok(Response::new(DescribeSnapshotsResponse { snapshots, next_token }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        resources::done(self.0.clone(), move |daemon| daemon.volumes.delete_snapshot(&id)).await
    }
}
