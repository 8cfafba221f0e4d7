//! The storage store: images (AMIs), volumes (EBS) and snapshots under one directory.
//!
//! ```text
//! ROOT/images/ami-…/       image.json, disk.raw|disk.qcow2, kernel[, vmlinux], initrd (immutable)
//! ROOT/volumes/vol-….qcow2 + vol-….json                                        (active layer)
//! ROOT/snapshots/snap-….qcow2 + snap-….json                                    (frozen layers)
//! ```
//!
//! Every volume is a qcow2 file whose backing chain runs through snapshots down to an image
//! disk (or ends): creating a volume from an image or a snapshot, and snapshotting a
//! volume, each write one small file and take the same time whatever the size. A snapshot
//! is the volume's current file moved aside (`volumes/` and `snapshots/` are siblings, so
//! relative backing names stay valid) with a new, empty layer put in its place.
//!
//! Crash safety: metadata files are replaced atomically (write, fsync, rename, fsync the
//! directory); multi-step operations record their intent first and [`Store::open`] rolls
//! each one forward or back, removes temporary files and reports orphans it cleaned.

#[cfg(feature = "daemon")]
pub mod bundle;
pub mod image;
pub mod kernel;
pub mod volume;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::state::file;

pub use image::{ImageRecord, ImageSource, ImageState};
pub use volume::{LayerSwitch, Parent, SnapshotRecord, VolumeRecord};

/// What the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// An image (AMI).
    Image,
    /// A volume.
    Volume,
    /// A snapshot.
    Snapshot,
    /// An application source bundle.
    Bundle,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resource::Image => "image",
            Resource::Volume => "volume",
            Resource::Snapshot => "snapshot",
            Resource::Bundle => "source bundle",
        })
    }
}

/// Errors of store operations (the API maps each to an EC2 error name).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such image, volume or snapshot.
    #[error("{resource} {id} does not exist")]
    NotFound {
        /// What was asked for.
        resource: Resource,
        /// The id asked for.
        id: String,
    },
    /// The resource is used by others: an image or snapshot that volumes are made from,
    /// a volume attached to an instance.
    #[error("{resource} {id} is used by {by}")]
    InUse {
        /// What is in use.
        resource: Resource,
        /// Its id.
        id: String,
        /// What uses it.
        by: String,
    },
    /// The operation needs the volume detached.
    #[error("volume {id} is attached to {by}")]
    Attached {
        /// The volume.
        id: String,
        /// What it is attached to (and why that matters).
        by: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidParameter(String),
    /// Not enough free space for the operation.
    #[error("{0}")]
    NoSpace(String),
    /// A disk image is unusable.
    #[error("{0}")]
    BadImage(String),
    /// The VMM using the volume did not carry out a step of a live snapshot.
    #[error("the VMM could not {step} the disk: {message}")]
    Vmm {
        /// `pause` or `switch`.
        step: &'static str,
        /// What it answered.
        message: String,
    },
    /// An I/O error on a store file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

pub(crate) fn io_error(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// The store rooted at one directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Held by every change to records, so that each check-then-write is one step: two
    /// callers racing on a volume see one win and the record agree with both answers.
    /// (An image's long copy runs outside it; only its final rename is a change.)
    writes: Mutex<()>,
}

/// What [`Store::open`] found and repaired.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// One line per action taken.
    pub actions: Vec<String>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, finishing or undoing operations a
    /// crash interrupted and removing orphaned files.
    pub fn open(root: &Path) -> Result<(Self, RecoveryReport), StoreError> {
        for dir in ["images", "volumes", "snapshots"] {
            file::create_private_dir(&root.join(dir)).map_err(io_error(root))?;
        }
        let store = Self { root: root.to_owned(), writes: Mutex::new(()) };
        let mut report = RecoveryReport::default();
        store.recover_images(&mut report)?;
        store.recover_volumes(&mut report)?;
        for action in &report.actions {
            tracing::warn!(store = %root.display(), "{action}");
        }
        Ok((store, report))
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The right to change records, until dropped. A panic while holding it leaves no
    /// record half-written (every write is atomic), so a poisoned lock is used as it is.
    pub(crate) fn writing(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn dir(&self, kind: &str) -> PathBuf {
        self.root.join(kind)
    }
}

/// Makes a directory's entries (renames, creations) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    file::sync_dir(dir).map_err(io_error(dir))
}

/// Replaces `path` with `value` as JSON, atomically and durably.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    file::write_json(path, value).map_err(io_error(path))
}

/// Reads a JSON record.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    file::read_json(path).map_err(io_error(path))
}

/// Removes a file if it exists.
pub(crate) fn remove_if_present(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Free bytes on the file system holding `path`.
pub fn free_space(path: &Path) -> Result<u64, StoreError> {
    statvfs(path).map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes of the file system holding `path`.
pub fn disk_size(path: &Path) -> Result<u64, StoreError> {
    statvfs(path).map(|stat| stat.f_blocks.saturating_mul(stat.f_frsize))
}

fn statvfs(path: &Path) -> Result<libc::statvfs, StoreError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| StoreError::InvalidParameter("path contains NUL".into()))?;
    // SAFETY: statvfs is plain data; zero is a valid start.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is a valid out-pointer.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io_error(path)(io::Error::last_os_error()));
    }
    Ok(stat)
}

#[cfg(test)]
mod tests;
