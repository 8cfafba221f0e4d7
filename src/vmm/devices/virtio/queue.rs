//! Queue-draining loops shared by the devices: take the guest's descriptor chains with
//! notifications suppressed, and never spin on a ring whose indexes lie.

use std::sync::atomic::{fence, Ordering};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};

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

/// The available ring's flag by which a driver asks for no interrupts (virtio 1.2, 2.7.7).
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether the driver wants an interrupt for what was just completed: its available ring's
/// flags say, as no device offers event indexes (virtio-queue's `needs_notification` reads
/// only those and ignores the flags). Linux sets `VRING_AVAIL_F_NO_INTERRUPT` while its NAPI
/// poll reads the used ring anyway, so an interrupt then is one the guest takes for nothing.
pub fn needs_interrupt(queue: &Queue, mem: &GuestMemory) -> bool {
    // The used ring's index is published before the flags are read, as the driver clears
    // the flag before it reads that index: one of the two sees the other's write.
    fence(Ordering::SeqCst);
    match mem.read_obj::<u16>(GuestAddress(queue.avail_ring())) {
        Ok(flags) => u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT == 0,
        Err(_) => true,
    }
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
    use crate::vmm::devices::virtio::test_rings::{TestRing, WRITE};
    use crate::vmm::vstate::memory::create_guest_memory;

    const RING: TestRing = TestRing::at(0x1_0000);

    /// Publishes one chain with the available ring's flags set to `flags`, serves it with
    /// `drain` and says whether the driver was to be interrupted.
    fn drained_with_flags(flags: u16) -> bool {
        let mem = create_guest_memory(4).unwrap();
        let mut queue = RING.queue(&mem, 8, 8);
        RING.put_desc(&mem, 0, (0x10_0000, 16, WRITE, 0));
        RING.publish(&mem, 0, &[0]);
        mem.write_obj(flags, GuestAddress(RING.avail)).unwrap();
        let interrupt = drain(&mut queue, &mem, |_| Some(16));
        assert_eq!(RING.used_entry(&mem, 0), (0, 16), "the chain completes either way");
        interrupt
    }

    #[test]
    fn a_driver_that_asks_for_no_interrupts_gets_none() {
        assert!(drained_with_flags(0));
        assert!(!drained_with_flags(VRING_AVAIL_F_NO_INTERRUPT));
    }

    #[test]
    fn an_unreadable_available_ring_still_interrupts() {
        let mem = create_guest_memory(4).unwrap();
        let mut queue = RING.queue(&mem, 8, 8);
        queue.set_avail_ring_address(Some(0x40_0000), Some(0)); // past the end of RAM
        assert_eq!(queue.avail_ring(), 0x40_0000);
        assert!(needs_interrupt(&queue, &mem));
    }
}
