//! A stand-in for firmware at the x86 reset vector (physical 0xFFFF0).
//!
//! nuage boots kernels directly, without a BIOS. But Linux's last-resort reboot path jumps
//! to the reset vector in real mode expecting firmware to reset the machine, and on a
//! hardware-reduced ACPI machine without EFI runtime services it goes there *first*
//! (`reboot_init` picks BOOT_EFI, which falls through to BOOT_BIOS). Without code here the
//! vCPU would execute zeroed memory forever. The stub writes the ACPI reset value to the
//! reset register, ending the VM with a reboot, and halts should that ever return.

use vm_memory::{Bytes, GuestAddress};

use crate::vmm::arch::layout::{EBDA_START, HIMEM_START};
use crate::vmm::devices::power::{POWER_PORT, RESET_VALUE};
use crate::vmm::vstate::memory::GuestMemory;

/// Physical address the CPU fetches from after a reset (F000:FFF0).
pub const RESET_VECTOR: u64 = 0xffff0;

/// Length of [`reset_stub`].
const STUB_LEN: usize = 10;

// The stub lives in the reserved legacy area, below the kernel.
const _: () = assert!(RESET_VECTOR >= EBDA_START && RESET_VECTOR + STUB_LEN as u64 <= HIMEM_START);

/// The 16-bit real-mode stub.
pub fn reset_stub() -> [u8; STUB_LEN] {
    let [port_lo, port_hi] = POWER_PORT.to_le_bytes();
    [
        0xba,
        port_lo,
        port_hi, // mov dx, POWER_PORT
        0xb0,
        RESET_VALUE, // mov al, RESET_VALUE
        0xee,        // out dx, al
        0xfa,        // cli
        0xf4,        // hlt
        0xeb,
        0xfc, // jmp back to cli
    ]
}

/// Writes the stub at the reset vector.
pub fn write_reset_stub(mem: &GuestMemory) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&reset_stub(), GuestAddress(RESET_VECTOR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::vstate::memory::create_guest_memory;

    #[test]
    fn stub_writes_the_reset_value_to_the_power_port() {
        let mem = create_guest_memory(4).unwrap();
        write_reset_stub(&mem).unwrap();
        let mut code = [0u8; 10];
        mem.read_slice(&mut code, GuestAddress(RESET_VECTOR)).unwrap();
        assert_eq!(&code[..6], &[0xba, 0x00, 0x06, 0xb0, 0x01, 0xee]);
    }
}
