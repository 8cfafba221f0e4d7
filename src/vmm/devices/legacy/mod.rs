//! PC legacy devices: the 16550 serial console and the i8042 reset line.

pub mod i8042;
pub mod serial;
