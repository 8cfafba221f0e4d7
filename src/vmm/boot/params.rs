//! The Linux zero page (`struct boot_params`) and its e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::loader::{LoadedInitrd, LoadedKernel};
use crate::vmm::arch::layout::{CMDLINE_START, EBDA_START, HIMEM_START, RSDP_START, ZERO_PAGE_START};
use crate::vmm::vstate::memory::{ram_ranges, GuestMemory};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// Capacity of `boot_params.e820_table`.
const E820_MAX_ENTRIES: usize = 128;
/// `type_of_loader` value for a boot loader without an assigned id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Alignment ELF kernels are assumed to need (bzImages state their own).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The e820 map of a guest with `mem_size` bytes of RAM: conventional memory below the EBDA,
/// the reserved legacy area (which holds the ACPI tables), then RAM from 1 MiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM },
        E820Entry { addr: EBDA_START, size: HIMEM_START - EBDA_START, kind: E820_RESERVED },
    ];
    for (start, len) in ram_ranges(mem_size) {
        let end = start.0 + len;
        let start = start.0.max(HIMEM_START);
        if end > start {
            map.push(E820Entry { addr: start, size: end - start, kind: E820_RAM });
        }
    }
    map
}

/// `boot_params` as plain bytes for guest memory.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct ZeroPage(pub boot_params);

// SAFETY: `boot_params` is a `repr(C, packed)` bindgen struct of integers and arrays of
// integers: it has no padding and every bit pattern is a valid value.
unsafe impl ByteValued for ZeroPage {}

/// Builds the zero page for `kernel`, starting from its own setup header as the boot
/// protocol asks.
pub fn build_zero_page(
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<LoadedInitrd>,
    e820: &[E820Entry],
) -> ZeroPage {
    let hdr = kernel
        .setup_header
        .unwrap_or_else(|| setup_header { kernel_alignment: DEFAULT_KERNEL_ALIGNMENT, ..Default::default() });
    let mut params = boot_params { hdr, ..Default::default() };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.ext_cmd_line_ptr = (CMDLINE_START >> 32) as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.address.0 as u32;
        params.ext_ramdisk_image = (initrd.address.0 >> 32) as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
        params.ext_ramdisk_size = (initrd.size >> 32) as u32;
    }
    params.acpi_rsdp_addr = RSDP_START;
    let count = e820.len().min(E820_MAX_ENTRIES);
    for (slot, entry) in params.e820_table.iter_mut().zip(&e820[..count]) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.kind };
    }
    params.e820_entries = count as u8;
    ZeroPage(params)
}

/// Writes the zero page at its fixed address.
pub fn write_zero_page(mem: &GuestMemory, page: &ZeroPage) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(*page, GuestAddress(ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::arch::layout::{FOUR_GIB, MMIO_HOLE_START};

    fn elf_kernel() -> LoadedKernel {
        LoadedKernel { entry: GuestAddress(0x100_0000), end: 0x200_0000, setup_header: None }
    }

    #[test]
    fn e820_for_small_guest() {
        let map = e820_map(128 << 20);
        assert_eq!(
            map,
            vec![
                E820Entry { addr: 0, size: 0x9fc00, kind: E820_RAM },
                E820Entry { addr: 0x9fc00, size: 0x100000 - 0x9fc00, kind: E820_RESERVED },
                E820Entry { addr: 0x100000, size: (128 << 20) - 0x100000, kind: E820_RAM },
            ]
        );
    }

    #[test]
    fn e820_for_large_guest_has_high_ram() {
        let map = e820_map(6 << 30);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[2],
            E820Entry { addr: HIMEM_START, size: MMIO_HOLE_START - HIMEM_START, kind: E820_RAM }
        );
        assert_eq!(map[3], E820Entry { addr: FOUR_GIB, size: (6 << 30) - MMIO_HOLE_START, kind: E820_RAM });
        let ram: u64 = map.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum();
        assert_eq!(ram, (6 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn zero_page_fields() {
        let initrd = LoadedInitrd { address: GuestAddress(0x7f0_0000), size: 0x12345 };
        let e820 = e820_map(128 << 20);
        let page = build_zero_page(&elf_kernel(), 27, Some(initrd), &e820);
        let p = page.0;
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 27);
        assert_eq!({ p.hdr.ramdisk_image }, 0x7f0_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x12345);
        assert_eq!({ p.acpi_rsdp_addr }, RSDP_START);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (0x100000, (128 << 20) - 0x100000, E820_RAM)
        );
        // The zero page sits at the offsets the boot protocol documents.
        let bytes = page.as_slice();
        assert_eq!(bytes[0x210], 0xff, "type_of_loader at 0x210");
        assert_eq!(bytes[0x1e8], 3, "e820_entries at 0x1e8");
        assert_eq!(u32::from_le_bytes(bytes[0x228..0x22c].try_into().unwrap()), CMDLINE_START as u32);
        assert_eq!(u64::from_le_bytes(bytes[0x70..0x78].try_into().unwrap()), RSDP_START);
        assert_eq!(
            u64::from_le_bytes(bytes[0x2d0..0x2d8].try_into().unwrap()),
            0,
            "first e820 entry at 0x2d0"
        );
        assert_eq!(bytes.len(), 4096);
    }

    #[test]
    fn bzimage_header_is_kept() {
        let header =
            setup_header { setup_sects: 27, version: 0x020f, xloadflags: 0x7f, ..Default::default() };
        let kernel = LoadedKernel { setup_header: Some(header), ..elf_kernel() };
        let p = build_zero_page(&kernel, 0, None, &[]).0;
        assert_eq!({ p.hdr.setup_sects }, 27);
        assert_eq!({ p.hdr.version }, 0x020f);
        assert_eq!({ p.hdr.xloadflags }, 0x7f);
        assert_eq!({ p.hdr.ramdisk_image }, 0);
    }
}
