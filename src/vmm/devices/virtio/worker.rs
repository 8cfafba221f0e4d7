//! The event loop that serves a device's queues on its own thread.

use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What a device does when the guest notifies one of its queues.
pub trait QueueHandler: Send + 'static {
    /// Serves queue `index`; called on the worker thread.
    fn process_queue(&mut self, index: usize);
}

const STOP_TOKEN: u64 = u64::MAX;

/// A thread running an epoll loop over one device's queue eventfds.
pub struct QueueWorker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl QueueWorker {
    /// Starts serving `queue_events` with `handler` on a thread named `name`.
    pub fn spawn(
        name: String,
        queue_events: Vec<EventFd>,
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
        epoll.ctl(ControlOperation::Add, stop.as_raw_fd(), EpollEvent::new(EventSet::IN, STOP_TOKEN))?;
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let mut events = vec![EpollEvent::default(); queue_events.len() + 1];
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
    }

    #[test]
    fn notifications_reach_the_handler_until_stopped() {
        let events: Vec<EventFd> = (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect();
        let kick = events[1].try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut worker = QueueWorker::spawn("test-worker".into(), events, Forward(tx)).unwrap();
        kick.write(1).unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), 1);
        worker.stop();
        kick.write(1).unwrap();
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
    }
}
