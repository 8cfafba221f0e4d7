//! Volumes and their snapshots: qcow2 layers on backing chains, made in constant time.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{io_error, read_json, remove_if_present, sync_dir, write_json};
use super::{RecoveryReport, Resource, Store, StoreError};
use crate::block::qcow2::Qcow2;
use crate::block::DiskFormat;
use crate::state::id::{new_id, now, valid_id};

/// What a layer is built on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "id")]
pub enum Parent {
    /// Nothing: reads as zeros where not written.
    None,
    /// An image's disk.
    Image(String),
    /// A snapshot.
    Snapshot(String),
}

/// The VMM side of snapshotting an attached volume: the disk's requests are held and
/// flushed, its file becomes the snapshot, and the VMM reopens the new top layer.
pub trait LayerSwitch {
    /// Flushes the disk and holds its requests.
    fn pause(&self) -> Result<(), String>;
    /// Opens `path` as the disk's new top layer and resumes it.
    fn switch(&self, path: &std::path::Path) -> Result<(), String>;
    /// Resumes the disk unchanged (after a failure).
    fn resume(&self) -> Result<(), String>;
}

/// A volume's metadata (`volumes/vol-….json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// `vol-` and hex digits.
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// The layer below the volume's own.
    pub parent: Parent,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The instance it is attached to, read-write (one at a time).
    pub attached_to: Option<String>,
    /// Set while the volume is being deleted.
    #[serde(default)]
    pub deleting: bool,
    /// Deleted when the instance it is attached to is terminated (volumes made at launch).
    #[serde(default)]
    pub delete_on_termination: bool,
}

/// A snapshot's metadata (`snapshots/snap-….json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// `snap-` and hex digits.
    pub id: String,
    /// The volume it was taken from.
    pub volume_id: String,
    /// Size in bytes.
    pub size: u64,
    /// The layer below the snapshot.
    pub parent: Parent,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// False until the snapshot is complete (recovery finishes or undoes it).
    pub completed: bool,
    /// Set while the snapshot is being deleted.
    #[serde(default)]
    pub deleting: bool,
}

/// A volume's size: `size` if given (at least `floor`, the size of what it is made from),
/// else `floor`; never 0.
fn sized(size: Option<u64>, floor: u64) -> Result<u64, StoreError> {
    match (size, floor) {
        (Some(size), floor) if size < floor => {
            Err(StoreError::InvalidParameter(format!("size {size} is below the source's {floor}")))
        }
        (Some(0), _) | (None, 0) => Err(StoreError::InvalidParameter("a volume needs a size".into())),
        (Some(size), _) => Ok(size),
        (None, floor) => Ok(floor),
    }
}

impl VolumeRecord {
    /// EC2's volume status: `in-use` when attached, else `available`.
    pub fn status(&self) -> &'static str {
        if self.attached_to.is_some() {
            "in-use"
        } else {
            "available"
        }
    }
}

impl Store {
    fn volume_file(&self, id: &str) -> PathBuf {
        self.dir("volumes").join(format!("{id}.qcow2"))
    }

    fn volume_json(&self, id: &str) -> PathBuf {
        self.dir("volumes").join(format!("{id}.json"))
    }

    fn snapshot_file(&self, id: &str) -> PathBuf {
        self.dir("snapshots").join(format!("{id}.qcow2"))
    }

    fn snapshot_json(&self, id: &str) -> PathBuf {
        self.dir("snapshots").join(format!("{id}.json"))
    }

    /// The backing name (relative to `volumes/` or `snapshots/`) and format of `parent`.
    /// The size a volume made on `parent` with `size` asked for would have (`None`: the
    /// parent's), checked as [`Store::create_volume`] checks it; for quotas, before it is
    /// made.
    pub fn volume_size(&self, parent: &Parent, size: Option<u64>) -> Result<u64, StoreError> {
        sized(size, self.backing_of(parent)?.map_or(0, |b| b.2))
    }

    fn backing_of(&self, parent: &Parent) -> Result<Option<(String, &'static str, u64)>, StoreError> {
        Ok(match parent {
            Parent::None => None,
            Parent::Image(id) => {
                let image = self.image(id)?;
                let format = match image.disk_format {
                    DiskFormat::Raw => "raw",
                    DiskFormat::Qcow2 => "qcow2",
                };
                Some((format!("../images/{id}/{}", image.disk), format, image.size))
            }
            Parent::Snapshot(id) => {
                let snapshot = self.snapshot(id)?;
                Some((format!("../snapshots/{id}.qcow2"), "qcow2", snapshot.size))
            }
        })
    }

    /// Creates a volume of `size` bytes on `parent` (at least the parent's size; `None`
    /// takes the parent's). Constant time and space whatever the size.
    pub fn create_volume(&self, parent: Parent, size: Option<u64>) -> Result<VolumeRecord, StoreError> {
        let _writing = self.writing();
        let backing = self.backing_of(&parent)?;
        let size = sized(size, backing.as_ref().map_or(0, |b| b.2))?;
        let id = new_id("vol");
        let tmp = self.dir("volumes").join(format!("{id}.qcow2.tmp"));
        let backing_ref = backing.as_ref().map(|(name, format, _)| (name.as_str(), *format));
        Qcow2::create(&tmp, size, backing_ref).map_err(|e| StoreError::InvalidParameter(e.to_string()))?;
        let file = self.volume_file(&id);
        fs::rename(&tmp, &file).map_err(io_error(&file))?;
        // The file without its record is an orphan recovery removes; the record is the
        // commit point.
        let record = VolumeRecord {
            id: id.clone(),
            size,
            parent,
            created: now(),
            attached_to: None,
            deleting: false,
            delete_on_termination: false,
        };
        write_json(&self.volume_json(&id), &record)?;
        Ok(record)
    }

    /// The volume `id`.
    pub fn volume(&self, id: &str) -> Result<VolumeRecord, StoreError> {
        let path = self.volume_json(id);
        if !valid_id(id, "vol") || !path.exists() {
            return Err(StoreError::NotFound { resource: Resource::Volume, id: id.to_owned() });
        }
        read_json(&path)
    }

    /// The qcow2 file a VMM opens for the volume.
    pub fn volume_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        self.volume(id)?;
        Ok(self.volume_file(id))
    }

    /// All volumes.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        self.records("volumes", "vol", |id| self.volume(id))
    }

    /// The snapshot `id`.
    pub fn snapshot(&self, id: &str) -> Result<SnapshotRecord, StoreError> {
        let path = self.snapshot_json(id);
        let not_found = || StoreError::NotFound { resource: Resource::Snapshot, id: id.to_owned() };
        if !valid_id(id, "snap") || !path.exists() {
            return Err(not_found());
        }
        let record: SnapshotRecord = read_json(&path)?;
        if record.completed {
            Ok(record)
        } else {
            Err(not_found())
        }
    }

    /// All snapshots.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        self.records("snapshots", "snap", |id| self.snapshot(id))
    }

    fn records<T>(
        &self,
        kind: &str,
        prefix: &str,
        get: impl Fn(&str) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let dir = self.dir(kind);
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map_err(io_error(&dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
            .filter(|id| valid_id(id, prefix))
            .collect();
        ids.sort();
        ids.iter()
            .filter_map(|id| match get(id) {
                Err(StoreError::NotFound { .. }) => None,
                other => Some(other),
            })
            .collect()
    }

    /// Volumes and snapshots built directly on `parent`.
    pub fn users_of(&self, parent: &Parent) -> Result<Vec<String>, StoreError> {
        let mut users: Vec<String> =
            self.volumes()?.into_iter().filter(|v| &v.parent == parent).map(|v| v.id).collect();
        users.extend(self.snapshots()?.into_iter().filter(|s| &s.parent == parent).map(|s| s.id));
        Ok(users)
    }

    /// Records that `instance` uses the volume read-write; one attachment at a time.
    pub fn attach_volume(
        &self,
        id: &str,
        instance: &str,
        delete_on_termination: bool,
    ) -> Result<VolumeRecord, StoreError> {
        let _writing = self.writing();
        let mut volume = self.volume(id)?;
        if let Some(current) = &volume.attached_to {
            return Err(StoreError::InUse {
                resource: Resource::Volume,
                id: id.to_owned(),
                by: current.clone(),
            });
        }
        volume.attached_to = Some(instance.to_owned());
        volume.delete_on_termination = delete_on_termination;
        write_json(&self.volume_json(id), &volume)?;
        Ok(volume)
    }

    /// Clears the volume's attachment.
    pub fn detach_volume(&self, id: &str) -> Result<VolumeRecord, StoreError> {
        let _writing = self.writing();
        let mut volume = self.volume(id)?;
        volume.attached_to = None;
        volume.delete_on_termination = false;
        write_json(&self.volume_json(id), &volume)?;
        Ok(volume)
    }

    /// Grows a detached volume to `size` bytes (a running VMM keeps the size it opened).
    pub fn resize_volume(&self, id: &str, size: u64) -> Result<VolumeRecord, StoreError> {
        let _writing = self.writing();
        let mut volume = self.volume(id)?;
        if let Some(instance) = &volume.attached_to {
            return Err(StoreError::Attached { id: id.to_owned(), by: instance.clone() });
        }
        if size < volume.size {
            return Err(StoreError::InvalidParameter(format!(
                "{size} is below the current size {}",
                volume.size
            )));
        }
        let mut disk =
            Qcow2::open(&self.volume_file(id), false).map_err(|e| StoreError::BadImage(e.to_string()))?;
        disk.resize(size).map_err(|e| StoreError::InvalidParameter(e.to_string()))?;
        volume.size = size;
        write_json(&self.volume_json(id), &volume)?;
        Ok(volume)
    }

    /// Deletes a detached volume (its snapshots stay).
    pub fn delete_volume(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut volume = self.volume(id)?;
        if let Some(by) = volume.attached_to.clone() {
            return Err(StoreError::InUse { resource: Resource::Volume, id: id.to_owned(), by });
        }
        volume.deleting = true;
        self.erase_layer("volumes", id, &volume)
    }

    /// Deletes a layer file of `kind` (`volumes` or `snapshots`), intent first: its record,
    /// marked deleting, is written before the file goes, so that recovery finishes a
    /// deletion a crash interrupted.
    fn erase_layer(&self, kind: &str, id: &str, marked: &impl Serialize) -> Result<(), StoreError> {
        let dir = self.dir(kind);
        let record = dir.join(format!("{id}.json"));
        write_json(&record, marked)?;
        remove_if_present(&dir.join(format!("{id}.qcow2")))?;
        remove_if_present(&record)?;
        sync_dir(&dir)
    }

    /// Freezes the volume's current contents as a snapshot, in constant time: its file
    /// becomes the snapshot and the volume continues in a new empty layer on top.
    /// The volume must be detached: an attached one needs its VMM to switch layers.
    pub fn create_snapshot(&self, volume_id: &str) -> Result<SnapshotRecord, StoreError> {
        let _writing = self.writing();
        let volume = self.volume(volume_id)?;
        if let Some(instance) = &volume.attached_to {
            return Err(StoreError::Attached {
                id: volume_id.to_owned(),
                by: format!("{instance} (snapshots of attached volumes need the VMM to switch layers)"),
            });
        }
        self.freeze(&volume)
    }

    /// Moves the volume's file aside as a new snapshot and puts an empty layer on it.
    fn freeze(&self, volume: &VolumeRecord) -> Result<SnapshotRecord, StoreError> {
        let mut snapshot = SnapshotRecord {
            id: new_id("snap"),
            volume_id: volume.id.clone(),
            size: volume.size,
            parent: volume.parent.clone(),
            created: now(),
            completed: false,
            deleting: false,
        };
        // The intent first: recovery finishes or undoes the rest.
        write_json(&self.snapshot_json(&snapshot.id), &snapshot)?;
        let from = self.volume_file(&volume.id);
        fs::rename(&from, self.snapshot_file(&snapshot.id)).map_err(io_error(&from))?;
        sync_dir(&self.dir("snapshots"))?;
        sync_dir(&self.dir("volumes"))?;
        self.finish_snapshot(&mut snapshot)?;
        Ok(snapshot)
    }

    /// Snapshots a volume attached to a running VMM, which `vmm` pauses and switches to the
    /// new top layer; the guest sees a short pause and no error. Constant time.
    pub fn create_snapshot_live(
        &self,
        volume_id: &str,
        vmm: &dyn LayerSwitch,
    ) -> Result<SnapshotRecord, StoreError> {
        let _writing = self.writing();
        let volume = self.volume(volume_id)?;
        let vmm_error = |step, message| StoreError::Vmm { step, message };
        vmm.pause().map_err(|e| vmm_error("pause", e))?;
        let frozen = self.freeze(&volume);
        let snapshot = match frozen {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // The VMM still writes the file it had open; let it go on.
                let _ = vmm.resume();
                return Err(e);
            }
        };
        vmm.switch(&self.volume_file(volume_id)).map_err(|e| vmm_error("switch", e))?;
        Ok(snapshot)
    }

    /// Steps after the rename: the volume's new layer, its record, the snapshot's record.
    fn finish_snapshot(&self, snapshot: &mut SnapshotRecord) -> Result<(), StoreError> {
        let volume_file = self.volume_file(&snapshot.volume_id);
        if !volume_file.exists() {
            let tmp = self.dir("volumes").join(format!("{}.qcow2.tmp", snapshot.volume_id));
            remove_if_present(&tmp)?;
            let backing = format!("../snapshots/{}.qcow2", snapshot.id);
            Qcow2::create(&tmp, snapshot.size, Some((&backing, "qcow2")))
                .map_err(|e| StoreError::InvalidParameter(e.to_string()))?;
            fs::rename(&tmp, &volume_file).map_err(io_error(&volume_file))?;
            sync_dir(&self.dir("volumes"))?;
        }
        let mut volume = self.volume(&snapshot.volume_id)?;
        volume.parent = Parent::Snapshot(snapshot.id.clone());
        write_json(&self.volume_json(&volume.id), &volume)?;
        snapshot.completed = true;
        write_json(&self.snapshot_json(&snapshot.id), snapshot)
    }

    /// Deletes a snapshot nothing is built on (merging is not done: the request is refused).
    pub fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        let mut snapshot = self.snapshot(id)?;
        if let Some(by) = self.users_of(&Parent::Snapshot(id.to_owned()))?.into_iter().next() {
            return Err(StoreError::InUse { resource: Resource::Snapshot, id: id.to_owned(), by });
        }
        snapshot.deleting = true;
        self.erase_layer("snapshots", id, &snapshot)
    }

    pub(super) fn recover_volumes(&self, report: &mut RecoveryReport) -> Result<(), StoreError> {
        for kind in ["volumes", "snapshots"] {
            let dir = self.dir(kind);
            for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    remove_if_present(&entry.path())?;
                    report.actions.push(format!("removed temporary file {kind}/{name}"));
                }
            }
        }
        // Snapshots first: an unfinished one may own the volume's file.
        let dir = self.dir("snapshots");
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id, "snap")) else { continue };
            let mut snapshot: SnapshotRecord = read_json(&entry.path())?;
            let file = self.snapshot_file(id);
            if snapshot.deleting {
                remove_if_present(&file)?;
                remove_if_present(&entry.path())?;
                report.actions.push(format!("finished deleting snapshot {id}"));
            } else if !snapshot.completed && !file.exists() {
                remove_if_present(&entry.path())?;
                report.actions.push(format!(
                    "undid snapshot {id} of {} (interrupted before it began)",
                    snapshot.volume_id
                ));
            } else if !snapshot.completed {
                self.finish_snapshot(&mut snapshot)?;
                report.actions.push(format!("finished snapshot {id} of {}", snapshot.volume_id));
            }
        }
        let dir = self.dir("volumes");
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|id| valid_id(id, "vol")) {
                let volume: VolumeRecord = read_json(&entry.path())?;
                if volume.deleting {
                    remove_if_present(&self.volume_file(id))?;
                    remove_if_present(&entry.path())?;
                    report.actions.push(format!("finished deleting volume {id}"));
                }
            } else if let Some(id) = name.strip_suffix(".qcow2").filter(|id| valid_id(id, "vol")) {
                if !self.volume_json(id).exists() {
                    remove_if_present(&entry.path())?;
                    report.actions.push(format!("removed orphaned volume file {name}"));
                }
            }
        }
        let dir = self.dir("snapshots");
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".qcow2").filter(|id| valid_id(id, "snap")) {
                if !self.snapshot_json(id).exists() {
                    remove_if_present(&entry.path())?;
                    report.actions.push(format!("removed orphaned snapshot file {name}"));
                }
            }
        }
        sync_dir(&self.dir("volumes"))?;
        sync_dir(&self.dir("snapshots"))
    }
}
