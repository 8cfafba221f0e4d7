//! Storage: the block backends that virtio-blk devices read and write.
//!
//! Devices see only the narrow [`BlockBackend`] trait, so disk formats (raw files today,
//! copy-on-write formats next) plug in without touching the device model.

pub mod raw;

use vm_memory::VolatileSlice;

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
