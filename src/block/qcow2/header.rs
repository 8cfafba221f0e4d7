//! The qcow2 header (big-endian): parsed with every field checked, so a truncated or hostile
//! file is refused before anything is read through it.

use super::Qcow2Error;

/// "QFI\xfb".
pub const MAGIC: u32 = 0x5146_49fb;
/// Header length of version 3 as nuage writes it.
pub const V3_HEADER_LEN: u32 = 104;
/// Header extension: the backing file's format.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Incompatible feature bit: the image was not closed cleanly (refcounts may be stale).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit: the image is marked corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Smallest and largest cluster sizes qemu accepts (512 B, 2 MiB).
pub const CLUSTER_BITS: std::ops::RangeInclusive<u32> = 9..=21;
/// Largest virtual size accepted (64 TiB).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Longest backing file name accepted.
const MAX_BACKING_NAME: u32 = 1023;

/// The fields nuage uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// The backing file name as stored (relative to the image's directory unless absolute).
    pub backing_file: Option<String>,
    /// The backing file's format, from the header extension.
    pub backing_format: Option<String>,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Entries in the L1 table.
    pub l1_size: u32,
    /// Where the L1 table starts.
    pub l1_table_offset: u64,
    /// Where the refcount table starts.
    pub refcount_table_offset: u64,
    /// Clusters the refcount table occupies.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// Incompatible feature bits (version 3).
    pub incompatible_features: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes)
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes)
}

impl Header {
    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// L1 entries needed to map `size` bytes with `cluster_bits`.
    pub fn l1_entries_for(size: u64, cluster_bits: u32) -> u64 {
        let bytes_per_l2 = (1u64 << cluster_bits) / 8 * (1u64 << cluster_bits);
        size.div_ceil(bytes_per_l2)
    }

    /// Parses the first cluster of an image (`first` holds at least its first 4 KiB, or the
    /// whole file when shorter) whose file is `file_len` bytes long.
    pub fn parse(first: &[u8], file_len: u64) -> Result<Self, Qcow2Error> {
        let corrupt = |what: &str| Qcow2Error::Corrupt(what.to_owned());
        if first.len() < 72 {
            return Err(corrupt("file shorter than a qcow2 header"));
        }
        if be32(first, 0) != MAGIC {
            return Err(Qcow2Error::NotQcow2);
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Qcow2Error::Unsupported(format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(first, 20);
        if !CLUSTER_BITS.contains(&cluster_bits) {
            return Err(corrupt("cluster size out of range"));
        }
        let cluster_size = 1u64 << cluster_bits;
        let size = be64(first, 24);
        if size > MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::Unsupported(format!("virtual size {size} beyond 64 TiB")));
        }
        if be32(first, 32) != 0 {
            return Err(Qcow2Error::Unsupported("encrypted images".into()));
        }
        let mut header = Header {
            version,
            backing_file: None,
            backing_format: None,
            cluster_bits,
            size,
            l1_size: be32(first, 36),
            l1_table_offset: be64(first, 40),
            refcount_table_offset: be64(first, 48),
            refcount_table_clusters: be32(first, 56),
            nb_snapshots: be32(first, 60),
            incompatible_features: 0,
            refcount_order: 4,
        };
        let mut header_len = 72u32;
        if version == 3 {
            if first.len() < 104 {
                return Err(corrupt("version 3 header truncated"));
            }
            header.incompatible_features = be64(first, 72);
            header.refcount_order = be32(first, 96);
            header_len = be32(first, 100);
            if header_len < 104 || u64::from(header_len) > cluster_size || header_len as usize > first.len() {
                return Err(corrupt("header length out of range"));
            }
            if header.refcount_order > 6 {
                return Err(corrupt("refcount width out of range"));
            }
        }
        if header.incompatible_features & INCOMPAT_CORRUPT != 0 {
            return Err(Qcow2Error::Unsupported(
                "the image is marked corrupt (qemu-img check -r all)".into(),
            ));
        }
        let known = INCOMPAT_DIRTY;
        if header.incompatible_features & !known != 0 {
            return Err(Qcow2Error::Unsupported(format!(
                "incompatible features {:#x} (external data file, compression type or extended L2)",
                header.incompatible_features & !known
            )));
        }
        let aligned = |offset: u64| offset % cluster_size == 0 && offset != 0;
        let l1_bytes = u64::from(header.l1_size) * 8;
        if u64::from(header.l1_size) < Self::l1_entries_for(size, cluster_bits) || l1_bytes > 32 << 20 {
            return Err(corrupt("L1 table size does not match the virtual size"));
        }
        if !aligned(header.l1_table_offset) || header.l1_table_offset.saturating_add(l1_bytes) > file_len {
            return Err(corrupt("L1 table outside the file"));
        }
        let refcount_bytes = u64::from(header.refcount_table_clusters) * cluster_size;
        if header.refcount_table_clusters == 0
            || refcount_bytes > 32 << 20
            || !aligned(header.refcount_table_offset)
            || header.refcount_table_offset.saturating_add(refcount_bytes) > file_len
        {
            return Err(corrupt("refcount table outside the file"));
        }
        header.parse_backing_name(first, cluster_size)?;
        header.parse_extensions(first, header_len as usize, cluster_size)?;
        Ok(header)
    }

    fn parse_backing_name(&mut self, first: &[u8], cluster_size: u64) -> Result<(), Qcow2Error> {
        let offset = be64(first, 8);
        let len = be32(first, 16);
        if offset == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(u64::from(len))
            .filter(|&end| end <= cluster_size && end <= first.len() as u64);
        let (Some(end), true) = (end, len > 0 && len <= MAX_BACKING_NAME) else {
            return Err(Qcow2Error::Corrupt("backing file name outside the header cluster".into()));
        };
        let name = std::str::from_utf8(&first[offset as usize..end as usize])
            .map_err(|_| Qcow2Error::Corrupt("backing file name is not UTF-8".into()))?;
        self.backing_file = Some(name.to_owned());
        Ok(())
    }

    fn parse_extensions(&mut self, first: &[u8], start: usize, cluster_size: u64) -> Result<(), Qcow2Error> {
        let limit = first.len().min(cluster_size as usize);
        let mut at = start;
        while at + 8 <= limit {
            let (kind, len) = (be32(first, at), be32(first, at + 4) as usize);
            if kind == 0 {
                return Ok(());
            }
            let data = first
                .get(at + 8..at + 8 + len)
                .filter(|_| at + 8 + len <= limit)
                .ok_or_else(|| Qcow2Error::Corrupt("header extension runs past the header cluster".into()))?;
            if kind == EXT_BACKING_FORMAT {
                let format = std::str::from_utf8(data)
                    .map_err(|_| Qcow2Error::Corrupt("backing format is not UTF-8".into()))?;
                self.backing_format = Some(format.to_owned());
            }
            at += 8 + len.div_ceil(8) * 8;
        }
        Ok(())
    }

    /// Encodes a version 3 header with its extensions and the backing file name, as the
    /// first bytes of the header cluster.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; V3_HEADER_LEN as usize];
        let put32 = |out: &mut Vec<u8>, at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_be_bytes());
        let put64 = |out: &mut Vec<u8>, at: usize, v: u64| out[at..at + 8].copy_from_slice(&v.to_be_bytes());
        put32(&mut out, 0, MAGIC);
        put32(&mut out, 4, 3);
        put32(&mut out, 20, self.cluster_bits);
        put64(&mut out, 24, self.size);
        put32(&mut out, 36, self.l1_size);
        put64(&mut out, 40, self.l1_table_offset);
        put64(&mut out, 48, self.refcount_table_offset);
        put32(&mut out, 56, self.refcount_table_clusters);
        put64(&mut out, 72, self.incompatible_features);
        put32(&mut out, 96, self.refcount_order);
        put32(&mut out, 100, V3_HEADER_LEN);
        if let Some(format) = &self.backing_format {
            out.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            out.extend_from_slice(&(format.len() as u32).to_be_bytes());
            out.extend_from_slice(format.as_bytes());
            out.resize(out.len().div_ceil(8) * 8, 0);
        }
        out.extend_from_slice(&[0u8; 8]); // end of extensions
        if let Some(name) = &self.backing_file {
            let offset = out.len() as u64;
            put64(&mut out, 8, offset);
            put32(&mut out, 16, name.len() as u32);
            out.extend_from_slice(name.as_bytes());
        }
        out
    }
}
