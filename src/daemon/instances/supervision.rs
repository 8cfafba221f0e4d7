//! Supervision: a thread per VMM blocks until the process ends (in `waitpid` for a VMM
//! this daemon started, which gives its exit status; on its pidfd for an adopted one),
//! records what the life cycle says follows, and wakes whoever waits for that exit.
//! Stopping a VMM asks its guest first, then the VMM, then the kernel.
//!
//! A guest that reboots again and again as soon as it starts (a triple fault at boot) is
//! started again later each time, up to [`MAX_REBOOT_DELAY`], its state reason saying so;
//! a stop or terminate meanwhile cuts the wait short.

use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::lifecycle::{self, AfterExit};
use super::{lock, Instances};
use crate::daemon::process::{control_socket, instance_dir, ProcessHandle, PID_FILE};
use crate::daemon::DaemonError;
use crate::state::instance::InstanceState::*;
use crate::vmm::api::control;
use crate::vmm::api::ExitStatus;

/// How long a VMM gets to stop its vCPUs and flush its disks after SIGTERM before it is
/// killed.
const VMM_STOP_GRACE: Duration = Duration::from_secs(10);

/// A guest-initiated reboot this soon after its VMM started counts towards a reboot loop.
const QUICK_REBOOT: Duration = Duration::from_secs(30);
/// Quick reboots in a row that are started again at once.
const FREE_REBOOTS: u32 = 3;
/// The first delay once a loop is seen; each quick reboot after doubles it.
const FIRST_REBOOT_DELAY: Duration = Duration::from_millis(500);
/// The longest a looping guest waits to be started again.
const MAX_REBOOT_DELAY: Duration = Duration::from_secs(60);

/// How long to wait before starting a guest again after `quick` quick reboots in a row.
fn reboot_delay(quick: u32) -> Duration {
    match quick.checked_sub(FREE_REBOOTS + 1) {
        None => Duration::ZERO,
        Some(doublings) => FIRST_REBOOT_DELAY.saturating_mul(1 << doublings.min(16)).min(MAX_REBOOT_DELAY),
    }
}

/// A supervised VMM: its process, when it started, and whether its end has been recorded.
pub(super) struct Vmm {
    pub(super) process: ProcessHandle,
    started: Instant,
    ended: Mutex<Ending>,
    on_end: Condvar,
}

/// How far a VMM's end has got.
#[derive(Default)]
struct Ending {
    /// Recorded: whoever waits may go on.
    recorded: bool,
    /// A stop or terminate is waiting: a reboot delay is cut short.
    hurried: bool,
}

impl Vmm {
    /// Waits up to `timeout` (`Duration::MAX`: for ever) until the VMM's end is recorded;
    /// false if it was not.
    fn wait_end(&self, timeout: Duration) -> bool {
        self.wait_until(|ending| ending.recorded, timeout)
    }

    /// Waits up to `timeout` (`Duration::MAX`: for ever) until `done` holds of the VMM's
    /// ending; false if it did not.
    fn wait_until(&self, done: impl Fn(&Ending) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut ending = lock(&self.ended);
        while !done(&ending) {
            ending = match deadline {
                None => self.on_end.wait(ending).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
                    self.on_end
                        .wait_timeout(ending, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
        true
    }

    fn mark_ended(&self) {
        lock(&self.ended).recorded = true;
        self.on_end.notify_all();
    }

    /// Waits `delay` before the end is handled, unless a stop or terminate hurries it.
    fn delay_end(&self, delay: Duration) {
        self.wait_until(|ending| ending.hurried, delay);
    }

    /// Cuts a reboot delay short.
    fn hurry(&self) {
        lock(&self.ended).hurried = true;
        self.on_end.notify_all();
    }
}

impl Instances {
    /// Supervises VMM `process` of instance `id` (with `child`, when this daemon started
    /// it, to learn its exit status) on a thread of its own.
    pub(super) fn supervise(&self, id: &str, process: ProcessHandle, child: Option<Child>) -> Arc<Vmm> {
        let vmm = Arc::new(Vmm {
            process,
            started: Instant::now(),
            ended: Mutex::default(),
            on_end: Condvar::new(),
        });
        lock(&self.vmms).insert(id.to_owned(), vmm.clone());
        let this = self.clone();
        let id = id.to_owned();
        let supervised = vmm.clone();
        std::thread::spawn(move || {
            let code = match child {
                Some(mut child) => child.wait().ok().and_then(|status| status.code()),
                None => {
                    vmm.process.wait();
                    None
                }
            };
            // Before the exit is handled: a reboot writes the new VMM's.
            let _ = std::fs::remove_file(instance_dir(&this.config.state_dir, &id).join(PID_FILE));
            this.slow_reboot_loop(&id, &vmm, code);
            if let Err(e) = this.record_exit(&id, code) {
                warn!(instance = id, "recording the VMM's exit failed: {e}");
            }
            {
                // A reboot has put a new VMM in place: leave that one.
                let mut vmms = lock(&this.vmms);
                if vmms.get(&id).is_some_and(|current| Arc::ptr_eq(current, &vmm)) {
                    vmms.remove(&id);
                }
            }
            vmm.mark_ended();
        });
        supervised
    }

    /// The running VMM of `id`, if any.
    pub(super) fn vmm(&self, id: &str) -> Option<Arc<Vmm>> {
        lock(&self.vmms).get(id).cloned()
    }

    /// Stops the VMM of `id` and waits until its exit is recorded. Gracefully, the guest
    /// is asked first: Ctrl+Alt+Del on its keyboard makes Linux signal init, which shuts
    /// down (busybox) or reboots (systemd; either way the VMM exits), within the stop
    /// timeout. Then, or at once, SIGTERM stops the VMM itself: it stops its vCPUs,
    /// flushes its disks and exits. SIGKILL follows if even that hangs.
    pub(super) fn shut_down(&self, id: &str, graceful: bool) {
        let Some(vmm) = self.vmm(id) else { return };
        vmm.hurry();
        if graceful {
            let socket = control_socket(&instance_dir(&self.config.state_dir, id));
            match control::call(&socket, &control::Request::CtrlAltDel) {
                Ok(()) if vmm.wait_end(self.config.stop_timeout()) => {
                    info!(instance = id, "the guest shut down");
                    return;
                }
                Ok(()) => warn!(instance = id, "the guest did not shut down in time: stopping its VMM"),
                Err(e) => warn!(instance = id, "cannot ask the guest to shut down: {e}"),
            }
        }
        if let Err(e) = vmm.process.signal(libc::SIGTERM) {
            warn!(instance = id, "SIGTERM: {e}");
        }
        if !vmm.wait_end(VMM_STOP_GRACE) {
            warn!(instance = id, "the VMM did not stop in time: killing it");
            let _ = vmm.process.signal(libc::SIGKILL);
            vmm.wait_end(Duration::MAX);
        }
    }

    /// Counts a guest-initiated reboot of running instance `id` that came soon after its
    /// VMM started, and from the fourth in a row waits before it is handled (reporting the
    /// loop in the state reason); any other end of the VMM ends the count.
    fn slow_reboot_loop(&self, id: &str, vmm: &Vmm, code: Option<i32>) {
        let guest_reboot = code.and_then(ExitStatus::from_code) == Some(ExitStatus::Reboot)
            && !lock(&self.rebooting).contains(id)
            && vmm.started.elapsed() < QUICK_REBOOT;
        let quick = {
            let mut loops = lock(&self.reboot_loops);
            if !guest_reboot {
                loops.remove(id);
                return;
            }
            let quick = loops.entry(id.to_owned()).or_default();
            *quick += 1;
            *quick
        };
        let delay = reboot_delay(quick);
        if delay.is_zero() {
            return;
        }
        let reason = format!(
            "Server.RebootLoop: the guest rebooted {quick} times in a row within {}s of starting; \
             starting it again in {:.1}s",
            QUICK_REBOOT.as_secs(),
            delay.as_secs_f64()
        );
        warn!(instance = id, quick, ?delay, "reboot loop: waiting before starting the guest again");
        if self.transition(id, &[Running], Running, &reason, None).is_ok() {
            vmm.delay_end(delay);
        }
    }

    /// Records the end of instance `id`'s VMM, which exited with `code` (unknown for an
    /// adopted one), as the life cycle says.
    fn record_exit(&self, id: &str, code: Option<i32>) -> Result<(), DaemonError> {
        // Its cgroup is empty now; a relaunch makes it again.
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove(id);
        }
        let record = self.db.get(id)?;
        let reboot_requested = lock(&self.rebooting).contains(id);
        info!(instance = id, ?code, state = %record.state, "VMM exited");
        match lifecycle::after_exit(record.state, reboot_requested, code) {
            AfterExit::Stop(reason) => {
                let reason = reason.unwrap_or(record.state_reason);
                self.transition(id, &[record.state], Stopped, &reason, None)?;
            }
            AfterExit::FinishTermination => self.finish_termination(id, false)?,
            AfterExit::Relaunch(reason) => {
                // The instance keeps running, on a new VMM.
                self.transition(id, &[Running], Pending, reason, None)?;
                self.launch(id)?;
            }
            AfterExit::Nothing => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmm() -> Arc<Vmm> {
        let process = ProcessHandle::open(std::process::id() as i32).expect("a pidfd on this process");
        Arc::new(Vmm { process, started: Instant::now(), ended: Mutex::default(), on_end: Condvar::new() })
    }

    #[test]
    fn reboot_delays_double_from_the_fourth_quick_reboot_up_to_a_cap() {
        let delays: Vec<u128> = (1..=6).map(|quick| reboot_delay(quick).as_millis()).collect();
        assert_eq!(delays, [0, 0, 0, 500, 1000, 2000]);
        assert_eq!(reboot_delay(40), MAX_REBOOT_DELAY);
        assert_eq!(reboot_delay(u32::MAX), MAX_REBOOT_DELAY);
    }

    #[test]
    fn a_reboot_delay_is_cut_short_by_a_stop() {
        let vmm = vmm();
        let started = Instant::now();
        vmm.delay_end(Duration::from_millis(30));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let hurrier = {
            let vmm = vmm.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                vmm.hurry();
            })
        };
        let waiting = Instant::now();
        vmm.delay_end(Duration::from_secs(60));
        assert!(waiting.elapsed() < Duration::from_secs(10), "hurried, not waited out");
        hurrier.join().expect("the hurrying thread");
    }

    #[test]
    fn a_waiter_wakes_when_the_end_is_recorded_not_at_a_poll() {
        let vmm = vmm();
        let started = Instant::now();
        assert!(!vmm.wait_end(Duration::from_millis(30)), "no end recorded yet");
        assert!(started.elapsed() >= Duration::from_millis(30));
        let supervisor = {
            let vmm = vmm.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                vmm.mark_ended();
            })
        };
        let waiting = Instant::now();
        assert!(vmm.wait_end(Duration::from_secs(30)));
        assert!(waiting.elapsed() < Duration::from_secs(10), "woken by the end, not the timeout");
        assert!(vmm.wait_end(Duration::ZERO), "an ended VMM stays ended");
        assert!(vmm.wait_end(Duration::MAX));
        supervisor.join().expect("the supervisor thread");
    }
}
