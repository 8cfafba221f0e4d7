//! KVM state of a microVM: guest memory, the VM and its vCPUs (and, on request, statistics
//! of their exits).

pub mod exit_stats;
pub mod memory;
pub mod vcpu;
pub mod vm;
