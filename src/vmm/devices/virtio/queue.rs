//! Queue-draining loops shared by the devices: take the guest's descriptor chains with
//! notifications suppressed, and never spin on a ring whose indexes lie.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;

use crate::vmm::vstate::memory::GuestMemory;

/// A descriptor chain popped from a queue.
pub type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Serves every chain available on `queue` with `serve`, which returns the used length, or
/// `None` to leave the chain queued and stop (a rate limit will resume the queue).
/// Returns whether the driver must be interrupted (something completed and it asked to be).
pub fn drain(queue: &mut Queue, mem: &GuestMemory, mut serve: impl FnMut(Chain<'_>) -> Option<u32>) -> bool {
    let mut completed = false;
    loop {
        if queue.disable_notification(mem).is_err() {
            break;
        }
        let mut progressed = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let Some(used) = serve(chain) else {
                queue.go_to_previous_position();
                return completed && needs_interrupt(queue, mem);
            };
            if let Err(e) = queue.add_used(mem, head, used) {
                tracing::warn!(error = ?e, "cannot complete a virtio request");
            }
            progressed = true;
            completed = true;
        }
        // Re-check after enabling notifications, so a chain added meanwhile is not missed.
        // A ring that claims more chains yet yields none (a bogus available index) is not
        // retried: the guest would otherwise pin this thread.
        match queue.enable_notification(mem) {
            Ok(true) if progressed => continue,
            _ => break,
        }
    }
    completed && needs_interrupt(queue, mem)
}

/// The next available chain, with notifications enabled when there is none, so the driver
/// kicks the queue when it adds one.
pub fn next_chain<'a>(queue: &mut Queue, mem: &'a GuestMemory) -> Option<Chain<'a>> {
    if let Some(chain) = queue.pop_descriptor_chain(mem) {
        return Some(chain);
    }
    // One retry only: see `drain` on bogus indexes.
    match queue.enable_notification(mem) {
        Ok(true) => queue.pop_descriptor_chain(mem),
        _ => None,
    }
}

/// Total length of the chain's buffers (what a byte rate limit charges for it).
pub fn chain_bytes(chain: &Chain<'_>) -> u64 {
    chain.clone().map(|desc| u64::from(desc.len())).sum()
}

/// Whether the driver wants an interrupt for what was just completed.
pub fn needs_interrupt(queue: &mut Queue, mem: &GuestMemory) -> bool {
    queue.needs_notification(mem).unwrap_or(true)
}

/// Writes `data` into the chain's device-writable buffers; `None` if the chain is not all
/// writable, lies outside guest memory, or is too short for the data.
pub fn copy_to_chain(mem: &GuestMemory, chain: Chain<'_>, data: &[u8]) -> Option<u32> {
    let mut done = 0;
    for desc in chain {
        if !desc.is_write_only() {
            return None;
        }
        let n = (desc.len() as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], desc.addr()).ok()?;
        done += n;
        if done == data.len() {
            return u32::try_from(done).ok();
        }
    }
    None
}

/// Gathers the chain's device-readable buffers into `buf`; `None` if a buffer is writable,
/// outside guest memory, or the total exceeds `buf`.
pub fn copy_from_chain(mem: &GuestMemory, chain: Chain<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return None;
        }
        let n = desc.len() as usize;
        let target = buf.get_mut(len..len.checked_add(n)?)?;
        mem.read_slice(target, desc.addr()).ok()?;
        len += n;
    }
    Some(len)
}
