//! Emulated devices and the port-I/O bus that routes vCPU exits to them.
//!
//! Devices are shared by all vCPU threads; each keeps its state behind its own lock. A
//! port no device claims reads as all ones and ignores writes, as on real hardware, so a
//! guest probing for absent hardware never stops the VM.

pub mod legacy;
pub mod power;

use std::sync::Arc;

/// A device reached through x86 I/O ports.
pub trait PioDevice: Send + Sync {
    /// The guest reads `data.len()` bytes at `offset` from the device's base port.
    fn read(&self, offset: u16, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device's base port.
    fn write(&self, offset: u16, data: &[u8]);
}

/// Completes a guest read of a byte-wide register: the first byte carries `value`, the rest
/// of a wider access reads as zero.
pub fn complete_byte_read(data: &mut [u8], value: u8) {
    data.fill(0);
    if let Some(first) = data.first_mut() {
        *first = value;
    }
}

struct PioRange {
    base: u16,
    len: u16,
    device: Arc<dyn PioDevice>,
}

/// Errors while building the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Two devices claim overlapping ports.
    #[error("I/O ports {base:#x}..+{len} overlap an existing device")]
    Overlap {
        /// First port of the rejected range.
        base: u16,
        /// Its length.
        len: u16,
    },
}

/// Port-I/O address space: a sorted set of non-overlapping ranges.
#[derive(Default)]
pub struct PioBus {
    ranges: Vec<PioRange>,
}

impl PioBus {
    /// Claims `len` ports from `base` for `device`.
    pub fn insert(&mut self, base: u16, len: u16, device: Arc<dyn PioDevice>) -> Result<(), BusError> {
        let end = u32::from(base) + u32::from(len);
        let overlaps = self.ranges.iter().any(|r| {
            let r_end = u32::from(r.base) + u32::from(r.len);
            u32::from(base) < r_end && u32::from(r.base) < end
        });
        if overlaps || len == 0 {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.push(PioRange { base, len, device });
        self.ranges.sort_by_key(|r| r.base);
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&PioRange, u16)> {
        let idx = self.ranges.partition_point(|r| r.base <= port).checked_sub(1)?;
        let range = &self.ranges[idx];
        let offset = port - range.base;
        (offset < range.len).then_some((range, offset))
    }

    /// Handles a guest `in` from `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((range, offset)) => range.device.read(offset, data),
            None => {
                tracing::trace!(port, len = data.len(), "read from unclaimed port");
                data.fill(0xff);
            }
        }
    }

    /// Handles a guest `out` to `port`.
    pub fn write(&self, port: u16, data: &[u8]) {
        match self.find(port) {
            Some((range, offset)) => range.device.write(offset, data),
            None => tracing::trace!(port, ?data, "write to unclaimed port"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u16, Vec<u8>)>>);

    impl PioDevice for Recorder {
        fn read(&self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u16, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let dev = Arc::new(Recorder::default());
        let mut bus = PioBus::default();
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
        let bus = PioBus::default();
        let mut data = [0u8; 4];
        bus.read(0xcfc, &mut data);
        assert_eq!(data, [0xff; 4]);
        bus.write(0xffff, &[1, 2, 3, 4]);
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, Arc::new(Recorder::default())).unwrap();
        assert!(bus.insert(0x3ff, 2, Arc::new(Recorder::default())).is_err());
        assert!(bus.insert(0x3f0, 9, Arc::new(Recorder::default())).is_err());
        assert!(bus.insert(0x3f0, 8, Arc::new(Recorder::default())).is_ok());
        assert!(bus.insert(0xffff, 1, Arc::new(Recorder::default())).is_ok());
    }
}
