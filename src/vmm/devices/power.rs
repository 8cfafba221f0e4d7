//! ACPI hardware-reduced power management: one I/O port that is both the FADT's sleep
//! control register (power off) and its reset register (reboot).
//!
//! Linux powers off by writing `SLP_TYP << 2 | SLP_EN` to the sleep control register, with
//! SLP_TYP taken from the DSDT's `\_S5_` package, and reboots by writing the FADT's reset
//! value to the reset register. Both end the VM with distinct exit reasons.

use super::BusDevice;
use crate::vmm::exit::{ExitNotifier, ExitReason, ResetCause};

/// The power management port.
pub const POWER_PORT: u16 = 0x600;
/// Value that resets the machine when written to [`POWER_PORT`].
pub const RESET_VALUE: u8 = 1;
/// The sleep type `\_S5_` advertises for "soft off".
pub const S5_SLEEP_TYPE: u8 = 5;
/// SLP_EN: the write requests the sleep state in SLP_TYP.
const SLEEP_ENABLE: u8 = 1 << 5;

/// The power management device.
pub struct PowerManagement {
    notifier: ExitNotifier,
}

impl PowerManagement {
    /// A device that reports power-off and reset to `notifier`.
    pub fn new(notifier: ExitNotifier) -> Self {
        Self { notifier }
    }
}

impl BusDevice for PowerManagement {
    fn read(&self, _offset: u64, data: &mut [u8]) {
        // Sleep status: no wake event pending.
        data.fill(0);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let (0, [value, ..]) = (offset, data) else { return };
        if *value == RESET_VALUE {
            self.notifier.notify(ExitReason::Reset(ResetCause::AcpiResetRegister));
        } else if value & SLEEP_ENABLE != 0 && (value >> 2) & 0x7 == S5_SLEEP_TYPE {
            self.notifier.notify(ExitReason::PowerOff);
        } else {
            tracing::debug!(value, "ignored write to the sleep control register");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(value: u8) -> Option<ExitReason> {
        let notifier = ExitNotifier::new().unwrap();
        PowerManagement::new(notifier.clone()).write(0, &[value]);
        notifier.reason()
    }

    #[test]
    fn s5_powers_off() {
        assert_eq!(written(0x34), Some(ExitReason::PowerOff));
    }

    #[test]
    fn reset_value_resets() {
        assert_eq!(written(1), Some(ExitReason::Reset(ResetCause::AcpiResetRegister)));
    }

    #[test]
    fn other_values_are_ignored() {
        for value in [0u8, 0x14, 0x30, 0x3c, 0xff] {
            assert_eq!(written(value), None, "value {value:#x}");
        }
        let notifier = ExitNotifier::new().unwrap();
        PowerManagement::new(notifier.clone()).write(3, &[0x34]);
        PowerManagement::new(notifier.clone()).write(0, &[]);
        assert_eq!(notifier.reason(), None);
    }
}
