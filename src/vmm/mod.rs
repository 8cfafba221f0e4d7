//! `nuage-vmm`: the per-instance virtual machine monitor.
//!
//! One process runs one microVM. [`api`] is its contract with the daemon: the
//! configuration, the control socket and the exit status. [`builder`] assembles the VM from
//! an [`api::config::VmConfig`]:
//! guest memory ([`vstate::memory`]), the kernel and boot structures ([`boot`]), the KVM VM
//! and vCPUs ([`vstate`], [`arch`]) and the devices ([`devices`], placed in the guest by
//! [`device_manager`]). [`runtime`] then runs one
//! thread per vCPU and an event loop on the main thread until an [`exit::ExitReason`] ends it.
//! Started by the daemon, it first puts itself in a [`jail`].

pub mod api;
pub mod arch;
pub mod boot;
pub mod builder;
pub mod cli;
pub mod device_manager;
pub mod devices;
pub mod exit;
pub mod jail;
pub mod logging;
pub mod runtime;
pub mod seccomp;
pub mod threads;
pub mod vstate;
