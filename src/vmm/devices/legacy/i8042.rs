//! The i8042 keyboard controller, for two things: its CPU reset line (`reboot=k`), and a
//! keyboard that can press Ctrl+Alt+Del, which is how the host asks a guest to shut down
//! cleanly (Linux sends SIGINT to init; systemd and busybox init act on it).
//!
//! Only what Linux's i8042 and atkbd drivers use is modelled: the controller's command
//! byte, self tests, the keyboard's acknowledgements and an output buffer of scancodes (set
//! 2, untranslated) raised on IRQ 1. There is no mouse port: the guest is told
//! [`KERNEL_PARAMS`].

use std::collections::VecDeque;
use std::sync::Mutex;

use vm_superio::Trigger;

use super::serial::IrqLine;
use crate::vmm::devices::{complete_byte_read, BusDevice};
use crate::vmm::exit::{ExitNotifier, ExitReason, ResetCause};

/// First i8042 port (data).
pub const I8042_PORT: u16 = 0x60;
/// The status and command port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// Ports claimed: 0x60 to 0x64.
pub const I8042_PORT_COUNT: u16 = 5;
/// The keyboard's ISA interrupt.
pub const I8042_IRQ: u32 = 1;
/// Kernel parameters that match this controller: no mouse port, no multiplexer, and a
/// keyboard the kernel should not probe. (The DSDT describes the controller as PNP0303,
/// which is how Linux learns its interrupt on a machine without a legacy PIC.)
pub const KERNEL_PARAMS: &str = "i8042.noaux i8042.nomux i8042.dumbkbd";

/// Bytes the output buffer holds; a guest that never reads loses the excess, nothing more.
const BUFFER_CAPACITY: usize = 32;

// Status register bits.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_COMMAND: u8 = 0x08;
const STATUS_UNLOCKED: u8 = 0x10;

// Command byte bits.
const CTR_KBD_INTERRUPT: u8 = 0x01;
const CTR_SYSTEM: u8 = 0x04;

// Controller commands (written to port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_TEST_AUX: u8 = 0xA9;
const CMD_SELF_TEST: u8 = 0xAA;
const CMD_TEST_KBD: u8 = 0xAB;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xD1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xD2;
const CMD_WRITE_AUX_BUFFER: u8 = 0xD3;
const CMD_WRITE_AUX: u8 = 0xD4;
const CMD_PULSE_RESET: u8 = 0xFE;

// Keyboard replies.
const KBD_ACK: u8 = 0xFA;
const KBD_SELF_TEST_PASSED: u8 = 0xAA;
const KBD_RESET: u8 = 0xFF;
const KBD_GET_ID: u8 = 0xF2;
/// An MF2 keyboard's id.
const KBD_ID: [u8; 2] = [0xAB, 0x83];

/// Ctrl, Alt and Delete pressed, then released, in scancode set 2.
const CTRL_ALT_DEL: [u8; 11] = [
    0x14, 0x11, 0xE0, 0x71, // make: left Ctrl, left Alt, Delete
    0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14, // break: Delete, Alt, Ctrl
];

struct State {
    command_byte: u8,
    /// A controller command waiting for its data byte.
    pending: Option<u8>,
    /// The last write went to the command port.
    last_was_command: bool,
    output: VecDeque<u8>,
}

/// The keyboard controller.
pub struct I8042 {
    state: Mutex<State>,
    irq: IrqLine,
    reset: ExitNotifier,
}

impl I8042 {
    /// A controller raising `irq` for keyboard input, whose reset command ends the VM with
    /// a reset.
    pub fn new(irq: IrqLine, reset: ExitNotifier) -> Self {
        let state = State {
            command_byte: CTR_KBD_INTERRUPT | CTR_SYSTEM,
            pending: None,
            last_was_command: false,
            output: VecDeque::with_capacity(BUFFER_CAPACITY),
        };
        Self { state: Mutex::new(state), irq, reset }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Each change is a few field writes: a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Presses and releases Ctrl+Alt+Del.
    pub fn press_ctrl_alt_del(&self) {
        let mut state = self.lock();
        self.queue_keyboard_bytes(&mut state, &CTRL_ALT_DEL);
    }

    /// Queues bytes from the keyboard and raises its interrupt if the guest enabled it.
    fn queue_keyboard_bytes(&self, state: &mut State, bytes: &[u8]) {
        Self::queue_reply(state, bytes);
        self.raise(state);
    }

    /// Controller replies (to commands) do not interrupt; Linux polls for them.
    fn queue_reply(state: &mut State, bytes: &[u8]) {
        for &byte in bytes {
            if state.output.len() < BUFFER_CAPACITY {
                state.output.push_back(byte);
            }
        }
    }

    fn raise(&self, state: &State) {
        if !state.output.is_empty() && state.command_byte & CTR_KBD_INTERRUPT != 0 {
            if let Err(e) = self.irq.trigger() {
                tracing::warn!(error = %e, "i8042 interrupt failed");
            }
        }
    }

    fn status(state: &State) -> u8 {
        let mut status = STATUS_SYSTEM | STATUS_UNLOCKED;
        if !state.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if state.last_was_command {
            status |= STATUS_COMMAND;
        }
        status
    }

    fn command(&self, state: &mut State, command: u8) {
        state.last_was_command = true;
        state.pending = None;
        match command {
            CMD_READ_CTR => Self::queue_reply(state, &[state.command_byte]),
            CMD_WRITE_CTR
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_BUFFER
            | CMD_WRITE_AUX_BUFFER
            | CMD_WRITE_AUX => state.pending = Some(command),
            CMD_SELF_TEST => Self::queue_reply(state, &[0x55]),
            CMD_TEST_KBD => Self::queue_reply(state, &[0x00]),
            // No mouse port: its interface test reports a clock line stuck low.
            CMD_TEST_AUX => Self::queue_reply(state, &[0x01]),
            CMD_PULSE_RESET => self.reset.notify(ExitReason::Reset(ResetCause::KeyboardController)),
            // Enabling and disabling ports, reading the input port...: nothing to model.
            _ => {}
        }
    }

    fn data(&self, state: &mut State, value: u8) {
        state.last_was_command = false;
        match state.pending.take() {
            Some(CMD_WRITE_CTR) => {
                state.command_byte = value;
                self.raise(state);
            }
            Some(CMD_WRITE_KBD_BUFFER) => self.queue_keyboard_bytes(state, &[value]),
            // Output port (bit 0 low would reset; Linux never clears it), mouse: ignored.
            Some(_) => {}
            // A byte for the keyboard itself.
            None => match value {
                KBD_RESET => self.queue_keyboard_bytes(state, &[KBD_ACK, KBD_SELF_TEST_PASSED]),
                KBD_GET_ID => self.queue_keyboard_bytes(state, &[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
                _ => self.queue_keyboard_bytes(state, &[KBD_ACK]),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let mut state = self.lock();
        let value = match offset {
            0 => {
                let value = state.output.pop_front().unwrap_or(0);
                // One interrupt per byte: more waiting means another edge.
                self.raise(&state);
                value
            }
            4 => Self::status(&state),
            _ => 0xFF,
        };
        complete_byte_read(data, value);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        let mut state = self.lock();
        match offset {
            0 => self.data(&mut state, value),
            4 => self.command(&mut state, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;

    fn controller() -> (I8042, EventFd, ExitNotifier) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let notifier = ExitNotifier::new().unwrap();
        (I8042::new(IrqLine(irq.try_clone().unwrap()), notifier.clone()), irq, notifier)
    }

    fn read(dev: &I8042, offset: u64) -> u8 {
        let mut byte = [0u8];
        dev.read(offset, &mut byte);
        byte[0]
    }

    #[test]
    fn reset_command_resets() {
        let (dev, _, notifier) = controller();
        dev.write(0, &[0xfe]);
        assert_eq!(notifier.reason(), None, "0xFE on the data port is not a command");
        dev.write(4, &[0xfe]);
        assert_eq!(notifier.reason(), Some(ExitReason::Reset(ResetCause::KeyboardController)));
    }

    #[test]
    fn linux_probing_gets_its_answers() {
        let (dev, _, _) = controller();
        assert_eq!(read(&dev, 4) & STATUS_OUTPUT_FULL, 0);
        dev.write(4, &[CMD_READ_CTR]);
        assert_eq!(read(&dev, 4) & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
        assert_eq!(read(&dev, 0), CTR_KBD_INTERRUPT | CTR_SYSTEM);
        dev.write(4, &[CMD_WRITE_CTR]);
        dev.write(0, &[0x45]);
        dev.write(4, &[CMD_READ_CTR]);
        assert_eq!(read(&dev, 0), 0x45, "the command byte is kept");
        dev.write(4, &[CMD_SELF_TEST]);
        assert_eq!(read(&dev, 0), 0x55);
        dev.write(0, &[KBD_GET_ID]);
        assert_eq!([read(&dev, 0), read(&dev, 0), read(&dev, 0)], [KBD_ACK, 0xAB, 0x83]);
        assert_eq!(read(&dev, 4) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn ctrl_alt_del_is_queued_with_an_interrupt() {
        let (dev, irq, _) = controller();
        dev.press_ctrl_alt_del();
        assert!(irq.read().is_ok(), "the keyboard interrupt was raised");
        let bytes: Vec<u8> = (0..11).map(|_| read(&dev, 0)).collect();
        assert_eq!(bytes, CTRL_ALT_DEL);
        assert_eq!(read(&dev, 4) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn a_guest_that_never_reads_cannot_grow_the_buffer() {
        let (dev, _, _) = controller();
        for _ in 0..1000 {
            dev.press_ctrl_alt_del();
            dev.write(0, &[0x00]);
        }
        assert_eq!(dev.lock().output.len(), BUFFER_CAPACITY);
        // Interrupts off: keys queue silently.
        let (dev, irq, _) = controller();
        dev.write(4, &[CMD_WRITE_CTR]);
        dev.write(0, &[CTR_SYSTEM]);
        dev.press_ctrl_alt_del();
        assert!(irq.read().is_err(), "no interrupt while the guest disabled it");
    }
}
