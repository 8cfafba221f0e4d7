//! Per-vCPU CPUID, derived from what KVM supports on this host.
//!
//! The guest must learn that it runs under a hypervisor (so Linux looks for the KVM leaves
//! and uses kvm-clock), which APIC ID each vCPU has (matching the MADT), how many vCPUs
//! share the package, and that it has a TSC-deadline timer (hardware-reduced ACPI gives it
//! no PIT to calibrate against). Nested virtualization is hidden.
//!
//! Some KVMs leave the leaves that only describe the processor empty (its brand string, its
//! L1 and L2 caches and TLBs): the guest would then name its CPU by family and model alone
//! ("AMD 17/01") and size no cache. Those are filled from the host's own CPUID, as other VMMs
//! do; leaves KVM fills are kept.

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_PMU: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
/// The brand string (three leaves), then the L1 and the L2 cache and TLB descriptions.
const LEAVES_DESCRIBING_THE_HOST: std::ops::RangeInclusive<u32> = 0x8000_0002..=0x8000_0006;
const LEAF_L2_CACHE: u32 = 0x8000_0006;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_VMX: u32 = 1 << 5;
const ECX_PDCM: u32 = 1 << 15;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const EXT_ECX_SVM: u32 = 1 << 2;
/// Bits 17:16 of the L2 leaf's EDX are reserved (KVM clears them too).
const L2_EDX_RESERVED: u32 = 0b11 << 16;
/// CLFLUSH line size in 8-byte units (64-byte lines).
const CLFLUSH_LINE_SIZE: u32 = 8;
/// Topology level types of leaves 0xB and 0x1F.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to hold `count` distinct ids.
fn id_bits(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

/// Adjusts `entries` (KVM's supported CPUID) for vCPU `index` of `count`, modelled as one
/// socket of `count` single-thread cores.
pub fn normalize(entries: &mut [kvm_cpuid_entry2], index: u8, count: u8) {
    let (index, count) = (u32::from(index), u32::from(count.max(1)));
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx =
                    (entry.ebx & 0xff) | (CLFLUSH_LINE_SIZE << 8) | (count.min(255) << 16) | (index << 24);
                entry.ecx |= ECX_HYPERVISOR | ECX_TSC_DEADLINE;
                entry.ecx &= !(ECX_VMX | ECX_PDCM);
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // Cores per package - 1 in bits 31:26, one thread per cache.
                entry.eax = (entry.eax & 0x03ff_ffff & !(0xfff << 14)) | ((count - 1).min(63) << 26);
            }
            LEAF_PMU => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                let level = entry.index;
                (entry.eax, entry.ebx, entry.ecx) = match level {
                    0 => (0, 1, (LEVEL_TYPE_SMT << 8) | level),
                    1 => (id_bits(count), count, (LEVEL_TYPE_CORE << 8) | level),
                    _ => (0, 0, level & 0xff),
                };
                entry.edx = index;
            }
            LEAF_EXT_FEATURES => entry.ecx &= !EXT_ECX_SVM,
            LEAF_AMD_SIZE_IDS => {
                entry.ecx = (entry.ecx & !0xf0ff) | (id_bits(count) << 12) | (count - 1);
            }
            LEAF_AMD_EXT_APIC_ID => {
                entry.eax = index;
                entry.ebx = (entry.ebx & !0xffff) | index; // one thread per core
                entry.ecx &= !0x7ff; // node 0, one node per package
            }
            _ => {}
        }
    }
}

/// Fills the leaves that describe the processor, where KVM left them all zero, with what
/// `host` (the CPUID instruction, outside tests) says of them.
pub fn describe_host_processor(entries: &mut [kvm_cpuid_entry2], host: impl Fn(u32) -> [u32; 4]) {
    for entry in entries.iter_mut() {
        let empty = [entry.eax, entry.ebx, entry.ecx, entry.edx] == [0; 4];
        if !LEAVES_DESCRIBING_THE_HOST.contains(&entry.function) || !empty {
            continue;
        }
        [entry.eax, entry.ebx, entry.ecx, entry.edx] = host(entry.function);
        if entry.function == LEAF_L2_CACHE {
            entry.edx &= !L2_EDX_RESERVED;
        }
    }
}

/// The host's CPUID leaf `function` (sub-leaf 0) as EAX, EBX, ECX and EDX.
pub fn host_leaf(function: u32) -> [u32; 4] {
    // SAFETY: CPUID reads identification registers and has no other effect; every x86-64
    // processor has the instruction. (Rust made the intrinsic safe after rust-version.)
    #[allow(unused_unsafe)]
    let leaf = unsafe { std::arch::x86_64::__cpuid_count(function, 0) };
    [leaf.eax, leaf.ebx, leaf.ecx, leaf.edx]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries.iter().find(|e| e.function == function && e.index == index).unwrap()
    }

    fn normalized(index: u8, count: u8) -> Vec<kvm_cpuid_entry2> {
        let mut entries = vec![
            leaf(1, 0),
            leaf(0xa, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0001, 0),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
            leaf(0x4000_0001, 0),
        ];
        normalize(&mut entries, index, count);
        entries
    }

    #[test]
    fn leaf1_carries_apic_id_and_hypervisor_bits() {
        let e = find(&normalized(3, 4), 1, 0);
        assert_eq!(e.ebx >> 24, 3, "APIC id");
        assert_eq!((e.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!((e.ebx >> 8) & 0xff, 8, "clflush");
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(e.ecx & ECX_VMX, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
        assert_eq!(find(&normalized(0, 1), 1, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaf_describes_cores() {
        let entries = normalized(2, 5);
        let smt = find(&entries, 0xb, 0);
        let core = find(&entries, 0xb, 1);
        let end = find(&entries, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (3, 5, 2, 2));
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
    }

    #[test]
    fn nested_virtualization_and_pmu_are_hidden() {
        let entries = normalized(0, 1);
        assert_eq!(find(&entries, 0x8000_0001, 0).ecx & EXT_ECX_SVM, 0);
        assert_eq!(find(&entries, 0xa, 0).eax, 0);
    }

    #[test]
    fn amd_leaves_match_count_and_index() {
        let entries = normalized(6, 8);
        assert_eq!(find(&entries, 0x8000_0008, 0).ecx & 0xf0ff, (3 << 12) | 7);
        assert_eq!(find(&entries, 0x8000_001e, 0).eax, 6);
    }

    #[test]
    fn kvm_leaves_are_kept() {
        assert_eq!(find(&normalized(0, 2), 0x4000_0001, 0).eax, 0xffff_ffff);
    }

    #[test]
    fn empty_leaves_describing_the_processor_come_from_the_host() {
        let mut entries = vec![
            kvm_cpuid_entry2 { function: 0x8000_0002, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0005, eax: 7, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0006, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x8000_0007, ..Default::default() },
        ];
        describe_host_processor(&mut entries, |function| [function, 1, 2, 0xffff_ffff]);
        let regs = |function| {
            let e = find(&entries, function, 0);
            [e.eax, e.ebx, e.ecx, e.edx]
        };
        assert_eq!(regs(0x8000_0002), [0x8000_0002, 1, 2, 0xffff_ffff], "brand string");
        assert_eq!(regs(0x8000_0005), [7, 0, 0, 0], "what KVM gave is kept");
        assert_eq!(regs(0x8000_0006), [0x8000_0006, 1, 2, !L2_EDX_RESERVED], "reserved bits cleared");
        assert_eq!(regs(0x8000_0007), [0; 4], "only the describing leaves");
    }

    #[test]
    fn the_host_leaf_is_what_the_instruction_returns() {
        // Leaf 0's EBX, EDX, ECX spell the vendor, as /proc/cpuinfo names it.
        let [_, ebx, ecx, edx] = host_leaf(0);
        let vendor: Vec<u8> = [ebx, edx, ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let named = cpuinfo.lines().find(|l| l.starts_with("vendor_id")).unwrap_or_default();
        assert!(named.ends_with(std::str::from_utf8(&vendor).unwrap_or("?")), "{named} vs {vendor:?}");
    }

    #[test]
    fn id_bits_counts() {
        assert_eq!(
            [id_bits(1), id_bits(2), id_bits(3), id_bits(4), id_bits(5), id_bits(32)],
            [0, 1, 2, 2, 3, 5]
        );
    }
}
