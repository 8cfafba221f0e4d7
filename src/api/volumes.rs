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
use super::{blocking, tags};
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
        tags: tags::to_pb(tags),
    }
}

fn snapshot(s: SnapshotRecord, tags: Vec<Tag>) -> Snapshot {
    Snapshot {
        snapshot_id: s.id,
        volume_id: s.volume_id,
        size_bytes: s.size,
        start_time: s.created as i64,
        tags: tags::to_pb(tags),
    }
}

/// Runs `change` on a volume off the async runtime and replies with the volume as it
/// then is, tags included.
async fn volume_after(
    daemon: Arc<Daemon>,
    change: impl FnOnce(&Daemon) -> Result<VolumeRecord, DaemonError> + Send + 'static,
) -> Result<Response<Volume>, Status> {
    let changed = blocking(move || {
        let record = change(&daemon)?;
        let tags = daemon.tags.index()?.remove(&record.id).unwrap_or_default();
        Ok(volume(record, tags))
    })
    .await?;
    Ok(Response::new(changed))
}

#[tonic::async_trait]
impl Volumes for VolumesService {
    async fn create_volume(&self, request: Request<CreateVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let created = blocking(move || {
            let tags = tags::specified(r.tag_specifications, &[ResourceType::Volume], ResourceType::Volume)?;
            let parent = match (r.snapshot_id.is_empty(), r.image_id.is_empty()) {
                (true, true) => Parent::None,
                (false, true) => Parent::Snapshot(r.snapshot_id),
                (true, false) => Parent::Image(r.image_id),
                (false, false) => {
                    return Err(DaemonError::InvalidParameter("give a snapshot or an image, not both".into()))
                }
            };
            let created = daemon.volumes.create(parent, (r.size_bytes > 0).then_some(r.size_bytes))?;
            let tags = tags::tag_new(&daemon, &created.id, tags)?;
            Ok(volume(created, tags))
        })
        .await?;
        Ok(Response::new(created))
    }

    async fn describe_volumes(
        &self,
        request: Request<DescribeVolumesRequest>,
    ) -> Result<Response<DescribeVolumesResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let listing = blocking(move || {
            let records = daemon.volumes.describe(&r.volume_ids)?;
            daemon.tags.list(records, &tags::filters(r.filters), &tags::page(r.max_results, r.next_token))
        })
        .await?;
        Ok(Response::new(DescribeVolumesResponse {
            volumes: listing.items.into_iter().map(|item| volume(item.record, item.tags)).collect(),
            next_token: listing.next_token,
        }))
    }

    async fn attach_volume(&self, request: Request<AttachVolumeRequest>) -> Result<Response<Volume>, Status> {
        let r = request.into_inner();
        volume_after(self.0.clone(), move |daemon| daemon.volumes.attach(&r.volume_id, &r.instance_id)).await
    }

    async fn detach_volume(&self, request: Request<VolumeId>) -> Result<Response<Volume>, Status> {
        let id = request.into_inner().volume_id;
        volume_after(self.0.clone(), move |daemon| daemon.volumes.detach(&id)).await
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
        volume_after(self.0.clone(), move |daemon| daemon.volumes.resize(&r.volume_id, r.size_bytes)).await
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let created = blocking(move || {
            let tags =
                tags::specified(r.tag_specifications, &[ResourceType::Snapshot], ResourceType::Snapshot)?;
            let created = daemon.volumes.snapshot(&r.volume_id)?;
            let tags = tags::tag_new(&daemon, &created.id, tags)?;
            Ok(snapshot(created, tags))
        })
        .await?;
        Ok(Response::new(created))
    }

    async fn describe_snapshots(
        &self,
        request: Request<DescribeSnapshotsRequest>,
    ) -> Result<Response<DescribeSnapshotsResponse>, Status> {
        let r = request.into_inner();
        let daemon = self.0.clone();
        let listing = blocking(move || {
            let records = daemon.volumes.describe_snapshots(&r.snapshot_ids)?;
            daemon.tags.list(records, &tags::filters(r.filters), &tags::page(r.max_results, r.next_token))
        })
        .await?;
        Ok(Response::new(DescribeSnapshotsResponse {
            snapshots: listing.items.into_iter().map(|item| snapshot(item.record, item.tags)).collect(),
            next_token: listing.next_token,
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
