//! Assembles a microVM from its configuration: guest memory, the kernel, initrd and disk
//! files first (so bad images fail before KVM is touched), then the KVM VM and its devices,
//! then the boot structures that describe those devices, then the vCPUs.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::block::{self, OpenError};
use crate::vmm::api::config::{VmConfig, DEFAULT_CONSOLE_LOG_LIMIT};
use crate::vmm::api::control::ControlTargets;
use crate::vmm::arch::regs;
use crate::vmm::boot::{acpi, loader, params, reset_vector};
use crate::vmm::device_manager::{DeviceManagerError, MmioDeviceManager};
use crate::vmm::devices::legacy::i8042::{self, I8042, I8042_IRQ, I8042_PORT, I8042_PORT_COUNT};
use crate::vmm::devices::legacy::rtc::{Rtc, RTC_PORT, RTC_PORT_COUNT};
use crate::vmm::devices::legacy::serial::{
    ConsoleSinks, IrqLine, RotatingLog, SerialConsole, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT,
};
use crate::vmm::devices::power::{PowerManagement, POWER_PORT};
use crate::vmm::devices::virtio::block::{DiskHandle, VirtioBlock};
use crate::vmm::devices::virtio::net::filter::SourceFilter;
use crate::vmm::devices::virtio::net::tap::{Tap, TapError};
use crate::vmm::devices::virtio::net::VirtioNet;
use crate::vmm::devices::virtio::rng::VirtioRng;
use crate::vmm::devices::virtio::vsock::muxer::MuxerError;
use crate::vmm::devices::virtio::vsock::VirtioVsock;
use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::devices::{BusError, Buses};
use crate::vmm::exit::ExitNotifier;
use crate::vmm::vstate::memory::{self, GuestMemory};
use crate::vmm::vstate::vcpu::{Vcpu, VcpuError};
use crate::vmm::vstate::vm::{Vm, VmError};

/// Errors while building a microVM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Guest RAM could not be mapped.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The kernel, initrd or command line is unusable.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// Boot tables could not be written.
    #[error("cannot write boot structures: {0}")]
    BootMemory(#[from] vm_memory::GuestMemoryError),
    /// The console log cannot be opened.
    #[error("cannot open console log {path}: {source}")]
    ConsoleLog {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A disk file cannot be opened.
    #[error("disk {path}: {source}")]
    Disk {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: OpenError,
    },
    /// A tap cannot be opened or adopted.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// The control socket cannot be created.
    #[error("cannot listen on control socket {path}: {source}")]
    ControlSocket {
        /// The socket path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The vsock socket cannot be set up.
    #[error(transparent)]
    Vsock(#[from] MuxerError),
    /// A virtio device could not be attached.
    #[error("cannot attach a virtio device: {0}")]
    VirtioDevice(#[from] DeviceManagerError),
    /// KVM refused the VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// KVM refused a vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Device wiring failed.
    #[error("device set-up failed: {0}")]
    Device(String),
}

impl BuildError {
    /// Whether the error lies in what the user configured (as opposed to the host).
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            BuildError::Load(_)
                | BuildError::ConsoleLog { .. }
                | BuildError::Memory(_)
                | BuildError::Disk { .. }
                | BuildError::Tap(_)
                | BuildError::Vsock(_)
                | BuildError::ControlSocket { .. }
        )
    }
}

impl From<BusError> for BuildError {
    fn from(e: BusError) -> Self {
        BuildError::Device(e.to_string())
    }
}

/// A microVM ready to run: nothing has executed yet.
pub struct MicroVm {
    /// vCPUs, the boot vCPU first. Declared first so they drop before the VM and memory.
    pub vcpus: Vec<Vcpu>,
    /// The port-I/O and MMIO buses shared by all vCPU threads.
    pub bus: Arc<Buses>,
    /// The serial console, also fed by the main loop.
    pub serial: Arc<SerialConsole>,
    /// Where the VM's end is reported.
    pub exit: ExitNotifier,
    /// The control socket and what it controls, when configured.
    pub control: Option<(UnixListener, ControlTargets)>,
    /// The KVM VM.
    pub vm: Vm,
    /// Guest RAM; must outlive the VM's memory slots.
    pub memory: GuestMemory,
}

/// Builds the microVM described by `config` (already validated).
pub fn build(config: &VmConfig) -> Result<MicroVm, BuildError> {
    // Inherited tap descriptors first, before opening anything reuses a number not passed.
    let taps = open_taps(config)?;
    let vcpu_count = config.vcpu_count();
    let sinks = console_sinks(config)?;

    let memory = memory::create_guest_memory(config.memory_mib)?;
    let kernel = loader::load_kernel(&memory, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(loader::load_initrd(&memory, path, &kernel)?),
        None => None,
    };
    let (mut devices, disks) = open_disks(config)?;
    let control = match &config.api_socket {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)
                .and_then(|listener| {
                    // Only the VMM's own user may ask it to switch disks or shut down.
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                    Ok(listener)
                })
                .map_err(|source| BuildError::ControlSocket { path: path.clone(), source })?;
            Some(listener)
        }
        None => None,
    };
    devices.extend(interfaces(config, taps));
    if let Some(vsock) = &config.vsock {
        let device = VirtioVsock::new(u64::from(vsock.guest_cid), &vsock.uds_path)?;
        devices.push(Box::new(device));
    }
    if config.rng {
        devices.push(Box::new(VirtioRng::default()));
    }

    let vm = Vm::new(vcpu_count)?;
    vm.register_memory(&memory)?;

    let exit = ExitNotifier::new().map_err(|e| BuildError::Device(format!("exit eventfd: {e}")))?;
    let serial_irq =
        EventFd::new(EFD_NONBLOCK).map_err(|e| BuildError::Device(format!("serial eventfd: {e}")))?;
    vm.fd()
        .register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(|e| BuildError::Device(format!("serial irqfd: {e}")))?;
    let serial = Arc::new(SerialConsole::new(IrqLine(serial_irq), sinks));
    let keyboard_irq =
        EventFd::new(EFD_NONBLOCK).map_err(|e| BuildError::Device(format!("i8042 eventfd: {e}")))?;
    vm.fd()
        .register_irqfd(&keyboard_irq, I8042_IRQ)
        .map_err(|e| BuildError::Device(format!("i8042 irqfd: {e}")))?;
    let keyboard = Arc::new(I8042::new(IrqLine(keyboard_irq), exit.clone()));
    let control = control.map(|listener| (listener, ControlTargets { disks, keyboard: keyboard.clone() }));
    let mut bus = Buses::default();
    bus.pio.insert(COM1_PORT.into(), COM1_PORT_COUNT.into(), serial.clone())?;
    bus.pio.insert(I8042_PORT.into(), I8042_PORT_COUNT.into(), keyboard)?;
    bus.pio.insert(RTC_PORT.into(), RTC_PORT_COUNT.into(), Arc::new(Rtc::default()))?;
    bus.pio.insert(POWER_PORT.into(), 1, Arc::new(PowerManagement::new(exit.clone())))?;
    let mut virtio = MmioDeviceManager::default();
    for device in devices {
        virtio.attach(vm.fd(), &mut bus.mmio, &memory, device)?;
    }

    let cmdline = if config.virtio_cmdline {
        virtio.cmdline_with_devices(&config.cmdline)
    } else {
        config.cmdline.clone()
    };
    // What the machine lacks, the kernel is told rather than left to probe: there is no
    // PCI bus, and the i8042 has no mouse port (probing it could give up on the keyboard
    // that Ctrl+Alt+Del comes from). Appended last, so they hold whatever the user gave.
    let cmdline = format!("{cmdline} pci=off {}", i8042::KERNEL_PARAMS);
    let cmdline_len = loader::load_cmdline(&memory, &cmdline, loader::cmdline_max_size(&kernel))?;
    let e820 = params::e820_map(config.memory_mib << 20);
    params::write_zero_page(&memory, &params::build_zero_page(&kernel, cmdline_len, initrd, &e820))?;
    acpi::write_acpi_tables(&memory, vcpu_count, virtio.slots())?;
    reset_vector::write_reset_stub(&memory)?;
    regs::write_page_tables(&memory)?;
    regs::write_descriptor_tables(&memory)?;

    let cpuid = vm.supported_cpuid()?;
    let vcpus = (0..vcpu_count)
        .map(|index| Vcpu::new(&vm, index, vcpu_count, &cpuid))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(boot) = vcpus.first() {
        boot.set_boot_entry(kernel.entry)?;
    }
    tracing::info!(
        vcpus = vcpu_count,
        memory_mib = config.memory_mib,
        virtio_devices = virtio.slots().len(),
        entry = kernel.entry.0,
        "microVM built"
    );
    Ok(MicroVm { vcpus, bus: Arc::new(bus), serial, exit, control, vm, memory })
}

/// The virtio-blk devices of the configured disks, and a control handle for each by id.
type Disks = (Vec<Box<dyn VirtioDevice>>, HashMap<String, DiskHandle>);

/// Opens every disk file and wraps it in a virtio-blk device.
fn open_disks(config: &VmConfig) -> Result<Disks, BuildError> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    let mut handles = HashMap::new();
    for (index, disk) in config.disks.iter().enumerate() {
        let backend = block::open_disk(&disk.path, disk.format, disk.read_only, config.disk_root.as_deref())
            .map_err(|source| BuildError::Disk { path: disk.path.clone(), source })?;
        let id = disk.volume_id(index);
        tracing::info!(path = %disk.path.display(), id, read_only = disk.read_only, "disk");
        let device = VirtioBlock::new(backend, disk.read_only, &id, disk.rate_limit);
        handles.insert(id, device.handle());
        devices.push(Box::new(device));
    }
    Ok((devices, handles))
}

/// Opens (or adopts) the tap of every network interface, in order.
fn open_taps(config: &VmConfig) -> Result<Vec<Tap>, BuildError> {
    config
        .nets
        .iter()
        .map(|net| match (&net.tap, net.tap_fd) {
            // SAFETY: validation made the number unique among the interfaces and above the
            // standard streams, and nothing has been opened yet that could own it.
            (None, Some(fd)) => unsafe { Tap::from_raw_fd(fd) },
            (Some(name), _) => Tap::open(name),
            (None, None) => Err(TapError::Name(String::new())),
        })
        .map(|tap| tap.map_err(BuildError::from))
        .collect()
}

/// Wraps each tap in a virtio-net device with its source filter.
fn interfaces(config: &VmConfig, taps: Vec<Tap>) -> Vec<Box<dyn VirtioDevice>> {
    config
        .nets
        .iter()
        .zip(taps)
        .map(|(net, tap)| {
            tracing::info!(tap = tap.name(), mac = %net.mac, ipv4 = ?net.ipv4, "network interface");
            let filter = SourceFilter::new(net.mac.0, net.ipv4);
            Box::new(VirtioNet::new(tap, net.mac.0, filter, net.rate_limit)) as Box<dyn VirtioDevice>
        })
        .collect()
}

fn console_sinks(config: &VmConfig) -> Result<ConsoleSinks, BuildError> {
    let mut sinks: Vec<Box<dyn Write + Send>> = Vec::new();
    if let Some(path) = &config.console.log_file {
        let limit = config.console.log_limit.unwrap_or(DEFAULT_CONSOLE_LOG_LIMIT);
        let log = RotatingLog::open(path, limit)
            .map_err(|source| BuildError::ConsoleLog { path: path.clone(), source })?;
        sinks.push(Box::new(log));
    }
    if config.console.stdout {
        sinks.push(Box::new(std::io::stdout()));
    }
    Ok(ConsoleSinks::new(sinks))
}
