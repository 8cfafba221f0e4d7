//! The VMM's threads (vCPUs, device workers, the control socket), all made the same way:
//! each installs its kind's seccomp filter before running its body.
//!
//! Their stacks are 1 MiB, below one huge page: with transparent huge pages on, a 2 MiB
//! stack that happens to start on a 2 MiB boundary is backed by a huge page on first touch,
//! and each such thread then costs 2 MiB of resident memory instead of a few pages
//! (measured in the boot benchmark's memory figures). The VMM's own code paths need far
//! less than 1 MiB.
//!
//! A filtered thread may not create threads (a new thread would inherit its filter on top
//! of its own), so what a filtered thread starts (device workers, when a vCPU activates a
//! device) is started by the launcher: a thread started before any filter, whose own
//! filter allows creating threads and what workers do.

use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::{Builder, JoinHandle};

use crate::vmm::seccomp::{self, ThreadKind};

/// Stack size of every VMM thread.
const STACK_SIZE: usize = 1 << 20;

type Job = Box<dyn FnOnce() + Send>;

/// The launcher's queue, once it runs.
static LAUNCHER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Starts `body` on a new thread called `name`, filtered as a `kind` thread.
pub fn spawn<T, F>(kind: ThreadKind, name: String, body: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let start = move || {
        Builder::new().name(name).stack_size(STACK_SIZE).spawn(move || {
            seccomp::enter(kind);
            body()
        })
    };
    match LAUNCHER.get() {
        Some(launcher) if seccomp::is_filtered() => {
            let (reply, started) = sync_channel(1);
            let job: Job = Box::new(move || {
                let _ = reply.send(start());
            });
            let gone = || std::io::Error::other("the thread launcher has stopped");
            launcher.lock().unwrap_or_else(|p| p.into_inner()).send(job).map_err(|_| gone())?;
            started.recv().map_err(|_| gone())?
        }
        _ => start(),
    }
}

/// Starts the launcher, from an unfiltered thread, before any thread is filtered.
pub fn start_launcher() -> std::io::Result<()> {
    let (jobs, queue) = channel::<Job>();
    spawn(ThreadKind::Launcher, "launcher".into(), move || {
        for job in queue {
            job();
        }
    })?;
    // Started twice, the second launcher's queue closes and it ends.
    let _ = LAUNCHER.set(Mutex::new(jobs));
    Ok(())
}
