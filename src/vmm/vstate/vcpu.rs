//! vCPUs: configuration before the first run, and the run loop each vCPU thread executes.
//!
//! The run loop turns every KVM exit into device I/O on the shared bus or into an
//! [`ExitReason`]. Nothing a guest does can make it panic: unknown exits end the VM with a
//! fatal reason, never with a crash of the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::{CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestAddress;

use crate::vmm::arch::{cpuid, lapic, msr, regs};
use crate::vmm::devices::Buses;
use crate::vmm::exit::{ExitNotifier, ExitReason, ResetCause};
use crate::vmm::vstate::exit_stats::{ExitKind, ExitStats};
use crate::vmm::vstate::vm::Vm;

/// Errors while configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A vCPU ioctl failed.
    #[error("vCPU {index}: {what} failed: {source}")]
    Kvm {
        /// vCPU index.
        index: u8,
        /// Which operation.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
    /// KVM accepted only some boot MSRs.
    #[error("vCPU {index}: KVM accepted {set} of {wanted} boot MSRs")]
    Msrs {
        /// vCPU index.
        index: u8,
        /// How many KVM set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
    /// Register set-up failed.
    #[error("vCPU {index}: {source}")]
    Regs {
        /// vCPU index.
        index: u8,
        /// The underlying error.
        source: regs::RegsError,
    },
}

/// A configured vCPU, ready to run on its own thread.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Creates vCPU `index` of `count` with normalized CPUID, boot MSRs, FPU and LAPIC state.
    pub fn new(vm: &Vm, index: u8, count: u8, supported_cpuid: &CpuId) -> Result<Self, VcpuError> {
        let err = |what| move |source| VcpuError::Kvm { index, what, source };
        let fd = vm.fd().create_vcpu(u64::from(index)).map_err(err("create"))?;

        let mut cpuid = supported_cpuid.clone();
        cpuid::normalize(cpuid.as_mut_slice(), index, count);
        fd.set_cpuid2(&cpuid).map_err(err("set CPUID"))?;

        let msrs = msr::boot_msrs().map_err(|_| VcpuError::Msrs { index, set: 0, wanted: 0 })?;
        let wanted = msrs.as_slice().len();
        let set = fd.set_msrs(&msrs).map_err(err("set MSRs"))?;
        if set != wanted {
            return Err(VcpuError::Msrs { index, set, wanted });
        }

        regs::setup_fpu(&fd).map_err(|source| VcpuError::Regs { index, source })?;
        let mut lapic_state = fd.get_lapic().map_err(err("get LAPIC"))?;
        lapic::set_lint(&mut lapic_state);
        fd.set_lapic(&lapic_state).map_err(err("set LAPIC"))?;
        Ok(Self { index, fd })
    }

    /// Puts this (boot) vCPU at the kernel entry point. Other vCPUs wait for INIT/SIPI in
    /// the in-kernel LAPIC, as application processors do on hardware.
    pub fn set_boot_entry(&self, entry: GuestAddress) -> Result<(), VcpuError> {
        regs::setup_boot_vcpu(&self.fd, entry).map_err(|source| VcpuError::Regs { index: self.index, source })
    }

    /// The vCPU index (also its APIC ID).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Runs the guest until it asks to stop, something fatal happens, or `stop` is raised
    /// (the caller then interrupts `KVM_RUN` with a signal). With `stats`, every exit is
    /// counted into them, and they are returned.
    pub fn run(
        mut self,
        bus: &Buses,
        exit: &ExitNotifier,
        stop: &Arc<AtomicBool>,
        mut stats: Option<ExitStats>,
    ) -> Option<ExitStats> {
        let index = self.index;
        while !stop.load(Ordering::Acquire) {
            let entered = stats.as_ref().map(|_| Instant::now());
            let result = self.fd.run();
            let left = entered.map(|entered| (entered, Instant::now()));
            let (outcome, (kind, port, addr)) = match result {
                Ok(vcpu_exit) => {
                    let target = classify(&vcpu_exit);
                    (handle_exit(vcpu_exit, bus), target)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    (None, (ExitKind::Interrupted, None, None))
                }
                Err(e) => (
                    Some(ExitReason::Fatal(format!("vCPU {index}: KVM_RUN failed: {e}"))),
                    (ExitKind::Other, None, None),
                ),
            };
            if let (Some(stats), Some((entered, left))) = (stats.as_mut(), left) {
                let now = Instant::now();
                stats.guest_ran(left - entered);
                stats.record(kind, port, addr, now - left, now);
            }
            if let Some(reason) = outcome {
                exit.notify(reason);
                break;
            }
        }
        tracing::debug!(vcpu = index, "vCPU thread done");
        stats
    }
}

/// The kind of an exit, and the port or address it went to, for the statistics.
fn classify(vcpu_exit: &VcpuExit<'_>) -> (ExitKind, Option<u16>, Option<u64>) {
    match vcpu_exit {
        VcpuExit::IoIn(port, _) => (ExitKind::IoIn, Some(*port), None),
        VcpuExit::IoOut(port, _) => (ExitKind::IoOut, Some(*port), None),
        VcpuExit::MmioRead(addr, _) => (ExitKind::MmioRead, None, Some(*addr)),
        VcpuExit::MmioWrite(addr, _) => (ExitKind::MmioWrite, None, Some(*addr)),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => (ExitKind::Interrupted, None, None),
        _ => (ExitKind::Other, None, None),
    }
}

/// Handles one exit; returns a reason when the VM must end.
fn handle_exit(vcpu_exit: VcpuExit<'_>, bus: &Buses) -> Option<ExitReason> {
    match vcpu_exit {
        VcpuExit::IoIn(port, data) => bus.pio.read(u64::from(port), data),
        VcpuExit::IoOut(port, data) => bus.pio.write(u64::from(port), data),
        VcpuExit::MmioRead(addr, data) => bus.mmio.read(addr, data),
        VcpuExit::MmioWrite(addr, data) => bus.mmio.write(addr, data),
        VcpuExit::Shutdown => return Some(ExitReason::Reset(ResetCause::TripleFault)),
        VcpuExit::SystemEvent(kind, _) => {
            return Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => ExitReason::Reset(ResetCause::SystemEvent),
                KVM_SYSTEM_EVENT_CRASH => ExitReason::Fatal("the guest reported a crash".into()),
                other => ExitReason::Fatal(format!("unknown KVM system event {other}")),
            })
        }
        VcpuExit::Hlt => return Some(ExitReason::Fatal("vCPU halted outside the in-kernel irqchip".into())),
        VcpuExit::FailEntry(reason, cpu) => {
            return Some(ExitReason::Fatal(format!(
                "KVM could not enter the guest on CPU {cpu}: hardware reason {reason:#x}"
            )))
        }
        VcpuExit::InternalError => {
            return Some(ExitReason::Fatal("KVM internal error (emulation failure)".into()))
        }
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
        other => return Some(ExitReason::Fatal(format!("unexpected vCPU exit: {other:?}"))),
    }
    None
}
