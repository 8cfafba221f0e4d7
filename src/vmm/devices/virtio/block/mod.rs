//! virtio-blk: a disk backed by a [`BlockBackend`], one request queue served on the
//! device's worker thread with completions batched into one interrupt per wake-up.
//!
//! I/O is synchronous `pread`/`pwrite` on the worker thread rather than io_uring: one worker
//! per disk already keeps vCPUs free, the page cache absorbs most small requests, and it
//! needs no kernel feature that hardened hosts often disable. io_uring becomes worth its
//! complexity with many outstanding requests per disk on fast devices.

pub mod request;

use std::sync::{Arc, Mutex};

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use self::request::{RequestExecutor, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, MAX_SEGMENTS};
use super::queue;
use super::rate_limiter::{self, RateLimiter};
use super::worker::{QueueHandler, QueueWorker};
use super::{
    read_config_bytes, take_queues, ActivateError, Activation, Interrupt, VirtioDevice, DEVICE_TYPE_BLOCK,
};
use super::{INTERRUPT_VRING, VIRTIO_F_VERSION_1};
use crate::block::qcow2::Qcow2;
use crate::block::BlockBackend;
use crate::vmm::api::config::RateLimit;
use crate::vmm::vstate::memory::GuestMemory;

/// Queue size offered to the guest (and the cap on descriptor chains).
pub const QUEUE_SIZE: u16 = 256;

const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;
/// Length of `struct virtio_blk_config` up to `write_zeroes_may_unmap` and padding.
const CONFIG_LEN: usize = 60;

/// A virtio block device.
pub struct VirtioBlock {
    executor: Arc<Mutex<RequestExecutor>>,
    kick: Arc<Mutex<Option<EventFd>>>,
    rate_limit: RateLimit,
    features: u64,
    config: [u8; CONFIG_LEN],
    worker: Option<QueueWorker>,
    name: String,
}

impl VirtioBlock {
    /// A disk over `backend`, identified to the guest by `id` (GET_ID, so it shows up as
    /// `/dev/disk/by-id/virtio-<id>`), serving requests within `rate_limit`.
    pub fn new(backend: Box<dyn BlockBackend>, read_only: bool, id: &str, rate_limit: RateLimit) -> Self {
        let executor = RequestExecutor::new(backend, read_only, id, QUEUE_SIZE);
        let mut features = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH;
        features |=
            if read_only { VIRTIO_BLK_F_RO } else { VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES };
        let config = block_config(executor.capacity_sectors());
        Self {
            executor: Arc::new(Mutex::new(executor)),
            kick: Arc::default(),
            rate_limit,
            features,
            config,
            worker: None,
            name: format!("blk-{id}"),
        }
    }
}

impl VirtioBlock {
    /// A handle that pauses the disk, switches its backend and resumes it while the VM runs.
    pub fn handle(&self) -> DiskHandle {
        DiskHandle { executor: self.executor.clone(), kick: self.kick.clone() }
    }
}

/// Control of a running disk from outside its worker (the VMM's control socket).
#[derive(Clone)]
pub struct DiskHandle {
    executor: Arc<Mutex<RequestExecutor>>,
    kick: Arc<Mutex<Option<EventFd>>>,
}

impl DiskHandle {
    fn executor(&self) -> std::sync::MutexGuard<'_, RequestExecutor> {
        self.executor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds requests back once the one in progress is done, and flushes the backend.
    pub fn pause(&self) -> std::io::Result<()> {
        self.executor().pause()
    }

    /// Whether requests are held back.
    pub fn is_paused(&self) -> bool {
        self.executor().is_paused()
    }

    /// Puts the paused disk under `layer`, a new top layer made over it.
    pub fn stack_layer(&self, layer: Qcow2) -> Result<(), String> {
        self.executor().stack_layer(layer)
    }

    /// Serves requests again, including those that arrived while paused.
    pub fn resume(&self) {
        self.executor().resume();
        if let Some(kick) = self.kick.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if let Err(e) = kick.write(1) {
                tracing::error!(error = %e, "cannot wake a resumed disk");
            }
        }
    }
}

/// Builds `struct virtio_blk_config` (little endian).
fn block_config(capacity_sectors: u64) -> [u8; CONFIG_LEN] {
    let mut config = [0u8; CONFIG_LEN];
    let mut put = |offset: usize, bytes: &[u8]| config[offset..offset + bytes.len()].copy_from_slice(bytes);
    put(0, &capacity_sectors.to_le_bytes());
    put(12, &(MAX_SEGMENTS as u32).to_le_bytes()); // seg_max
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_discard_sectors
    put(40, &MAX_DISCARD_SEGMENTS.to_le_bytes()); // max_discard_seg
    put(44, &1u32.to_le_bytes()); // discard_sector_alignment
    put(48, &MAX_DISCARD_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &MAX_DISCARD_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
    put(56, &[1]); // write_zeroes_may_unmap
    config
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation { mem, queues, queue_events, interrupt, .. } = activation;
        let [queue] = take_queues(queues)?;
        *self.kick.lock().unwrap_or_else(|p| p.into_inner()) =
            queue_events.first().and_then(|e| e.try_clone().ok());
        let limiter =
            RateLimiter::new(&self.rate_limit).map_err(|e| ActivateError(format!("rate limiter: {e}")))?;
        let sources = rate_limiter::timer_source(&limiter);
        let handler = BlockQueue { mem, queue, executor: self.executor.clone(), interrupt, limiter };
        let worker = QueueWorker::spawn(self.name.clone(), queue_events, &sources, handler)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread.
        self.worker = None;
    }
}

/// The worker-side state of the request queue.
struct BlockQueue {
    mem: GuestMemory,
    queue: Queue,
    executor: Arc<Mutex<RequestExecutor>>,
    interrupt: Arc<Interrupt>,
    limiter: Option<RateLimiter>,
}

impl BlockQueue {
    /// Serves the available requests the rate limit allows; returns whether the guest must
    /// be interrupted.
    fn drain(&mut self) -> bool {
        let Self { mem, queue, executor, limiter, .. } = self;
        let mut executor = executor.lock().unwrap_or_else(|p| p.into_inner());
        queue::drain(queue, mem, |chain| {
            if executor.is_paused() {
                return None;
            }
            rate_limiter::admits(limiter, || queue::chain_bytes(&chain)).then(|| executor.execute(mem, chain))
        })
    }
}

impl QueueHandler for BlockQueue {
    fn process_queue(&mut self, _index: usize) {
        if self.drain() {
            self.interrupt.signal(INTERRUPT_VRING);
        }
    }

    /// The rate-limit timer: requests may go on.
    fn process_source(&mut self, _index: usize) {
        if let Some(limiter) = &mut self.limiter {
            limiter.timer_fired();
        }
        self.process_queue(0);
    }
}

#[cfg(test)]
mod tests;
