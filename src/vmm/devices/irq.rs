//! How devices interrupt the guest: a pin of the in-kernel interrupt controllers, pulsed by
//! the thread whose work raised it.

use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::VmFd;
use vm_superio::Trigger;

/// A device's interrupt pin on the in-kernel PIC and IOAPIC, raised by the thread whose work
/// raised it: a virtio device's worker (a used ring), the vCPU in the middle of its exit (a
/// transmitted byte, an interrupt-enable write), the main loop (console input) or the
/// control server (a key press).
///
/// It pulses the pin with `KVM_IRQ_LINE`, an edge (every pin is described edge-triggered)
/// the guest sees before that thread goes on. An irqfd would hand each interrupt on an
/// IOAPIC pin to a kernel worker thread instead: a wake-up and a context switch per
/// interrupt, which `--stats` measured at about 150 µs of a serial exit in the nested boot
/// benchmark.
pub struct IrqLine(Line);

enum Line {
    /// A pin of the VM's interrupt controllers, and the lock that keeps two threads'
    /// pulses from interleaving (one's rise within the other's pulse would be no edge: a
    /// lost interrupt).
    Pin { vm: Arc<VmFd>, gsi: u32, pulsing: Mutex<()> },
    /// An eventfd the unit tests read, standing in for the VM.
    #[cfg(test)]
    Event(vmm_sys_util::eventfd::EventFd),
}

impl IrqLine {
    /// The pin `gsi` of `vm`'s interrupt controllers.
    pub fn pin(vm: Arc<VmFd>, gsi: u32) -> Self {
        Self(Line::Pin { vm, gsi, pulsing: Mutex::new(()) })
    }

    /// A line that signals `event`, for unit tests of the devices.
    #[cfg(test)]
    pub fn event(event: vmm_sys_util::eventfd::EventFd) -> Self {
        Self(Line::Event(event))
    }
}

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        let set = |vm: &VmFd, gsi, level| {
            vm.set_irq_line(gsi, level).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        };
        match &self.0 {
            Line::Pin { vm, gsi, pulsing } => {
                // A panicked holder left the pin low or high; the next pulse sets it anyway.
                let _pulse = pulsing.lock().unwrap_or_else(PoisonError::into_inner);
                set(vm, *gsi, true)?;
                set(vm, *gsi, false)
            }
            #[cfg(test)]
            Line::Event(event) => event.write(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::vstate::vm::Vm;
    use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_PIC_MASTER};

    /// The master PIC's interrupt request register, as KVM holds it.
    fn pic_requests(vm: &VmFd) -> u8 {
        let mut chip = kvm_irqchip { chip_id: KVM_IRQCHIP_PIC_MASTER, ..Default::default() };
        vm.get_irqchip(&mut chip).unwrap();
        // SAFETY: chip_id selected the PIC member of the union.
        unsafe { chip.chip.pic }.irr
    }

    #[test]
    fn a_pulse_reaches_the_kernels_interrupt_controller() {
        const GSI: u32 = 4;
        let vm = Vm::new(1).unwrap();
        let line = IrqLine::pin(vm.shared_fd(), GSI);
        assert_eq!(pic_requests(vm.fd()) & 1 << GSI, 0);
        line.trigger().unwrap();
        // An edge-triggered PIC input keeps its request after the pin falls again.
        assert_ne!(pic_requests(vm.fd()) & 1 << GSI, 0, "IRQ 4 was raised");
    }
}
