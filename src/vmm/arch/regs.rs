//! Initial register state of the boot vCPU for the Linux 64-bit boot protocol: long mode
//! with identity-mapped page tables, flat segments, RSI pointing at the zero page.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{kvm_segment_from_gdt, BOOT_GDT, CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use crate::vmm::arch::layout::{
    BOOT_STACK_POINTER, GDT_START, IDENTITY_MAP_GIB, IDT_START, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};
use crate::vmm::vstate::memory::GuestMemory;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Present, writable.
const PTE_PRESENT_RW: u64 = 0x3;
/// Present, writable, 2 MiB page.
const PDE_2MIB_PAGE: u64 = 0x83;
/// Reserved bit 1 of RFLAGS, which must be set.
const RFLAGS_RESERVED: u64 = 0x2;
/// x87 control word after FINIT.
const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR after reset: all SIMD exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;

/// Errors while setting up boot registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing GDT, IDT or page tables into guest memory failed.
    #[error("cannot write boot tables into guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// A KVM register ioctl failed.
    #[error("cannot set vCPU registers ({what}): {source}")]
    Kvm {
        /// Which register set.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
}

/// Writes the identity-mapping page tables: the first [`IDENTITY_MAP_GIB`] GiB in 2 MiB pages.
pub fn write_page_tables(mem: &GuestMemory) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(PDPTE_START | PTE_PRESENT_RW, GuestAddress(PML4_START))?;
    for gib in 0..IDENTITY_MAP_GIB {
        let pd = PDE_START + gib * 0x1000;
        mem.write_obj(pd | PTE_PRESENT_RW, GuestAddress(PDPTE_START + gib * 8))?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            mem.write_obj(phys | PDE_2MIB_PAGE, GuestAddress(pd + i * 8))?;
        }
    }
    Ok(())
}

/// Writes the GDT and an empty IDT.
pub fn write_descriptor_tables(mem: &GuestMemory) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START + (i as u64) * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
}

/// Special registers for 64-bit entry: long mode, paging on, flat segments.
pub fn boot_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = kvm_segment_from_gdt(BOOT_GDT[1], CODE_SELECTOR);
    let data = kvm_segment_from_gdt(BOOT_GDT[2], DATA_SELECTOR);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment_from_gdt(BOOT_GDT[3], TSS_SELECTOR);
    sregs.cr3 = PML4_START;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// General registers for 64-bit entry at `entry`.
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// FPU state after FINIT with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: FPU_CONTROL_WORD, mxcsr: MXCSR_DEFAULT, ..Default::default() }
}

/// Puts the boot vCPU at the kernel's 64-bit entry point.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: GuestAddress) -> Result<(), RegsError> {
    let kvm = |what| move |source| RegsError::Kvm { what, source };
    let sregs = vcpu.get_sregs().map_err(kvm("get sregs"))?;
    vcpu.set_sregs(&boot_sregs(sregs)).map_err(kvm("sregs"))?;
    vcpu.set_regs(&boot_regs(entry)).map_err(kvm("regs"))?;
    Ok(())
}

/// Sets the FPU state every vCPU starts with.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    vcpu.set_fpu(&boot_fpu()).map_err(|source| RegsError::Kvm { what: "fpu", source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::vstate::memory::create_guest_memory;

    #[test]
    fn page_tables_identity_map_four_gib() {
        let mem = create_guest_memory(16).unwrap();
        write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        for gib in 0..4u64 {
            let pdpte: u64 = mem.read_obj(GuestAddress(PDPTE_START + gib * 8)).unwrap();
            assert_eq!(pdpte, (PDE_START + gib * 0x1000) | 3);
        }
        // Walk a few addresses through the tables.
        for addr in [0u64, 0x10_0000, 0x3fe0_0000, 0xfee0_0000] {
            let pdpte: u64 = mem.read_obj(GuestAddress(PDPTE_START + (addr >> 30) * 8)).unwrap();
            let pde: u64 = mem.read_obj(GuestAddress((pdpte & !0xfff) + ((addr >> 21) & 0x1ff) * 8)).unwrap();
            assert_eq!(pde & 0x83, 0x83, "2 MiB page present for {addr:#x}");
            assert_eq!(pde & !0x1f_ffff, addr & !0x1f_ffff, "identity mapping for {addr:#x}");
        }
    }

    #[test]
    fn sregs_enable_long_mode() {
        let s = boot_sregs(kvm_sregs::default());
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!((s.cs.selector, s.ds.selector, s.tr.selector), (0x08, 0x10, 0x18));
        assert_eq!(s.cs.l, 1);
    }

    #[test]
    fn regs_point_at_entry_and_zero_page() {
        let r = boot_regs(GuestAddress(0x100200));
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100200, ZERO_PAGE_START, 2));
    }
}
