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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::test_rings::TestRing;
    use crate::vmm::vstate::memory::create_guest_memory;
    use vm_memory::GuestAddress;

    const RING: TestRing = TestRing::at(0x1000);
    const SIZE: u16 = 16;

    /// A queue with event indexes on, and `count` one-descriptor chains available.
    fn event_idx_queue(mem: &GuestMemory, count: u16) -> Queue {
        let mut queue = RING.queue(mem, SIZE, SIZE);
        queue.set_event_idx(true);
        for head in 0..count {
            RING.put_desc(mem, head, (0x10_0000, 8, 0, 0));
        }
        RING.publish(mem, 0, &(0..count).collect::<Vec<_>>());
        queue
    }

    /// `avail_event`, after the used ring's entries: where the driver must notify next.
    fn avail_event(mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(RING.used + 4 + 8 * u64::from(SIZE))).unwrap()
    }

    /// Sets `used_event`, after the available ring's entries: how far the device may complete
    /// before the driver wants an interrupt.
    fn set_used_event(mem: &GuestMemory, value: u16) {
        mem.write_obj(value, GuestAddress(RING.avail + 4 + 2 * u64::from(SIZE))).unwrap();
    }

    #[test]
    fn a_drained_queue_asks_to_be_notified_at_the_next_chain() {
        let mem = create_guest_memory(4).unwrap();
        let mut queue = event_idx_queue(&mem, 3);
        set_used_event(&mem, 0);
        assert!(drain(&mut queue, &mem, |_| Some(0)), "the first completion is wanted");
        assert_eq!(RING.used_count(&mem), 3);
        assert_eq!(avail_event(&mem), 3, "a kick is due when chain 3 is made available");
    }

    #[test]
    fn interrupts_wait_until_the_driver_s_used_event() {
        let mem = create_guest_memory(4).unwrap();
        let mut queue = event_idx_queue(&mem, 4);
        // The driver wants an interrupt once entry 2 is used (when the used index passes 2).
        set_used_event(&mem, 2);
        let mut served = 0;
        let two = |_: Chain<'_>| {
            served += 1;
            (served <= 2).then_some(0)
        };
        assert!(!drain(&mut queue, &mem, two));
        assert_eq!(RING.used_count(&mem), 2, "two served, entry 2 not yet");
        assert!(drain(&mut queue, &mem, |_| Some(0)), "entry 2 used: interrupt");
        assert_eq!(RING.used_count(&mem), 4);
    }

    #[test]
    fn an_empty_queue_asks_to_be_notified_at_its_first_chain() {
        let mem = create_guest_memory(4).unwrap();
        let mut queue = event_idx_queue(&mem, 1);
        assert!(next_chain(&mut queue, &mem).is_some());
        assert!(next_chain(&mut queue, &mem).is_none());
        assert_eq!(avail_event(&mem), 1, "a kick is due when chain 1 is made available");
    }
}
