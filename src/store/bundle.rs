//! Application source bundles (Elastic Beanstalk's application versions): a tar.gz or a
//! zip, checked to be one before it is kept, content-addressed by its SHA-256 under
//! `ROOT/bundles/<sha256>` (private, written atomically). The daemon never unpacks one:
//! it only walks the archive's structure to refuse what is not an archive, within caps,
//! so a compressed bomb costs it a bounded read and nothing on disk.
//!
//! The file is kept as the read-only disk an environment's instances find their
//! application on (serial [`DISK_SERIAL`]): one 512-byte header sector of text lines
//! (`nuage-bundle 1`, `format tar.gz|zip`, `size N`, `sha256 HEX`, NUL-padded), the
//! archive as sent, zeros to the next sector. A guest reads the header, takes `size`
//! bytes after it and checks them against `sha256` before it unpacks anything.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{io_error, Resource, Store, StoreError};
use crate::state::file;

/// The largest bundle kept, as sent (AWS allows 500 MB in S3; one host keeps less).
pub const MAX_BUNDLE_BYTES: usize = 64 << 20;
/// The most a tar.gz may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 1 << 30;
/// The most entries an archive may hold.
pub const MAX_ENTRIES: u64 = 100_000;
/// Space kept free beside a new bundle.
const FREE_MARGIN: u64 = 64 << 20;
/// The virtio serial of the disk a bundle reaches an instance on.
pub const DISK_SERIAL: &str = "bundle";
/// The disk's sector: its header's size, and what its length is rounded up to.
const SECTOR: usize = 512;

/// What kind of archive a bundle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleFormat {
    /// A gzip-compressed tar.
    TarGz,
    /// A zip.
    Zip,
}

impl BundleFormat {
    /// Its usual file name ending.
    pub fn extension(self) -> &'static str {
        match self {
            Self::TarGz => "tar.gz",
            Self::Zip => "zip",
        }
    }
}

/// A bundle as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Its SHA-256, in hex: its name in the store.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    pub format: BundleFormat,
    /// The files and directories in it.
    pub entries: u64,
}

fn bad(why: impl std::fmt::Display) -> StoreError {
    StoreError::BadImage(format!("the source bundle is not a tar.gz or zip archive: {why}"))
}

/// Checks that `bytes` is a whole tar.gz or zip archive, within the caps; returns its
/// format and how many entries it holds.
pub fn check(bytes: &[u8]) -> Result<(BundleFormat, u64), StoreError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(StoreError::InvalidParameter(format!(
            "the source bundle is {} bytes: at most {MAX_BUNDLE_BYTES}",
            bytes.len()
        )));
    }
    match bytes {
        [0x1f, 0x8b, ..] => check_tar_gz(bytes).map(|n| (BundleFormat::TarGz, n)),
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => check_zip(bytes).map(|n| (BundleFormat::Zip, n)),
        _ => Err(bad("it starts with neither gzip's nor zip's signature")),
    }
}

/// An octal number of a tar header field (NUL- or space-terminated).
fn octal(field: &[u8]) -> Option<u64> {
    let text: Vec<u8> = field.iter().copied().take_while(|b| *b != 0 && *b != b' ').collect();
    let text = std::str::from_utf8(&text).ok()?.trim_start();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Walks the tar inside a gzip stream header by header, each checksum checked, to its
/// end-of-archive blocks; returns the entries counted.
fn check_tar_gz(bytes: &[u8]) -> Result<u64, StoreError> {
    let mut tar = flate2::read::GzDecoder::new(bytes).take(MAX_UNPACKED_BYTES + 1);
    let mut block = [0u8; 512];
    let (mut entries, mut read) = (0u64, 0u64);
    loop {
        tar.read_exact(&mut block)
            .map_err(|e| bad(format!("the tar ends early or its gzip is broken ({e})")))?;
        read += 512;
        if block.iter().all(|b| *b == 0) {
            if entries == 0 {
                return Err(bad("the tar holds no file"));
            }
            // The gzip stream must be whole to its checksum, whatever padding follows.
            std::io::copy(&mut tar, &mut std::io::sink())
                .map_err(|e| bad(format!("its gzip is broken ({e})")))?;
            return Ok(entries);
        }
        let stored = octal(&block[148..156]).ok_or_else(|| bad("a tar header's checksum is not a number"))?;
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, b)| if (148..156).contains(&i) { 32 } else { u64::from(*b) })
            .sum();
        if sum != stored {
            return Err(bad("a tar header's checksum is wrong"));
        }
        let size = octal(&block[124..136]).ok_or_else(|| bad("a tar entry's size is not a number"))?;
        entries += 1;
        let padded = size.div_ceil(512) * 512;
        read = read.saturating_add(padded);
        if entries > MAX_ENTRIES || read > MAX_UNPACKED_BYTES {
            return Err(StoreError::InvalidParameter(format!(
                "the source bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes or {MAX_ENTRIES} entries"
            )));
        }
        let copied = std::io::copy(&mut (&mut tar).take(padded), &mut std::io::sink())
            .map_err(|e| bad(format!("its gzip is broken ({e})")))?;
        if copied != padded {
            return Err(bad("the tar ends inside an entry"));
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?)))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?)))
}

/// Finds the zip's end of central directory and walks the directory's entries, each
/// within the file; returns the entries counted.
fn check_zip(bytes: &[u8]) -> Result<u64, StoreError> {
    // The end record is 22 bytes, followed by a comment of up to 65535.
    let earliest = bytes.len().saturating_sub(22 + 65_535);
    let end = (earliest..=bytes.len().saturating_sub(22))
        .rev()
        .find(|at| bytes[*at..].starts_with(&[b'P', b'K', 5, 6]))
        .ok_or_else(|| bad("the zip has no end of central directory (truncated?)"))?;
    let field = |at| u16_at(bytes, end + at).ok_or_else(|| bad("the zip's end record is cut short"));
    let count = field(10)?;
    let size = u32_at(bytes, end + 12).ok_or_else(|| bad("the zip's end record is cut short"))?;
    let offset = u32_at(bytes, end + 16).ok_or_else(|| bad("the zip's end record is cut short"))?;
    if count == 0 {
        return Err(bad("the zip holds no file"));
    }
    if offset.saturating_add(size) > end as u64 {
        return Err(bad("the zip's central directory lies outside the file (truncated?)"));
    }
    let mut at = usize::try_from(offset).map_err(|_| bad("the zip is too large"))?;
    for _ in 0..count {
        if !bytes[at..].starts_with(&[b'P', b'K', 1, 2]) {
            return Err(bad("a zip directory entry is broken"));
        }
        let lengths = [28, 30, 32].map(|o| u16_at(bytes, at + o));
        let [Some(name), Some(extra), Some(comment)] = lengths else {
            return Err(bad("a zip directory entry is cut short"));
        };
        let local = u32_at(bytes, at + 42).ok_or_else(|| bad("a zip directory entry is cut short"))?;
        let local = usize::try_from(local).map_err(|_| bad("the zip is too large"))?;
        if !bytes.get(local..).is_some_and(|b| b.starts_with(&[b'P', b'K', 3, 4])) {
            return Err(bad("a zip entry's data is missing"));
        }
        at += 46 + usize::try_from(name + extra + comment).map_err(|_| bad("the zip is too large"))?;
        if at > end {
            return Err(bad("the zip's central directory runs past its end record"));
        }
    }
    Ok(count)
}

/// Whether `name` is a SHA-256 in hex, the only name a bundle has.
fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The SHA-256 of `bytes`, in hex: a bundle's name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The disk `bundle` (of content `bytes`) is kept as: see the module's documentation.
fn disk_image(bundle: &Bundle, bytes: &[u8]) -> Vec<u8> {
    let header = format!(
        "nuage-bundle 1\nformat {}\nsize {}\nsha256 {}\n",
        bundle.format.extension(),
        bundle.size,
        bundle.sha256
    );
    let mut disk = Vec::with_capacity((SECTOR + bytes.len()).next_multiple_of(SECTOR));
    disk.extend_from_slice(header.as_bytes());
    disk.resize(SECTOR, 0);
    disk.extend_from_slice(bytes);
    disk.resize(disk.len().next_multiple_of(SECTOR), 0);
    disk
}

impl Store {
    fn bundles_dir(&self) -> PathBuf {
        self.root().join("bundles")
    }

    /// Keeps `bytes` as a bundle once [`check`] finds it a whole archive (the same
    /// content kept twice is one file); refused with nothing written when it is not, or
    /// when the disk would fill.
    pub fn put_bundle(&self, bytes: &[u8]) -> Result<Bundle, StoreError> {
        let (format, entries) = check(bytes)?;
        let sha256 = sha256_hex(bytes);
        let dir = self.bundles_dir();
        file::create_private_dir(&dir).map_err(io_error(&dir))?;
        let size = bytes.len() as u64;
        let free = super::free_space(&dir)?;
        if free < size + FREE_MARGIN {
            return Err(StoreError::NoSpace(format!(
                "{free} bytes free in the store: too few to keep a {size}-byte bundle"
            )));
        }
        let bundle = Bundle { sha256, size, format, entries };
        let path = dir.join(&bundle.sha256);
        if !path.exists() {
            file::write_atomic(&path, &disk_image(&bundle, bytes)).map_err(io_error(&path))?;
        }
        Ok(bundle)
    }

    /// The disk file of bundle `sha256`, which must be kept.
    pub fn bundle_disk(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        let path = self.bundles_dir().join(sha256);
        if !is_sha256(sha256) || !path.is_file() {
            return Err(StoreError::NotFound { resource: Resource::Bundle, id: sha256.to_owned() });
        }
        Ok(path)
    }

    /// The SHA-256 of every bundle kept.
    pub fn bundles(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.bundles_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let name = entry.map_err(io_error(&dir))?.file_name();
            let name = name.to_string_lossy();
            // Temporary files of an interrupted write are not bundles.
            if is_sha256(&name) {
                found.push(name.into_owned());
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes bundle `sha256` (gone already: nothing happens), and any temporary file an
    /// interrupted write left.
    pub fn remove_bundle(&self, sha256: &str) -> Result<(), StoreError> {
        if !is_sha256(sha256) {
            return Err(StoreError::InvalidParameter(format!("{sha256:?} is not a bundle's SHA-256")));
        }
        let path = self.bundles_dir().join(sha256);
        match fs::remove_file(&path) {
            Ok(()) => file::sync_dir(&self.bundles_dir()).map_err(io_error(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A tar of `files` (name, content), gzip-compressed.
    pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (name, content) in files {
            let mut header = [0u8; 512];
            header[..name.len()].copy_from_slice(name.as_bytes());
            header[100..108].copy_from_slice(b"0000644\0");
            header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
            header[136..148].copy_from_slice(b"00000000000\0");
            header[156] = b'0';
            header[148..156].copy_from_slice(b"        ");
            let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
            header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            tar.extend_from_slice(&header);
            tar.extend_from_slice(content);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.resize(tar.len() + 1024, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    /// A zip of one stored (uncompressed) file.
    fn zip(name: &str, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = u16::try_from(name.len()).unwrap();
        let size = u32::try_from(content.len()).unwrap();
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(content);
        let directory = out.len();
        out.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let directory_size = u32::try_from(out.len() - directory).unwrap();
        out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
        out.extend_from_slice(&directory_size.to_le_bytes());
        out.extend_from_slice(&u32::try_from(directory).unwrap().to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn archives_are_checked_to_their_end() {
        let good = tar_gz(&[("start", b"#!/bin/sh\necho hi\n"), ("www/index.html", b"v1")]);
        assert_eq!(check(&good).unwrap(), (BundleFormat::TarGz, 2));
        let z = zip("start", b"#!/bin/sh\n");
        assert_eq!(check(&z).unwrap(), (BundleFormat::Zip, 1));
        let refused: [(&str, Vec<u8>); 7] = [
            ("text", b"hello, not an archive".to_vec()),
            ("empty", Vec::new()),
            ("a truncated tar.gz", good[..good.len() / 2].to_vec()),
            ("a truncated zip", z[..z.len() - 10].to_vec()),
            ("an empty tar", tar_gz(&[])),
            ("gzip of text", {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&[7u8; 2048]).unwrap();
                gz.finish().unwrap()
            }),
            ("a zip pointing outside itself", {
                let mut bad = z.clone();
                let at = bad.len() - 6;
                bad[at..at + 4].copy_from_slice(&9999u32.to_le_bytes());
                bad
            }),
        ];
        for (what, bytes) in refused {
            assert!(check(&bytes).is_err(), "{what}");
        }
    }

    #[test]
    fn a_compressed_bomb_is_refused_after_a_bounded_read() {
        // One entry claiming 2 GiB: refused from its header, without reading that much.
        let mut header = [0u8; 512];
        header[..4].copy_from_slice(b"bomb");
        header[124..136].copy_from_slice(format!("{:011o}\0", 2u64 << 30).as_bytes());
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&header).unwrap();
        let err = check(&gz.finish().unwrap()).unwrap_err();
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
    }

    #[test]
    fn bundles_are_kept_once_by_content_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let bytes = tar_gz(&[("start", b"x")]);
        let kept = store.put_bundle(&bytes).unwrap();
        assert_eq!(store.put_bundle(&bytes).unwrap(), kept, "the same content is one bundle");
        assert_eq!(store.bundles().unwrap(), std::slice::from_ref(&kept.sha256));
        let path = store.bundle_disk(&kept.sha256).unwrap();
        let disk = fs::read(&path).unwrap();
        assert_eq!(disk.len() % 512, 0, "a disk of whole sectors");
        let header = String::from_utf8_lossy(&disk[..512]);
        let expected =
            format!("nuage-bundle 1\nformat tar.gz\nsize {}\nsha256 {}\n", bytes.len(), kept.sha256);
        assert_eq!(header.trim_end_matches('\0'), expected);
        assert_eq!(&disk[512..512 + bytes.len()], bytes, "the archive as sent, after the header");
        assert!(disk[512 + bytes.len()..].iter().all(|b| *b == 0));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(store.put_bundle(b"not an archive").is_err());
        assert_eq!(store.bundles().unwrap().len(), 1, "a refused bundle writes nothing");
        store.remove_bundle(&kept.sha256).unwrap();
        store.remove_bundle(&kept.sha256).unwrap();
        assert!(store.bundles().unwrap().is_empty());
        assert!(store.remove_bundle("../images").is_err(), "only a SHA-256 names a bundle");
        assert!(store.bundle_disk(&kept.sha256).is_err(), "a bundle let go has no disk");
        assert!(store.bundle_disk("../nuage.db").is_err());
    }
}
