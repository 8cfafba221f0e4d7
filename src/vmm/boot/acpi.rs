//! ACPI tables that describe the machine to the guest: RSDP → XSDT → FADT (→ DSDT), MADT.
//!
//! The platform is "hardware-reduced" ACPI: no legacy PM blocks, no SCI. Power off and reset
//! go through the sleep-control and reset registers of [`crate::vmm::devices::power`], and
//! the DSDT's `\_S5_` object tells Linux which sleep type means "off". The MADT lists one
//! local APIC per vCPU (APIC ID = vCPU index, matching CPUID) and the IOAPIC. Each virtio
//! device is a DSDT node with `_HID "LNRO0005"`, which stock kernels' `virtio_mmio` driver
//! binds to: its register window and interrupt are the node's resources.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::arch::layout::{ACPI_END, IOAPIC_START, LAPIC_START, RSDP_START};
use crate::vmm::device_manager::MmioSlot;
use crate::vmm::devices::legacy::i8042::{I8042_COMMAND_PORT, I8042_IRQ, I8042_PORT};
use crate::vmm::devices::legacy::rtc::{CENTURY_REGISTER, RTC_PORT, RTC_PORT_COUNT};
use crate::vmm::devices::legacy::serial::{COM1_IRQ, COM1_PORT};
use crate::vmm::devices::power::{POWER_PORT, RESET_VALUE, S5_SLEEP_TYPE};
use crate::vmm::devices::virtio::mmio::MMIO_WINDOW_SIZE;
use crate::vmm::vstate::memory::GuestMemory;

const OEM_ID: [u8; 6] = *b"NUAGE ";
const OEM_TABLE_ID: [u8; 8] = *b"NUAGEVMM";
const OEM_REVISION: u32 = 1;
/// IAPC_BOOT_ARCH bit: no VGA hardware.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// Errors while writing the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit in the reserved area.
    #[error("ACPI tables need {0} bytes, more than the reserved area holds")]
    TooLarge(u64),
    /// Guest memory rejected a write.
    #[error("cannot write ACPI tables: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Lays tables out one after another, 16-byte aligned, from just after the RSDP.
struct TableWriter<'a> {
    mem: &'a GuestMemory,
    next: u64,
}

impl TableWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<u64, AcpiError> {
        let addr = self.next.next_multiple_of(16);
        let end = addr + bytes.len() as u64;
        if end > ACPI_END {
            return Err(AcpiError::TooLarge(end - RSDP_START));
        }
        self.mem.write_slice(bytes, GuestAddress(addr))?;
        self.next = end;
        Ok(addr)
    }
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The DSDT: the `\_S5_` sleep package, the COM1 serial port, the i8042 keyboard, the CMOS
/// RTC and the virtio devices. The legacy devices are described with their interrupts
/// because a hardware-reduced ACPI machine has no legacy PIC: Linux then maps no ISA
/// interrupt it is not told of. The RTC has none (it raises no interrupts), which Linux's
/// `rtc_cmos` takes as a clock without alarms.
pub fn dsdt(virtio: &[MmioSlot]) -> Vec<u8> {
    let mut body = Vec::new();
    aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut body);
    legacy_device(
        "\\_SB_.COM1",
        "PNP0501",
        vec![
            &aml::IO::new(COM1_PORT, COM1_PORT, 1, 8),
            &aml::Interrupt::new(true, true, false, false, COM1_IRQ),
        ],
        &mut body,
    );
    legacy_device(
        "\\_SB_.KBD_",
        "PNP0303",
        vec![
            &aml::IO::new(I8042_PORT, I8042_PORT, 1, 1),
            &aml::IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1),
            &aml::Interrupt::new(true, true, false, false, I8042_IRQ),
        ],
        &mut body,
    );
    legacy_device(
        "\\_SB_.RTC_",
        "PNP0B00",
        vec![&aml::IO::new(RTC_PORT, RTC_PORT, 1, RTC_PORT_COUNT as u8)],
        &mut body,
    );
    for (index, slot) in virtio.iter().enumerate() {
        virtio_node(index, slot, &mut body);
    }
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

/// The DSDT node of a legacy ISA device: its PNP id, and its ports and interrupts.
fn legacy_device(path: &str, pnp_id: &str, resources: Vec<&dyn Aml>, body: &mut Vec<u8>) {
    aml::Device::new(
        path.into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new(pnp_id)),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(resources)),
        ],
    )
    .to_aml_bytes(body);
}

/// The DSDT node of the virtio-mmio device in `slot`, named `\_SB_.Vnnn` (hex index).
fn virtio_node(index: usize, slot: &MmioSlot, body: &mut Vec<u8>) {
    // The windows lie below 4 GiB (see the layout), so the 32-bit descriptor holds them.
    let base = u32::try_from(slot.base).unwrap_or(u32::MAX);
    aml::Device::new(
        format!("\\_SB_.V{index:03X}").as_str().into(),
        vec![
            &aml::Name::new("_HID".into(), &"LNRO0005"),
            &aml::Name::new("_UID".into(), &index),
            // DMA is cache-coherent.
            &aml::Name::new("_CCA".into(), &aml::ONE),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::Memory32Fixed::new(true, base, MMIO_WINDOW_SIZE as u32),
                    &aml::Interrupt::new(true, true, false, false, slot.gsi),
                ]),
            ),
        ],
    )
    .to_aml_bytes(body);
}

/// The hardware-reduced FADT pointing at the DSDT.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let port = GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, u64::from(POWER_PORT));
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep buttons.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = port;
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = port;
    fadt.sleep_status_reg = port;
    fadt.iapc_boot_arch = IAPC_VGA_NOT_PRESENT.into();
    // Where the RTC keeps the century (Linux reads the FADT's field even on a
    // hardware-reduced machine).
    fadt.century = CENTURY_REGISTER;
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"NUAGEVMM").into();
    to_bytes(&fadt.finalize())
}

/// The MADT: one enabled local APIC per vCPU and the IOAPIC.
pub fn madt(vcpu_count: u8) -> Vec<u8> {
    let mut madt =
        MADT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION, LocalInterruptController::Address(LAPIC_START));
    for id in 0..vcpu_count {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_START, 0));
    to_bytes(&madt)
}

/// Writes all tables into the reserved legacy area; the RSDP goes at [`RSDP_START`].
pub fn write_acpi_tables(mem: &GuestMemory, vcpu_count: u8, virtio: &[MmioSlot]) -> Result<(), AcpiError> {
    let mut writer = TableWriter { mem, next: RSDP_START + Rsdp::len() as u64 };
    let dsdt_addr = writer.write(&dsdt(virtio))?;
    let fadt_addr = writer.write(&fadt(dsdt_addr))?;
    let madt_addr = writer.write(&madt(vcpu_count))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = writer.write(&to_bytes(&xsdt))?;
    mem.write_slice(&to_bytes(&Rsdp::new(OEM_ID, xsdt_addr)), GuestAddress(RSDP_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::vstate::memory::create_guest_memory;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn tables_are_well_formed() {
        let slots = [MmioSlot { base: 0xd000_0000, gsi: 5 }, MmioSlot { base: 0xd000_1000, gsi: 6 }];
        for table in [dsdt(&[]), dsdt(&slots), fadt(0xe1000), madt(4)] {
            assert!(checksum_ok(&table), "bad checksum in {:?}", &table[..4]);
            assert_eq!(u32_at(&table, 4) as usize, table.len(), "length field of {:?}", &table[..4]);
        }
    }

    #[test]
    fn madt_has_one_lapic_per_vcpu_and_an_ioapic() {
        let table = madt(3);
        // Entries start after the 36-byte header, the LAPIC address and the flags.
        let mut at = 44;
        let mut lapic_ids = Vec::new();
        let mut ioapics = 0;
        while at < table.len() {
            let (kind, len) = (table[at], table[at + 1] as usize);
            match kind {
                0 => lapic_ids.push(table[at + 3]),
                1 => ioapics += 1,
                other => panic!("unexpected MADT entry type {other}"),
            }
            at += len;
        }
        assert_eq!(lapic_ids, vec![0, 1, 2]);
        assert_eq!(ioapics, 1);
        assert_eq!(u32_at(&table, 36), LAPIC_START);
    }

    #[test]
    fn fadt_is_hardware_reduced_with_power_registers() {
        let table = fadt(0xe1000);
        let flags = u32_at(&table, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // RESET_REG is a GAS at offset 116: I/O space, address POWER_PORT; RESET_VALUE at 128.
        assert_eq!(table[116], 1);
        assert_eq!(u32_at(&table, 120), u32::from(POWER_PORT));
        assert_eq!(table[128], RESET_VALUE);
        // SLEEP_CONTROL_REG at offset 244.
        assert_eq!(table[244], 1);
        assert_eq!(u32_at(&table, 248), u32::from(POWER_PORT));
        // X_DSDT at offset 140.
        assert_eq!(u32_at(&table, 140), 0xe1000);
        // CENTURY at offset 108.
        assert_eq!(table[108], CENTURY_REGISTER);
    }

    #[test]
    fn dsdt_defines_s5() {
        let table = dsdt(&[]);
        assert!(table.windows(4).any(|w| w == b"_S5_"));
        assert!(table.windows(4).any(|w| w == b"COM1"));
        // The keyboard: EISA id PNP0303 (compressed: 0x41D00303), and its interrupt 1.
        assert!(table.windows(4).any(|w| w == [0x41, 0xD0, 0x03, 0x03]), "PNP0303");
        let irq1 = [0x89, 6, 0, 0x03, 1, 1, 0, 0, 0];
        assert!(table.windows(irq1.len()).any(|w| w == irq1), "an edge interrupt descriptor for IRQ 1");
        // The RTC: PNP0B00 (compressed 0x41D00B00) with ports 0x70..0x71 (an I/O descriptor).
        assert!(table.windows(4).any(|w| w == [0x41, 0xD0, 0x0B, 0x00]), "PNP0B00");
        let rtc_ports = [0x47, 1, 0x70, 0, 0x70, 0, 1, 2];
        assert!(table.windows(rtc_ports.len()).any(|w| w == rtc_ports), "the RTC's ports");
    }

    #[test]
    fn dsdt_describes_each_virtio_device() {
        let slots = [MmioSlot { base: 0xd000_0000, gsi: 5 }, MmioSlot { base: 0xd000_1000, gsi: 6 }];
        let table = dsdt(&slots);
        let count = |needle: &[u8]| table.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b"LNRO0005\0"), 2);
        assert_eq!((count(b"V000"), count(b"V001")), (1, 1));
        // Memory32Fixed descriptors (0x86, length 9, read-write) carrying each base.
        for slot in &slots {
            let mut descriptor = vec![0x86, 9, 0, 1];
            descriptor.extend_from_slice(&(slot.base as u32).to_le_bytes());
            descriptor.extend_from_slice(&0x1000u32.to_le_bytes());
            assert_eq!(count(&descriptor), 1, "window of {slot:?}");
        }
    }

    #[test]
    fn rsdp_points_at_xsdt_listing_fadt_and_madt() {
        let mem = create_guest_memory(16).unwrap();
        write_acpi_tables(&mem, 2, &[]).unwrap();
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(RSDP_START)).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(&rsdp));
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let mut xsdt = [0u8; 52];
        mem.read_slice(&mut xsdt, GuestAddress(xsdt_addr)).unwrap();
        assert_eq!(&xsdt[..4], b"XSDT");
        let mut signatures = Vec::new();
        for i in 0..2 {
            let addr = u64::from_le_bytes(xsdt[36 + 8 * i..44 + 8 * i].try_into().unwrap());
            let mut sig = [0u8; 4];
            mem.read_slice(&mut sig, GuestAddress(addr)).unwrap();
            signatures.push(sig);
        }
        assert_eq!(signatures, vec![*b"FACP", *b"APIC"]);
    }
}
