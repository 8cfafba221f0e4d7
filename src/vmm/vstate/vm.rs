//! The KVM VM: system checks, in-kernel interrupt controllers and PIT, guest memory slots.

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend as _, GuestMemoryRegion};

use crate::vmm::arch::cpuid;
use crate::vmm::arch::layout::KVM_TSS_ADDRESS;
use crate::vmm::vstate::memory::GuestMemory;

/// KVM capabilities the VMM cannot work without.
const REQUIRED_CAPS: [(Cap, &str); 5] = [
    (Cap::Irqchip, "in-kernel irqchip"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::UserMemory, "user memory regions"),
    (Cap::Irqfd, "irqfd"),
    (Cap::Ioeventfd, "ioeventfd"),
];

/// Errors while creating the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm (is KVM available and accessible to this user?): {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// The host's KVM lacks a capability.
    #[error("the host's KVM lacks a required capability: {0}")]
    MissingCapability(&'static str),
    /// A VM-level ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which operation.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
    /// The host allows fewer vCPUs than requested.
    #[error("the host's KVM allows at most {max} vCPUs, {requested} requested")]
    TooManyVcpus {
        /// The host limit.
        max: usize,
        /// What the config asked for.
        requested: u8,
    },
}

/// A KVM virtual machine with its interrupt controllers.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens KVM, checks it, and creates a VM with IOAPIC, PIC, LAPICs and PIT in the kernel.
    pub fn new(vcpu_count: u8) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCapability(name));
            }
        }
        let max = kvm.get_max_vcpus();
        if usize::from(vcpu_count) > max {
            return Err(VmError::TooManyVcpus { max, requested: vcpu_count });
        }
        let err = |what| move |source| VmError::Kvm { what, source };
        let fd = kvm.create_vm().map_err(err("create VM"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS as usize).map_err(err("set TSS address"))?;
        fd.create_irq_chip().map_err(err("create irqchip"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        fd.create_pit2(pit).map_err(err("create PIT"))?;
        Ok(Self { kvm, fd })
    }

    /// Hands every region of `mem` to KVM as a memory slot.
    pub fn register_memory(&self, mem: &GuestMemory) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let host_addr = region.as_ptr() as u64;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host_addr,
            };
            // SAFETY: the region describes a live mapping owned by `mem`, which outlives the
            // VM (the builder keeps both in the same `MicroVm` and drops vCPUs first); KVM
            // only reads and writes guest RAM through it.
            unsafe { self.fd.set_user_memory_region(region) }
                .map_err(|source| VmError::Kvm { what: "set user memory region", source })?;
        }
        Ok(())
    }

    /// The CPUID leaves KVM supports on this host, with the host's description of its
    /// processor where KVM gives none: the base for every vCPU's CPUID.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        let mut supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| VmError::Kvm { what: "get supported CPUID", source })?;
        cpuid::describe_host_processor(supported.as_mut_slice(), cpuid::host_leaf);
        Ok(supported)
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
