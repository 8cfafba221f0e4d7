//! Everything written into guest memory before the first instruction runs: the kernel,
//! initrd and command line, the zero page with its e820 map, the ACPI tables, and a reset-vector stub standing in
//! for firmware.

pub mod acpi;
pub mod loader;
pub mod params;
pub mod reset_vector;
