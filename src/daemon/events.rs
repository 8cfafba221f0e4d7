//! Instance state changes as they happen. The instance core publishes each change once,
//! after the database has it; watches (and the controllers to come) subscribe. A
//! subscriber that falls more than [`EVENTS_KEPT`] changes behind is told so, and rereads
//! the state from the database: events say something changed, the database says what is.

use tokio::sync::broadcast;

use crate::state::instance::InstanceState;

/// State changes kept for subscribers that fall behind.
pub const EVENTS_KEPT: usize = 256;

/// One instance entered a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    /// The instance.
    pub id: String,
    /// Its new state.
    pub state: InstanceState,
}

/// The daemon's one stream of instance state changes.
#[derive(Clone)]
pub struct Events(broadcast::Sender<StateEvent>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(EVENTS_KEPT).0)
    }
}

impl Events {
    /// Tells every subscriber that `id` is now in `state`.
    pub fn publish(&self, id: &str, state: InstanceState) {
        // No subscriber is no error.
        let _ = self.0.send(StateEvent { id: id.to_owned(), state });
    }

    /// The changes published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    #[test]
    fn subscribers_see_later_changes_and_learn_when_they_fell_behind() {
        let events = Events::default();
        events.publish("i-early", InstanceState::Pending);
        let mut one = events.subscribe();
        events.publish("i-1", InstanceState::Running);
        assert_eq!(one.try_recv(), Ok(StateEvent { id: "i-1".into(), state: InstanceState::Running }));
        assert_eq!(one.try_recv(), Err(TryRecvError::Empty));
        for _ in 0..=EVENTS_KEPT {
            events.publish("i-1", InstanceState::Stopped);
        }
        assert!(matches!(one.try_recv(), Err(TryRecvError::Lagged(_))));
    }
}
