//! The processes the daemon starts and that outlive it, the instances' `nuage-vmm`s (and,
//! through the same helpers, the load balancers' `nuage-lb`s): launching one in its own
//! process group (so a signal to the daemon's group, or the daemon's death, never reaches
//! it) with nothing inherited and no capability it does not need, finding the ones running
//! after a daemon restart, and waiting for processes the daemon did not start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::cidata;
use crate::block::DiskFormat;
use crate::daemon::cgroup::Usage;
use crate::net::plane::Interface;
use crate::state::file::{create_private_dir, write_atomic, write_json};
use crate::state::instance::InstanceRecord;
use crate::store::image::ImageRecord;
use crate::store::{bundle, LayerSwitch};
use crate::vmm::api::config::{
    rotated_console_log, ConsoleConfig, DiskConfig, NetConfig, RateLimit, VmConfig,
};
use crate::vmm::api::{control, LOG_LIMIT};
use crate::vmm::jail::limit_capabilities;

/// Where an instance's files live: `vm.json` (the VMM's configuration), `console.log`,
/// `vmm.log` (and `vmm.log.1`, the one before, once it was full), `control.sock`,
/// `cidata.img`, and `pid` (the running VMM's).
pub fn instance_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("instances").join(id)
}

/// What a VMM needs to boot an instance.
pub struct Launch<'a> {
    /// The VMM binary.
    pub vmm: &'a Path,
    /// The instance.
    pub instance: &'a InstanceRecord,
    /// Its image.
    pub image: &'a ImageRecord,
    /// The image's kernel and initrd.
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: Option<PathBuf>,
    /// The root volume's qcow2 file.
    pub root_volume: PathBuf,
    /// The store's directory: every volume's backing chain lies inside it.
    pub store_root: PathBuf,
    /// The instance cgroup's `cgroup.procs`, which the VMM writes itself into before it
    /// runs (see [`crate::daemon::cgroup`]).
    pub cgroup: Option<File>,
    /// The instance's directory.
    pub dir: PathBuf,
    /// Its network interface: the opened tap, which the VMM inherits, and its addresses.
    pub network: Option<(OwnedFd, Interface)>,
    /// Attached data volumes (id, qcow2 file), after the root disk.
    pub data_volumes: Vec<(String, PathBuf)>,
    /// The config drive, read-only, after the data volumes.
    pub config_drive: Option<PathBuf>,
    /// The read-only disk holding its application source bundle, if it has one.
    pub bundle_disk: Option<PathBuf>,
    /// The user (and group) the VMM is jailed as; none: it runs unjailed.
    pub jail_uid: Option<u32>,
}

/// The directory in an instance's directory the VMM's jail is rooted on (empty on disk).
const JAIL_ROOT: &str = "root";

/// What a VMM needs to jail itself, and keeps only until it has: reading the store's
/// files (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`), becoming the instance's user
/// (`CAP_SETGID`, `CAP_SETUID`), emptying its bounding set (`CAP_SETPCAP`), namespaces,
/// mounts and `pivot_root` (`CAP_SYS_ADMIN`), or `chroot` where the host's root cannot be
/// pivoted (`CAP_SYS_CHROOT`).
const JAILER_CAPABILITIES: [u32; 7] = [1, 2, 6, 7, 8, 18, 21];

/// The VMM's control socket, in the instance's directory `dir`.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// The guest's console log in instance directory `dir` (the VMM writes it, the daemon
/// reads it).
pub fn console_log(dir: &Path) -> PathBuf {
    dir.join("console.log")
}

/// The running VMM's pid, in the instance's directory.
pub const PID_FILE: &str = "pid";

/// Opens the log `path` of a helper process (a VMM's or a balancer's stdout and stderr)
/// for a new run, first moving a log that reached [`LOG_LIMIT`] to `<path>.1`: one run
/// writes at most that much, so a guest that makes its VMM complain, run after run,
/// keeps two logs at most.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= LOG_LIMIT) {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        std::fs::rename(path, rotated)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// The VMM's configuration ([`VmConfig`] as JSON), in the instance's directory.
const VM_CONFIG_FILE: &str = "vm.json";

/// The virtio disk id (its serial) of a volume: the id without its dash, as EC2's NVMe
/// serials are, which fits virtio's 20 bytes.
pub fn disk_serial(volume_id: &str) -> String {
    volume_id.replace('-', "")
}

/// The descriptor number the VMM finds its tap at.
const TAP_FD: RawFd = 3;

impl Launch<'_> {
    /// The VM the VMM is to run, in the contract's terms; its tap is inherited as
    /// descriptor [`TAP_FD`].
    fn vm_config(&self) -> VmConfig {
        let mut cmdline = format!("console=ttyS0 {}", self.image.cmdline);
        if let Some((_, interface)) = &self.network {
            cmdline = format!("{cmdline} {}", interface.kernel_ip_param());
        }
        let disk = |path: &Path, id: String, format: DiskFormat, read_only: bool| DiskConfig {
            path: path.to_owned(),
            id: Some(id),
            read_only,
            rate_limit: RateLimit::default(),
            format,
        };
        let mut disks = vec![disk(
            &self.root_volume,
            disk_serial(&self.instance.root_volume_id),
            DiskFormat::Qcow2,
            false,
        )];
        disks.extend(
            self.data_volumes.iter().map(|(id, path)| disk(path, disk_serial(id), DiskFormat::Qcow2, false)),
        );
        if let Some(path) = &self.config_drive {
            disks.push(disk(path, cidata::DISK_SERIAL.to_owned(), DiskFormat::Raw, true));
        }
        if let Some(path) = &self.bundle_disk {
            disks.push(disk(path, bundle::DISK_SERIAL.to_owned(), DiskFormat::Raw, true));
        }
        let nets = self
            .network
            .iter()
            .map(|(_, interface)| NetConfig {
                tap: None,
                tap_fd: Some(TAP_FD),
                mac: interface.mac,
                ipv4: Some(interface.ip),
                rate_limit: RateLimit::default(),
            })
            .collect();
        VmConfig {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: cmdline.trim_end().to_owned(),
            vcpus: u64::from(self.instance.vcpus),
            memory_mib: u64::from(self.instance.memory_mib),
            console: ConsoleConfig {
                log_file: Some(console_log(&self.dir)),
                // The VMM's default: at most twice it on disk, whatever the guest prints.
                log_limit: None,
                stdout: false,
                stdin: false,
            },
            disks,
            nets,
            api_socket: Some(control_socket(&self.dir)),
            disk_root: Some(self.store_root.clone()),
            vsock: None,
            rng: true,
            virtio_cmdline: true,
        }
    }

    /// The VMM's command line: its configuration file, and the tap moved to [`TAP_FD`].
    /// The VMM inherits no other descriptor beside its standard ones, whatever the daemon
    /// itself inherited or opened without close-on-exec.
    fn command(&self, config_file: &Path) -> Command {
        let mut command = Command::new(self.vmm);
        command.arg("--config").arg(config_file);
        if let Some(uid) = self.jail_uid {
            command.arg("--jail").arg(self.dir.join(JAIL_ROOT)).args([
                "--uid",
                &uid.to_string(),
                "--gid",
                &uid.to_string(),
            ]);
        }
        let capabilities: &'static [u32] = if self.jail_uid.is_some() { &JAILER_CAPABILITIES } else { &[] };
        let tap = self.network.as_ref().map(|(fd, _)| fd.as_raw_fd());
        let cgroup = self.cgroup.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: between fork and exec the closure only makes syscalls (close_range, write,
        // prctl, capset, dup2, fcntl), which are async-signal-safe, on descriptors this
        // process owns and memory prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                inherit_nothing()?;
                // Into the instance's cgroup before the VMM runs anything ("0": this
                // process), and before the tap's dup2 could take the descriptor's number.
                if let Some(procs) = cgroup {
                    if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                drop_privileges(capabilities)?;
                let Some(fd) = tap else { return Ok(()) };
                if fd == TAP_FD {
                    // dup2 onto itself would keep close-on-exec set.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, TAP_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// Writes the VM's configuration to `vm.json` in the instance's directory and starts
    /// the VMM on it, its output going to `vmm.log` there.
    pub fn spawn(&self) -> std::io::Result<Child> {
        create_private_dir(&self.dir)?;
        let _ = std::fs::remove_file(control_socket(&self.dir));
        if self.jail_uid.is_some() {
            create_private_dir(&self.dir.join(JAIL_ROOT))?;
        }
        let config_file = self.dir.join(VM_CONFIG_FILE);
        write_json(&config_file, &self.vm_config())?;
        let log = open_log(&self.dir.join("vmm.log"))?;
        let child = self
            .command(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        // The VMM runs: a pid file that cannot be written is no reason to fail the launch.
        if let Err(e) = write_atomic(&self.dir.join(PID_FILE), format!("{}\n", child.id()).as_bytes()) {
            tracing::warn!(dir = %self.dir.display(), "cannot write the pid file: {e}");
        }
        Ok(child)
    }
}

/// Marks every descriptor from 3 up close-on-exec in a child between fork and exec, so
/// the program it runs inherits none of the daemon's. Marked rather than closed: the
/// standard library's own pipe, which reports a failed exec, must stay open until the exec.
/// Async-signal-safe.
pub(crate) fn inherit_nothing() -> std::io::Result<()> {
    // SAFETY: close_range with integer arguments only.
    if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The capability to bind ports below 1024, which a balancer keeps.
pub(crate) const CAP_NET_BIND_SERVICE: u32 = 10;

/// Leaves the calling process (a helper between fork and exec) with no capability but
/// those in `keep` that it could keep or regain: the bounding set emptied of the rest (so
/// even root gets no other at exec), every set holding `keep` only, ambient ones cleared,
/// and `no_new_privs` (no set-id or file capability gains anything).
/// Only async-signal-safe system calls: it runs between fork and exec.
pub(crate) fn drop_privileges(keep: &[u32]) -> std::io::Result<()> {
    limit_capabilities(keep, Some(keep))
}

/// The process that runs the VM of VMM `pid`: the jailed child when `pid` is a jail's
/// relay, otherwise `pid` itself.
pub fn running_the_vm(pid: i32) -> i32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().next().and_then(|child| child.parse().ok()).unwrap_or(pid)
}

/// CPU time and resident memory of VMM `pid`, where instances have no cgroup.
pub fn usage(pid: i32) -> Option<Usage> {
    let pid = running_the_vm(pid);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ", utime and stime are the 12th and 13th fields.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads its argument.
    let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    Some(Usage { cpu_seconds: ticks as f64 / hz.max(1) as f64, memory_bytes: pages * page.max(1) as u64 })
}

/// The VMMs running for instances under `state_dir`, by instance id.
pub fn running_vmms(state_dir: &Path) -> HashMap<String, i32> {
    running_under(&state_dir.join("instances"))
}

/// The processes whose command lines name a path under `dir/<name>/`, by that name: a
/// helper the daemon started (a VMM for an instance's directory, a balancer for its own)
/// is found so, also one whose pid never reached the daemon's records (a crash right
/// after starting it). A process in a PID namespace below the daemon's is not one it
/// started (a jailed VMM: the daemon started its relay).
pub fn running_under(dir: &Path) -> HashMap<String, i32> {
    let marker = dir.as_os_str().as_encoded_bytes();
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    let own_depth = pid_namespace_depth("self");
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        for arg in cmdline.split(|&b| b == 0) {
            if let Some(rest) = arg.strip_prefix(marker) {
                if pid_namespace_depth(&pid.to_string()) > own_depth {
                    break;
                }
                // ".../instances/i-xxx/console.log"
                let id = rest.split(|&b| b == b'/').find(|part| !part.is_empty());
                if let Some(id) = id.and_then(|id| std::str::from_utf8(id).ok()) {
                    found.insert(id.to_owned(), pid);
                    break;
                }
            }
        }
    }
    found
}

/// How many PID namespaces process `pid` (or `self`) is in: the fields of `NSpid`.
fn pid_namespace_depth(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("NSpid:"))
                .map(|ids| ids.split_whitespace().count())
        })
        .unwrap_or(1)
}

/// Whether process `pid` is one this daemon would have started: it runs the configured
/// `binary` (`nuage-vmm`, `nuage-lb`; or that file before an upgrade replaced it) as the
/// daemon's own user, or one `user_ok` accepts (a jailed VMM's). Its user, or why not.
pub fn proves_own(pid: i32, binary: &Path, user_ok: impl Fn(u32) -> bool) -> Result<u32, String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("its executable: {e}"))?;
    let exe = exe.to_string_lossy();
    let exe = Path::new(exe.strip_suffix(" (deleted)").unwrap_or(&exe));
    let wanted = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_owned());
    if exe != wanted {
        return Err(format!("it runs {}, not {}", exe.display(), wanted.display()));
    }
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("its status: {e}"))?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse::<u32>().ok());
    // SAFETY: geteuid cannot fail and touches no memory.
    let daemon_uid = unsafe { libc::geteuid() };
    match uid {
        Some(uid) if uid == daemon_uid || user_ok(uid) => Ok(uid),
        _ => Err(format!("it runs as uid {}, not {daemon_uid}", uid.map_or("?".into(), |u| u.to_string()))),
    }
}

/// A process the daemon may not be the parent of, held by a pidfd so its pid cannot be
/// reused under us.
pub struct ProcessHandle(OwnedFd);

impl ProcessHandle {
    /// Opens process `pid`.
    pub fn open(pid: i32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal reads nothing from memory when info is null.
        let rc = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), signal, std::ptr::null::<u8>(), 0)
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until the process exits.
    pub fn wait(&self) {
        while !self.poll_exit(-1) {}
    }

    /// Whether the process has exited (it may not be reaped yet).
    pub fn exited(&self) -> bool {
        self.poll_exit(0)
    }

    /// Polls the pidfd for up to `timeout_ms` (-1: for ever); true once the process has
    /// exited (or the poll fails for good), false on a timeout or an interruption.
    fn poll_exit(&self, timeout_ms: i32) -> bool {
        let mut poll = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        let rc = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        rc > 0 || (rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
    }
}

/// The last `limit` bytes of the console log `path` as text, reaching into the log the VMM
/// moved aside (`<path>.1`) when the current one is shorter.
pub fn console_tail(path: &Path, limit: u64) -> std::io::Result<String> {
    let latest = tail(path, limit)?;
    let mut bytes = tail(&rotated_console_log(path), limit.saturating_sub(latest.len() as u64))?;
    bytes.extend(latest);
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `limit` bytes of file `path` (none if there is no such file).
fn tail(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(limit)))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A disk of a running VMM, as the store sees it while snapshotting its volume.
pub struct VmmDisk {
    /// The VMM's control socket.
    pub socket: PathBuf,
    /// The disk's volume id.
    pub id: String,
}

impl LayerSwitch for VmmDisk {
    fn pause(&self) -> Result<(), String> {
        control::call(&self.socket, &control::Request::PauseDisk { id: self.id.clone() })
    }

    /// The VMM gets the layer opened here: in its jail it could not open it itself.
    fn switch(&self, path: &Path) -> Result<(), String> {
        let layer = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let request = control::Request::SwitchDisk { id: self.id.clone(), path: path.to_owned() };
        control::call_with_file(&self.socket, &request, &layer)
    }

    fn resume(&self) -> Result<(), String> {
        control::call(&self.socket, &control::Request::ResumeDisk { id: self.id.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_tail_reaches_into_the_rotated_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        assert_eq!(console_tail(&log, 8).unwrap(), "", "no log yet");
        std::fs::write(&log, b"world\n").unwrap();
        assert_eq!(console_tail(&log, 8).unwrap(), "world\n");
        std::fs::write(dir.path().join("console.log.1"), b"older hello ").unwrap();
        assert_eq!(console_tail(&log, 12).unwrap(), "hello world\n");
        assert_eq!(console_tail(&log, 4).unwrap(), "rld\n", "the current log alone when it holds enough");
    }
}
