//! Emulated devices and the buses (port I/O and MMIO) that route vCPU exits to them.
//!
//! Devices are shared by all vCPU threads; each keeps its state behind its own lock. An
//! address no device claims reads as all ones and ignores writes, as on real hardware, so
//! a guest probing for absent hardware never stops the VM.

pub mod legacy;
pub mod power;
pub mod virtio;

use std::sync::Arc;

/// A device reached through I/O ports or MMIO.
pub trait BusDevice: Send + Sync {
    /// The guest reads `data.len()` bytes at `offset` from the device's base address.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device's base address.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Completes a guest read of a byte-wide register: the first byte carries `value`, the rest
/// of a wider access reads as zero.
pub fn complete_byte_read(data: &mut [u8], value: u8) {
    data.fill(0);
    if let Some(first) = data.first_mut() {
        *first = value;
    }
}

struct BusRange {
    base: u64,
    len: u64,
    device: Arc<dyn BusDevice>,
}

/// Errors while building the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Two devices claim overlapping addresses.
    #[error("bus range {base:#x}..+{len:#x} is empty or overlaps an existing device")]
    Overlap {
        /// First address of the rejected range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

/// An address space (I/O ports or guest-physical MMIO): sorted, non-overlapping ranges.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<BusRange>,
}

impl Bus {
    /// Claims `len` addresses from `base` for `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<dyn BusDevice>) -> Result<(), BusError> {
        let end = base.checked_add(len).ok_or(BusError::Overlap { base, len })?;
        let overlaps = self.ranges.iter().any(|r| base < r.base + r.len && r.base < end);
        if overlaps || len == 0 {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.push(BusRange { base, len, device });
        self.ranges.sort_by_key(|r| r.base);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&BusRange, u64)> {
        let idx = self.ranges.partition_point(|r| r.base <= addr).checked_sub(1)?;
        let range = &self.ranges[idx];
        let offset = addr - range.base;
        (offset < range.len).then_some((range, offset))
    }

    /// Handles a guest read at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((range, offset)) => range.device.read(offset, data),
            None => {
                tracing::trace!(addr, len = data.len(), "read from an unclaimed address");
                data.fill(0xff);
            }
        }
    }

    /// Handles a guest write at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr) {
            Some((range, offset)) => range.device.write(offset, data),
            None => tracing::trace!(addr, ?data, "write to an unclaimed address"),
        }
    }
}

/// The two buses a vCPU exit can target.
#[derive(Default)]
pub struct Buses {
    /// x86 I/O ports.
    pub pio: Bus,
    /// Guest-physical MMIO.
    pub mmio: Bus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, Vec<u8>)>>);

    impl BusDevice for Recorder {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let dev = Arc::new(Recorder::default());
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        bus.insert(0x60, 5, Arc::new(Recorder::default())).unwrap();
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [5]);
        bus.write(0x3f8, b"x");
        assert_eq!(dev.0.lock().unwrap().as_slice(), &[(0, vec![b'x'])]);
    }

    #[test]
    fn unclaimed_ports_read_all_ones() {
        let bus = Bus::default();
        let mut data = [0u8; 4];
        bus.read(0xcfc, &mut data);
        assert_eq!(data, [0xff; 4]);
        bus.write(0xffff, &[1, 2, 3, 4]);
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, Arc::new(Recorder::default())).unwrap();
        assert!(bus.insert(0x3ff, 2, Arc::new(Recorder::default())).is_err());
        assert!(bus.insert(0x3f0, 9, Arc::new(Recorder::default())).is_err());
        assert!(bus.insert(0x3f0, 8, Arc::new(Recorder::default())).is_ok());
        assert!(bus.insert(0xffff, 1, Arc::new(Recorder::default())).is_ok());
        assert!(bus.insert(u64::MAX, 2, Arc::new(Recorder::default())).is_err());
        assert!(bus.insert(0x5000, 0, Arc::new(Recorder::default())).is_err());
    }
}
