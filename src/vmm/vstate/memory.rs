//! Guest RAM: anonymous host mappings split around the 32-bit MMIO hole.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::vmm::boot::layout::{FOUR_GIB, MMIO_HOLE_START};

/// Guest memory as used by every part of the VMM.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host refused to map the requested RAM.
    #[error("cannot map {size_mib} MiB of guest RAM: {source}")]
    Map {
        /// Requested size.
        size_mib: u64,
        /// What vm-memory reported.
        source: vm_memory::mmap::FromRangesError,
    },
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

/// Maps `size_mib` MiB of private, lazily populated guest RAM.
pub fn create_guest_memory(size_mib: u64) -> Result<GuestMemory, MemoryError> {
    let size = size_mib << 20;
    let ranges: Vec<(GuestAddress, usize)> =
        ram_ranges(size).into_iter().map(|(start, len)| (start, len as usize)).collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { size_mib, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
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
