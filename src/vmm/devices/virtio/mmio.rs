//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2).
//!
//! Everything here is driven by guest writes, so every value is checked: unknown registers
//! read as zero, wrong-width accesses are ignored, queue configuration is accepted only
//! before the driver is done, and a device that cannot start is marked DEVICE_NEEDS_RESET
//! instead of failing the VM.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{status, Activation, Interrupt, VirtioDevice, INTERRUPT_CONFIG, VIRTIO_F_VERSION_1};
use crate::vmm::devices::BusDevice;
use crate::vmm::vstate::memory::GuestMemory;

/// Size of one device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register, where KVM ioeventfds catch notifications.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4547_4155; // "UAGE"
const CONFIG_OFFSET: u64 = 0x100;

/// The transport state, behind one lock (the guest accesses it from any vCPU).
struct State {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    activated: bool,
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    state: Mutex<State>,
}

impl MmioTransport {
    /// Wraps `device`. `queue_events` (one per queue) are the eventfds registered with KVM
    /// as ioeventfds on QueueNotify; `interrupt` raises the device's GSI.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        queue_events: Vec<EventFd>,
    ) -> Result<Self, virtio_queue::Error> {
        let queues = device.queue_max_sizes().iter().map(|&max| Queue::new(max)).collect::<Result<_, _>>()?;
        Ok(Self {
            state: Mutex::new(State {
                device,
                mem,
                interrupt,
                queues,
                queue_events,
                queue_select: 0,
                device_features_select: 0,
                driver_features_select: 0,
                driver_features: 0,
                status: 0,
                config_generation: 0,
                activated: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// Queue configuration may change only between FEATURES_OK and DRIVER_OK.
    fn queue_configurable(&self) -> bool {
        self.status & status::DRIVER_OK == 0
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC_VALUE,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR_ID,
            0x10 => match self.device_features_select {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            0x34 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x44 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            0x14 => self.device_features_select = value,
            0x20 => self.write_driver_features(value),
            0x24 => self.driver_features_select = value,
            0x30 => self.queue_select = value,
            0x38 | 0x44 | 0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 => self.write_queue_register(offset, value),
            0x50 => match self.queue_events.get(value as usize) {
                // Normally KVM's ioeventfd catches this write; handle it if it did not.
                Some(event) => {
                    let _ = event.write(1);
                }
                None => tracing::debug!(queue = value, "notify for a queue that does not exist"),
            },
            0x64 => self.interrupt.acknowledge(value),
            0x70 => self.write_status(value),
            _ => tracing::debug!(offset, value, "ignored write to a read-only or unknown register"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let negotiating = self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0;
        if !negotiating {
            return;
        }
        let shift = match self.driver_features_select {
            0 => 0,
            1 => 32,
            _ => return,
        };
        self.driver_features =
            (self.driver_features & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.queue_configurable() {
            tracing::debug!(offset, "queue configuration after DRIVER_OK ignored");
            return;
        }
        let Some(queue) = self.selected_queue() else { return };
        match offset {
            // Queue sizes above the maximum or not a power of two are refused by the queue.
            0x38 => queue.set_size(value.min(u32::from(u16::MAX)) as u16),
            0x44 => queue.set_ready(value == 1),
            0x80 => queue.set_desc_table_address(Some(value), None),
            0x84 => queue.set_desc_table_address(None, Some(value)),
            0x90 => queue.set_avail_ring_address(Some(value), None),
            0x94 => queue.set_avail_ring_address(None, Some(value)),
            0xa0 => queue.set_used_ring_address(Some(value), None),
            0xa4 => queue.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // Apart from a reset, the driver only ever adds bits.
        if value & self.status != self.status {
            tracing::debug!(old = self.status, new = value, "status bits cleared without a reset: ignored");
            return;
        }
        let added = value & !self.status;
        let mut value = value;
        if added & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let acceptable =
                self.driver_features & !offered == 0 && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !acceptable {
                tracing::warn!(driver = self.driver_features, offered, "driver features refused");
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value;
        if added & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let invalid = self.queues.iter().position(|q| q.ready() && !q.is_valid(&self.mem));
        let result = match invalid {
            Some(index) => Err(format!("queue {index} is not valid for guest memory")),
            None => self.clone_events().and_then(|queue_events| {
                let queues = self
                    .queues
                    .iter()
                    .map(|q| Queue::try_from(q.state()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("queue state: {e:?}"))?;
                let activation = Activation {
                    mem: self.mem.clone(),
                    queues,
                    queue_events,
                    interrupt: self.interrupt.clone(),
                    features: self.driver_features,
                };
                self.device.activate(activation).map_err(|e| e.to_string())
            }),
        };
        match result {
            Ok(()) => self.activated = true,
            Err(e) => {
                tracing::warn!(error = %e, "virtio device activation failed");
                self.status |= status::DEVICE_NEEDS_RESET;
                self.config_generation = self.config_generation.wrapping_add(1);
                self.interrupt.signal(INTERRUPT_CONFIG);
            }
        }
    }

    fn clone_events(&self) -> Result<Vec<EventFd>, String> {
        self.queue_events.iter().map(|e| e.try_clone().map_err(|e| format!("queue eventfd: {e}"))).collect()
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
        for queue in &mut self.queues {
            queue.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.interrupt.acknowledge(u32::MAX);
    }
}

impl BusDevice for MmioTransport {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let mut state = self.lock();
        if offset >= CONFIG_OFFSET {
            state.device.read_config(offset - CONFIG_OFFSET, data);
        } else if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&state.read_register(offset).to_le_bytes());
        } else {
            tracing::debug!(offset, len = data.len(), "unaligned or non-32-bit register read");
            data.fill(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let mut state = self.lock();
        if offset >= CONFIG_OFFSET {
            state.device.write_config(offset - CONFIG_OFFSET, data);
        } else if let (true, Ok(bytes)) = (offset % 4 == 0, <[u8; 4]>::try_from(data)) {
            state.write_register(offset, u32::from_le_bytes(bytes));
        } else {
            tracing::debug!(offset, len = data.len(), "unaligned or non-32-bit register write ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::ActivateError;
    use crate::vmm::vstate::memory::create_guest_memory;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Default, Clone)]
    struct Counters {
        activations: Arc<AtomicUsize>,
        resets: Arc<AtomicUsize>,
    }

    struct Dummy(Counters);

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            crate::vmm::devices::virtio::read_config_bytes(&[9, 8, 7, 6], offset, data);
        }
        fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
            assert_eq!(activation.queues.len(), 1);
            self.0.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn reset(&mut self) {
            self.0.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn transport() -> (MmioTransport, Counters) {
        let counters = Counters::default();
        let mem = create_guest_memory(16).unwrap();
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let events = vec![EventFd::new(EFD_NONBLOCK).unwrap()];
        (MmioTransport::new(Box::new(Dummy(counters.clone())), mem, irq, events).unwrap(), counters)
    }

    fn read32(t: &MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write32(t: &MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    fn configure_queue(t: &MmioTransport) {
        write32(t, 0x30, 0);
        write32(t, 0x38, 16);
        write32(t, 0x80, 0x1000);
        write32(t, 0x90, 0x2000);
        write32(t, 0xa0, 0x3000);
        write32(t, 0x44, 1);
    }

    fn negotiate(t: &MmioTransport, features_high: u32) {
        write32(t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        write32(t, 0x24, 1);
        write32(t, 0x20, features_high);
        write32(t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    }

    #[test]
    fn identification_registers() {
        let (t, _) = transport();
        assert_eq!(read32(&t, 0x00), MAGIC_VALUE);
        assert_eq!(read32(&t, 0x04), 2);
        assert_eq!(read32(&t, 0x08), 42);
        write32(&t, 0x14, 1);
        assert_eq!(read32(&t, 0x10), 1, "VERSION_1 in the high word");
        assert_eq!(read32(&t, 0x34), 16);
        let mut config = [0u8; 2];
        t.read(0x101, &mut config);
        assert_eq!(config, [8, 7]);
    }

    #[test]
    fn full_handshake_activates_and_reset_stops() {
        let (t, counters) = transport();
        negotiate(&t, 1);
        assert_ne!(read32(&t, 0x70) & status::FEATURES_OK, 0);
        configure_queue(&t);
        write32(&t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        assert_eq!(counters.activations.load(Ordering::SeqCst), 1);
        write32(&t, 0x70, 0);
        assert_eq!(counters.resets.load(Ordering::SeqCst), 1);
        assert_eq!(read32(&t, 0x70), 0);
        assert_eq!(read32(&t, 0x44), 0, "queue no longer ready after reset");
    }

    #[test]
    fn features_without_version_1_are_refused() {
        let (t, _) = transport();
        negotiate(&t, 0);
        assert_eq!(read32(&t, 0x70) & status::FEATURES_OK, 0);
    }

    #[test]
    fn unoffered_features_are_refused() {
        let (t, _) = transport();
        write32(&t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        write32(&t, 0x24, 0);
        write32(&t, 0x20, 0xffff_ffff);
        write32(&t, 0x24, 1);
        write32(&t, 0x20, 1);
        write32(&t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_eq!(read32(&t, 0x70) & status::FEATURES_OK, 0);
    }

    #[test]
    fn queue_outside_guest_memory_needs_reset() {
        let (t, counters) = transport();
        negotiate(&t, 1);
        write32(&t, 0x38, 16);
        write32(&t, 0x80, 0xf000_0000); // beyond 16 MiB of RAM
        write32(&t, 0x90, 0x2000);
        write32(&t, 0xa0, 0x3000);
        write32(&t, 0x44, 1);
        write32(&t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        assert_eq!(counters.activations.load(Ordering::SeqCst), 0);
        assert_ne!(read32(&t, 0x70) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(read32(&t, 0x60) & INTERRUPT_CONFIG, 0);
    }

    #[test]
    fn hostile_register_accesses_are_harmless() {
        let (t, counters) = transport();
        write32(&t, 0x30, 7); // a queue that does not exist
        write32(&t, 0x38, 16);
        write32(&t, 0x44, 1);
        assert_eq!(read32(&t, 0x34), 0);
        write32(&t, 0x50, 99);
        t.write(0x70, &[0xff]); // 1-byte status write
        t.write(0x71, &[0xff, 0xff, 0xff, 0xff]); // unaligned
        t.write(0x20, &[]);
        let mut odd = [0u8; 3];
        t.read(0x02, &mut odd);
        assert_eq!(read32(&t, 0x70), 0);
        // DRIVER_OK before features: no activation.
        write32(&t, 0x70, status::DRIVER_OK);
        assert_eq!(counters.activations.load(Ordering::SeqCst), 0);
        // Queue size beyond the maximum is not accepted by the queue.
        write32(&t, 0x70, 0);
        negotiate(&t, 1);
        configure_queue(&t);
        write32(&t, 0x38, 4096);
        write32(&t, 0x70, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
        assert_eq!(counters.activations.load(Ordering::SeqCst), 1);
    }
}
