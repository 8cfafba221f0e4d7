//! PC legacy devices: the 16550 serial console, the i8042 keyboard controller and the CMOS
//! real-time clock.

pub mod i8042;
pub mod rtc;
pub mod serial;
