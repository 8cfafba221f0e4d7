//! What each thread kind may call, with the arguments checked where the value says what the
//! call does (ioctl requests, socket families, memory protections, signals, fcntl commands).
//!
//! Every kind shares [`thread_basics`]: memory, locks, time, randomness, its own end, and
//! `write` for logs and eventfds. No thread may make a call that takes a path (`openat`,
//! `rename`, ...), which a filter could not check: what a VMM opens, it opens while it
//! builds the VM, before any thread is filtered; the console log rotates within the two
//! files opened then, and a snapshot's new layer reaches the control server as a
//! descriptor the daemon opened.

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

use super::ThreadKind;
use crate::vmm::devices::virtio::net::tap::TUNSETOFFLOAD;

/// `_IO(KVMIO, 0x80)`: run a vCPU.
pub const KVM_RUN: u64 = 0xAE80;
/// `_IO(KVMIO, 0x01)`: create a VM; no thread needs it once the VM exists.
#[cfg(test)]
pub const KVM_CREATE_VM: u64 = 0xAE01;

/// One allowed system call: any arguments when `when` is empty, otherwise those that pass
/// one of its checks.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The call's name, as strace and the man pages spell it.
    pub name: &'static str,
    /// Its number on x86-64.
    pub number: i64,
    /// Alternatives, each a check on one or more arguments.
    pub when: Vec<Check>,
}

/// Conditions on a call's arguments, all of which must hold.
#[derive(Debug, Clone)]
pub struct Check {
    conditions: Vec<Condition>,
}

/// A condition on one argument of a call, against a named value.
#[derive(Debug, Clone)]
struct Condition {
    arg: u8,
    name: &'static str,
    test: Test,
}

#[derive(Debug, Clone, Copy)]
enum Test {
    /// The argument equals the value.
    Equals(u64),
    /// The argument has none of the value's bits.
    Without(u64),
}

impl Check {
    fn one(arg: u8, name: &'static str, test: Test) -> Self {
        Self { conditions: vec![Condition { arg, name, test }] }
    }

    /// The check as a seccompiler rule. It compares the arguments' low 32 bits: every
    /// checked argument is an `int` (a pid, a signal, flags) or, for ioctl requests, read
    /// by the kernel as one.
    pub fn rule(&self) -> Result<SeccompRule, seccompiler::Error> {
        let conditions = self.conditions.iter().map(|Condition { arg, test, .. }| {
            let (operator, value) = match *test {
                Test::Equals(value) => (SeccompCmpOp::Eq, value),
                Test::Without(mask) => (SeccompCmpOp::MaskedEq(mask), 0),
            };
            SeccompCondition::new(*arg, SeccompCmpArgLen::Dword, operator, value)
        });
        Ok(SeccompRule::new(conditions.collect::<Result<_, _>>()?)?)
    }

    fn describe(&self) -> String {
        let described = self.conditions.iter().map(|Condition { arg, name, test }| match test {
            Test::Equals(_) => format!("arg{arg} == {name}"),
            Test::Without(_) => format!("arg{arg} without {name}"),
        });
        described.collect::<Vec<_>>().join(" and ")
    }
}

/// `Allowed` for `libc::SYS_<call>`, named `<call>`.
macro_rules! call {
    ($sys:ident) => {
        Allowed { name: &stringify!($sys)[4..], number: libc::$sys, when: Vec::new() }
    };
}

impl Allowed {
    /// Only when argument `arg` is one of `values`.
    fn if_arg(mut self, arg: u8, values: &[(&'static str, u64)]) -> Self {
        self.when.extend(values.iter().map(|&(name, value)| Check::one(arg, name, Test::Equals(value))));
        self
    }

    /// Only when argument `arg` has none of `mask`'s bits.
    fn if_without(mut self, arg: u8, name: &'static str, mask: u64) -> Self {
        self.when.push(Check::one(arg, name, Test::Without(mask)));
        self
    }

    /// `tgkill` only to threads of this process, with one of `signals`: a VMM may signal
    /// its own vCPUs and abort, not another process of its user.
    fn if_signal_to_self(mut self, signals: &[(&'static str, u64)]) -> Self {
        let own = Condition { arg: 0, name: "own pid", test: Test::Equals(u64::from(std::process::id())) };
        self.when.extend(signals.iter().map(|&(name, signal)| Check {
            conditions: vec![own.clone(), Condition { arg: 2, name, test: Test::Equals(signal) }],
        }));
        self
    }
}

/// What any thread needs to live and end: memory (never executable), futexes, time,
/// randomness (hash maps seed from it), `write` (logs, eventfds), closing what it owns
/// (debug builds check a descriptor with fcntl first), and `abort` (a signal to itself).
/// The filters are built in the VMM process itself, which is how they know its pid.
fn thread_basics() -> Vec<Allowed> {
    let no_exec = |allowed: Allowed| allowed.if_without(2, "PROT_EXEC", libc::PROT_EXEC as u64);
    vec![
        call!(SYS_brk),
        no_exec(call!(SYS_mmap)),
        no_exec(call!(SYS_mprotect)),
        call!(SYS_munmap),
        call!(SYS_mremap),
        call!(SYS_madvise),
        call!(SYS_futex),
        call!(SYS_sched_yield),
        call!(SYS_clock_gettime),
        call!(SYS_clock_nanosleep),
        call!(SYS_nanosleep),
        call!(SYS_restart_syscall),
        call!(SYS_getrandom),
        call!(SYS_write),
        call!(SYS_close),
        fcntl(),
        call!(SYS_rt_sigreturn),
        call!(SYS_rt_sigprocmask),
        call!(SYS_sigaltstack),
        call!(SYS_getpid),
        call!(SYS_gettid),
        call!(SYS_tgkill).if_signal_to_self(&[("SIGABRT", libc::SIGABRT as u64)]),
        call!(SYS_exit),
        call!(SYS_exit_group),
    ]
}

/// Descriptor flags a thread may read and set, and duplication (eventfd clones).
fn fcntl() -> Allowed {
    call!(SYS_fcntl).if_arg(
        1,
        &[
            ("F_GETFD", libc::F_GETFD as u64),
            ("F_SETFD", libc::F_SETFD as u64),
            ("F_GETFL", libc::F_GETFL as u64),
            ("F_SETFL", libc::F_SETFL as u64),
            ("F_DUPFD_CLOEXEC", libc::F_DUPFD_CLOEXEC as u64),
        ],
    )
}

/// Reads, writes and flushes of disk files, and what answers a file's size.
fn file_io() -> Vec<Allowed> {
    vec![
        call!(SYS_read),
        call!(SYS_pread64),
        call!(SYS_pwrite64),
        call!(SYS_preadv),
        call!(SYS_pwritev),
        call!(SYS_lseek),
        call!(SYS_fsync),
        call!(SYS_fdatasync),
        call!(SYS_fstat),
        call!(SYS_newfstatat),
        call!(SYS_statx),
    ]
}

/// The calls of a device worker: its epoll loop, the guest's disk I/O (with discards and
/// growing images), its tap, its rate limiter's timer and vsock's Unix sockets.
fn worker() -> Vec<Allowed> {
    let mut list = file_io();
    list.extend([
        call!(SYS_epoll_wait),
        call!(SYS_epoll_pwait),
        call!(SYS_epoll_ctl),
        call!(SYS_readv),
        call!(SYS_writev),
        call!(SYS_fallocate),
        call!(SYS_ftruncate),
        call!(SYS_timerfd_settime),
        call!(SYS_timerfd_gettime),
        call!(SYS_socket).if_arg(0, &[("AF_UNIX", libc::AF_UNIX as u64)]),
        call!(SYS_connect),
        call!(SYS_accept4),
        call!(SYS_recvfrom),
        call!(SYS_sendto),
        call!(SYS_shutdown),
        call!(SYS_ioctl).if_arg(1, &[("FIONBIO", libc::FIONBIO)]),
    ]);
    list
}

/// The lists of one thread kind: [`thread_basics`] and what its work needs.
pub fn for_kind(kind: ThreadKind) -> Vec<Allowed> {
    let mut list = thread_basics();
    match kind {
        ThreadKind::Main => list.extend([
            call!(SYS_epoll_wait),
            call!(SYS_epoll_pwait),
            call!(SYS_epoll_ctl),
            // The signalfd and console input.
            call!(SYS_read),
            // Writing out (and rotating) the last partial line of console output.
            call!(SYS_pread64),
            call!(SYS_pwrite64),
            call!(SYS_ftruncate),
            // Kicking vCPUs out of KVM_RUN.
            call!(SYS_tgkill).if_signal_to_self(&[("SIGRTMIN", vmm_sys_util::signal::SIGRTMIN() as u64)]),
            // Putting a terminal back in canonical mode.
            call!(SYS_ioctl).if_arg(
                1,
                &[
                    ("TCGETS", libc::TCGETS),
                    ("TCSETS", libc::TCSETS),
                    ("TCSETSW", libc::TCSETSW),
                    ("TCSETSF", libc::TCSETSF),
                ],
            ),
        ]),
        ThreadKind::Vcpu => list.extend([
            call!(SYS_ioctl).if_arg(1, &[("KVM_RUN", KVM_RUN), ("TUNSETOFFLOAD", TUNSETOFFLOAD)]),
            // Activating a device: its worker's epoll, stop event, eventfd clones, timer and
            // (above) its tap's offloads.
            call!(SYS_epoll_create1),
            call!(SYS_epoll_ctl),
            call!(SYS_eventfd2),
            call!(SYS_timerfd_create),
            // Writing and rotating the console log, both files open from the start.
            call!(SYS_pread64),
            call!(SYS_pwrite64),
            call!(SYS_ftruncate),
        ]),
        ThreadKind::Worker => list.extend(worker()),
        ThreadKind::Control => {
            list.extend(file_io());
            list.extend([
                call!(SYS_accept4),
                call!(SYS_recvfrom),
                // A request and the descriptor of a snapshot's new layer sent with it.
                call!(SYS_recvmsg),
                call!(SYS_sendto),
                call!(SYS_setsockopt).if_arg(
                    2,
                    &[("SO_RCVTIMEO", libc::SO_RCVTIMEO as u64), ("SO_SNDTIMEO", libc::SO_SNDTIMEO as u64)],
                ),
            ]);
        }
        ThreadKind::Launcher => {
            // Everything the workers it starts may do (filters stack), and starting them.
            list.extend(worker());
            list.extend([
                call!(SYS_clone),
                call!(SYS_clone3),
                call!(SYS_set_robust_list),
                call!(SYS_rseq),
                call!(SYS_sched_getaffinity),
                call!(SYS_prctl).if_arg(
                    0,
                    &[
                        ("PR_SET_NAME", libc::PR_SET_NAME as u64),
                        ("PR_SET_NO_NEW_PRIVS", libc::PR_SET_NO_NEW_PRIVS as u64),
                    ],
                ),
                call!(SYS_seccomp)
                    .if_arg(0, &[("SECCOMP_SET_MODE_FILTER", libc::SECCOMP_SET_MODE_FILTER as u64)]),
            ]);
        }
    }
    list
}

/// The lists as reviewed text: one line per kind, call and alternative, sorted.
pub fn render() -> String {
    let mut text = String::from(
        "# The seccomp allowlists of nuage-vmm's threads, as src/vmm/seccomp/allowlist.rs builds them.\n\
         # A test compares this file with the code: a change to either is reviewed here.\n",
    );
    for kind in ThreadKind::ALL {
        let mut lines: Vec<String> = Vec::new();
        for allowed in for_kind(kind) {
            if allowed.when.is_empty() {
                lines.push(format!("{} {}", kind.name(), allowed.name));
            }
            for check in &allowed.when {
                lines.push(format!("{} {} if {}", kind.name(), allowed.name, check.describe()));
            }
        }
        lines.sort();
        lines.dedup();
        text.push('\n');
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}
