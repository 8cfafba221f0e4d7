//! Everything written into guest memory before the first instruction runs: the kernel,
//! initrd and command line, the zero page with its e820 map, and the ACPI tables.

pub mod acpi;
pub mod layout;
pub mod loader;
pub mod params;
