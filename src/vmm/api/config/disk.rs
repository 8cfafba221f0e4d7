//! A virtio-blk disk: which file backs it, how the guest names it, whether it may write.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::RateLimit;
use crate::block::DiskFormat;
use crate::vmm::devices::virtio::block::request::ID_BYTES;

/// One disk of the microVM, in the order the guest enumerates them (`vda`, `vdb`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The disk file.
    pub path: PathBuf,
    /// Volume id the guest reads through GET_ID: it appears as
    /// `/dev/disk/by-id/virtio-<id>` and `/sys/block/vdX/serial`. At most 20 printable
    /// ASCII bytes; `disk<N>` when not given.
    #[serde(default)]
    pub id: Option<String>,
    /// Refuse guest writes (the device offers VIRTIO_BLK_F_RO and the file opens read-only).
    #[serde(default)]
    pub read_only: bool,
    /// Request rate limit.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// How the file is laid out: raw (default) or qcow2 (with its backing chain).
    #[serde(default)]
    pub format: DiskFormat,
}

impl DiskConfig {
    /// The id the guest sees for the disk at position `index`.
    pub fn volume_id(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("disk{index}"))
    }
}

/// What is wrong with a disk's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskConfigError {
    /// The id cannot be carried by GET_ID.
    #[error("disk id {0:?} must be 1 to {ID_BYTES} printable ASCII characters")]
    Id(String),
    /// Two disks share an id.
    #[error("disk id {0:?} is used by two disks")]
    DuplicateId(String),
    /// The `--disk` syntax is wrong.
    #[error("invalid --disk {0:?}: expected path=FILE[,format=raw|qcow2][,id=ID][,readonly=on|off][,ops=N][,bw=BYTES]")]
    Syntax(String),
}

/// Checks every disk's id and that ids are unique.
pub fn validate_ids(disks: &[DiskConfig]) -> Result<(), DiskConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (index, disk) in disks.iter().enumerate() {
        let id = disk.volume_id(index);
        let printable = id.bytes().all(|b| b.is_ascii_graphic());
        if id.is_empty() || id.len() > ID_BYTES || !printable {
            return Err(DiskConfigError::Id(id));
        }
        if !seen.insert(id.clone()) {
            return Err(DiskConfigError::DuplicateId(id));
        }
    }
    Ok(())
}

/// Parses the `--disk` flag: `path=FILE[,format=raw|qcow2][,id=ID][,readonly=on|off][,ops=N][,bw=BYTES]` (a
/// bare first item is taken as the path; ops and bw are per-second limits).
impl FromStr for DiskConfig {
    type Err = DiskConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || DiskConfigError::Syntax(text.to_owned());
        let mut disk = DiskConfig {
            path: PathBuf::new(),
            id: None,
            read_only: false,
            rate_limit: RateLimit::default(),
            format: DiskFormat::Raw,
        };
        for (position, item) in text.split(',').enumerate() {
            match item.split_once('=') {
                Some(("path", path)) => disk.path = PathBuf::from(path),
                Some(("id", id)) => disk.id = Some(id.to_owned()),
                Some(("format", format)) => disk.format = format.parse().map_err(|_| syntax())?,
                Some(("readonly", "on" | "true")) => disk.read_only = true,
                Some(("readonly", "off" | "false")) => disk.read_only = false,
                None if position == 0 => disk.path = PathBuf::from(item),
                Some((key, value)) if disk.rate_limit.apply_flag(key, value).map_err(|_| syntax())? => {}
                _ => return Err(syntax()),
            }
        }
        if disk.path == Path::new("") {
            return Err(syntax());
        }
        Ok(disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_syntax() {
        let d: DiskConfig = "path=/v/root.img,id=vol-1,readonly=on,ops=100".parse().unwrap();
        let limit = RateLimit { ops_per_sec: Some(100), bytes_per_sec: None };
        assert_eq!(
            d,
            DiskConfig {
                path: "/v/root.img".into(),
                id: Some("vol-1".into()),
                read_only: true,
                rate_limit: limit,
                format: DiskFormat::Raw
            }
        );
        let d: DiskConfig = "/v/data.qcow2,format=qcow2".parse().unwrap();
        assert_eq!(d.format, DiskFormat::Qcow2);
        let d: DiskConfig = "/v/data.img".parse().unwrap();
        assert_eq!((d.path.to_str(), d.id, d.read_only), (Some("/v/data.img"), None, false));
        for bad in [
            "",
            "id=x",
            "path=/a,ro",
            "path=/a,readonly=maybe",
            "path=/a,size=3",
            "path=/a,bw=0",
            "path=/a,format=vmdk",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_are_checked() {
        let disk = |id: Option<&str>| DiskConfig {
            path: "/d".into(),
            id: id.map(str::to_owned),
            read_only: false,
            rate_limit: RateLimit::default(),
            format: DiskFormat::Raw,
        };
        assert_eq!(validate_ids(&[disk(None), disk(Some("data"))]), Ok(()));
        assert_eq!(disk(None).volume_id(3), "disk3");
        let too_long = "x".repeat(ID_BYTES + 1);
        assert_eq!(validate_ids(&[disk(Some(&too_long))]), Err(DiskConfigError::Id(too_long)));
        assert_eq!(validate_ids(&[disk(Some("a b"))]), Err(DiskConfigError::Id("a b".into())));
        assert_eq!(validate_ids(&[disk(Some(""))]), Err(DiskConfigError::Id(String::new())));
        assert_eq!(
            validate_ids(&[disk(Some("disk1")), disk(None)]),
            Err(DiskConfigError::DuplicateId("disk1".into()))
        );
    }
}
