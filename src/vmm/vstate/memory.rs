//! Guest RAM: anonymous host mappings split around the 32-bit MMIO hole, each starting on a
//! 2 MiB boundary of the host's address space.
//!
//! The alignment is what lets KVM map guest memory with 2 MiB pages where the host backs it
//! with transparent huge pages: a huge mapping needs the guest-physical and host-virtual
//! addresses to agree modulo 2 MiB. An unaligned mapping gets only 4 KiB pages, and every
//! first touch of a guest page is then an exit into the host's page-fault path (measured in
//! the nested boot benchmark: the guest's own boot ran about 1.5x slower). The mappings are
//! also advised as huge-page candidates, for hosts whose THP setting is `madvise`.

use std::sync::Arc;

use vm_memory::bitmap::{Bitmap, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::vmm::arch::layout::{FOUR_GIB, MMIO_HOLE_START};

/// Guest memory as used by every part of the VMM.
pub type GuestMemory = GuestMemoryMmap<RamMapping>;

/// The boundary guest RAM is aligned to on the host (one huge page).
const HUGE_PAGE: usize = 2 << 20;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused to map the requested RAM.
    #[error("cannot map {size_mib} MiB of guest RAM: {source}")]
    Map {
        /// Requested size.
        size_mib: u64,
        /// What the host reported.
        source: std::io::Error,
    },
    /// vm-memory rejected the regions.
    #[error("cannot build guest memory of {size_mib} MiB: {message}")]
    Regions {
        /// Requested size.
        size_mib: u64,
        /// What vm-memory reported.
        message: String,
    },
}

/// One host mapping of guest RAM, unmapped when the last region using it is gone.
#[derive(Debug)]
struct Mapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; the pointer is only used to unmap it, once.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references never touch the pointer.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` describe a mapping this value created and nothing else unmaps;
        // every region that could reach it has been dropped (they hold this value).
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// What each guest RAM region carries in vm-memory's per-region bitmap slot: ownership of
/// its aligned host mapping (vm-memory only owns mappings it placed itself). It tracks no
/// dirty pages.
#[derive(Debug, Clone)]
pub struct RamMapping {
    /// Held, never read: dropping the last holder unmaps the memory.
    _mapping: Arc<Mapping>,
}

impl WithBitmapSlice<'_> for RamMapping {
    type S = ();
}

impl Bitmap for RamMapping {
    fn mark_dirty(&self, _offset: usize, _len: usize) {}
    fn dirty_at(&self, _offset: usize) -> bool {
        false
    }
    fn slice_at(&self, _offset: usize) {}
}

/// The guest-physical RAM ranges for `size` bytes: one below the MMIO hole and, for large
/// guests, the remainder starting at 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_HOLE_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![(GuestAddress(0), MMIO_HOLE_START), (GuestAddress(FOUR_GIB), size - MMIO_HOLE_START)]
    }
}

/// Maps `len` bytes of private, lazily populated memory at a 2 MiB-aligned host address:
/// reserves `len` + 2 MiB, then gives back the unaligned head and the tail.
fn map_aligned(len: usize) -> std::io::Result<Mapping> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let reserved =
        len.checked_add(HUGE_PAGE).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new anonymous mapping at an address the kernel picks; nothing is overwritten.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), reserved, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let head = (HUGE_PAGE - base as usize % HUGE_PAGE) % HUGE_PAGE;
    let tail = reserved - head - len;
    // SAFETY: both ranges lie inside the reservation just made and outside what is kept.
    unsafe {
        let addr = base.cast::<u8>();
        if head > 0 {
            libc::munmap(addr.cast(), head);
        }
        if tail > 0 {
            libc::munmap(addr.add(head + len).cast(), tail);
        }
        let kept = addr.add(head);
        // Only advice: a host without THP ignores it.
        libc::madvise(kept.cast(), len, libc::MADV_HUGEPAGE);
        Ok(Mapping { addr: kept, len })
    }
}

/// Maps `size_mib` MiB of private, lazily populated guest RAM, 2 MiB-aligned on the host.
pub fn create_guest_memory(size_mib: u64) -> Result<GuestMemory, MemoryError> {
    let map_error = |source| MemoryError::Map { size_mib, source };
    let region_error = |e: &dyn std::fmt::Display| MemoryError::Regions { size_mib, message: e.to_string() };
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(size_mib << 20) {
        let len =
            usize::try_from(len).map_err(|_| map_error(std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        let mapping = Arc::new(map_aligned(len).map_err(map_error)?);
        let owner = RamMapping { _mapping: mapping.clone() };
        // SAFETY: `mapping` is a live mapping of exactly `len` bytes, kept alive by `owner`,
        // which the region holds for as long as it exists.
        let region = unsafe {
            MmapRegionBuilder::new_with_bitmap(len, owner)
                .with_raw_mmap_pointer(mapping.addr)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
        }
        .build()
        .map_err(|e| region_error(&e))?;
        regions.push(GuestRegionMmap::new(region, start).ok_or_else(|| region_error(&"region overflows"))?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| region_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn ram_is_2mib_aligned_on_the_host_and_unmapped_when_dropped() {
        use vm_memory::{GuestMemoryBackend as _, GuestMemoryRegion as _};
        let mem = create_guest_memory(18).unwrap();
        let region = mem.iter().next().unwrap();
        let host = region.as_ptr() as usize;
        assert_eq!(host % HUGE_PAGE, 0, "host address {host:#x}");
        assert_eq!(region.len(), 18 << 20);
        mem.write_obj(0xabu8, GuestAddress((18 << 20) - 1)).unwrap();
        let clone = mem.clone();
        drop(mem);
        // A clone keeps the mapping; the last one unmaps it.
        assert_eq!(clone.read_obj::<u8>(GuestAddress((18 << 20) - 1)).unwrap(), 0xab);
        drop(clone);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps.lines().any(|l| l.starts_with(&format!("{host:x}-")));
        assert!(!mapped, "the mapping at {host:#x} outlived its regions");
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let ranges = ram_ranges(8 << 30);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0], (GuestAddress(0), MMIO_HOLE_START));
        assert_eq!(ranges[1].0, GuestAddress(FOUR_GIB));
        assert_eq!(ranges[0].1 + ranges[1].1, 8 << 30);
    }
}
