//! The guest-physical memory map of an x86_64 nuage microVM.
//!
//! Low memory holds the boot structures the VMM writes before the first instruction runs;
//! the kernel loads at 1 MiB; a hole below 4 GiB is kept for the virtio-mmio register
//! windows, the IOAPIC and the local APIC, so RAM beyond 3 GiB continues at 4 GiB.

/// Global descriptor table used for the 64-bit entry.
pub const GDT_START: u64 = 0x500;
/// An empty interrupt descriptor table: any exception before Linux loads its own IDT
/// escalates to a triple fault, which the VMM reports as a reset.
pub const IDT_START: u64 = 0x520;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack and frame pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// First of the page directories (one per GiB mapped).
pub const PDE_START: u64 = 0xb000;
/// How many GiB the boot page tables identity-map with 2 MiB pages: all of the 32-bit
/// space, so early code can reach the local APIC and IOAPIC too.
pub const IDENTITY_MAP_GIB: u64 = 4;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line accepted, including the terminating NUL (Linux x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the legacy reserved area (EBDA, ACPI tables, BIOS ROM), kept out of usable RAM.
pub const EBDA_START: u64 = 0x9fc00;
/// The ACPI RSDP; Linux also finds it here by scanning 0xE0000-0xFFFFF.
pub const RSDP_START: u64 = 0xe0000;
/// End (exclusive) of the area the ACPI tables may occupy.
pub const ACPI_END: u64 = 0x10_0000;
/// Where RAM above the legacy area begins and the kernel is loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// The first virtio-mmio register window; device N's starts N windows above it.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// The IOAPIC pin (GSI) of the first virtio device; device N uses the Nth after it. Pins
/// below are the legacy ISA ones (COM1 uses 4).
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// Most virtio devices a microVM may have: one IOAPIC pin each, of the 24 after
/// [`VIRTIO_FIRST_GSI`], leaving the last pins spare.
pub const MAX_VIRTIO_DEVICES: usize = 16;
/// First address above the 32-bit space.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// Default physical address of the IOAPIC.
pub const IOAPIC_START: u32 = 0xfec0_0000;
/// Default physical address of the local APICs.
pub const LAPIC_START: u32 = 0xfee0_0000;
/// Three pages KVM needs for its real-mode TSS on Intel hosts, inside the MMIO hole.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Highest address an initrd may reach when the kernel does not say (boot protocol < 2.03).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
