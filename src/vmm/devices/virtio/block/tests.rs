//! Device-model tests on in-memory queues: every request type, malformed chains, caps.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::{RequestExecutor, MAX_SEGMENTS};
use super::*;
use crate::block::raw::RawFile;
use crate::vmm::api::config::RateLimit;
use crate::vmm::devices::virtio::rate_limiter::RateLimiter;
use crate::vmm::devices::virtio::test_rings::{TestRing, NEXT, WRITE};
use crate::vmm::vstate::memory::create_guest_memory;

const HEADER: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;
const DISK_SIZE: u64 = 1 << 20;

struct Rig {
    mem: GuestMemory,
    executor: RequestExecutor,
    disk: tempfile::NamedTempFile,
}

fn rig(read_only: bool) -> Rig {
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(DISK_SIZE).unwrap();
    let backend = RawFile::open(disk.path(), read_only).unwrap();
    let executor = RequestExecutor::new(Box::new(backend), read_only, "vol-0123456789abcdef0123", QUEUE_SIZE);
    Rig { mem: create_guest_memory(4).unwrap(), executor, disk }
}

fn header(mem: &GuestMemory, request_type: u32, sector: u64) -> Descriptor {
    mem.write_obj(request_type, GuestAddress(HEADER)).unwrap();
    mem.write_obj(0u32, GuestAddress(HEADER + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(HEADER + 8)).unwrap();
    Descriptor::new(HEADER, 16, NEXT, 0)
}

fn status_desc() -> Descriptor {
    Descriptor::new(STATUS, 1, WRITE, 0)
}

impl Rig {
    fn run(&mut self, chain: Vec<Descriptor>) -> (u32, u8) {
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let used = self.executor.execute(&self.mem, chain.into_iter());
        (used, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }
}

#[test]
fn multi_segment_write_then_read() {
    let mut r = rig(false);
    r.mem.write_slice(&[0x11; 512], GuestAddress(DATA)).unwrap();
    r.mem.write_slice(&[0x22; 1024], GuestAddress(DATA + 0x1000)).unwrap();
    let out = vec![
        header(&r.mem, 1, 4),
        Descriptor::new(DATA, 512, NEXT, 0),
        Descriptor::new(DATA + 0x1000, 1024, NEXT, 0),
        status_desc(),
    ];
    assert_eq!(r.run(out), (1, 0));
    let file = std::fs::read(r.disk.path()).unwrap();
    assert!(file[2048..2560].iter().all(|b| *b == 0x11));
    assert!(file[2560..3584].iter().all(|b| *b == 0x22));

    let read =
        vec![header(&r.mem, 0, 5), Descriptor::new(DATA + 0x8000, 1024, NEXT | WRITE, 0), status_desc()];
    assert_eq!(r.run(read), (1025, 0));
    let mut back = [0u8; 1024];
    r.mem.read_slice(&mut back, GuestAddress(DATA + 0x8000)).unwrap();
    assert!(back[..512].iter().all(|b| *b == 0x22) && back[512..].iter().all(|b| *b == 0x22));
}

#[test]
fn flush_and_get_id() {
    let mut r = rig(false);
    assert_eq!(r.run(vec![header(&r.mem, 4, 0), status_desc()]), (1, 0));
    let id = vec![header(&r.mem, 8, 0), Descriptor::new(DATA, 64, NEXT | WRITE, 0), status_desc()];
    assert_eq!(r.run(id), (21, 0));
    let mut back = [0u8; 20];
    r.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(&back, b"vol-0123456789abcdef");
}

fn discard_segments(mem: &GuestMemory, segments: &[(u64, u32)]) -> Descriptor {
    for (i, (sector, count)) in segments.iter().enumerate() {
        let at = DATA + 16 * i as u64;
        mem.write_obj(*sector, GuestAddress(at)).unwrap();
        mem.write_obj(*count, GuestAddress(at + 8)).unwrap();
        mem.write_obj(0u32, GuestAddress(at + 12)).unwrap();
    }
    Descriptor::new(DATA, 16 * segments.len() as u32, NEXT, 0)
}

#[test]
fn discard_and_write_zeroes_punch_holes() {
    let mut r = rig(false);
    std::fs::write(r.disk.path(), vec![0x77u8; DISK_SIZE as usize]).unwrap();
    let before = std::fs::metadata(r.disk.path()).unwrap().blocks();
    let discard =
        vec![header(&r.mem, 11, 0), discard_segments(&r.mem, &[(0, 256), (512, 256)]), status_desc()];
    assert_eq!(r.run(discard), (1, 0));
    let zeroes = vec![header(&r.mem, 13, 0), discard_segments(&r.mem, &[(1024, 128)]), status_desc()];
    assert_eq!(r.run(zeroes), (1, 0));
    let file = std::fs::read(r.disk.path()).unwrap();
    assert!(file[..128 * 1024].iter().all(|b| *b == 0));
    assert!(file[128 * 1024..256 * 1024].iter().all(|b| *b == 0x77));
    assert!(file[512 * 1024..576 * 1024].iter().all(|b| *b == 0));
    assert!(std::fs::metadata(r.disk.path()).unwrap().blocks() < before);
    let beyond = vec![header(&r.mem, 11, 0), discard_segments(&r.mem, &[(2047, 2)]), status_desc()];
    assert_eq!(r.run(beyond), (1, 1));
}

#[test]
fn bad_requests_fail_with_ioerr_or_unsupp() {
    let mut r = rig(false);
    let data = |len, flags| Descriptor::new(DATA, len, flags | NEXT, 0);
    type Build = Box<dyn Fn(&GuestMemory) -> Vec<Descriptor>>;
    // Each chain is built right before it runs: they share the header buffer.
    let cases: Vec<(&str, Build, u8)> = vec![
        ("beyond the disk", Box::new(move |m| vec![header(m, 0, 2047), data(1024, WRITE), status_desc()]), 1),
        (
            "sector overflow",
            Box::new(move |m| vec![header(m, 0, u64::MAX / 2), data(512, WRITE), status_desc()]),
            1,
        ),
        ("partial sector", Box::new(move |m| vec![header(m, 1, 0), data(100, 0), status_desc()]), 1),
        (
            "zero-length buffer",
            Box::new(move |m| vec![header(m, 0, 0), data(512, WRITE), data(0, WRITE), status_desc()]),
            1,
        ),
        (
            "IN into a readable buffer",
            Box::new(move |m| vec![header(m, 0, 0), data(512, 0), status_desc()]),
            1,
        ),
        (
            "OUT from a writable buffer",
            Box::new(move |m| vec![header(m, 1, 0), data(512, WRITE), status_desc()]),
            1,
        ),
        (
            "buffer outside RAM",
            Box::new(move |m| {
                vec![header(m, 0, 0), Descriptor::new(0x4000_0000, 512, WRITE | NEXT, 0), status_desc()]
            }),
            1,
        ),
        (
            "buffer crossing the end of RAM",
            Box::new(move |m| {
                vec![header(m, 0, 0), Descriptor::new((4 << 20) - 256, 512, WRITE | NEXT, 0), status_desc()]
            }),
            1,
        ),
        ("short header", Box::new(move |_m| vec![Descriptor::new(HEADER, 8, NEXT, 0), status_desc()]), 1),
        (
            "writable header",
            Box::new(move |_m| vec![Descriptor::new(HEADER, 16, NEXT | WRITE, 0), status_desc()]),
            1,
        ),
        ("unknown type", Box::new(move |m| vec![header(m, 99, 0), status_desc()]), 2),
        ("empty discard", Box::new(move |m| vec![header(m, 11, 0), status_desc()]), 1),
        ("get id without buffer", Box::new(move |m| vec![header(m, 8, 0), status_desc()]), 1),
    ];
    for (what, build, expected) in cases {
        let chain = build(&r.mem);
        let (used, status) = r.run(chain);
        assert_eq!((used, status), (1, expected), "{what}");
    }
    let mut chain = vec![header(&r.mem, 0, 0)];
    chain.extend((0..MAX_SEGMENTS + 1).map(|_| data(512, WRITE)));
    chain.push(status_desc());
    assert_eq!(r.run(chain), (1, 1), "too many segments");
}

#[test]
fn requests_without_a_status_byte_are_dropped() {
    let mut r = rig(false);
    for chain in [
        vec![],
        vec![status_desc()],
        vec![header(&r.mem, 4, 0), Descriptor::new(STATUS, 1, 0, 0)],
        vec![header(&r.mem, 4, 0), Descriptor::new(STATUS, 0, WRITE, 0)],
        vec![header(&r.mem, 4, 0), Descriptor::new(0x4000_0000, 1, WRITE, 0)],
    ] {
        let (used, status) = r.run(chain);
        assert_eq!((used, status), (0, 0xee));
    }
}

#[test]
fn read_only_disks_refuse_writes_and_discards() {
    let mut r = rig(true);
    let out = vec![header(&r.mem, 1, 0), Descriptor::new(DATA, 512, NEXT, 0), status_desc()];
    assert_eq!(r.run(out), (1, 1));
    let discard = vec![header(&r.mem, 11, 0), discard_segments(&r.mem, &[(0, 1)]), status_desc()];
    assert_eq!(r.run(discard), (1, 1));
    assert_eq!(r.run(vec![header(&r.mem, 4, 0), status_desc()]), (1, 0), "flush succeeds");
    let device = VirtioBlock::new(
        Box::new(RawFile::open(r.disk.path(), true).unwrap()),
        true,
        "ro",
        RateLimit::default(),
    );
    assert_ne!(device.features() & VIRTIO_BLK_F_RO, 0);
    assert_eq!(device.features() & VIRTIO_BLK_F_DISCARD, 0);
}

#[test]
fn config_space_reports_capacity_and_limits() {
    let r = rig(false);
    let device = VirtioBlock::new(
        Box::new(RawFile::open(r.disk.path(), false).unwrap()),
        false,
        "x",
        RateLimit::default(),
    );
    let mut capacity = [0u8; 8];
    device.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), DISK_SIZE / 512);
    let mut seg_max = [0u8; 4];
    device.read_config(12, &mut seg_max);
    assert_eq!(u32::from_le_bytes(seg_max), MAX_SEGMENTS as u32);
}

const RING: TestRing = TestRing::at(0x1000);

fn block_queue(r: &Rig, size: u16) -> (BlockQueue, EventFd) {
    limited_block_queue(r, size, RateLimit::default())
}

fn limited_block_queue(r: &Rig, size: u16, limit: RateLimit) -> (BlockQueue, EventFd) {
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let backend = RawFile::open(r.disk.path(), false).unwrap();
    let executor = RequestExecutor::new(Box::new(backend), false, "q", QUEUE_SIZE);
    let queue = BlockQueue {
        mem: r.mem.clone(),
        queue: RING.queue(&r.mem, QUEUE_SIZE, size),
        executor: Arc::new(Mutex::new(executor)),
        interrupt: Arc::new(Interrupt::new(irq.try_clone().unwrap())),
        limiter: RateLimiter::new(&limit).unwrap(),
    };
    (queue, irq)
}

#[test]
fn rate_limited_requests_wait_in_the_ring_until_the_timer() {
    let r = rig(false);
    let limit = RateLimit { ops_per_sec: Some(4), bytes_per_sec: None };
    let (mut q, _irq) = limited_block_queue(&r, 16, limit);
    header(&r.mem, 4, 0); // FLUSH
    let heads: Vec<u16> = (0..6).map(|i| 2 * i).collect();
    for &head in &heads {
        RING.put_desc(&r.mem, head, (HEADER, 16, NEXT, head + 1));
        RING.put_desc(&r.mem, head + 1, (STATUS + u64::from(head), 1, WRITE, 0));
    }
    RING.publish(&r.mem, 0, &heads);
    q.process_queue(0);
    assert_eq!(RING.used_count(&r.mem), 4, "a one-second burst of four");
    q.process_queue(0);
    assert_eq!(RING.used_count(&r.mem), 4, "a kick does not bypass the limit");
    let start = std::time::Instant::now();
    q.process_source(0); // waits for the timer: one token after 250 ms
    assert!(start.elapsed() >= std::time::Duration::from_millis(200), "{:?}", start.elapsed());
    assert_eq!(RING.used_count(&r.mem), 5);
}

#[test]
fn completions_are_batched_into_one_interrupt() {
    let r = rig(false);
    let (mut q, irq) = block_queue(&r, 16);
    header(&r.mem, 4, 0);
    for head in [0u16, 2] {
        RING.put_desc(&r.mem, head, (HEADER, 16, NEXT, head + 1));
        RING.put_desc(&r.mem, head + 1, (STATUS + u64::from(head), 1, WRITE, 0));
    }
    RING.publish(&r.mem, 0, &[0, 2]);
    q.process_queue(0);
    assert_eq!(RING.used_count(&r.mem), 2, "two used entries");
    assert_eq!(irq.read().unwrap(), 1, "one interrupt for the batch");
}

#[test]
fn descriptor_loops_and_bogus_rings_do_not_hang_or_crash() {
    let r = rig(false);
    let (mut q, _irq) = block_queue(&r, 16);
    header(&r.mem, 0, 0);
    // A chain whose data descriptor points back at itself.
    RING.put_desc(&r.mem, 0, (HEADER, 16, NEXT, 1));
    RING.put_desc(&r.mem, 1, (DATA, 512, NEXT | WRITE, 1));
    // A head index beyond the queue.
    RING.publish(&r.mem, 0, &[0, 200]);
    q.process_queue(0);
    // An available index far ahead of the ring: the queue refuses to iterate.
    r.mem.write_obj(1000u16, GuestAddress(RING.avail + 2)).unwrap();
    q.process_queue(0);
    let used = RING.used_count(&r.mem);
    assert!(used <= 2, "used {used}");
}
