//! How `nuage-vmm` ends, as its supervisor reads it: the process exit status.

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
    /// A thread made a system call its seccomp filter forbids: a bug in the VMM, or a
    /// guest that found one.
    Seccomp = 6,
}

impl ExitStatus {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status a VMM process exited with, read back by its supervisor; None for a code
    /// nuage-vmm never uses (a crash shows as a signal, not a code).
    pub fn from_code(code: i32) -> Option<Self> {
        [Self::PowerOff, Self::Fatal, Self::Usage, Self::Config, Self::Reboot, Self::Stopped, Self::Seccomp]
            .into_iter()
            .find(|status| i32::from(status.code()) == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_statuses() {
        for status in [
            ExitStatus::PowerOff,
            ExitStatus::Reboot,
            ExitStatus::Stopped,
            ExitStatus::Config,
            ExitStatus::Seccomp,
        ] {
            assert_eq!(ExitStatus::from_code(i32::from(status.code())), Some(status));
        }
        assert_eq!(ExitStatus::from_code(7), None);
        assert_eq!(ExitStatus::from_code(-1), None);
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
            ExitStatus::Seccomp,
        ];
        let mut codes: Vec<u8> = all.iter().map(|s| s.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
