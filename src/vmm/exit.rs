//! Why a VM ended, how vCPUs and devices report it, and the process exit statuses a
//! supervisor (the daemon, or a shell script) sees.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// `nuage-vmm` exit statuses. They are part of the interface: the daemon restarts an instance
/// that exits with [`ExitStatus::Reboot`] and marks it stopped on [`ExitStatus::PowerOff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// The guest powered off (ACPI S5).
    PowerOff = 0,
    /// A fatal error after the VM started (KVM failure, vCPU crash, unexpected exit).
    Fatal = 1,
    /// The command line could not be parsed.
    Usage = 2,
    /// The configuration is invalid; nothing was started.
    Config = 3,
    /// The guest asked for a reset (reboot, triple fault, keyboard-controller reset).
    Reboot = 4,
    /// The host stopped the VM with SIGTERM or SIGINT.
    Stopped = 5,
}

impl ExitStatus {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status a VMM process exited with, read back by its supervisor; None for a code
    /// nuage-vmm never uses (a crash shows as a signal, not a code).
    pub fn from_code(code: i32) -> Option<Self> {
        [Self::PowerOff, Self::Fatal, Self::Usage, Self::Config, Self::Reboot, Self::Stopped]
            .into_iter()
            .find(|status| i32::from(status.code()) == code)
    }
}

/// Why the guest reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetCause {
    /// 0xFE written to the i8042 command port.
    KeyboardController,
    /// The ACPI reset register.
    AcpiResetRegister,
    /// `KVM_EXIT_SHUTDOWN`: usually a triple fault.
    TripleFault,
    /// `KVM_SYSTEM_EVENT_RESET`.
    SystemEvent,
}

/// Why a VM stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off.
    PowerOff,
    /// The guest reset itself.
    Reset(ResetCause),
    /// The host sent this signal.
    Signal(i32),
    /// Something went wrong that the VM cannot survive.
    Fatal(String),
}

impl ExitReason {
    /// The process exit status for this reason.
    pub fn status(&self) -> ExitStatus {
        match self {
            ExitReason::PowerOff => ExitStatus::PowerOff,
            ExitReason::Reset(_) => ExitStatus::Reboot,
            ExitReason::Signal(_) => ExitStatus::Stopped,
            ExitReason::Fatal(_) => ExitStatus::Fatal,
        }
    }
}

/// Where vCPUs and devices report that the VM must end. The first report wins; the VMM's
/// main loop waits on [`ExitNotifier::eventfd`].
#[derive(Clone)]
pub struct ExitNotifier {
    reason: Arc<Mutex<Option<ExitReason>>>,
    event: Arc<EventFd>,
}

impl ExitNotifier {
    /// A notifier with nothing reported yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { reason: Arc::new(Mutex::new(None)), event: Arc::new(EventFd::new(EFD_NONBLOCK)?) })
    }

    /// Records `reason` unless another one came first, and wakes the main loop.
    pub fn notify(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            tracing::info!(?reason, "VM exit requested");
            *slot = Some(reason);
        }
        if let Err(e) = self.event.write(1) {
            tracing::error!(error = %e, "cannot signal the VM exit event");
        }
    }

    /// The reported reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The eventfd that becomes readable on the first report.
    pub fn eventfd(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_statuses() {
        for status in [ExitStatus::PowerOff, ExitStatus::Reboot, ExitStatus::Stopped, ExitStatus::Config] {
            assert_eq!(ExitStatus::from_code(i32::from(status.code())), Some(status));
        }
        assert_eq!(ExitStatus::from_code(6), None);
        assert_eq!(ExitStatus::from_code(-1), None);
    }

    #[test]
    fn first_reason_wins() {
        let n = ExitNotifier::new().unwrap();
        n.notify(ExitReason::PowerOff);
        n.notify(ExitReason::Reset(ResetCause::TripleFault));
        assert_eq!(n.reason(), Some(ExitReason::PowerOff));
        assert_eq!(n.eventfd().read().unwrap(), 2);
    }

    #[test]
    fn statuses_are_distinct() {
        let all = [
            ExitStatus::PowerOff,
            ExitStatus::Fatal,
            ExitStatus::Usage,
            ExitStatus::Config,
            ExitStatus::Reboot,
            ExitStatus::Stopped,
        ];
        let mut codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
