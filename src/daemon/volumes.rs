//! Volumes and snapshots as the API offers them: the store does the work; this adds what
//! depends on instances (attachments follow the instance's state, and a snapshot of a
//! volume in use goes through its VMM).

use std::path::Path;
use std::sync::Arc;

use super::config::DaemonConfig;
use super::describe::Describable;
use super::process::VmmDisk;
use super::process::{control_socket, disk_serial, instance_dir};
use super::quotas::{Admissions, Claim};
use super::{by_ids, failpoint, DaemonError};
use crate::state::db::{InstanceStore, StateError};
use crate::state::instance::InstanceState;
use crate::state::tag::TagStore;
use crate::store::volume::{Parent, SnapshotRecord, VolumeRecord};
use crate::store::{LayerSwitch, Store, StoreError};

/// The daemon's volume operations.
#[derive(Clone)]
pub struct Volumes {
    db: Arc<dyn InstanceStore>,
    store: Arc<Store>,
    tags: Arc<dyn TagStore>,
    config: Arc<DaemonConfig>,
    admissions: Arc<Admissions>,
}

impl Describable for VolumeRecord {
    const FILTERS: &'static [&'static str] =
        &["volume-id", "status", "attachment.instance-id", "snapshot-id", "image-id"];

    fn id(&self) -> &str {
        &self.id
    }

    fn attribute(&self, name: &str) -> String {
        match (name, &self.parent) {
            ("volume-id", _) => self.id.clone(),
            ("status", _) => self.status().to_owned(),
            ("attachment.instance-id", _) => self.attached_to.clone().unwrap_or_default(),
            ("snapshot-id", Parent::Snapshot(id)) | ("image-id", Parent::Image(id)) => id.clone(),
            _ => String::new(),
        }
    }
}

impl Describable for SnapshotRecord {
    const FILTERS: &'static [&'static str] = &["snapshot-id", "volume-id"];

    fn id(&self) -> &str {
        &self.id
    }

    fn attribute(&self, name: &str) -> String {
        match name {
            "snapshot-id" => self.id.clone(),
            _ => self.volume_id.clone(),
        }
    }
}

impl Volumes {
    /// Volume operations over `store`, checking instances in `db`, forgetting a deleted
    /// volume's or snapshot's tags in `tags` and admitting sizes through `admissions`.
    pub fn new(
        db: Arc<dyn InstanceStore>,
        store: Arc<Store>,
        tags: Arc<dyn TagStore>,
        config: Arc<DaemonConfig>,
        admissions: Arc<Admissions>,
    ) -> Self {
        Self { db, store, tags, config, admissions }
    }

    /// Creates a volume: empty (of `size` bytes), or from an image or a snapshot (at
    /// least its size).
    pub fn create(&self, parent: Parent, size: Option<u64>) -> Result<VolumeRecord, DaemonError> {
        if parent == Parent::None && size.is_none() {
            return Err(DaemonError::InvalidParameter("an empty volume needs a size".into()));
        }
        let size = self.store.volume_size(&parent, size)?;
        self.admit_volume(size, None, || self.store.create_volume(parent, Some(size)))
    }

    /// Writes a volume of `size` bytes (growing `replaced`, if any) with `write`, once the
    /// quotas admit it.
    fn admit_volume(
        &self,
        size: u64,
        replaced: Option<&str>,
        write: impl FnOnce() -> Result<VolumeRecord, StoreError>,
    ) -> Result<VolumeRecord, DaemonError> {
        self.config.quotas.check_volume_size(size)?;
        let mut admitted = self.admissions.admit(Claim::volumes(size), replaced)?;
        Ok(admitted.make(Claim::volumes(size), write)?)
    }

    /// The volumes named in `ids`, or all when none is named.
    pub fn describe(&self, ids: &[String]) -> Result<Vec<VolumeRecord>, DaemonError> {
        by_ids(ids, || self.store.volumes(), |id| self.store.volume(id))
    }

    /// Grows a volume; the guest sees the new size at its next start.
    pub fn resize(&self, volume_id: &str, size: u64) -> Result<VolumeRecord, DaemonError> {
        self.admit_volume(size, Some(volume_id), || self.store.resize_volume(volume_id, size))
    }

    /// Deletes a volume no instance uses.
    pub fn delete(&self, volume_id: &str) -> Result<(), DaemonError> {
        self.store.delete_volume(volume_id)?;
        Ok(self.tags.forget_tags(volume_id)?)
    }

    /// The snapshots named in `ids`, or all when none is named.
    pub fn describe_snapshots(&self, ids: &[String]) -> Result<Vec<SnapshotRecord>, DaemonError> {
        by_ids(ids, || self.store.snapshots(), |id| self.store.snapshot(id))
    }

    /// Deletes a snapshot no volume is made from.
    pub fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), DaemonError> {
        self.store.delete_snapshot(snapshot_id)?;
        Ok(self.tags.forget_tags(snapshot_id)?)
    }

    /// Attaches a volume to a stopped instance; it shows up as a disk at the next start
    /// (there is no hot-plug yet).
    pub fn attach(&self, volume_id: &str, instance_id: &str) -> Result<VolumeRecord, DaemonError> {
        self.store.volume(volume_id)?;
        self.require_stopped(instance_id, "attach")?;
        Ok(self.store.attach_volume(volume_id, instance_id, false)?)
    }

    /// Detaches a data volume from a stopped instance.
    pub fn detach(&self, volume_id: &str) -> Result<VolumeRecord, DaemonError> {
        let volume = self.store.volume(volume_id)?;
        let Some(instance_id) = volume.attached_to.clone() else {
            return Err(DaemonError::IncorrectState(format!("{volume_id} is not attached")));
        };
        if let Ok(instance) = self.db.get(&instance_id) {
            if instance.root_volume_id == volume_id && instance.state != InstanceState::Terminated {
                return Err(DaemonError::OperationNotPermitted(format!(
                    "{volume_id} is the root volume of {instance_id}"
                )));
            }
            self.require_stopped(&instance_id, "detach")?;
        }
        Ok(self.store.detach_volume(volume_id)?)
    }

    /// Snapshots a volume; one in use by a running instance is paused, switched and
    /// resumed through its VMM, so the guest keeps running.
    pub fn snapshot(&self, volume_id: &str) -> Result<SnapshotRecord, DaemonError> {
        let volume = self.store.volume(volume_id)?;
        let running = volume
            .attached_to
            .as_deref()
            .and_then(|id| self.db.get(id).ok())
            .filter(|instance| instance.state == InstanceState::Running);
        let Some(instance) = running else {
            // No VMM holds the file: the store snapshots it offline.
            return match &volume.attached_to {
                None => Ok(self.store.create_snapshot(volume_id)?),
                Some(owner) => self.snapshot_attached_idle(volume_id, owner),
            };
        };
        let vmm = VmmDisk {
            socket: control_socket(&instance_dir(&self.config.state_dir, &instance.id)),
            id: disk_serial(volume_id),
        };
        Ok(self.store.create_snapshot_live(volume_id, &WithFailpoints(vmm))?)
    }

    /// Snapshots a volume attached to `owner`, whose VMM does not run: detaches it for the
    /// store's offline snapshot and attaches it again.
    fn snapshot_attached_idle(&self, volume_id: &str, owner: &str) -> Result<SnapshotRecord, DaemonError> {
        let delete_on_termination = self.store.volume(volume_id)?.delete_on_termination;
        self.store.detach_volume(volume_id)?;
        let snapshot = self.store.create_snapshot(volume_id);
        self.store.attach_volume(volume_id, owner, delete_on_termination)?;
        Ok(snapshot?)
    }

    fn require_stopped(&self, instance_id: &str, what: &str) -> Result<(), DaemonError> {
        let instance = self.db.get(instance_id)?;
        if instance.state != InstanceState::Stopped {
            return Err(DaemonError::State(StateError::WrongState {
                id: instance_id.to_owned(),
                expected: format!("stopped (volumes {what} only while stopped)"),
                actual: instance.state,
            }));
        }
        Ok(())
    }
}

/// A VMM disk with the crash-test failpoints of a live snapshot: the disk paused but the
/// snapshot not begun, and the snapshot made but the disk not yet switched to its new layer.
struct WithFailpoints(VmmDisk);

impl LayerSwitch for WithFailpoints {
    fn pause(&self) -> Result<(), String> {
        self.0.pause()?;
        failpoint("snapshot-after-pause");
        Ok(())
    }

    fn switch(&self, path: &Path) -> Result<(), String> {
        failpoint("snapshot-before-switch");
        self.0.switch(path)
    }

    fn resume(&self) -> Result<(), String> {
        self.0.resume()
    }
}
