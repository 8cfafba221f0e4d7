//! Running a built microVM: one thread per vCPU, and the main thread's event loop that waits
//! for the VM's end, host signals and console input.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};
use vmm_sys_util::terminal::Terminal;

use crate::vmm::builder::MicroVm;
use crate::vmm::devices::legacy::serial::SerialConsole;
use crate::vmm::exit::ExitReason;
use crate::vmm::seccomp::{self, ThreadKind};
use crate::vmm::vstate::exit_stats::ExitStats;

const TOKEN_EXIT: u64 = 1;
const TOKEN_SIGNAL: u64 = 2;
const TOKEN_STDIN: u64 = 3;
/// How often a stopping vCPU is signalled again until its thread has left `KVM_RUN`.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// Signals that stop the VM from the host.
pub(crate) const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only there so the signal interrupts KVM_RUN with EINTR.
}

/// Blocks the stop signals in the calling thread (and the threads it spawns afterwards) and
/// returns a signalfd that receives them.
fn stop_signalfd() -> std::io::Result<OwnedFd> {
    // SAFETY: `sigset_t` is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t for the duration of these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in STOP_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: -1 asks for a new fd; `set` is initialised.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_signal(fd: RawFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of exactly `size` bytes.
    let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (n == size as isize).then_some(info.ssi_signo as i32)
}

/// Console input from stdin, with bytes the receive FIFO could not take kept for later.
struct ConsoleInput {
    pending: Vec<u8>,
    open: bool,
    raw_tty: bool,
}

impl ConsoleInput {
    fn start() -> Self {
        // SAFETY: isatty only inspects the descriptor.
        let is_tty = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
        let raw_tty = is_tty && std::io::stdin().lock().set_raw_mode().is_ok();
        Self { pending: Vec::new(), open: true, raw_tty }
    }

    /// Reads what stdin has; returns false once it reached end of file.
    fn read_stdin(&mut self) -> bool {
        let mut buf = [0u8; 256];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(0) => self.open = false,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "console input closed");
                self.open = false;
            }
        }
        self.open
    }

    fn flush_to(&mut self, serial: &SerialConsole) {
        if !self.pending.is_empty() {
            let taken = serial.enqueue_input(&self.pending);
            self.pending.drain(..taken);
        }
    }
}

impl Drop for ConsoleInput {
    fn drop(&mut self) {
        if self.raw_tty {
            let _ = std::io::stdin().lock().set_canon_mode();
        }
    }
}

/// Runs `vm` until it ends and returns why. Console input comes from stdin when
/// `console_input` is set. With `stats_since`, the vCPUs' exits are counted and a report
/// (timeline from that instant) is printed on stderr at the end.
pub fn run(vm: MicroVm, console_input: bool, stats_since: Option<Instant>) -> ExitReason {
    match run_inner(vm, console_input, stats_since) {
        Ok(reason) => reason,
        Err(e) => ExitReason::Fatal(format!("VMM event loop: {e}")),
    }
}

fn run_inner(vm: MicroVm, console_input: bool, stats_since: Option<Instant>) -> std::io::Result<ExitReason> {
    let MicroVm { vcpus, bus, serial, exit, control, vm: _vm, memory: _memory } = vm;
    let signals = stop_signalfd()?;
    if seccomp::enabled() {
        crate::vmm::threads::start_launcher()?;
    }
    // Spawned after the stop signals are blocked, so they only ever reach the signalfd.
    if let Some((listener, targets)) = control {
        crate::vmm::api::control::spawn(listener, targets)?;
    }
    register_signal_handler(SIGRTMIN(), kick_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;

    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        exit.eventfd().as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_EXIT),
    )?;
    epoll.ctl(ControlOperation::Add, signals.as_raw_fd(), EpollEvent::new(EventSet::IN, TOKEN_SIGNAL))?;
    let mut input = console_input.then(ConsoleInput::start);
    if input.is_some() {
        let watched =
            epoll.ctl(ControlOperation::Add, libc::STDIN_FILENO, EpollEvent::new(EventSet::IN, TOKEN_STDIN));
        if let Err(e) = watched {
            // Regular files and /dev/null cannot be polled: there is no interactive input.
            tracing::warn!(error = %e, "stdin cannot be polled; console input disabled");
            input = None;
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let vcpu_count = vcpus.len();
    let mut threads: Vec<JoinHandle<Option<ExitStats>>> = Vec::with_capacity(vcpu_count);
    for vcpu in vcpus {
        let (bus, exit, stop) = (bus.clone(), exit.clone(), stop.clone());
        let name = format!("vcpu{}", vcpu.index());
        let stats = stats_since.map(ExitStats::new);
        threads.push(crate::vmm::threads::spawn(ThreadKind::Vcpu, name, move || {
            vcpu.run(&bus, &exit, &stop, stats)
        })?);
    }

    // Set up: from here the main thread only waits, reads and stops the vCPUs.
    seccomp::enter(ThreadKind::Main);
    let mut events = vec![EpollEvent::default(); 4];
    let reason = loop {
        if let Some(reason) = exit.reason() {
            break reason;
        }
        // Poll briefly while console input waits for room in the receive FIFO.
        let waiting = input.as_ref().is_some_and(|i| !i.pending.is_empty());
        let timeout = if waiting { 10 } else { -1 };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for event in &events[..n] {
            match event.data() {
                TOKEN_SIGNAL => {
                    if let Some(signal) = read_signal(signals.as_raw_fd()) {
                        exit.notify(ExitReason::Signal(signal));
                    }
                }
                TOKEN_STDIN => {
                    if let Some(input) = input.as_mut() {
                        if !input.read_stdin() {
                            epoll.ctl(ControlOperation::Delete, libc::STDIN_FILENO, EpollEvent::default())?;
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(input) = input.as_mut() {
            input.flush_to(&serial);
        }
    };

    stop.store(true, Ordering::Release);
    let mut panicked = false;
    let mut stats = stats_since.map(ExitStats::new);
    for thread in threads {
        while !thread.is_finished() {
            // The thread may be blocked in KVM_RUN; a signal makes it return EINTR.
            let _ = thread.kill(SIGRTMIN());
            std::thread::sleep(KICK_INTERVAL);
        }
        match thread.join() {
            Ok(Some(vcpu_stats)) => {
                if let Some(stats) = stats.as_mut() {
                    stats.merge(&vcpu_stats);
                }
            }
            Ok(None) => {}
            Err(_) => panicked = true,
        }
    }
    // The guest's last partial line, now that no vCPU adds to it.
    serial.write_out_held();
    if let Some(stats) = stats {
        eprint!("{}", stats.report(vcpu_count));
    }
    if panicked && reason == ExitReason::PowerOff {
        return Ok(ExitReason::Fatal("a vCPU thread panicked".into()));
    }
    Ok(reason)
}
