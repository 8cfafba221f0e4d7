//! Flat GDT used for the 64-bit boot protocol, and its translation to KVM segments.

use kvm_bindings::kvm_segment;

/// 64-bit code segment: present, ring 0, execute/read, long mode, 4 KiB granularity.
const CODE64: u16 = 0xa09b;
/// Data segment: present, ring 0, read/write, 32-bit, 4 KiB granularity.
const DATA: u16 = 0xc093;
/// 64-bit TSS: present, busy.
const TSS64: u16 = 0x808b;

/// Selector of the boot code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the boot data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the boot TSS.
pub const TSS_SELECTOR: u16 = 0x18;

/// Encodes one descriptor from its flags (access byte and high nibble), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The boot GDT: null, code, data, TSS.
pub const BOOT_GDT: [u64; 4] =
    [0, gdt_entry(CODE64, 0, 0xfffff), gdt_entry(DATA, 0, 0xfffff), gdt_entry(TSS64, 0, 0xfffff)];

/// Decodes a descriptor into the segment KVM loads for `selector`.
pub fn kvm_segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    let granularity = bit(55);
    let raw_limit = ((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff);
    let limit = if granularity == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: limit as u32,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: granularity,
        avl: bit(52),
        unusable: if bit(47) == 1 { 0 } else { 1 },
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_long_mode() {
        let seg = kvm_segment_from_gdt(BOOT_GDT[1], CODE_SELECTOR);
        assert_eq!((seg.l, seg.db, seg.present, seg.s, seg.type_), (1, 0, 1, 1, 0xb));
        assert_eq!((seg.base, seg.limit, seg.g), (0, 0xffff_ffff, 1));
    }

    #[test]
    fn data_and_tss_segments() {
        let data = kvm_segment_from_gdt(BOOT_GDT[2], DATA_SELECTOR);
        assert_eq!((data.type_, data.db, data.l, data.present), (0x3, 1, 0, 1));
        let tss = kvm_segment_from_gdt(BOOT_GDT[3], TSS_SELECTOR);
        assert_eq!((tss.type_, tss.s, tss.present), (0xb, 0, 1));
    }

    #[test]
    fn null_segment_is_unusable() {
        assert_eq!(kvm_segment_from_gdt(BOOT_GDT[0], 0).unusable, 1);
    }

    #[test]
    fn encoding_roundtrips_base_and_limit() {
        let seg = kvm_segment_from_gdt(gdt_entry(0x0093, 0x1234_5678, 0xabcde), 0);
        assert_eq!((seg.base, seg.limit, seg.g), (0x1234_5678, 0xabcde, 0));
    }
}
