//! The jail a `nuage-vmm` enters before it builds its VM (`--jail`), so that a guest that
//! escaped a device model holds a process that sees only its own instance's files, as a
//! user no other instance and no host file belongs to.
//!
//! Started as root by the daemon with the few capabilities this needs, the VMM:
//!
//! 1. empties its capability bounding set and moves into new mount, PID, IPC and UTS
//!    namespaces;
//! 2. forks: the child, the PID namespace's init, goes on to run the VM; the parent stays
//!    outside as the daemon's child, a *relay* that runs as the instance's user with no
//!    capability, passes stop signals on and ends with the child's status (a SIGKILL of
//!    the relay kills the child: its parent-death signal);
//! 3. mounts a small read-only tmpfs as its new root, holding, at the same absolute paths,
//!    only bind mounts of what its configuration names: the kernel and initrd, each disk
//!    and the files of its backing chain (read-only), the directories of its console log
//!    and sockets (its instance's directory), and `/dev/kvm`, `/dev/urandom`, `/dev/null`;
//!    then `pivot_root`s into it, the host's tree detached (on a host that runs from its
//!    initramfs, which cannot be pivoted away from, it is moved over `/` and `chroot`ed
//!    into instead);
//! 4. becomes the instance's user and group (no supplementary groups), `no_new_privs`,
//!    keeping only `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`: the store's files are
//!    root's, and the VM's are opened while it is built;
//! 5. drops those too ([`Jail::finish`]) once the VM is built, before any vCPU runs.
//!
//! It opens nothing once its VM runs (its threads' filters forbid it): the console log
//! rotates within the two files opened while building, the control socket was bound then,
//! and a snapshot's new layer comes as a descriptor over that socket. So its instance's
//! directory stays root's, and nothing a compromised VMM could leave there (a symbolic
//! link, say) is ever followed by the daemon.

use std::ffi::CString;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crate::block::qcow2::{ChainPolicy, Qcow2};
use crate::block::DiskFormat;
use crate::vmm::api::config::VmConfig;
use crate::vmm::runtime::STOP_SIGNALS;

/// Where a VMM is jailed and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailConfig {
    /// The directory the jail's root is mounted on (an empty directory the daemon made in
    /// the instance's directory; only the jail's mount namespace sees anything there).
    pub root: PathBuf,
    /// The instance's user.
    pub uid: u32,
    /// The instance's group.
    pub gid: u32,
}

/// Why the VMM could not jail itself.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A path of the configuration cannot be put in the jail.
    #[error("{0}")]
    Path(String),
    /// A disk's backing chain cannot be read.
    #[error(transparent)]
    Chain(#[from] crate::block::qcow2::Qcow2Error),
}

/// `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`: what the VMM keeps until its VM is built.
const BUILD_CAPABILITIES: [u32; 2] = [1, 2];

/// The devices a VMM opens.
const DEVICES: [&str; 3] = ["/dev/kvm", "/dev/urandom", "/dev/null"];

/// The tun clone device, for taps named in the configuration.
const TUN_DEVICE: &str = "/dev/net/tun";

/// The signals the relay passes on to the VMM: the daemon's SIGTERM, a terminal's.
const RELAYED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// One thing the jail holds: a host path bind-mounted at the same path inside.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exposed {
    path: PathBuf,
    kind: Kind,
    writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Directory,
    Device,
}

/// A VMM in its jail, holding the capabilities it builds its VM with.
#[derive(Debug)]
pub struct Jail(());

impl Jail {
    /// Jails the calling process (which must be single-threaded and root) as `jail` says,
    /// exposing what `config` names. Returns in the jailed child; the relay never returns.
    /// `config`'s paths are made absolute and free of symbolic links first, so that they
    /// name inside the jail what they named outside.
    pub fn enter(jail: &JailConfig, config: &mut VmConfig) -> Result<Jail, JailError> {
        canonicalize(config)?;
        let exposed = exposed(config)?;
        let root = jail.root.canonicalize().map_err(sys(format!("jail root {}", jail.root.display())))?;
        limit_capabilities(&[], None).map_err(sys("emptying the bounding set"))?;
        let flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        // SAFETY: unshare takes flags only.
        check(unsafe { libc::unshare(flags) }, "unshare")?;
        let (relay_end, child_end) = pipe()?;
        let blocked = block(&relayed_and_child())?;
        // SAFETY: the process is single-threaded (unshare(CLONE_NEWNS) refuses otherwise),
        // so the child may run any code.
        let pid = check(unsafe { libc::fork() }, "fork")?;
        if pid > 0 {
            // SAFETY: closing the child's end, which this process owns.
            unsafe { libc::close(child_end) };
            relay(pid, jail, relay_end);
        }
        // SAFETY: closing the relay's end, which this process owns.
        unsafe { libc::close(relay_end) };
        restore(&blocked)?;
        // As a PID namespace's init the VMM would not even see a stop signal it has no
        // handler for until its event loop takes them: held pending, they reach it then.
        block(&STOP_SIGNALS)?;
        build_root(&root, &exposed)?;
        become_user(jail, &BUILD_CAPABILITIES)?;
        // Set after the change of user, which clears it; the pipe says whether the relay
        // died before it was set (its end closes with it).
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) }, "PR_SET_PDEATHSIG")?;
        let mut poll = libc::pollfd { fd: child_end, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut poll, 1, 0) } != 0 {
            return Err(JailError::Path("the relay ended before the VMM started".into()));
        }
        // SAFETY: closing a descriptor this process owns.
        unsafe { libc::close(child_end) };
        Ok(Jail(()))
    }

    /// Drops the capabilities the VM was built with: from here the VMM holds none.
    pub fn finish(self) -> Result<(), JailError> {
        limit_capabilities(&[], Some(&[])).map_err(sys("dropping the last capabilities"))
    }
}

/// Makes every path of `config` absolute and free of symbolic links (for files that may
/// not exist yet, their directory).
fn canonicalize(config: &mut VmConfig) -> Result<(), JailError> {
    let existing = |path: &Path| path.canonicalize().map_err(sys(path.display().to_string()));
    let in_existing_dir = |path: &Path| -> Result<PathBuf, JailError> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(JailError::Path(format!("{}: not a file name", path.display())));
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        Ok(existing(dir)?.join(name))
    };
    config.kernel = existing(&config.kernel)?;
    if let Some(initrd) = &mut config.initrd {
        *initrd = existing(initrd)?;
    }
    for disk in &mut config.disks {
        disk.path = existing(&disk.path)?;
    }
    if let Some(root) = &mut config.disk_root {
        *root = existing(root)?;
    }
    if let Some(log) = &mut config.console.log_file {
        *log = in_existing_dir(log)?;
    }
    if let Some(socket) = &mut config.api_socket {
        *socket = in_existing_dir(socket)?;
    }
    if let Some(vsock) = &mut config.vsock {
        vsock.uds_path = in_existing_dir(&vsock.uds_path)?;
    }
    Ok(())
}

/// What the jail must hold for `config` (whose paths are canonical): directories first,
/// then the files that do not lie in one of them, then the devices.
fn exposed(config: &VmConfig) -> Result<Vec<Exposed>, JailError> {
    let mut dirs: Vec<PathBuf> = [
        config.console.log_file.as_deref(),
        config.api_socket.as_deref(),
        config.vsock.as_ref().map(|vsock| vsock.uds_path.as_path()),
    ]
    .into_iter()
    .flatten()
    .filter_map(Path::parent)
    .map(Path::to_owned)
    .collect();
    dirs.sort();
    dirs.dedup();
    // A directory inside another is already there.
    let outer: Vec<PathBuf> = dirs
        .iter()
        .filter(|dir| !dirs.iter().any(|other| other != *dir && dir.starts_with(other)))
        .cloned()
        .collect();
    let mut files: Vec<(PathBuf, bool)> = vec![(config.kernel.clone(), false)];
    files.extend(config.initrd.iter().map(|initrd| (initrd.clone(), false)));
    for disk in &config.disks {
        files.push((disk.path.clone(), !disk.read_only));
        if disk.format == DiskFormat::Qcow2 {
            let policy = config.disk_root.as_deref().map(ChainPolicy::confined_to).unwrap_or_default();
            files.extend(Qcow2::backing_chain(&disk.path, policy)?.into_iter().map(|file| (file, false)));
        }
    }
    let mut exposed: Vec<Exposed> = outer
        .iter()
        .map(|dir| Exposed { path: dir.clone(), kind: Kind::Directory, writable: true })
        .collect();
    for (path, writable) in files {
        if outer.iter().any(|dir| path.starts_with(dir)) {
            continue;
        }
        match exposed.iter_mut().find(|e| e.path == path) {
            Some(seen) => seen.writable |= writable,
            None => exposed.push(Exposed { path, kind: Kind::File, writable }),
        }
    }
    // A tap named rather than inherited is attached to through the clone device (it must
    // exist and belong to the jail's user: the VMM cannot create one).
    let tun = config.nets.iter().any(|net| net.tap.is_some()).then_some(TUN_DEVICE);
    exposed.extend(DEVICES.iter().chain(&tun).map(|device| Exposed {
        path: PathBuf::from(device),
        kind: Kind::Device,
        writable: true,
    }));
    Ok(exposed)
}

/// Mounts the jail's tmpfs on `root`, binds `exposed` into it and makes it the root.
fn build_root(root: &Path, exposed: &[Exposed]) -> Result<(), JailError> {
    // Nothing mounted here reaches the host's namespace, nor the other way round.
    mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let hidden = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(Some("nuage-jail"), root, Some("tmpfs"), hidden, Some("mode=0755,size=64k,nr_inodes=256"))?;
    for item in exposed {
        let target = inside(root, &item.path)?;
        let parent = target.parent().unwrap_or(root);
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(sys(parent.display().to_string()))?;
        match item.kind {
            Kind::Directory => DirBuilder::new().mode(0o700).create(&target),
            Kind::File | Kind::Device => std::fs::File::create(&target).map(drop),
        }
        .map_err(sys(target.display().to_string()))?;
        mount(Some(path_str(&item.path)?), &target, None, libc::MS_BIND, None)?;
        let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NOEXEC;
        if item.kind != Kind::Device {
            flags |= libc::MS_NODEV;
        }
        if !item.writable {
            flags |= libc::MS_RDONLY;
        }
        mount(None, &target, None, flags, None)?;
    }
    let root_c = c_path(root)?;
    // SAFETY: chdir, pivot_root, umount2 and chroot read NUL-terminated paths that outlive
    // the calls. With "." as both the new root and the place for the old one, the old root
    // ends up stacked under the new one and is then detached.
    unsafe {
        check(libc::chdir(root_c.as_ptr()), "chdir into the jail")?;
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH), "detaching the host's tree")?;
        } else if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // The host runs from its initramfs, which cannot be pivoted away from: the jail's
            // root is moved over it instead, leaving the host's tree under it, out of reach.
            check(
                libc::mount(c".".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_MOVE, std::ptr::null()),
                "moving the jail over /",
            )?;
            check(libc::chroot(c".".as_ptr()), "chroot")?;
        } else {
            return Err(JailError::Sys { what: "pivot_root".into(), source: io::Error::last_os_error() });
        }
        check(libc::chdir(c"/".as_ptr()), "chdir /")?;
    }
    mount(None, Path::new("/"), None, libc::MS_REMOUNT | libc::MS_RDONLY | hidden, None)
}

/// `path` (absolute, canonical) under `root`.
fn inside(root: &Path, path: &Path) -> Result<PathBuf, JailError> {
    let mut target = root.to_owned();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => target.push(part),
            _ => return Err(JailError::Path(format!("{}: not a canonical path", path.display()))),
        }
    }
    if target == root {
        return Err(JailError::Path(format!("{}: cannot be put in a jail", path.display())));
    }
    Ok(target)
}

/// Becomes the jail's user and group, keeping the capabilities `kept` and nothing else.
fn become_user(jail: &JailConfig, kept: &[u32]) -> Result<(), JailError> {
    // SAFETY: prctl, setgroups (an empty list), setresgid and setresuid take integers.
    unsafe {
        check(libc::prctl(libc::PR_SET_KEEPCAPS, 1), "PR_SET_KEEPCAPS")?;
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(jail.gid, jail.gid, jail.gid), "setresgid")?;
        check(libc::setresuid(jail.uid, jail.uid, jail.uid), "setresuid")?;
    }
    limit_capabilities(&[], Some(kept)).map_err(sys("limiting the capabilities"))
}

/// The relay: runs as the jail's user without capability, passes [`RELAYED`] signals on to
/// `child` and ends as it ended. `keep` is the pipe end the child watches.
fn relay(child: libc::pid_t, jail: &JailConfig, keep: libc::c_int) -> ! {
    // SAFETY: close_range with integers; keeping stdio and `keep`.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0);
    }
    if let Err(e) = become_user(jail, &[]) {
        eprintln!("nuage-vmm: the relay cannot drop its privileges: {e}");
        // SAFETY: kill with integers; the jailed child must not outlive a failed relay.
        unsafe { libc::kill(child, libc::SIGKILL) };
    }
    let set = signal_set(&relayed_and_child());
    loop {
        // SAFETY: `set` is an initialised signal set; no siginfo is asked for.
        let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if signal == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local.
            if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
                end_as(status);
            }
        } else if signal > 0 {
            // SAFETY: kill with integers.
            unsafe { libc::kill(child, signal) };
        }
    }
}

/// Ends the relay with the status `status` its child ended with: the same exit code, or
/// the same signal (without a core dump of the relay).
fn end_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads a local; signal and sigprocmask take integers and an
        // initialised set; raise delivers the signal to this thread.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let set = signal_set(&[signal]);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

fn relayed_and_child() -> Vec<libc::c_int> {
    let mut signals = RELAYED.to_vec();
    signals.push(libc::SIGCHLD);
    signals
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

/// Blocks `signals`; returns the mask before.
fn block(signals: &[libc::c_int]) -> Result<libc::sigset_t, JailError> {
    let set = signal_set(signals);
    // SAFETY: sigset_t is plain data; sigprocmask writes the old mask into it.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid for the call.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) }, "sigprocmask")?;
    Ok(old)
}

fn restore(mask: &libc::sigset_t) -> Result<(), JailError> {
    // SAFETY: `mask` is a valid set; no old mask is asked for.
    check(unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) }, "sigprocmask")
        .map(drop)
}

/// A pipe: (write end, read end).
fn pipe() -> Result<(libc::c_int, libc::c_int), JailError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe")?;
    Ok((fds[1], fds[0]))
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), JailError> {
    let cstr = |s: &str| CString::new(s).map_err(|_| JailError::Path(format!("{s:?}: a NUL byte")));
    let source = source.map(cstr).transpose()?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let target_c = c_path(target)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(ptr(&source), target_c.as_ptr(), ptr(&fstype), flags, ptr(&data).cast()) };
    check(rc, &format!("mount on {}", target.display())).map(drop)
}

fn path_str(path: &Path) -> Result<&str, JailError> {
    path.to_str().ok_or_else(|| JailError::Path(format!("{}: not UTF-8", path.display())))
}

fn c_path(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| JailError::Path(format!("{}: a NUL byte", path.display())))
}

fn check(rc: libc::c_int, what: &str) -> Result<libc::c_int, JailError> {
    if rc < 0 {
        return Err(JailError::Sys { what: what.to_owned(), source: io::Error::last_os_error() });
    }
    Ok(rc)
}

fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Sys { what, source }
}

/// `capset(2)`'s header, version 3 (64-bit capability sets, in two halves).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One half of `capset(2)`'s sets.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Limits the calling thread's capabilities: the bounding set emptied of all but `bounding`
/// (so even root gains no other at exec; without `CAP_SETPCAP` it is left as it is), then,
/// when `kept` is given, the effective and permitted sets made exactly `kept` and the
/// inheritable and ambient ones emptied; and `no_new_privs` set. Only async-signal-safe
/// system calls: a helper runs it between fork and exec.
pub fn limit_capabilities(bounding: &[u32], kept: Option<&[u32]>) -> io::Result<()> {
    let last_os = io::Error::last_os_error;
    for capability in (0..64).filter(|c| !bounding.contains(c)) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) } < 0 {
            match last_os().raw_os_error() {
                // Past the kernel's last capability.
                Some(libc::EINVAL) => break,
                // Without CAP_SETPCAP the process holds no capability to pass on either.
                Some(libc::EPERM) => break,
                _ => return Err(last_os()),
            }
        }
    }
    if let Some(kept) = kept {
        let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let mut sets = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
        for &capability in kept {
            let half = &mut sets[(capability / 32) as usize % 2];
            half.effective |= 1 << (capability % 32);
            half.permitted |= 1 << (capability % 32);
        }
        // SAFETY: the header and the two data halves are the layout capset(2) reads.
        if unsafe { libc::syscall(libc::SYS_capset, &header, sets.as_ptr()) } < 0 {
            return Err(last_os());
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) } < 0 {
            return Err(last_os());
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(last_os());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::api::config::{ConsoleConfig, DiskConfig, RateLimit};

    /// The jail holds the instance's directory once (with the config drive inside it), the
    /// kernel, each disk and its chain (read-only below the top) and the devices, nothing else.
    #[test]
    fn the_jail_holds_what_the_configuration_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        let (store, instance) = (d.join("store"), d.join("instance"));
        std::fs::create_dir_all(store.join("volumes")).unwrap();
        std::fs::create_dir_all(store.join("images")).unwrap();
        std::fs::create_dir_all(&instance).unwrap();
        std::fs::write(store.join("images/disk.raw"), [0u8; 4096]).unwrap();
        std::fs::write(store.join("images/kernel"), b"k").unwrap();
        std::fs::write(instance.join("cidata.img"), [0u8; 4096]).unwrap();
        let volume = store.join("volumes/vol-1.qcow2");
        Qcow2::create(&volume, 4096, Some(("../images/disk.raw", "raw"))).unwrap();
        let disk = |path: &Path, read_only: bool, format: DiskFormat| DiskConfig {
            path: path.to_owned(),
            id: None,
            read_only,
            rate_limit: RateLimit::default(),
            format,
        };
        let mut config = VmConfig {
            kernel: store.join("images/../images/kernel"),
            initrd: None,
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: 128,
            console: ConsoleConfig {
                log_file: Some(instance.join("console.log")),
                log_limit: None,
                stdout: false,
                stdin: false,
            },
            disks: vec![
                disk(&volume, false, DiskFormat::Qcow2),
                disk(&instance.join("cidata.img"), true, DiskFormat::Raw),
            ],
            nets: Vec::new(),
            api_socket: Some(instance.join("control.sock")),
            disk_root: Some(store.clone()),
            vsock: None,
            rng: true,
            virtio_cmdline: true,
        };
        canonicalize(&mut config).unwrap();
        assert_eq!(config.kernel, store.join("images/kernel"));
        let exposed = exposed(&config).unwrap();
        let shown: Vec<(String, Kind, bool)> = exposed
            .iter()
            .map(|e| (e.path.strip_prefix(&d).unwrap_or(&e.path).display().to_string(), e.kind, e.writable))
            .collect();
        assert_eq!(
            shown,
            [
                ("instance".to_owned(), Kind::Directory, true),
                ("store/images/kernel".to_owned(), Kind::File, false),
                ("store/volumes/vol-1.qcow2".to_owned(), Kind::File, true),
                ("store/images/disk.raw".to_owned(), Kind::File, false),
                ("/dev/kvm".to_owned(), Kind::Device, true),
                ("/dev/urandom".to_owned(), Kind::Device, true),
                ("/dev/null".to_owned(), Kind::Device, true),
            ]
        );
        assert!(inside(&d, Path::new("/")).is_err());
        assert!(inside(&d, Path::new("/a/../b")).is_err());
        assert_eq!(inside(&d, Path::new("/a/b")).unwrap(), d.join("a/b"));
    }
}
