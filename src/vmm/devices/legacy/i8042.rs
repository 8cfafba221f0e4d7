//! The i8042 keyboard controller, present only for its CPU reset line (`reboot=k`).

use std::sync::Mutex;

use vm_superio::I8042Device;

use crate::vmm::devices::{complete_byte_read, BusDevice};
use crate::vmm::exit::{ExitNotifier, ExitReason, ExitTrigger, ResetCause};

/// First i8042 port (data); the command port is at offset 4 (0x64).
pub const I8042_PORT: u16 = 0x60;
/// Ports claimed: 0x60 to 0x64.
pub const I8042_PORT_COUNT: u16 = 5;

/// The keyboard controller.
pub struct I8042 {
    inner: Mutex<I8042Device<ExitTrigger>>,
}

impl I8042 {
    /// A controller whose reset command ends the VM with a reset.
    pub fn new(notifier: ExitNotifier) -> Self {
        let trigger = ExitTrigger { notifier, reason: ExitReason::Reset(ResetCause::KeyboardController) };
        Self { inner: Mutex::new(I8042Device::new(trigger)) }
    }
}

impl BusDevice for I8042 {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let value = self.inner.lock().unwrap_or_else(|p| p.into_inner()).read(offset as u8);
        complete_byte_read(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(value) = data.first() {
            let mut device = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            // The trigger cannot fail.
            let _ = device.write(offset as u8, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_resets() {
        let notifier = ExitNotifier::new().unwrap();
        let dev = I8042::new(notifier.clone());
        dev.write(0, &[0xfe]);
        assert_eq!(notifier.reason(), None, "0xFE on the data port is not a command");
        dev.write(4, &[0xfe]);
        assert_eq!(notifier.reason(), Some(ExitReason::Reset(ResetCause::KeyboardController)));
    }
}
