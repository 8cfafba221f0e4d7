//! Block backends: the disk formats virtio-blk devices read and write (the data plane's
//! storage; the catalogue of images, volumes and snapshots is [`crate::store`]).
//!
//! Devices see only the narrow [`BlockBackend`] trait, so disk formats (raw files and
//! qcow2 chains) plug in without touching the device model.

pub mod qcow2;
pub mod raw;

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vm_memory::VolatileSlice;

/// How a disk's file is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Byte for byte.
    #[default]
    Raw,
    /// qcow2, possibly on a chain of backing files.
    Qcow2,
}

impl FromStr for DiskFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            other => Err(format!("unknown disk format {other:?} (raw or qcow2)")),
        }
    }
}

/// Why a disk cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The raw file cannot be opened.
    #[error(transparent)]
    Raw(#[from] std::io::Error),
    /// The qcow2 image or its chain is unusable.
    #[error(transparent)]
    Qcow2(#[from] qcow2::Qcow2Error),
}

/// Opens the disk at `path`, stored as `format`, its qcow2 backing files confined to
/// `backing_root` when given. The format is never guessed from the contents: a guest could
/// write any header into a raw disk.
pub fn open_disk(
    path: &Path,
    format: DiskFormat,
    read_only: bool,
    backing_root: Option<&Path>,
) -> Result<Box<dyn BlockBackend>, OpenError> {
    Ok(match format {
        DiskFormat::Raw => Box::new(raw::RawFile::open(path, read_only)?),
        DiskFormat::Qcow2 => {
            let policy = backing_root.map(qcow2::ChainPolicy::confined_to).unwrap_or_default();
            Box::new(qcow2::Qcow2::open_with(path, read_only, policy)?)
        }
    })
}

/// A disk as a virtio-blk device sees it: a byte-addressed range with flush and hole punching.
///
/// Offsets and lengths are already checked against [`BlockBackend::size`] by the caller.
pub trait BlockBackend: Send {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the disk's bytes at `offset`.
    fn read_at(&mut self, offset: u64, buf: &VolatileSlice<'_>) -> std::io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&mut self, offset: u64, buf: &VolatileSlice<'_>) -> std::io::Result<()>;
    /// Makes every completed write durable (survives a host crash).
    fn flush(&mut self) -> std::io::Result<()>;
    /// Releases the range; it reads back as zeros.
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()>;
    /// Makes the range read as zeros, releasing space where the format can.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()>;
}

/// What a disk holds for the instant its backend moves under a new top layer (the disk is
/// paused then, so nothing reaches it): no bytes, every request refused.
pub struct Vacant;

impl BlockBackend for Vacant {
    fn size(&self) -> u64 {
        0
    }

    fn read_at(&mut self, _: u64, _: &VolatileSlice<'_>) -> std::io::Result<()> {
        Err(vacant())
    }

    fn write_at(&mut self, _: u64, _: &VolatileSlice<'_>) -> std::io::Result<()> {
        Err(vacant())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Err(vacant())
    }

    fn discard(&mut self, _: u64, _: u64) -> std::io::Result<()> {
        Err(vacant())
    }

    fn write_zeroes(&mut self, _: u64, _: u64) -> std::io::Result<()> {
        Err(vacant())
    }
}

fn vacant() -> std::io::Error {
    std::io::Error::other("the disk is being switched to a new layer")
}
