//! Following an instance as it runs: the bytes its guest writes to the serial console,
//! polled from the console log (a watcher costs the VMM nothing), and its state changes,
//! each one as the daemon makes it.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::broadcast::Receiver;

use super::events::StateEvent;
use super::DaemonError;
use crate::state::db::InstanceStore;
use crate::state::instance::InstanceState;

/// Console bytes read at most per poll.
const CHUNK: u64 = 64 << 10;

/// Something that happened to a watched instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceEvent {
    /// The guest wrote to its console.
    Console(Vec<u8>),
    /// The instance is in a new state (the first event gives the state it was in).
    State {
        /// Before (none for the first event).
        previous: Option<InstanceState>,
        /// Now.
        current: InstanceState,
    },
}

/// One watcher's position in an instance's console and life cycle.
pub struct Watch {
    /// Where the state is reread when changes were missed.
    db: Arc<dyn InstanceStore>,
    id: String,
    console: PathBuf,
    offset: u64,
    changes: Receiver<StateEvent>,
    state: Option<InstanceState>,
}

impl Watch {
    /// Watches `id`, recorded in `db`, through `changes` (subscribed before this call,
    /// so nothing between is missed) and its console log, from now on or from the last
    /// 64 KiB of the log when `from_start`.
    pub fn new(
        db: Arc<dyn InstanceStore>,
        changes: Receiver<StateEvent>,
        id: &str,
        console: PathBuf,
        from_start: bool,
    ) -> Self {
        let len = std::fs::metadata(&console).map_or(0, |m| m.len());
        let offset = if from_start { len.saturating_sub(CHUNK) } else { len };
        Self { db, id: id.to_owned(), console, offset, changes, state: None }
    }

    /// What happened since the last poll: console output first, then a state change.
    pub fn poll(&mut self) -> Result<Vec<InstanceEvent>, DaemonError> {
        let mut events = Vec::new();
        let bytes = self
            .read_console()
            .map_err(|e| DaemonError::Internal(format!("{}: {e}", self.console.display())))?;
        if !bytes.is_empty() {
            events.push(InstanceEvent::Console(bytes));
        }
        let mut states = Vec::new();
        let mut reread = self.state.is_none();
        loop {
            match self.changes.try_recv() {
                Ok(event) if event.id == self.id => states.push(event.state),
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) => reread = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        if reread {
            // The first poll, or changes were missed: the database has the state now.
            states = vec![self.db.get(&self.id)?.state];
        }
        for current in states {
            if Some(current) != self.state {
                events.push(InstanceEvent::State { previous: self.state, current });
                self.state = Some(current);
            }
        }
        Ok(events)
    }

    /// Whether nothing more can happen: the instance is terminated.
    pub fn finished(&self) -> bool {
        self.state == Some(InstanceState::Terminated)
    }

    fn read_console(&mut self) -> std::io::Result<Vec<u8>> {
        let mut file = match std::fs::File::open(&self.console) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() < self.offset {
            // A new log (the instance directory was recreated): start over.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.take(CHUNK).read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        Ok(bytes)
    }
}
