//! virtio-blk requests (virtio 1.2, 5.2.6): parsing a descriptor chain and executing it on
//! a [`BlockBackend`].
//!
//! A request is a read-only header, data buffers, and a one-byte write-only status at the
//! end. Everything in it is guest-controlled: the chain length, the direction and size of
//! every buffer, the sector range and the discard segments are all checked, and a bad
//! request fails with IOERR (or is dropped when it has no status byte to report through).
//! Descriptors are gathered into a buffer reused across requests: no allocation per request.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, ByteValued, Bytes, GuestMemoryBackend as _};

use crate::block::qcow2::Qcow2;
use crate::block::{BlockBackend, Vacant};
use crate::vmm::vstate::memory::GuestMemory;

/// Bytes per virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
/// Most data segments one request may have (advertised as `seg_max`).
pub const MAX_SEGMENTS: usize = 126;
/// Most segments one discard or write-zeroes request may have.
pub const MAX_DISCARD_SEGMENTS: u32 = 32;
/// Most sectors one discard or write-zeroes segment may cover (advertised).
pub const MAX_DISCARD_SECTORS: u32 = u32::MAX / SECTOR_SIZE as u32;
/// Length of the device id returned by GET_ID.
pub const ID_BYTES: usize = 20;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// The request header.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: plain integers with no padding (4 + 4 + 8 bytes, 8-byte aligned).
unsafe impl ByteValued for RequestHeader {}

/// One range of a discard or write-zeroes request.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct DiscardSegment {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}

// SAFETY: plain integers with no padding (8 + 4 + 4 bytes, 8-byte aligned).
unsafe impl ByteValued for DiscardSegment {}

/// Why a request failed; the guest sees IOERR or UNSUPP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain has no write-only status byte at its end.
    #[error("no status descriptor")]
    NoStatus,
    /// The chain is longer than the device accepts.
    #[error("too many descriptors")]
    TooManyDescriptors,
    /// The header is missing, too short or writable.
    #[error("bad request header")]
    BadHeader,
    /// A data buffer points in the wrong direction.
    #[error("data buffer with the wrong direction")]
    WrongDirection,
    /// Data length not a multiple of the sector size, or zero where data is needed.
    #[error("bad data length {0}")]
    BadLength(u64),
    /// The sector range lies (partly) beyond the disk.
    #[error("sectors beyond the end of the disk")]
    OutOfRange,
    /// A buffer lies outside guest memory.
    #[error("buffer outside guest memory")]
    GuestMemory,
    /// A write to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// An unknown request type.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// The backend failed.
    #[error("backend I/O error: {0}")]
    Io(String),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => S_UNSUPP,
            _ => S_IOERR,
        }
    }
}

/// Executes requests for one disk.
pub struct RequestExecutor {
    backend: Box<dyn BlockBackend>,
    read_only: bool,
    id: [u8; ID_BYTES],
    descriptors: Vec<Descriptor>,
    max_descriptors: usize,
    paused: bool,
}

impl RequestExecutor {
    /// An executor for `backend`; `id` is returned by GET_ID (truncated to 20 bytes).
    /// `queue_size` bounds the chain length the guest can build.
    pub fn new(backend: Box<dyn BlockBackend>, read_only: bool, id: &str, queue_size: u16) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Self {
            backend,
            read_only,
            id: id_bytes,
            descriptors: Vec::with_capacity(usize::from(queue_size)),
            max_descriptors: usize::from(queue_size),
            paused: false,
        }
    }

    /// Stops serving requests (they wait in the ring) and makes what was written durable,
    /// so the backend can be switched under a running guest.
    pub fn pause(&mut self) -> std::io::Result<()> {
        self.paused = true;
        if self.read_only {
            Ok(())
        } else {
            self.backend.flush()
        }
    }

    /// Serves requests again.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Whether requests are held back.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Puts the paused disk under `layer`, a new top layer made over it: the disk's
    /// backend stays open as the layer's backing file.
    pub fn stack_layer(&mut self, layer: Qcow2) -> Result<(), String> {
        if !self.paused {
            return Err("the disk must be paused first".into());
        }
        if layer.size() != self.backend.size() {
            return Err(format!(
                "the new layer has {} bytes, the disk {}",
                layer.size(),
                self.backend.size()
            ));
        }
        let below = std::mem::replace(&mut self.backend, Box::new(Vacant));
        self.backend = Box::new(layer.over(below));
        Ok(())
    }

    /// Capacity of the disk in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.backend.size() / SECTOR_SIZE
    }

    /// Executes the request made of `chain` and writes its status. Returns how many bytes
    /// were written into guest buffers (the used-ring length).
    pub fn execute(&mut self, mem: &GuestMemory, chain: impl Iterator<Item = Descriptor>) -> u32 {
        self.descriptors.clear();
        let mut overflow = false;
        for desc in chain {
            if self.descriptors.len() == self.max_descriptors {
                overflow = true;
                break;
            }
            self.descriptors.push(desc);
        }
        let Some(status_desc) = self.descriptors.last().copied() else { return 0 };
        if !status_desc.is_write_only() || status_desc.len() == 0 || self.descriptors.len() < 2 || overflow {
            tracing::debug!(error = %RequestError::NoStatus, "virtio-blk request dropped");
            return 0;
        }
        let (status, written) = match self.run(mem) {
            Ok(written) => (S_OK, written),
            Err(e) => {
                tracing::debug!(error = %e, "virtio-blk request failed");
                (e.status(), 0)
            }
        };
        if mem.write_obj(status, status_desc.addr()).is_err() {
            return 0;
        }
        written.saturating_add(1)
    }

    fn run(&mut self, mem: &GuestMemory) -> Result<u32, RequestError> {
        let count = self.descriptors.len();
        if count > MAX_SEGMENTS + 2 {
            return Err(RequestError::TooManyDescriptors);
        }
        let header_desc = self.descriptors[0];
        if header_desc.is_write_only() || (header_desc.len() as usize) < std::mem::size_of::<RequestHeader>()
        {
            return Err(RequestError::BadHeader);
        }
        let header: RequestHeader =
            mem.read_obj(header_desc.addr()).map_err(|_| RequestError::GuestMemory)?;
        let data = 1..count - 1;
        match header.request_type {
            T_IN => self.transfer(mem, header.sector, data, true),
            T_OUT => self.transfer(mem, header.sector, data, false).map(|_| 0),
            T_FLUSH => {
                if !self.read_only {
                    self.backend.flush().map_err(|e| RequestError::Io(e.to_string()))?;
                }
                Ok(0)
            }
            T_GET_ID => self.get_id(mem, data),
            T_DISCARD | T_WRITE_ZEROES => {
                self.discard(mem, data, header.request_type == T_DISCARD).map(|_| 0)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Reads (`read` = IN) or writes the data buffers at `sector`.
    fn transfer(
        &mut self,
        mem: &GuestMemory,
        sector: u64,
        data: std::ops::Range<usize>,
        read: bool,
    ) -> Result<u32, RequestError> {
        if !read && self.read_only {
            return Err(RequestError::ReadOnly);
        }
        let mut total = 0u64;
        for desc in &self.descriptors[data.clone()] {
            if desc.is_write_only() != read {
                return Err(RequestError::WrongDirection);
            }
            if desc.len() == 0 {
                return Err(RequestError::BadLength(0));
            }
            total += u64::from(desc.len());
        }
        if total % SECTOR_SIZE != 0 {
            return Err(RequestError::BadLength(total));
        }
        let start = sector.checked_mul(SECTOR_SIZE).ok_or(RequestError::OutOfRange)?;
        let end = start.checked_add(total).ok_or(RequestError::OutOfRange)?;
        if end > self.backend.size() {
            return Err(RequestError::OutOfRange);
        }
        let mut offset = start;
        for desc in &self.descriptors[data] {
            let slice =
                mem.get_slice(desc.addr(), desc.len() as usize).map_err(|_| RequestError::GuestMemory)?;
            let result = if read {
                self.backend.read_at(offset, &slice)
            } else {
                self.backend.write_at(offset, &slice)
            };
            result.map_err(|e| RequestError::Io(e.to_string()))?;
            offset += u64::from(desc.len());
        }
        Ok(if read { total as u32 } else { 0 })
    }

    fn get_id(&mut self, mem: &GuestMemory, data: std::ops::Range<usize>) -> Result<u32, RequestError> {
        let desc =
            self.descriptors.get(data.start).filter(|_| data.len() == 1).ok_or(RequestError::BadLength(0))?;
        if !desc.is_write_only() {
            return Err(RequestError::WrongDirection);
        }
        let n = (desc.len() as usize).min(ID_BYTES);
        mem.write_slice(&self.id[..n], desc.addr()).map_err(|_| RequestError::GuestMemory)?;
        Ok(n as u32)
    }

    fn discard(
        &mut self,
        mem: &GuestMemory,
        data: std::ops::Range<usize>,
        discard: bool,
    ) -> Result<(), RequestError> {
        if self.read_only {
            return Err(RequestError::ReadOnly);
        }
        let segment_size = std::mem::size_of::<DiscardSegment>() as u64;
        let mut segments = 0u32;
        for i in data {
            let desc = self.descriptors[i];
            if desc.is_write_only() {
                return Err(RequestError::WrongDirection);
            }
            let len = u64::from(desc.len());
            if len == 0 || len % segment_size != 0 {
                return Err(RequestError::BadLength(len));
            }
            for k in 0..len / segment_size {
                segments += 1;
                if segments > MAX_DISCARD_SEGMENTS {
                    return Err(RequestError::TooManyDescriptors);
                }
                let addr = desc.addr().checked_add(k * segment_size).ok_or(RequestError::GuestMemory)?;
                let segment: DiscardSegment = mem.read_obj(addr).map_err(|_| RequestError::GuestMemory)?;
                self.discard_segment(segment, discard)?;
            }
        }
        if segments == 0 {
            return Err(RequestError::BadLength(0));
        }
        Ok(())
    }

    fn discard_segment(&mut self, segment: DiscardSegment, discard: bool) -> Result<(), RequestError> {
        let start = segment.sector.checked_mul(SECTOR_SIZE).ok_or(RequestError::OutOfRange)?;
        let len = u64::from(segment.num_sectors) * SECTOR_SIZE;
        let end = start.checked_add(len).ok_or(RequestError::OutOfRange)?;
        if end > self.backend.size() {
            return Err(RequestError::OutOfRange);
        }
        let result =
            if discard { self.backend.discard(start, len) } else { self.backend.write_zeroes(start, len) };
        result.map_err(|e| RequestError::Io(e.to_string()))
    }
}
