//! The VMM's threads (vCPUs, device workers, the control socket), all made the same way.
//!
//! Their stacks are 1 MiB, below one huge page: with transparent huge pages on, a 2 MiB
//! stack that happens to start on a 2 MiB boundary is backed by a huge page on first touch,
//! and each such thread then costs 2 MiB of resident memory instead of a few pages
//! (measured in the boot benchmark's memory figures). The VMM's own code paths need far
//! less than 1 MiB.

use std::thread::{Builder, JoinHandle};

/// Stack size of every VMM thread.
const STACK_SIZE: usize = 1 << 20;

/// Starts `body` on a new thread called `name`.
pub fn spawn<T, F>(name: String, body: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name).stack_size(STACK_SIZE).spawn(body)
}
