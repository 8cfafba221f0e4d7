//! The microVM configuration: a JSON file, command-line flags, or both (flags win).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod disk;
pub mod net;
pub mod rate_limit;
pub mod vsock;

pub use disk::DiskConfig;
use disk::DiskConfigError;
use net::NetConfigError;
pub use net::{MacAddress, NetConfig};
pub use rate_limit::RateLimit;
pub use vsock::VsockConfig;
use vsock::VsockConfigError;

use crate::vmm::arch::layout::MAX_VIRTIO_DEVICES;

/// Most vCPUs a microVM may have.
pub const MAX_VCPUS: u8 = 32;
/// Least guest RAM accepted: room for the boot structures and a kernel.
pub const MIN_MEMORY_MIB: u64 = 4;
/// Most guest RAM accepted (1 TiB); the host maps it lazily.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
/// Command line used when none is given: serial console, reboot on panic. (What describes
/// the machine, such as `pci=off`, the builder adds to every command line.)
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=1";

/// Errors in a configuration, all detected before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// No kernel was given.
    #[error("no kernel given: pass --kernel or set \"kernel\" in the config file")]
    NoKernel,
    /// The kernel file does not exist or is not readable.
    #[error("kernel {path}: {source}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The initrd file does not exist or is not readable.
    #[error("initrd {path}: {source}")]
    Initrd {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// vCPU count out of range.
    #[error("vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u64),
    /// Memory size out of range.
    #[error("memory must be between {MIN_MEMORY_MIB} MiB and {MAX_MEMORY_MIB} MiB, got {0} MiB")]
    Memory(u64),
    /// A disk is misconfigured.
    #[error(transparent)]
    Disk(#[from] DiskConfigError),
    /// A disk file cannot be opened as asked.
    #[error("disk {path}: {source}")]
    DiskFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A network interface is misconfigured.
    #[error(transparent)]
    Net(#[from] NetConfigError),
    /// The vsock device is misconfigured.
    #[error(transparent)]
    Vsock(#[from] VsockConfigError),
    /// A tap descriptor is a standard stream or used twice.
    #[error("tap fd {0} must be an inherited descriptor above 2, used by one interface only")]
    TapFd(i32),
    /// More virtio devices than the machine has slots for.
    #[error("at most {MAX_VIRTIO_DEVICES} virtio devices fit, {0} configured")]
    TooManyDevices(usize),
}

/// The console log's default size before rotation: 4 MiB.
pub const DEFAULT_CONSOLE_LOG_LIMIT: u64 = 4 << 20;

/// Where a console log at `log_file` is moved when it is full (`<file>.1`): the VMM moves
/// it there, and the daemon reads the console's tail across both.
pub fn rotated_console_log(log_file: &Path) -> PathBuf {
    let mut rotated = log_file.to_owned().into_os_string();
    rotated.push(".1");
    rotated.into()
}

/// Where the guest's serial console goes and comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Append console output to this file.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Bytes the log file holds before it is moved to `<file>.1` and begun anew (default
    /// [`DEFAULT_CONSOLE_LOG_LIMIT`]): a guest printing without end fills no disk.
    #[serde(default)]
    pub log_limit: Option<u64>,
    /// Copy console output to stdout.
    #[serde(default)]
    pub stdout: bool,
    /// Feed stdin to the console input.
    #[serde(default)]
    pub stdin: bool,
}

/// A microVM's configuration, as read from a JSON file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Kernel image: a bzImage (`vmlinuz`) or an ELF `vmlinux`.
    pub kernel: PathBuf,
    /// Optional initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    #[serde(default = "default_vcpus")]
    pub vcpus: u64,
    /// Guest RAM in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Serial console.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// virtio-blk disks, in the order the guest enumerates them.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces, in the order the guest enumerates them.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Control socket to listen on (see `vmm::api::control`).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Directory every backing file of a qcow2 disk must lie in, also for the layers the
    /// control socket switches a disk to (the daemon names its store): a qcow2 header is
    /// data, and must not make the VMM open `/etc/shadow`. None: anywhere.
    #[serde(default)]
    pub disk_root: Option<PathBuf>,
    /// A virtio-vsock device (after the disks and interfaces).
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    /// Give the guest a virtio-rng entropy device (last).
    #[serde(default = "default_true")]
    pub rng: bool,
    /// Also list the virtio devices as `virtio_mmio.device=` entries on the kernel command
    /// line, for kernels built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` but without ACPI.
    /// Kernels without that option ignore the entries and find the devices through ACPI.
    #[serde(default = "default_true")]
    pub virtio_cmdline: bool,
}

fn default_true() -> bool {
    true
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_owned()
}

fn default_vcpus() -> u64 {
    1
}

fn default_memory_mib() -> u64 {
    128
}

/// A config file's contents, where every field may be left for flags to supply.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialConfig {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    vcpus: Option<u64>,
    memory_mib: Option<u64>,
    #[serde(default)]
    console: ConsoleConfig,
    #[serde(default)]
    disks: Vec<DiskConfig>,
    #[serde(default)]
    nets: Vec<NetConfig>,
    virtio_cmdline: Option<bool>,
    rng: Option<bool>,
    vsock: Option<VsockConfig>,
    api_socket: Option<PathBuf>,
    disk_root: Option<PathBuf>,
}

/// Values given on the command line, overriding the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--initrd`.
    pub initrd: Option<PathBuf>,
    /// `--cmdline`.
    pub cmdline: Option<String>,
    /// `--vcpus`.
    pub vcpus: Option<u64>,
    /// `--memory`.
    pub memory_mib: Option<u64>,
    /// `--console-log`.
    pub console_log: Option<PathBuf>,
    /// `--console-log-limit`.
    pub console_log_limit: Option<u64>,
    /// `--console-stdout`.
    pub console_stdout: bool,
    /// `--console-stdin`.
    pub console_stdin: bool,
    /// `--disk`, repeated; when given, replaces the file's disks.
    pub disks: Vec<DiskConfig>,
    /// `--net`, repeated; when given, replaces the file's interfaces.
    pub nets: Vec<NetConfig>,
    /// `--no-virtio-cmdline`.
    pub no_virtio_cmdline: bool,
    /// `--no-rng`.
    pub no_rng: bool,
    /// `--vsock`.
    pub vsock: Option<VsockConfig>,
    /// `--api-socket`.
    pub api_socket: Option<PathBuf>,
    /// `--disk-root`.
    pub disk_root: Option<PathBuf>,
}

impl VmConfig {
    /// Reads `file` (if any), applies `overrides`, and validates the result.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let partial = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                serde_json::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?
            }
            None => PartialConfig::default(),
        };
        let config = VmConfig {
            kernel: overrides.kernel.or(partial.kernel).ok_or(ConfigError::NoKernel)?,
            initrd: overrides.initrd.or(partial.initrd),
            cmdline: overrides.cmdline.or(partial.cmdline).unwrap_or_else(default_cmdline),
            vcpus: overrides.vcpus.or(partial.vcpus).unwrap_or_else(default_vcpus),
            memory_mib: overrides.memory_mib.or(partial.memory_mib).unwrap_or_else(default_memory_mib),
            console: ConsoleConfig {
                log_file: overrides.console_log.or(partial.console.log_file),
                log_limit: overrides.console_log_limit.or(partial.console.log_limit),
                stdout: overrides.console_stdout || partial.console.stdout,
                stdin: overrides.console_stdin || partial.console.stdin,
            },
            disks: if overrides.disks.is_empty() { partial.disks } else { overrides.disks },
            nets: if overrides.nets.is_empty() { partial.nets } else { overrides.nets },
            virtio_cmdline: !overrides.no_virtio_cmdline && partial.virtio_cmdline.unwrap_or(true),
            rng: !overrides.no_rng && partial.rng.unwrap_or(true),
            vsock: overrides.vsock.or(partial.vsock),
            api_socket: overrides.api_socket.or(partial.api_socket),
            disk_root: overrides.disk_root.or(partial.disk_root),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and that the boot files can be opened.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=u64::from(MAX_VCPUS)).contains(&self.vcpus) {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        readable_file(&self.kernel)
            .map_err(|source| ConfigError::Kernel { path: self.kernel.clone(), source })?;
        if let Some(initrd) = &self.initrd {
            readable_file(initrd).map_err(|source| ConfigError::Initrd { path: initrd.clone(), source })?;
        }
        let devices =
            self.disks.len() + self.nets.len() + usize::from(self.vsock.is_some()) + usize::from(self.rng);
        if let Some(vsock) = &self.vsock {
            vsock.validate()?;
        }
        if devices > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        let mut tap_fds = std::collections::HashSet::new();
        for net in &self.nets {
            net.validate()?;
            if let Some(fd) = net.tap_fd {
                if fd <= 2 || !tap_fds.insert(fd) {
                    return Err(ConfigError::TapFd(fd));
                }
            }
        }
        disk::validate_ids(&self.disks)?;
        for disk in &self.disks {
            std::fs::OpenOptions::new()
                .read(true)
                .write(!disk.read_only)
                .open(&disk.path)
                .map_err(|source| ConfigError::DiskFile { path: disk.path.clone(), source })?;
        }
        Ok(())
    }

    /// The vCPU count, valid after [`VmConfig::validate`].
    pub fn vcpu_count(&self) -> u8 {
        self.vcpus.min(u64::from(MAX_VCPUS)) as u8
    }
}

fn readable_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a directory"));
    }
    let mut byte = [0u8; 1];
    std::io::Read::read(&mut &file, &mut byte)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kernel_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"not checked here").unwrap();
        f
    }

    fn with(kernel: &Path) -> Overrides {
        Overrides { kernel: Some(kernel.to_owned()), ..Default::default() }
    }

    #[test]
    fn defaults_apply() {
        let k = kernel_file();
        let c = VmConfig::load(None, with(k.path())).unwrap();
        assert_eq!((c.vcpus, c.memory_mib, c.cmdline.as_str()), (1, 128, DEFAULT_CMDLINE));
    }

    #[test]
    fn flags_override_the_file() {
        let k = kernel_file();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            r#"{{"kernel": "{}", "vcpus": 2, "memory_mib": 256, "console": {{"stdout": true}}}}"#,
            k.path().display()
        )
        .unwrap();
        let overrides = Overrides { vcpus: Some(4), ..Default::default() };
        let c = VmConfig::load(Some(file.path()), overrides).unwrap();
        assert_eq!((c.vcpus, c.memory_mib, c.console.stdout), (4, 256, true));
    }

    #[test]
    fn ranges_are_enforced() {
        let k = kernel_file();
        for (vcpus, memory, ok) in
            [(0, 128, false), (33, 128, false), (32, 128, true), (1, 0, false), (1, 3, false), (1, 4, true)]
        {
            let o = Overrides { vcpus: Some(vcpus), memory_mib: Some(memory), ..with(k.path()) };
            assert_eq!(VmConfig::load(None, o).is_ok(), ok, "vcpus {vcpus} memory {memory}");
        }
    }

    #[test]
    fn missing_files_and_unknown_fields_are_errors() {
        assert!(matches!(VmConfig::load(None, Overrides::default()), Err(ConfigError::NoKernel)));
        assert!(matches!(
            VmConfig::load(None, with(Path::new("/nonexistent/vmlinuz"))),
            Err(ConfigError::Kernel { .. })
        ));
        let k = kernel_file();
        let o = Overrides { initrd: Some("/nonexistent/initrd".into()), ..with(k.path()) };
        assert!(matches!(VmConfig::load(None, o), Err(ConfigError::Initrd { .. })));
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, r#"{{"kernel": "{}", "vcpu": 2}}"#, k.path().display()).unwrap();
        assert!(matches!(
            VmConfig::load(Some(file.path()), Overrides::default()),
            Err(ConfigError::Parse { .. })
        ));
    }
}
