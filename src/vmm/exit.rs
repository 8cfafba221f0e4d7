//! Why a VM ended, and how vCPUs and devices report it; each reason maps to one of the
//! process exit statuses of the contract ([`ExitStatus`]).

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::vmm::api::ExitStatus;

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
    fn first_reason_wins() {
        let n = ExitNotifier::new().unwrap();
        n.notify(ExitReason::PowerOff);
        n.notify(ExitReason::Reset(ResetCause::TripleFault));
        assert_eq!(n.reason(), Some(ExitReason::PowerOff));
        assert_eq!(n.eventfd().read().unwrap(), 2);
    }
}
