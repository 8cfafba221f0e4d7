//! Virtio devices and their transport.
//!
//! Each device implements [`VirtioDevice`]; the [`mmio::MmioTransport`] presents it to the
//! guest as a virtio-mmio (version 2) device, described in the ACPI DSDT so stock kernels
//! find it. Queue notifications arrive on eventfds (KVM ioeventfds, so a notify never exits
//! to userspace) and are served by a per-device [`worker::QueueWorker`] thread, never on a
//! vCPU thread; interrupts go back through an irqfd.

pub mod block;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rate_limiter;
pub mod rng;
#[cfg(test)]
pub mod test_rings;
pub mod vsock;
pub mod worker;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::vmm::vstate::memory::GuestMemory;

/// Feature bit: the device follows virtio 1.x (required by virtio-mmio version 2).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Virtio device type of a network interface.
pub const DEVICE_TYPE_NET: u32 = 1;
/// Virtio device type of a block device.
pub const DEVICE_TYPE_BLOCK: u32 = 2;
/// Virtio device type of an entropy source.
pub const DEVICE_TYPE_RNG: u32 = 4;
/// Virtio device type of a vsock device.
pub const DEVICE_TYPE_VSOCK: u32 = 19;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may run.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Interrupt status bit: a used ring was updated.
pub const INTERRUPT_VRING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INTERRUPT_CONFIG: u32 = 2;

/// A device's interrupt line: the virtio-mmio interrupt status register plus the irqfd
/// that raises the device's GSI.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt raised through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self { status: AtomicU32::new(0), irqfd }
    }

    /// Sets `reason` in the status register and raises the interrupt.
    pub fn signal(&self, reason: u32) {
        self.status.fetch_or(reason, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            tracing::error!(error = %e, "cannot raise a virtio interrupt");
        }
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The guest acknowledged the `bits`.
    pub fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What a device receives when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The queues as the driver configured them, in order.
    pub queues: Vec<Queue>,
    /// One eventfd per queue, readable when the guest notifies it.
    pub queue_events: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted.
    pub features: u64,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot activate the virtio device: {0}")]
pub struct ActivateError(pub String);

/// A virtio device, independent of the transport.
pub trait VirtioDevice: Send {
    /// Virtio device type (2 = block, ...).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (ignored unless a device needs it).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(offset, len = data.len(), "ignored virtio config write");
    }
    /// Starts serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops serving the queues: the driver reset the device.
    fn reset(&mut self);
}

/// The activation's queues as exactly `N` (a driver that set up another number is refused).
pub fn take_queues<const N: usize>(queues: Vec<Queue>) -> Result<[Queue; N], ActivateError> {
    let count = queues.len();
    queues.try_into().map_err(|_| ActivateError(format!("{N} queues expected, {count} configured")))
}

/// Copies the part of `config` at `offset` into `data`; bytes past the end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn interrupt_status_is_set_and_acknowledged() {
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        irq.signal(INTERRUPT_VRING);
        irq.signal(INTERRUPT_CONFIG);
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.irqfd.read().unwrap(), 2);
        irq.acknowledge(INTERRUPT_VRING);
        assert_eq!(irq.status(), INTERRUPT_CONFIG);
    }

    #[test]
    fn config_reads_are_bounded() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_bytes(&config, 100, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
