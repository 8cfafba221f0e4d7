//! Supervision: a thread per VMM blocks until the process ends (in `waitpid` for a VMM
//! this daemon started, which gives its exit status; on its pidfd for an adopted one),
//! records what the life cycle says follows, and wakes whoever waits for that exit.
//! Stopping a VMM asks its guest first, then the VMM, then the kernel.

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

/// How long a VMM gets to stop its vCPUs and flush its disks after SIGTERM before it is
/// killed.
const VMM_STOP_GRACE: Duration = Duration::from_secs(10);

/// A supervised VMM: its process, and whether its end has been recorded.
pub(super) struct Vmm {
    pub(super) process: ProcessHandle,
    ended: Mutex<bool>,
    on_end: Condvar,
}

impl Vmm {
    /// Waits up to `timeout` (`Duration::MAX`: for ever) until the VMM's end is recorded;
    /// false if it was not.
    fn wait_end(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut ended = lock(&self.ended);
        while !*ended {
            ended = match deadline {
                None => self.on_end.wait(ended).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
                    self.on_end.wait_timeout(ended, left).unwrap_or_else(std::sync::PoisonError::into_inner).0
                }
            };
        }
        true
    }

    fn mark_ended(&self) {
        *lock(&self.ended) = true;
        self.on_end.notify_all();
    }
}

impl Instances {
    /// Supervises VMM `process` of instance `id` (with `child`, when this daemon started
    /// it, to learn its exit status) on a thread of its own.
    pub(super) fn supervise(&self, id: &str, process: ProcessHandle, child: Option<Child>) -> Arc<Vmm> {
        let vmm = Arc::new(Vmm { process, ended: Mutex::new(false), on_end: Condvar::new() });
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

    /// Records the end of instance `id`'s VMM, which exited with `code` (unknown for an
    /// adopted one), as the life cycle says.
    fn record_exit(&self, id: &str, code: Option<i32>) -> Result<(), DaemonError> {
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
        Arc::new(Vmm { process, ended: Mutex::new(false), on_end: Condvar::new() })
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
