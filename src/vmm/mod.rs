//! `nuage-vmm`: the per-instance virtual machine monitor.
//!
//! One process runs one microVM. [`builder`] assembles it from a [`config::VmConfig`]:
//! guest memory ([`vstate::memory`]), the kernel and boot structures ([`boot`]), the KVM VM
//! and vCPUs ([`vstate`], [`arch`]) and the devices ([`devices`], placed in the guest by
//! [`device_manager`]). [`runtime`] then runs one
//! thread per vCPU and an event loop on the main thread until an [`exit::ExitReason`] ends it.

pub mod arch;
pub mod boot;
pub mod builder;
pub mod cli;
pub mod config;
pub mod control;
pub mod device_manager;
pub mod devices;
pub mod exit;
pub mod runtime;
pub mod threads;
pub mod vstate;
