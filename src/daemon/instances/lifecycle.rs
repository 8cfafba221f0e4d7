//! The instance life cycle as a table, apart from the code that acts on it: which states
//! each request accepts and where it moves an instance, and what becomes of an instance
//! when its VMM ends. The caller records each transition (compare and set in the
//! database, so a racing request cannot move an instance twice) and then acts.

use crate::state::instance::InstanceState::{self, *};
use crate::vmm::api::ExitStatus;

/// What a caller asks of instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// StartInstances.
    Start,
    /// StopInstances.
    Stop,
    /// RebootInstances.
    Reboot,
    /// TerminateInstances.
    Terminate,
}

impl Request {
    /// The states an instance may be in for the request to be taken: a request naming one
    /// instance in another state changes none.
    pub fn accepted_in(self) -> &'static [InstanceState] {
        match self {
            Request::Start => &[Stopped, Pending, Running],
            Request::Stop => &[Running, Stopping, Stopped],
            Request::Reboot => &[Running],
            Request::Terminate => &InstanceState::ALL,
        }
    }

    /// Where the request moves an instance in `state`, and the reason recorded; `None`
    /// where there is nothing to move (the instance is there or on its way, or a reboot,
    /// which keeps the instance running and replaces its VMM).
    pub fn moves(self, state: InstanceState) -> Option<(InstanceState, &'static str)> {
        match (self, state) {
            (Request::Start, Stopped) => Some((Pending, "Client.UserInitiatedStart")),
            (Request::Stop, Running) => Some((Stopping, "Client.UserInitiatedShutdown")),
            (Request::Terminate, Pending | Running | Stopping | Stopped) => {
                Some((ShuttingDown, "Client.UserInitiatedShutdown"))
            }
            _ => None,
        }
    }

    /// Every state the request moves an instance out of.
    pub fn moves_from(self) -> Vec<InstanceState> {
        InstanceState::ALL.into_iter().filter(|&state| self.moves(state).is_some()).collect()
    }
}

/// What the supervisor does once an instance's VMM has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Record the instance as stopped: with this reason, or (`None`) keeping the one the
    /// stop request recorded.
    Stop(Option<String>),
    /// Start a new VMM for it (it rebooted): the instance goes back through pending.
    Relaunch(&'static str),
    /// Finish its termination.
    FinishTermination,
    /// Nothing: no VMM was expected to run.
    Nothing,
}

/// What follows the end of the VMM of an instance in `state`, given whether a reboot was
/// asked for and the process's exit code (`None` for a VMM this daemon adopted, whose
/// status it cannot read, or one killed by a signal).
pub fn after_exit(state: InstanceState, reboot_requested: bool, code: Option<i32>) -> AfterExit {
    let status = code.and_then(ExitStatus::from_code);
    match state {
        Stopping => AfterExit::Stop(None),
        ShuttingDown => AfterExit::FinishTermination,
        Running if reboot_requested => AfterExit::Relaunch("Client.UserInitiatedReboot"),
        Running if status == Some(ExitStatus::Reboot) => {
            AfterExit::Relaunch("Client.InstanceInitiatedReboot")
        }
        // A VMM ending while its launch waits for it (pending) failed to start.
        Running | Pending => AfterExit::Stop(Some(match (status, code) {
            (Some(ExitStatus::PowerOff), _) => {
                "Client.InstanceInitiatedShutdown: the guest powered off".to_owned()
            }
            (Some(ExitStatus::Seccomp), _) => {
                "Server.InternalError: nuage-vmm made a system call its seccomp \
                                                filter forbids and was stopped (see vmm.log)"
                    .to_owned()
            }
            (_, Some(code)) => {
                format!("Server.InternalError: nuage-vmm exited with status {code} (see vmm.log)")
            }
            (_, None) => "Server.InternalError: nuage-vmm ended".to_owned(),
        })),
        Stopped | Terminated => AfterExit::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_move_only_what_they_accept_along_the_life_cycle() {
        for request in [Request::Start, Request::Stop, Request::Reboot, Request::Terminate] {
            for state in InstanceState::ALL {
                if let Some((next, reason)) = request.moves(state) {
                    assert!(request.accepted_in().contains(&state), "{request:?} moves {state} unaccepted");
                    assert!(state.can_become(next), "{request:?}: {state} -> {next} breaks the life cycle");
                    assert!(reason.starts_with("Client."), "{reason}");
                }
            }
        }
        assert_eq!(Request::Start.moves_from(), [Stopped]);
        assert_eq!(Request::Stop.moves_from(), [Running]);
        assert_eq!(Request::Reboot.moves_from(), []);
        assert_eq!(Request::Terminate.moves_from(), [Pending, Running, Stopping, Stopped]);
        // Asking again is no error and moves nothing.
        assert_eq!(Request::Start.moves(Running), None);
        assert_eq!(Request::Stop.moves(Stopped), None);
        assert_eq!(Request::Terminate.moves(Terminated), None);
        assert!(!Request::Reboot.accepted_in().contains(&Stopped));
        assert!(!Request::Stop.accepted_in().contains(&Pending));
    }

    #[test]
    fn a_vmm_exit_decides_by_state_request_and_status() {
        let code = |status: ExitStatus| Some(i32::from(status.code()));
        assert_eq!(after_exit(Stopping, false, None), AfterExit::Stop(None));
        assert_eq!(after_exit(Stopping, false, code(ExitStatus::Reboot)), AfterExit::Stop(None));
        assert_eq!(after_exit(ShuttingDown, true, code(ExitStatus::PowerOff)), AfterExit::FinishTermination);
        assert_eq!(after_exit(Running, true, None), AfterExit::Relaunch("Client.UserInitiatedReboot"));
        assert_eq!(
            after_exit(Running, false, code(ExitStatus::Reboot)),
            AfterExit::Relaunch("Client.InstanceInitiatedReboot")
        );
        let stopped = |code| match after_exit(Running, false, code) {
            AfterExit::Stop(Some(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert!(stopped(code(ExitStatus::PowerOff)).starts_with("Client.InstanceInitiatedShutdown"));
        assert!(stopped(code(ExitStatus::Fatal)).contains("exited with status 1"));
        assert!(stopped(code(ExitStatus::Seccomp)).contains("seccomp filter forbids"));
        assert!(stopped(Some(77)).contains("exited with status 77"));
        assert_eq!(stopped(None), "Server.InternalError: nuage-vmm ended");
        assert!(
            matches!(after_exit(Pending, false, Some(1)), AfterExit::Stop(Some(_))),
            "a failed launch stops"
        );
        for state in [Stopped, Terminated] {
            assert_eq!(after_exit(state, true, code(ExitStatus::Reboot)), AfterExit::Nothing);
        }
    }
}
