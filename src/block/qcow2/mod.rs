//! qcow2 images with backing files: the copy-on-write format volumes, clones and snapshots
//! are made of, readable and writable by `qemu-img` and friends.
//!
//! An image maps its virtual clusters through an L1 table of L2 tables to clusters of its own
//! file; a cluster it does not map reads from its backing file (raw or qcow2), or as zeros.
//! Writing an unmapped cluster allocates a new one at the end of the file (copying the rest
//! of the cluster from below on a partial write), counts it in the refcount blocks, then
//! points the L2 entry at it: a crash between steps leaks a cluster at worst, it never
//! exposes one that is not fully written. Metadata is written through, so FLUSH is one
//! `fdatasync`.
//!
//! Supported: versions 2 and 3, any cluster size, 16-bit refcounts for writing (qemu's
//! default), zero clusters. Refused with a clear error: encryption, compressed clusters,
//! external data files, extended L2 entries, images marked corrupt, and writing images
//! that hold internal snapshots or other refcount widths.

pub mod header;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vm_memory::VolatileSlice;

use self::header::Header;
use super::raw::{self, RawFile};
use super::BlockBackend;

/// Host-offset bits of L1 and L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// The entry's cluster has refcount 1: it may be written in place.
const COPIED: u64 = 1 << 63;
/// The L2 entry describes a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// The L2 entry reads as zeros (version 3).
const ZERO: u64 = 1;
/// Cluster size of images nuage creates (qemu's default, 64 KiB).
pub const DEFAULT_CLUSTER_BITS: u32 = 16;
/// Deepest backing chain opened.
pub const MAX_CHAIN_DEPTH: usize = 32;
/// L2 tables kept in memory.
const L2_CACHE_TABLES: usize = 64;

/// Errors opening, creating or using a qcow2 image.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// The file does not start with the qcow2 magic.
    #[error("not a qcow2 image")]
    NotQcow2,
    /// The header or a table is inconsistent.
    #[error("corrupt qcow2 image: {0}")]
    Corrupt(String),
    /// A feature nuage does not implement.
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    /// The backing chain is unusable.
    #[error("backing file {path}: {reason}")]
    Backing {
        /// The backing file as resolved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Where backing files may be opened from, and which are already in the chain.
#[derive(Debug, Clone, Default)]
pub struct ChainPolicy {
    /// When set, every backing file must resolve to a path inside this directory.
    pub confine_to: Option<PathBuf>,
    seen: Vec<PathBuf>,
}

impl ChainPolicy {
    /// Backing files must lie inside `dir`.
    pub fn confined_to(dir: &Path) -> Self {
        Self { confine_to: Some(dir.to_owned()), seen: Vec::new() }
    }

    /// Whether the resolved path `resolved` lies where this policy lets files be opened;
    /// why not otherwise.
    pub fn check_confined(&self, resolved: &Path) -> Result<(), String> {
        let Some(root) = &self.confine_to else { return Ok(()) };
        let root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
        if resolved.starts_with(&root) {
            Ok(())
        } else {
            Err(format!("outside {}", root.display()))
        }
    }
}

/// The formats a backing file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackingFormat {
    Raw,
    Qcow2,
}

/// What a virtual cluster maps to.
enum Mapping {
    /// A cluster of this file; `owned` when its refcount is 1 (writable in place).
    Data { host: u64, owned: bool },
    /// Reads as zeros.
    Zero,
    /// Not in this image: read from the backing file.
    Unallocated,
}

/// An open qcow2 image.
pub struct Qcow2 {
    file: File,
    path: PathBuf,
    read_only: bool,
    header: Header,
    cluster_size: u64,
    l2_entries: u64,
    l1: Vec<u64>,
    l2_cache: HashMap<u64, Vec<u64>>,
    refcount_table: Vec<u64>,
    backing: Option<Box<dyn BlockBackend>>,
    /// Where the next cluster is allocated: the end of the file, cluster-aligned.
    next_cluster: u64,
    /// One cluster of scratch space for partial-cluster copy-on-write.
    cluster_buf: Vec<u8>,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> Qcow2Error + '_ {
    move |source| Qcow2Error::Io { path: path.to_owned(), source }
}

fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_table(file: &File, offset: u64, entries: u64) -> io::Result<Vec<u64>> {
    let mut bytes = vec![0u8; (entries * 8) as usize];
    file.read_exact_at(&mut bytes, offset)?;
    Ok(bytes.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default())).collect())
}

impl Qcow2 {
    /// Opens `path`; backing files may lie anywhere (but not loop).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, Qcow2Error> {
        Self::open_with(path, read_only, ChainPolicy::default())
    }

    /// Opens `path` with backing files checked against `policy`.
    pub fn open_with(path: &Path, read_only: bool, mut policy: ChainPolicy) -> Result<Self, Qcow2Error> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path).map_err(io_err(path))?;
        let mut image = Self::load(file, path, read_only)?;
        image.backing = match Self::resolve_backing(path, &image.header, &mut policy)? {
            None => None,
            Some((resolved, BackingFormat::Raw)) => {
                let raw = RawFile::open(&resolved, true)
                    .map_err(|e| Qcow2Error::Backing { path: resolved.clone(), reason: e.to_string() })?;
                Some(Box::new(raw))
            }
            Some((resolved, BackingFormat::Qcow2)) => {
                Some(Box::new(Self::open_with(&resolved, true, policy)?))
            }
        };
        Ok(image)
    }

    /// The new top layer `file` (at `path`, named in messages) of a running disk, opened
    /// writable but not yet over anything: [`Qcow2::over`] puts it on the disk it was made
    /// over, which stays open as it is. So a jailed VMM, which can open no file of the
    /// store, switches a disk to a layer the daemon made and handed it.
    pub fn layer(file: File, path: &Path) -> Result<Self, Qcow2Error> {
        let layer = Self::load(file, path, false)?;
        if layer.header.backing_file.is_none() {
            return Err(Qcow2Error::Backing {
                path: path.to_owned(),
                reason: "a new layer must name the disk it was made over".into(),
            });
        }
        Ok(layer)
    }

    /// This layer over `below`, the disk it was made over.
    pub fn over(mut self, below: Box<dyn BlockBackend>) -> Self {
        self.backing = Some(below);
        self
    }

    /// Every backing file of `path`'s chain, resolved and checked against `policy`, top
    /// first: what a jailed VMM must find in its jail to open the disk.
    pub fn backing_chain(path: &Path, mut policy: ChainPolicy) -> Result<Vec<PathBuf>, Qcow2Error> {
        let mut chain = Vec::new();
        let mut current = path.to_owned();
        loop {
            let file = File::open(&current).map_err(io_err(&current))?;
            let header = Self::read_header(&file, &current)?;
            match Self::resolve_backing(&current, &header, &mut policy)? {
                None => return Ok(chain),
                Some((resolved, format)) => {
                    chain.push(resolved.clone());
                    if format == BackingFormat::Raw {
                        return Ok(chain);
                    }
                    current = resolved;
                }
            }
        }
    }

    fn read_header(file: &File, path: &Path) -> Result<Header, Qcow2Error> {
        let file_len = file.metadata().map_err(io_err(path))?.len();
        let mut first = vec![0u8; file_len.min(64 * 1024) as usize];
        file.read_exact_at(&mut first, 0).map_err(io_err(path))?;
        Header::parse(&first, file_len)
    }

    /// The image in `file`, its tables read and checked, without its backing file.
    fn load(file: File, path: &Path, read_only: bool) -> Result<Self, Qcow2Error> {
        let file_len = file.metadata().map_err(io_err(path))?.len();
        let header = Self::read_header(&file, path)?;
        if !read_only {
            if header.nb_snapshots > 0 {
                return Err(Qcow2Error::Unsupported("writing an image with internal snapshots".into()));
            }
            if header.refcount_order != 4 {
                return Err(Qcow2Error::Unsupported(format!(
                    "writing {}-bit refcounts",
                    1 << header.refcount_order
                )));
            }
            if header.incompatible_features & header::INCOMPAT_DIRTY != 0 {
                return Err(Qcow2Error::Unsupported(
                    "the image was not closed cleanly: repair it with qemu-img check -r all".into(),
                ));
            }
        }
        let cluster_size = header.cluster_size();
        let l1 =
            read_table(&file, header.l1_table_offset, u64::from(header.l1_size)).map_err(io_err(path))?;
        let refcount_entries = u64::from(header.refcount_table_clusters) * cluster_size / 8;
        let refcount_table =
            read_table(&file, header.refcount_table_offset, refcount_entries).map_err(io_err(path))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            read_only,
            cluster_size,
            l2_entries: cluster_size / 8,
            l1,
            l2_cache: HashMap::new(),
            refcount_table,
            backing: None,
            next_cluster: file_len.div_ceil(cluster_size) * cluster_size,
            cluster_buf: vec![0; cluster_size as usize],
            header,
        })
    }

    /// Where the backing file `header` (of the image at `path`) names lies, and its
    /// format, once `policy` allows it.
    fn resolve_backing(
        path: &Path,
        header: &Header,
        policy: &mut ChainPolicy,
    ) -> Result<Option<(PathBuf, BackingFormat)>, Qcow2Error> {
        let Some(name) = &header.backing_file else { return Ok(None) };
        let dir = path.parent().unwrap_or(Path::new("."));
        let joined = dir.join(name);
        let fail = |reason: &str| Qcow2Error::Backing { path: joined.clone(), reason: reason.to_owned() };
        let resolved = joined.canonicalize().map_err(|e| fail(&e.to_string()))?;
        let fail = |reason: &str| Qcow2Error::Backing { path: resolved.clone(), reason: reason.to_owned() };
        policy.check_confined(&resolved).map_err(|reason| fail(&reason))?;
        let own = path.canonicalize().map_err(io_err(path))?;
        if resolved == own || policy.seen.contains(&resolved) {
            return Err(fail("the backing chain loops"));
        }
        if policy.seen.len() >= MAX_CHAIN_DEPTH {
            return Err(fail("the backing chain is too deep"));
        }
        policy.seen.push(own);
        // The format must be recorded: probing it would let data that merely looks like a
        // qcow2 header (say, written by a guest into a raw image) pick files to open.
        let format = match header.backing_format.as_deref() {
            Some("raw") => BackingFormat::Raw,
            Some("qcow2") => BackingFormat::Qcow2,
            Some(other) => return Err(fail(&format!("unsupported backing format {other:?}"))),
            None => return Err(fail("no backing format recorded (create the image with -F FORMAT)")),
        };
        Ok(Some((resolved, format)))
    }

    /// Creates a new image at `path` (which must not exist) of `size` bytes, on top of
    /// `backing` (a file name relative to the image's directory, and its format) if given.
    /// Takes the same time and space whatever `size`.
    pub fn create(path: &Path, size: u64, backing: Option<(&str, &str)>) -> Result<(), Qcow2Error> {
        if size > header::MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::Unsupported(format!("virtual size {size} beyond 64 TiB")));
        }
        let cluster_bits = DEFAULT_CLUSTER_BITS;
        let cluster_size = 1u64 << cluster_bits;
        let l1_size = Header::l1_entries_for(size, cluster_bits).max(1);
        let l1_clusters = (l1_size * 8).div_ceil(cluster_size);
        // Cluster 0: header; 1: refcount table; 2: first refcount block; 3..: L1 table.
        let header = Header {
            version: 3,
            backing_file: backing.map(|(name, _)| name.to_owned()),
            backing_format: backing.map(|(_, format)| format.to_owned()),
            cluster_bits,
            size,
            l1_size: l1_size as u32,
            l1_table_offset: 3 * cluster_size,
            refcount_table_offset: cluster_size,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            incompatible_features: 0,
            refcount_order: 4,
        };
        let encoded = header.encode();
        if encoded.len() as u64 > cluster_size {
            return Err(Qcow2Error::Unsupported("backing file name too long".into()));
        }
        let file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_err(path))?;
        let used_clusters = 3 + l1_clusters;
        let mut refblock = vec![0u8; (used_clusters * 2) as usize];
        for entry in refblock.chunks_exact_mut(2) {
            entry.copy_from_slice(&1u16.to_be_bytes());
        }
        let write = || -> io::Result<()> {
            file.set_len(used_clusters * cluster_size)?;
            file.write_all_at(&encoded, 0)?;
            file.write_all_at(&(2 * cluster_size).to_be_bytes(), cluster_size)?;
            file.write_all_at(&refblock, 2 * cluster_size)?;
            file.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(path);
            io_err(path)(e)
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Grows the virtual disk to `new_size` bytes (the new space reads as zeros, or as the
    /// backing file where it is larger). Moves the L1 table to the end of the file when it
    /// needs more clusters; the header switches to the new table in one write.
    pub fn resize(&mut self, new_size: u64) -> Result<(), Qcow2Error> {
        let path = self.path.clone();
        let err = io_err(&path);
        self.writable().map_err(&err)?;
        if new_size < self.header.size {
            return Err(Qcow2Error::Unsupported("shrinking an image".into()));
        }
        if new_size > header::MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::Unsupported(format!("virtual size {new_size} beyond 64 TiB")));
        }
        let needed = Header::l1_entries_for(new_size, self.header.cluster_bits).max(1);
        let old_entries = u64::from(self.header.l1_size);
        let old_clusters = (old_entries * 8).div_ceil(self.cluster_size);
        let mut l1_offset = self.header.l1_table_offset;
        if needed > old_entries {
            self.l1.resize(needed as usize, 0);
            let bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            if needed * 8 <= old_clusters * self.cluster_size {
                // The new entries fit in the table's last cluster: zero them in place.
                self.file.write_all_at(&bytes, l1_offset).map_err(&err)?;
            } else {
                let clusters = (needed * 8).div_ceil(self.cluster_size);
                let new = self.next_cluster;
                self.next_cluster += clusters * self.cluster_size;
                for i in 0..clusters {
                    self.set_refcount(new + i * self.cluster_size, 1).map_err(&err)?;
                }
                self.file.write_all_at(&bytes, new).map_err(&err)?;
                self.file.sync_data().map_err(&err)?;
                l1_offset = new;
            }
        }
        // size (24..32), crypt method (32..36, zero), l1_size (36..40), L1 offset (40..48).
        let mut fields = [0u8; 24];
        fields[0..8].copy_from_slice(&new_size.to_be_bytes());
        fields[12..16].copy_from_slice(&(self.l1.len() as u32).to_be_bytes());
        fields[16..24].copy_from_slice(&l1_offset.to_be_bytes());
        self.file.write_all_at(&fields, 24).map_err(&err)?;
        self.file.sync_data().map_err(&err)?;
        if l1_offset != self.header.l1_table_offset {
            for i in 0..old_clusters {
                self.set_refcount(self.header.l1_table_offset + i * self.cluster_size, 0).map_err(&err)?;
            }
        }
        self.header.size = new_size;
        self.header.l1_size = self.l1.len() as u32;
        self.header.l1_table_offset = l1_offset;
        Ok(())
    }

    fn load_l2(&mut self, offset: u64) -> io::Result<&mut Vec<u64>> {
        if !self.l2_cache.contains_key(&offset) {
            if offset % self.cluster_size != 0 || offset + self.cluster_size > self.next_cluster {
                return Err(corrupt(format!("L2 table at {offset:#x} outside the image")));
            }
            let table = read_table(&self.file, offset, self.l2_entries)?;
            if self.l2_cache.len() >= L2_CACHE_TABLES {
                self.l2_cache.clear();
            }
            self.l2_cache.insert(offset, table);
        }
        self.l2_cache.get_mut(&offset).ok_or_else(|| corrupt("L2 cache"))
    }

    fn indexes(&self, pos: u64) -> (usize, usize) {
        let cluster = pos / self.cluster_size;
        ((cluster / self.l2_entries) as usize, (cluster % self.l2_entries) as usize)
    }

    fn lookup(&mut self, pos: u64) -> io::Result<Mapping> {
        let (l1_index, l2_index) = self.indexes(pos);
        let l1_entry = *self.l1.get(l1_index).ok_or_else(|| corrupt("offset beyond the L1 table"))?;
        let l2_offset = l1_entry & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(Mapping::Unallocated);
        }
        let shared_table = l1_entry & COPIED == 0;
        let version = self.header.version;
        let limit = self.next_cluster;
        let cluster_size = self.cluster_size;
        let entry = self.load_l2(l2_offset)?[l2_index];
        if entry & COMPRESSED != 0 {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "compressed qcow2 clusters"));
        }
        if version >= 3 && entry & ZERO != 0 {
            return Ok(Mapping::Zero);
        }
        let host = entry & OFFSET_MASK;
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        if host % cluster_size != 0 || host + cluster_size > limit {
            return Err(corrupt(format!("data cluster at {host:#x} outside the image")));
        }
        Ok(Mapping::Data { host, owned: entry & COPIED != 0 && !shared_table })
    }

    /// Reads `buf.len()` bytes at `pos` (within one cluster) from below this image.
    fn read_below(&mut self, pos: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
        let available = match &self.backing {
            Some(backing) => backing.size().saturating_sub(pos).min(buf.len() as u64) as usize,
            None => 0,
        };
        if let (Some(backing), true) = (&mut self.backing, available > 0) {
            backing.read_at(pos, &buf.subslice(0, available).map_err(|_| corrupt("slice"))?)?;
        }
        fill_zero(&buf.subslice(available, buf.len() - available).map_err(|_| corrupt("slice"))?);
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.header.size => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "beyond the end of the disk")),
        }
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(io::Error::from_raw_os_error(libc::EROFS))
        } else {
            Ok(())
        }
    }

    fn allocate_cluster(&mut self) -> io::Result<u64> {
        let offset = self.next_cluster;
        self.next_cluster += self.cluster_size;
        self.set_refcount(offset, 1)?;
        Ok(offset)
    }

    fn set_refcount(&mut self, cluster: u64, count: u16) -> io::Result<()> {
        let per_block = self.cluster_size / 2;
        let index = cluster / self.cluster_size;
        let table_index = (index / per_block) as usize;
        let entry = *self
            .refcount_table
            .get(table_index)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        let mut block = entry & OFFSET_MASK;
        if block == 0 {
            block = self.next_cluster;
            self.next_cluster += self.cluster_size;
            self.file.write_all_at(&vec![0u8; self.cluster_size as usize], block)?;
            self.refcount_table[table_index] = block;
            let at = self.header.refcount_table_offset + table_index as u64 * 8;
            self.file.write_all_at(&block.to_be_bytes(), at)?;
            // The new block counts itself (it lies in a range it or an earlier block covers).
            self.set_refcount(block, 1)?;
        }
        self.file.write_all_at(&count.to_be_bytes(), block + (index % per_block) * 2)
    }

    /// Points the virtual cluster at `pos` to `entry`, making its L2 table first if needed.
    fn set_l2_entry(&mut self, pos: u64, entry: u64) -> io::Result<()> {
        let (l1_index, l2_index) = self.indexes(pos);
        let l1_entry = self.l1[l1_index];
        let mut table_offset = l1_entry & OFFSET_MASK;
        if table_offset == 0 || l1_entry & COPIED == 0 {
            let table = if table_offset == 0 {
                vec![0u64; self.l2_entries as usize]
            } else {
                self.load_l2(table_offset)?.clone()
            };
            let new = self.allocate_cluster()?;
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all_at(&bytes, new)?;
            self.l2_cache.insert(new, table);
            self.l1[l1_index] = new | COPIED;
            let at = self.header.l1_table_offset + l1_index as u64 * 8;
            self.file.write_all_at(&(new | COPIED).to_be_bytes(), at)?;
            table_offset = new;
        }
        self.load_l2(table_offset)?[l2_index] = entry;
        self.file.write_all_at(&entry.to_be_bytes(), table_offset + l2_index as u64 * 8)
    }

    /// Writes one piece (within a cluster) from `buf`.
    fn write_piece(&mut self, pos: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
        let in_cluster = pos % self.cluster_size;
        let cluster_start = pos - in_cluster;
        let mapping = self.lookup(pos)?;
        if let Mapping::Data { host, owned: true } = mapping {
            return raw::write_from(&self.file, host + in_cluster, buf);
        }
        let new = self.allocate_cluster()?;
        if buf.len() as u64 != self.cluster_size {
            // Fill the new cluster with what the rest of it reads as now, then overlay.
            let mut scratch = std::mem::take(&mut self.cluster_buf);
            let result = self.read_cluster_into(cluster_start, &mapping, &mut scratch).and_then(|()| {
                buf.copy_to(&mut scratch[in_cluster as usize..in_cluster as usize + buf.len()]);
                self.file.write_all_at(&scratch, new)
            });
            self.cluster_buf = scratch;
            result?;
        } else {
            raw::write_from(&self.file, new, buf)?;
        }
        self.set_l2_entry(pos, new | COPIED)
    }

    fn read_cluster_into(&mut self, cluster_start: u64, mapping: &Mapping, out: &mut [u8]) -> io::Result<()> {
        match mapping {
            Mapping::Data { host, .. } => self.file.read_exact_at(out, *host),
            Mapping::Zero => {
                out.fill(0);
                Ok(())
            }
            Mapping::Unallocated => self.read_below(cluster_start, &VolatileSlice::from(out)),
        }
    }

    /// Makes whole clusters read as zeros and frees what they held; partial clusters get
    /// zeros written.
    fn zero_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        self.check_range(offset, len)?;
        for (pos, _, n) in pieces(self.cluster_size, offset, len) {
            if n == self.cluster_size && self.header.version >= 3 {
                if let Mapping::Data { host, owned: true } = self.lookup(pos)? {
                    self.set_l2_entry(pos, ZERO)?;
                    self.set_refcount(host, 0)?;
                    let _ = raw::punch_hole(&self.file, host, self.cluster_size);
                } else {
                    self.set_l2_entry(pos, ZERO)?;
                }
            } else {
                let mut zeros = vec![0u8; n as usize];
                self.write_piece(pos, &VolatileSlice::from(&mut zeros[..]))?;
            }
        }
        Ok(())
    }
}

/// Splits `[offset, offset + len)` at cluster boundaries: (position, offset in the range,
/// length).
fn pieces(cluster_size: u64, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        (done < len).then(|| {
            let pos = offset + done;
            let n = (cluster_size - pos % cluster_size).min(len - done);
            let piece = (pos, done, n);
            done += n;
            piece
        })
    })
}

fn fill_zero(buf: &VolatileSlice<'_>) {
    static ZEROS: [u8; 4096] = [0; 4096];
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(ZEROS.len());
        if let Ok(part) = buf.subslice(done, n) {
            part.copy_from(&ZEROS[..n]);
        }
        done += n;
    }
}

impl BlockBackend for Qcow2 {
    fn size(&self) -> u64 {
        self.header.size
    }

    fn read_at(&mut self, offset: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        for (pos, at, n) in pieces(self.cluster_size, offset, buf.len() as u64) {
            let part = buf.subslice(at as usize, n as usize).map_err(|_| corrupt("slice"))?;
            match self.lookup(pos)? {
                Mapping::Data { host, .. } => {
                    raw::read_into(&self.file, host + pos % self.cluster_size, &part)?
                }
                Mapping::Zero => fill_zero(&part),
                Mapping::Unallocated => self.read_below(pos, &part)?,
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
        self.writable()?;
        self.check_range(offset, buf.len() as u64)?;
        for (pos, at, n) in pieces(self.cluster_size, offset, buf.len() as u64) {
            self.write_piece(pos, &buf.subslice(at as usize, n as usize).map_err(|_| corrupt("slice"))?)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2").field("path", &self.path).field("header", &self.header).finish()
    }
}

#[cfg(test)]
mod tests;
