//! A hostile driver: the input becomes guest memory holding a split virtqueue (descriptor
//! table, available ring, buffers) and the queue's size and flags; the block device drains
//! it. Covers descriptor-chain parsing (loops, indirect tables, out-of-range addresses,
//! bogus indexes) and block request parsing (every header, segment and status layout).
//! It must never panic, hang or touch memory outside the guest's.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nuage::block::raw::RawFile;
use nuage::vmm::devices::virtio::block::request::RequestExecutor;
use nuage::vmm::devices::virtio::queue;
use nuage::vmm::vstate::memory::{create_guest_memory, GuestMemory};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

// Rings of up to 16 entries, packed so a short input reaches all of them.
const DESC: u64 = 0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x180;
/// Inputs land in (and are cleared from) the first 64 KiB of guest memory; buffers may still
/// point anywhere.
const WINDOW: usize = 64 * 1024;

/// A 64 KiB disk on tmpfs, made once.
fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("nuage-fuzz-disk-{}", std::process::id()));
        std::fs::File::create(&path).and_then(|f| f.set_len(64 * 1024)).expect("fuzz disk");
        path
    })
}

fn memory() -> &'static GuestMemory {
    static MEM: OnceLock<GuestMemory> = OnceLock::new();
    MEM.get_or_init(|| create_guest_memory(4).expect("guest memory"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&[size_log, flags], rest)) = data.split_first_chunk::<2>() else { return };
    let mem = memory();
    // Clear what an earlier input left, then lay this one out from address 0.
    let _ = mem.write_slice(&[0u8; WINDOW], GuestAddress(0));
    let _ = mem.write_slice(&rest[..rest.len().min(WINDOW)], GuestAddress(0));
    let mut q = match Queue::new(256) {
        Ok(q) => q,
        Err(_) => return,
    };
    q.set_size(1 << (size_log % 5));
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_event_idx(flags & 1 != 0);
    q.set_ready(true);
    if !q.is_valid(mem) {
        return;
    }
    let read_only = flags & 2 != 0;
    let Ok(backend) = RawFile::open(disk(), read_only) else { return };
    let mut executor = RequestExecutor::new(Box::new(backend), read_only, "fuzz", 256);
    queue::drain(&mut q, mem, |chain| Some(executor.execute(mem, chain)));
});
