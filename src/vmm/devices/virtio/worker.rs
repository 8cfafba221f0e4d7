//! The event loop that serves a device's queues on its own thread.

use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ActivateError;
use crate::vmm::seccomp::ThreadKind;

/// What a device does when the guest notifies one of its queues.
pub trait QueueHandler: Send + 'static {
    /// Serves queue `index`; called on the worker thread.
    fn process_queue(&mut self, index: usize);
    /// Serves host-side event source `index` (see [`QueueWorker::spawn`]), which became
    /// readable. Sources are edge-triggered: the handler reads until it would block, or
    /// until it must wait for the guest (and resumes when a queue is notified).
    fn process_source(&mut self, index: usize) {
        tracing::debug!(index, "event on a source the device does not serve");
    }
}

const STOP_TOKEN: u64 = u64::MAX;
/// Tokens of host-side sources start here; queue tokens are the queue indexes.
const SOURCE_TOKEN_BASE: u64 = 1 << 32;

/// A thread running an epoll loop over one device's queue eventfds.
pub struct QueueWorker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl QueueWorker {
    /// Starts serving `queue_events` and the host-side `sources` (descriptors the handler
    /// owns, such as a tap) with `handler` on a thread named `name`. Dropping the worker
    /// stops it.
    pub fn spawn(
        name: String,
        queue_events: Vec<EventFd>,
        sources: &[RawFd],
        handler: impl QueueHandler,
    ) -> Result<Self, ActivateError> {
        Self::try_spawn(name, queue_events, sources, handler)
            .map_err(|e| ActivateError(format!("device worker thread: {e}")))
    }

    fn try_spawn(
        name: String,
        queue_events: Vec<EventFd>,
        sources: &[RawFd],
        mut handler: impl QueueHandler,
    ) -> std::io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        for (index, event) in queue_events.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                event.as_raw_fd(),
                EpollEvent::new(EventSet::IN, index as u64),
            )?;
        }
        for (index, &fd) in sources.iter().enumerate() {
            let events = EventSet::IN | EventSet::EDGE_TRIGGERED;
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(events, SOURCE_TOKEN_BASE + index as u64),
            )?;
        }
        epoll.ctl(ControlOperation::Add, stop.as_raw_fd(), EpollEvent::new(EventSet::IN, STOP_TOKEN))?;
        let event_count = queue_events.len() + sources.len() + 1;
        let thread = crate::vmm::threads::spawn(ThreadKind::Worker, name, move || {
            let mut events = vec![EpollEvent::default(); event_count];
            loop {
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "virtio worker epoll failed");
                        return;
                    }
                };
                for event in &events[..n] {
                    let token = event.data();
                    if token == STOP_TOKEN {
                        return;
                    }
                    if token >= SOURCE_TOKEN_BASE {
                        handler.process_source((token - SOURCE_TOKEN_BASE) as usize);
                        continue;
                    }
                    let index = token as usize;
                    if let Some(queue_event) = queue_events.get(index) {
                        // Clear the notification before serving, so none is lost.
                        let _ = queue_event.read();
                        handler.process_queue(index);
                    }
                }
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(e) = self.stop.write(1) {
                tracing::error!(error = %e, "cannot stop a virtio worker");
                return;
            }
            if thread.join().is_err() {
                tracing::error!("a virtio worker thread panicked");
            }
        }
    }
}

impl Drop for QueueWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Forward(mpsc::Sender<usize>);

    impl QueueHandler for Forward {
        fn process_queue(&mut self, index: usize) {
            self.0.send(index).unwrap();
        }
        fn process_source(&mut self, index: usize) {
            self.0.send(100 + index).unwrap();
        }
    }

    #[test]
    fn notifications_reach_the_handler_until_stopped() {
        let events: Vec<EventFd> = (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect();
        let kick = events[1].try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        let source = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut worker =
            QueueWorker::spawn("test-worker".into(), events, &[source.as_raw_fd()], Forward(tx)).unwrap();
        kick.write(1).unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), 1);
        source.write(1).unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), 100);
        worker.stop();
        kick.write(1).unwrap();
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
    }
}
