//! Places virtio devices in the guest: each gets a virtio-mmio register window and an IOAPIC
//! pin, its queue notifications wired as KVM ioeventfds (a notify never leaves the kernel on
//! the vCPU thread) and its interrupt as an irqfd. The resulting [`MmioSlot`]s are what the
//! ACPI DSDT and the kernel command line describe to the guest.

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vmm::arch::layout::{MAX_VIRTIO_DEVICES, VIRTIO_FIRST_GSI, VIRTIO_MMIO_START};
use crate::vmm::devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET};
use crate::vmm::devices::virtio::{Interrupt, VirtioDevice};
use crate::vmm::devices::{Bus, BusError};
use crate::vmm::vstate::memory::GuestMemory;

/// Errors while attaching a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    /// All slots are taken.
    #[error("no free virtio slot (at most {MAX_VIRTIO_DEVICES} devices)")]
    NoSlot,
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// KVM refused the irqfd or an ioeventfd.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which registration.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
    /// The device's queues are unusable.
    #[error("invalid virtio queue: {0:?}")]
    Queue(virtio_queue::Error),
    /// The register window is taken.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Where a virtio device sits in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest-physical base of its register window.
    pub base: u64,
    /// Its interrupt line (IOAPIC pin).
    pub gsi: u32,
}

impl MmioSlot {
    /// The `n`th slot.
    fn nth(n: usize) -> Self {
        Self { base: VIRTIO_MMIO_START + n as u64 * MMIO_WINDOW_SIZE, gsi: VIRTIO_FIRST_GSI + n as u32 }
    }

    /// The `virtio_mmio.device=` command-line entry describing this slot.
    pub fn cmdline_entry(&self) -> String {
        format!("virtio_mmio.device={}K@{:#x}:{}", MMIO_WINDOW_SIZE >> 10, self.base, self.gsi)
    }
}

/// Hands out slots and wires devices to KVM and the MMIO bus.
#[derive(Default)]
pub struct MmioDeviceManager {
    slots: Vec<MmioSlot>,
}

impl MmioDeviceManager {
    /// Attaches `device` at the next free slot.
    pub fn attach(
        &mut self,
        vm: &VmFd,
        bus: &mut Bus,
        mem: &GuestMemory,
        device: Box<dyn VirtioDevice>,
    ) -> Result<MmioSlot, DeviceManagerError> {
        if self.slots.len() >= MAX_VIRTIO_DEVICES {
            return Err(DeviceManagerError::NoSlot);
        }
        let slot = MmioSlot::nth(self.slots.len());
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(DeviceManagerError::EventFd)?;
        vm.register_irqfd(&irqfd, slot.gsi)
            .map_err(|source| DeviceManagerError::Kvm { what: "irqfd", source })?;
        let notify = IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET);
        let queue_events = (0..device.queue_max_sizes().len())
            .map(|index| {
                let event = EventFd::new(EFD_NONBLOCK).map_err(DeviceManagerError::EventFd)?;
                // The driver writes the queue's index to QueueNotify: match on it (32 bits).
                vm.register_ioevent(&event, &notify, index as u32)
                    .map_err(|source| DeviceManagerError::Kvm { what: "ioeventfd", source })?;
                Ok(event)
            })
            .collect::<Result<Vec<_>, DeviceManagerError>>()?;
        let transport =
            MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(irqfd)), queue_events)
                .map_err(DeviceManagerError::Queue)?;
        bus.insert(slot.base, MMIO_WINDOW_SIZE, Arc::new(transport))?;
        self.slots.push(slot);
        Ok(slot)
    }

    /// The slots in use, in attachment order (the guest's enumeration order).
    pub fn slots(&self) -> &[MmioSlot] {
        &self.slots
    }

    /// The kernel command line with the `virtio_mmio.device=` entries appended.
    pub fn cmdline_with_devices(&self, cmdline: &str) -> String {
        self.slots.iter().fold(cmdline.to_owned(), |line, slot| line + " " + &slot.cmdline_entry())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_consecutive_windows_and_pins() {
        assert_eq!(MmioSlot::nth(0), MmioSlot { base: 0xd000_0000, gsi: 5 });
        assert_eq!(MmioSlot::nth(2), MmioSlot { base: 0xd000_2000, gsi: 7 });
        let last = MmioSlot::nth(MAX_VIRTIO_DEVICES - 1);
        assert!(last.gsi < 24, "IOAPIC has 24 pins");
        assert!(last.base + MMIO_WINDOW_SIZE <= u64::from(crate::vmm::arch::layout::IOAPIC_START));
    }

    #[test]
    fn cmdline_entries() {
        let manager = MmioDeviceManager { slots: vec![MmioSlot::nth(0), MmioSlot::nth(1)] };
        assert_eq!(
            manager.cmdline_with_devices("console=ttyS0"),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
    }
}
