//! The `nuage-vmm` command line.

use std::path::PathBuf;

use clap::Parser;

use crate::vmm::api::config::{DiskConfig, NetConfig, Overrides, VmConfig, VsockConfig};
use crate::vmm::api::ExitStatus;
use crate::vmm::exit::{ExitReason, ResetCause};
use crate::vmm::jail::{Jail, JailConfig};
use crate::vmm::seccomp::{self, Filters};
use crate::vmm::{builder, logging, runtime};

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  the guest powered off (ACPI S5)
  1  fatal error after the VM started (KVM failure, unexpected vCPU exit)
  2  the command line could not be parsed
  3  invalid configuration: bad or missing kernel, initrd, sizes; nothing was started
  4  the guest rebooted (ACPI reset register, i8042 reset, triple fault): restart it
  5  stopped by SIGTERM or SIGINT from the host
  6  a thread made a system call its seccomp filter forbids (the call is in the log)";

/// Boots one KVM microVM from a Linux kernel and runs it until the guest powers off or
/// reboots, or the host stops it.
#[derive(Debug, Parser)]
#[command(name = "nuage-vmm", version, after_help = EXIT_STATUS_HELP)]
pub struct VmmArgs {
    /// JSON configuration file (fields: kernel, initrd, cmdline, vcpus, memory_mib,
    /// console {log_file, stdout, stdin}, disks [{path, id, read_only}], nets [{tap, tap_fd, mac,
    /// ipv4}], vsock {guest_cid, uds_path}, rng, virtio_cmdline, api_socket);
    /// flags given too override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kernel image: a bzImage (vmlinuz, 64-bit boot protocol) or an ELF vmlinux.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk loaded high in guest RAM.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 panic=1"]; `pci=off` and the i8042's
    /// parameters are always appended.
    #[arg(long, value_name = "STRING")]
    pub cmdline: Option<String>,
    /// Number of vCPUs, 1 to 32, one host thread each [default: 1].
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u64>,
    /// Guest RAM in MiB, at least 4 [default: 128].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Append the serial console output to this file.
    #[arg(long, value_name = "PATH")]
    pub console_log: Option<PathBuf>,
    /// Bytes the console log holds before it becomes `<file>.1` and is begun anew
    /// [default: 4 MiB].
    #[arg(long, value_name = "BYTES")]
    pub console_log_limit: Option<u64>,
    /// Copy the serial console output to stdout.
    #[arg(long)]
    pub console_stdout: bool,
    /// Feed stdin to the serial console (raw mode when stdin is a terminal).
    #[arg(long)]
    pub console_stdin: bool,
    /// A virtio-blk disk backed by a raw file, repeatable (vda, vdb, ... in this order):
    /// `path=FILE[,id=ID][,readonly=on]`. ID (at most 20 characters, default diskN) names it
    /// in the guest as /dev/disk/by-id/virtio-ID.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<DiskConfig>,
    /// A virtio-net interface on a tap, repeatable (eth0, eth1, ...):
    /// `tap=NAME|fd=N,mac=MAC[,ip=IPV4]`. A tap named but missing is created (needs
    /// CAP_NET_ADMIN); fd=N takes over a tap the parent opened. Frames from a source MAC
    /// other than MAC (or, with ip=, another IPv4 source) are dropped and counted.
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<NetConfig>,
    /// A virtio-vsock device: `cid=N,uds=PATH`. Host processes connect to the Unix socket
    /// PATH and write `CONNECT <port>\n` to reach guest port <port>; guest connections to
    /// host port P go to the Unix socket PATH_P. The socket file stays when the VMM ends
    /// (its threads may not unlink files); the next VMM on PATH replaces it.
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<VsockConfig>,
    /// Every backing file of a qcow2 disk (and every layer the control socket switches a
    /// disk to) must lie inside this directory.
    #[arg(long, value_name = "DIR")]
    pub disk_root: Option<PathBuf>,
    /// Listen for control requests on this Unix socket (one JSON request per connection;
    /// used to snapshot volumes of a running VM).
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// No virtio-rng entropy device.
    #[arg(long)]
    pub no_rng: bool,
    /// Do not add `virtio_mmio.device=` entries to the kernel command line (ACPI alone
    /// describes the devices).
    #[arg(long)]
    pub no_virtio_cmdline: bool,
    /// Count the vCPUs' exits (by kind, port and MMIO page, with the time taken to answer
    /// them and a timeline per second) and print the table on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Jail the VMM before it builds the VM (it must start as root): new mount, PID, IPC
    /// and UTS namespaces, a root on this empty directory holding only the files the
    /// configuration names, the user --uid and group --gid, and, once the VM is built, no
    /// capability. A relay left outside passes stop signals on and ends with the VMM's
    /// status.
    #[arg(long, value_name = "DIR", requires_all = ["uid", "gid"])]
    pub jail: Option<PathBuf>,
    /// The jailed VMM's user.
    #[arg(long, value_name = "UID", requires = "jail")]
    pub uid: Option<u32>,
    /// The jailed VMM's group.
    #[arg(long, value_name = "GID", requires = "jail")]
    pub gid: Option<u32>,
    /// Run without seccomp filters. For debugging only: a guest that escapes a device model
    /// then holds every system call of the VMM's user.
    #[arg(long)]
    pub no_seccomp: bool,
    /// Log filter for the VMM's own diagnostics on stderr (e.g. info, debug, nuage=trace).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,
}

impl VmmArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory,
            console_log: self.console_log.clone(),
            console_log_limit: self.console_log_limit,
            console_stdout: self.console_stdout,
            console_stdin: self.console_stdin,
            disks: self.disk.clone(),
            nets: self.net.clone(),
            no_virtio_cmdline: self.no_virtio_cmdline,
            no_rng: self.no_rng,
            vsock: self.vsock.clone(),
            api_socket: self.api_socket.clone(),
            disk_root: self.disk_root.clone(),
        }
    }
}

fn describe(reason: &ExitReason) -> Option<String> {
    Some(match reason {
        ExitReason::PowerOff => return None,
        ExitReason::Reset(cause) => format!(
            "guest rebooted ({})",
            match cause {
                ResetCause::KeyboardController => "i8042 reset",
                ResetCause::AcpiResetRegister => "ACPI reset register",
                ResetCause::TripleFault => "triple fault or shutdown",
                ResetCause::SystemEvent => "KVM reset event",
            }
        ),
        ExitReason::Signal(signal) => format!("stopped by signal {signal}"),
        ExitReason::Fatal(message) => format!("fatal: {message}"),
    })
}

/// Parses arguments, builds and runs the VM; returns the process exit status.
pub fn main() -> ExitStatus {
    let started = std::time::Instant::now();
    let args = match VmmArgs::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitStatus::Usage } else { ExitStatus::PowerOff };
        }
    };
    // SAFETY: isatty only inspects the descriptor.
    let colour = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
    let repeats = logging::init(&args.log_level, colour);

    let mut config = match VmConfig::load(args.config.as_deref(), args.overrides()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("nuage-vmm: {e}");
            return ExitStatus::Config;
        }
    };
    let jail = match (&args.jail, args.uid, args.gid) {
        (Some(root), Some(uid), Some(gid)) => {
            match Jail::enter(&JailConfig { root: root.clone(), uid, gid }, &mut config) {
                Ok(jail) => Some(jail),
                Err(e) => {
                    eprintln!("nuage-vmm: jail: {e}");
                    return ExitStatus::Fatal;
                }
            }
        }
        _ => None,
    };
    let jailed = started.elapsed();
    // Compiled in the jail: the filters name the process's own pid.
    if args.no_seccomp {
        tracing::warn!("--no-seccomp: this VMM's threads run without seccomp filters (debugging only)");
    } else if let Err(e) = Filters::compile()
        .map_err(|e| e.to_string())
        .and_then(|filters| seccomp::enable(filters).map_err(|e| e.to_string()))
    {
        eprintln!("nuage-vmm: seccomp: {e}");
        return ExitStatus::Fatal;
    }
    let vm = match builder::build(&config) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("nuage-vmm: {e}");
            return if e.is_config_error() { ExitStatus::Config } else { ExitStatus::Fatal };
        }
    };
    if let Some(Err(e)) = jail.map(Jail::finish) {
        eprintln!("nuage-vmm: jail: {e}");
        return ExitStatus::Fatal;
    }
    // What the boot benchmark reads: the VMM's own part of a boot, jailed or not.
    tracing::info!(
        jailed_ms = jailed.as_secs_f64() * 1e3,
        ready_ms = started.elapsed().as_secs_f64() * 1e3,
        "VM built, vCPUs starting"
    );
    let reason = runtime::run(vm, config.console.stdin, args.stats.then_some(started));
    repeats.flush();
    if let Some(line) = describe(&reason) {
        eprintln!("nuage-vmm: {line}");
    }
    reason.status()
}
