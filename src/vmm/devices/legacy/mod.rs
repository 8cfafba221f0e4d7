//! PC legacy devices: the 16550 serial console, the i8042 keyboard controller and the CMOS
//! real-time clock.

pub mod i8042;
pub mod rtc;
pub mod serial;

use std::sync::Arc;

use kvm_ioctls::VmFd;
use vm_superio::Trigger;

/// An ISA interrupt of the in-kernel PIC and IOAPIC, raised by the thread whose work raised
/// it: the vCPU in the middle of its exit (a transmitted byte, an interrupt-enable write),
/// the main loop (console input) or the control server (a key press).
///
/// It pulses the pin with `KVM_IRQ_LINE`, an edge the guest sees before that thread goes
/// on. An irqfd, which the virtio devices use from their worker, would hand each of these
/// to a kernel worker thread on an IOAPIC pin: a wake-up and a context switch per
/// interrupt, which `--stats` measured at about 150 µs of the exit each in the nested
/// benchmark, for a few hundred interrupts a boot.
pub enum IrqLine {
    /// A pin of the VM's interrupt controllers.
    Pin {
        /// The VM the pin belongs to.
        vm: Arc<VmFd>,
        /// Its GSI, the ISA IRQ number.
        gsi: u32,
    },
    /// An eventfd the unit tests read, standing in for the VM.
    #[cfg(test)]
    Event(vmm_sys_util::eventfd::EventFd),
}

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        let pulse = |vm: &VmFd, gsi, level| {
            vm.set_irq_line(gsi, level).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        };
        match self {
            Self::Pin { vm, gsi } => {
                pulse(vm, *gsi, true)?;
                pulse(vm, *gsi, false)
            }
            #[cfg(test)]
            Self::Event(event) => event.write(1),
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
        let vm = Vm::new(1).unwrap();
        let line = IrqLine::Pin { vm: vm.shared_fd(), gsi: serial::COM1_IRQ };
        assert_eq!(pic_requests(vm.fd()) & 1 << serial::COM1_IRQ, 0);
        line.trigger().unwrap();
        // An edge-triggered PIC input keeps its request after the pin falls again.
        assert_ne!(pic_requests(vm.fd()) & 1 << serial::COM1_IRQ, 0, "IRQ 4 was raised");
    }
}
