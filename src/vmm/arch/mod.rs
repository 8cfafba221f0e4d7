//! x86_64 vCPU state: descriptor tables and registers, CPUID, MSRs and the local APIC.

pub mod cpuid;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod msr;
pub mod regs;
