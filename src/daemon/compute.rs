//! The seam the controllers (load balancers, auto scaling groups, environments) drive
//! instances through. A controller acts as an API caller would, never on the store or the
//! network plane: [`Compute`] holds what it may do, the daemon implements it with the same
//! services the API calls, and a controller's unit tests put a fake in its place that keeps
//! instances in memory. Controllers mark what they launch with tags, as AWS does, and find
//! their instances again by them, so the database stays the one record of what exists.

use tokio::sync::broadcast;

use super::describe::Tagged;
use super::events::StateEvent;
use super::instances::{RunSpec, StateChange};
use super::{Daemon, DaemonError};
use crate::state::instance::{InstanceRecord, InstanceState};

/// What a controller may do with instances.
pub trait Compute: Send + Sync {
    /// Launches instances as RunInstances does, each carrying `spec.tags` from the start.
    fn run_instances(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError>;
    /// Terminates instances as TerminateInstances does.
    fn terminate_instances(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError>;
    /// Every instance not terminated.
    fn live_instances(&self) -> Result<Vec<InstanceRecord>, DaemonError>;
    /// The instances not terminated that carry tag `key` with exactly `value`, with all
    /// their tags.
    fn instances_tagged(&self, key: &str, value: &str) -> Result<Vec<Tagged<InstanceRecord>>, DaemonError>;
    /// Instance state changes from now on (a controller still rereads the state: events
    /// only say when to look).
    fn instance_events(&self) -> broadcast::Receiver<StateEvent>;
}

impl Compute for Daemon {
    fn run_instances(&self, spec: &RunSpec) -> Result<Vec<InstanceRecord>, DaemonError> {
        self.instances.run(spec)
    }

    fn terminate_instances(&self, ids: &[String]) -> Result<Vec<StateChange>, DaemonError> {
        self.instances.terminate(ids)
    }

    fn live_instances(&self) -> Result<Vec<InstanceRecord>, DaemonError> {
        let live: Vec<InstanceState> =
            InstanceState::ALL.into_iter().filter(|s| *s != InstanceState::Terminated).collect();
        self.instances.describe(&[], &live)
    }

    fn instances_tagged(&self, key: &str, value: &str) -> Result<Vec<Tagged<InstanceRecord>>, DaemonError> {
        let mut index = self.tags.index()?;
        Ok(self
            .live_instances()?
            .into_iter()
            .map(|record| Tagged { tags: index.remove(&record.id).unwrap_or_default(), record })
            .filter(|item| item.tags.iter().any(|tag| tag.key == key && tag.value == value))
            .collect())
    }

    fn instance_events(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }
}
