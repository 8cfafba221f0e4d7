//! Split virtqueues laid out in guest memory by hand, for device-model tests.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::vmm::vstate::memory::GuestMemory;

/// Descriptor flag: the chain continues at `next`.
pub const NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const WRITE: u16 = 2;

/// Where one ring's three parts lie in guest memory.
pub struct TestRing {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

impl TestRing {
    /// A ring whose parts start at `base` (each part gets 16 KiB).
    pub const fn at(base: u64) -> Self {
        Self { desc: base, avail: base + 0x4000, used: base + 0x8000 }
    }

    /// A ready queue of `size` entries (at most `max`) over this ring.
    pub fn queue(&self, mem: &GuestMemory, max: u16, size: u16) -> Queue {
        let mut q = Queue::new(max).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(self.desc as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(mem));
        q
    }

    /// Writes descriptor `index`: (address, length, flags, next).
    pub fn put_desc(&self, mem: &GuestMemory, index: u16, desc: (u64, u32, u16, u16)) {
        let at = self.desc + 16 * u64::from(index);
        mem.write_obj(desc.0, GuestAddress(at)).unwrap();
        mem.write_obj(desc.1, GuestAddress(at + 8)).unwrap();
        mem.write_obj(desc.2, GuestAddress(at + 12)).unwrap();
        mem.write_obj(desc.3, GuestAddress(at + 14)).unwrap();
    }

    /// Makes `heads` available, after the `already` chains published before.
    pub fn publish(&self, mem: &GuestMemory, already: u16, heads: &[u16]) {
        for (i, head) in heads.iter().enumerate() {
            let slot = u64::from(already) + i as u64;
            mem.write_obj(*head, GuestAddress(self.avail + 4 + 2 * slot)).unwrap();
        }
        mem.write_obj(already + heads.len() as u16, GuestAddress(self.avail + 2)).unwrap();
    }

    /// How many chains the device has returned.
    pub fn used_count(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// The (head, length) of used entry `n`.
    pub fn used_entry(&self, mem: &GuestMemory, n: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(n);
        (mem.read_obj(GuestAddress(at)).unwrap(), mem.read_obj(GuestAddress(at + 4)).unwrap())
    }
}
