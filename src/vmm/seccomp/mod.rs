//! Seccomp filters: each kind of VMM thread may make only the system calls its work needs.
//!
//! A thread installs its kind's filter as it starts ([`enter`]), after the set-up that needs
//! more (opening files, creating the VM) is over. A forbidden call is trapped: the SIGSYS
//! handler writes which thread made which call and ends the process with
//! [`ExitStatus::Seccomp`], which the daemon reports as the instance's state reason.
//!
//! Filters stack: a thread inherits its creator's. Device workers are started when the guest
//! activates a device, that is from a vCPU thread, so they are spawned by a launcher thread
//! whose filter is the workers' plus thread creation (see [`crate::vmm::threads`]).
//!
//! The lists are in [`allowlist`]; `allowlist.txt` beside this file is their reviewed form,
//! and a test fails when the two differ.

pub mod allowlist;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

use crate::vmm::api::ExitStatus;
use allowlist::Allowed;

/// The kinds of thread a VMM runs, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread's event loop: host signals, console input, stopping the vCPUs.
    Main,
    /// A vCPU: `KVM_RUN` and the emulated devices it exits to.
    Vcpu,
    /// A virtio device's queue worker: the guest's I/O on disks, taps and vsock sockets.
    Worker,
    /// The control socket's server: snapshots of disks, ctrl-alt-del.
    Control,
    /// Starts device workers on behalf of filtered threads.
    Launcher,
}

impl ThreadKind {
    /// Every kind, in the order of the reviewed list.
    pub const ALL: [ThreadKind; 5] = [Self::Main, Self::Vcpu, Self::Worker, Self::Control, Self::Launcher];

    /// The kind's name in the reviewed list and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vcpu",
            Self::Worker => "worker",
            Self::Control => "control",
            Self::Launcher => "launcher",
        }
    }
}

/// A filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("seccomp filter for the {kind} thread: {source}")]
pub struct SeccompError {
    kind: &'static str,
    source: seccompiler::Error,
}

/// The compiled filter of each thread kind.
pub struct Filters {
    programs: Vec<(ThreadKind, BpfProgram)>,
}

impl Filters {
    /// Compiles every kind's allowlist.
    pub fn compile() -> Result<Self, SeccompError> {
        let programs = ThreadKind::ALL
            .into_iter()
            .map(|kind| Ok((kind, program(kind)?)))
            .collect::<Result<_, SeccompError>>()?;
        Ok(Self { programs })
    }

    fn program(&self, kind: ThreadKind) -> Option<&BpfProgram> {
        self.programs.iter().find(|(k, _)| *k == kind).map(|(_, program)| program)
    }
}

fn program(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let error = |source| SeccompError { kind: kind.name(), source };
    // None: any arguments; otherwise the alternatives.
    let mut chains: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for Allowed { number, when, .. } in allowlist::for_kind(kind) {
        let chain = chains.entry(number).or_insert_with(|| Some(Vec::new()));
        match chain {
            _ if when.is_empty() => *chain = None,
            Some(rules) => {
                for check in when {
                    rules.push(check.rule().map_err(error)?);
                }
            }
            None => {}
        }
    }
    let rules = chains.into_iter().map(|(number, chain)| (number, chain.unwrap_or_default())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| error(e.into()))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| error(e.into()))
}

/// The filters threads install as they start; unset (tests, `--no-seccomp`), none is.
static FILTERS: OnceLock<Filters> = OnceLock::new();

thread_local! {
    /// The kind of the calling thread once it is filtered; read by the SIGSYS handler.
    static FILTERED_AS: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// Turns filtering on for this process: from now on every thread that [`enter`]s is
/// filtered, and forbidden calls end the process. Call once, early, from the main thread.
pub fn enable(filters: Filters) -> std::io::Result<()> {
    install_sigsys_handler()?;
    // A second call keeps the first filters: they are the same lists.
    let _ = FILTERS.set(filters);
    Ok(())
}

/// Whether [`enable`] was called: threads are filtered as they start.
pub fn enabled() -> bool {
    FILTERS.get().is_some()
}

/// Whether the calling thread runs under a filter (and so cannot start threads of other
/// kinds itself).
pub fn is_filtered() -> bool {
    FILTERED_AS.with(Cell::get).is_some()
}

/// Installs `kind`'s filter on the calling thread, when filtering is on. A thread that
/// cannot be filtered must not run unfiltered: the process ends.
pub fn enter(kind: ThreadKind) {
    let Some(program) = FILTERS.get().and_then(|filters| filters.program(kind)) else {
        return;
    };
    if let Err(e) = seccompiler::apply_filter(program) {
        eprintln!("nuage-vmm: cannot install the seccomp filter of the {} thread: {e}", kind.name());
        // SAFETY: _exit ends the process at once; nothing of this thread is used after it.
        unsafe { libc::_exit(i32::from(ExitStatus::Fatal.code())) };
    }
    FILTERED_AS.with(|cell| cell.set(Some(kind)));
    forbidden_call_for_tests(kind);
}

/// Debug builds only: the thread kind named in `NUAGE_VMM_FORBIDDEN_SYSCALL` makes a call no
/// filter allows right after entering its filter, so tests can see what follows.
#[cfg(debug_assertions)]
fn forbidden_call_for_tests(kind: ThreadKind) {
    if std::env::var("NUAGE_VMM_FORBIDDEN_SYSCALL").is_ok_and(|wanted| wanted == kind.name()) {
        // SAFETY: mount(2) with null arguments changes nothing even where it is allowed.
        unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) };
    }
}

#[cfg(not(debug_assertions))]
fn forbidden_call_for_tests(_: ThreadKind) {}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` on x86-64: three ints and padding, then
/// the faulting call's address (a pointer), then the call number.
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work here: a stack buffer, write(2) and _exit(2), both of which
    // every filter allows.
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler; for SIGSYS the
    // call number lies at SI_SYSCALL_OFFSET within it.
    let number = unsafe { info.cast::<u8>().add(SI_SYSCALL_OFFSET).cast::<i32>().read_unaligned() };
    let kind = FILTERED_AS.with(Cell::get).map_or("unfiltered", ThreadKind::name);
    let mut message = [0u8; 160];
    let mut len = 0;
    for part in [
        b"nuage-vmm: the ".as_slice(),
        kind.as_bytes(),
        b" thread made system call ",
        format_number(number, &mut [0u8; 12]),
        b", which its seccomp filter forbids; stopping\n",
    ] {
        let n = part.len().min(message.len() - len);
        message[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    // SAFETY: `message[..len]` is initialised; _exit never returns.
    unsafe {
        libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), len);
        libc::_exit(i32::from(ExitStatus::Seccomp.code()));
    }
}

/// `number` in decimal, written into `buf` without allocating.
fn format_number(number: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut start = buf.len();
    let mut rest = number.unsigned_abs();
    loop {
        start -= 1;
        buf[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if number < 0 {
        start -= 1;
        buf[start] = b'-';
    }
    &buf[start..]
}

fn install_sigsys_handler() -> std::io::Result<()> {
    // SAFETY: `sigaction` is plain data, zeroed then filled in; the handler has the
    // SA_SIGINFO signature.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_without_allocating() {
        for n in [0, 7, 165, i32::MAX, -1, i32::MIN] {
            assert_eq!(format_number(n, &mut [0; 12]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn every_kind_compiles() {
        let filters = Filters::compile().unwrap();
        for kind in ThreadKind::ALL {
            assert!(filters.program(kind).is_some_and(|p| !p.is_empty()), "{kind:?}");
        }
    }

    /// Forks a child that installs `kind`'s filter and makes `call`; returns how it ended.
    fn in_filtered_child(kind: ThreadKind, call: impl FnOnce() -> i64) -> (Option<i32>, Option<i32>) {
        let filters = Filters::compile().unwrap();
        let program = filters.program(kind).unwrap().clone();
        // SAFETY: the child only makes system calls (sigaction, prctl, seccomp, the call
        // under test, _exit) on memory prepared before the fork; it never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let status = (|| {
                install_sigsys_handler().ok()?;
                seccompiler::apply_filter(&program).ok()?;
                FILTERED_AS.with(|cell| cell.set(Some(kind)));
                Some(if call() >= 0 { 0 } else { 1 })
            })()
            .unwrap_or(99);
            // SAFETY: ends the forked child at once.
            unsafe { libc::_exit(status) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is writable.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        (code, signal)
    }

    #[test]
    fn a_forbidden_call_under_a_filter_ends_the_process_with_the_seccomp_status() {
        let seccomp = Some(i32::from(ExitStatus::Seccomp.code()));
        for kind in ThreadKind::ALL {
            let (code, _) = in_filtered_child(kind, || {
                // SAFETY: a socket call with no side effect beyond a descriptor in the child.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }.into()
            });
            assert_eq!(code, seccomp, "{kind:?} may open an IPv4 socket");
            // SAFETY: as in `forbidden_call_for_tests`.
            let (code, _) =
                in_filtered_child(kind, || unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) });
            assert_eq!(code, seccomp, "{kind:?} may call mount");
        }
    }

    #[test]
    fn arguments_are_checked_not_only_call_numbers() {
        let seccomp = Some(i32::from(ExitStatus::Seccomp.code()));
        let map = |prot| {
            // SAFETY: an anonymous mapping in the child, never used.
            move || unsafe {
                libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            } as i64
        };
        assert_eq!(in_filtered_child(ThreadKind::Worker, map(libc::PROT_READ | libc::PROT_WRITE)).0, Some(0));
        assert_eq!(in_filtered_child(ThreadKind::Worker, map(libc::PROT_READ | libc::PROT_EXEC)).0, seccomp);
        // A vCPU runs the VM but may not create another.
        // SAFETY: ioctls on a descriptor that is not KVM's fail harmlessly where allowed.
        let ioctl =
            |request: u64| move || i64::from(unsafe { libc::ioctl(libc::STDIN_FILENO, request as _, 0) });
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, ioctl(allowlist::KVM_RUN)).0, Some(1));
        assert_eq!(in_filtered_child(ThreadKind::Vcpu, ioctl(allowlist::KVM_CREATE_VM)).0, seccomp);
        // Signals go to the VMM's own threads only: not to another process of its user.
        let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let target = bystander.id() as i32;
        // SAFETY: tgkill with integer arguments; refused, it signals nothing.
        let abort_other = move || unsafe { libc::syscall(libc::SYS_tgkill, target, target, libc::SIGABRT) };
        assert_eq!(in_filtered_child(ThreadKind::Main, abort_other).0, seccomp);
        assert!(bystander.try_wait().unwrap().is_none(), "the other process was signalled");
        let _ = bystander.kill();
        let _ = bystander.wait();
        // Workers reach the host only over Unix sockets.
        // SAFETY: creates and leaks a socket in the child.
        let unix = || i64::from(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) });
        assert_eq!(in_filtered_child(ThreadKind::Worker, unix).0, Some(0));
    }

    #[test]
    fn the_lists_match_their_reviewed_form() {
        let reviewed = include_str!("allowlist.txt");
        let current = allowlist::render();
        if reviewed != current {
            let path = std::env::temp_dir().join("nuage-seccomp-allowlist.txt");
            let _ = std::fs::write(&path, &current);
            panic!(
                "the seccomp allowlists differ from src/vmm/seccomp/allowlist.txt; review the \
                 change (the current lists are in {}) and update the file",
                path.display()
            );
        }
    }
}
