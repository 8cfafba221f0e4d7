//! virtio-net on a tap device: one receive and one transmit queue served on the device's
//! worker thread, which also waits on the tap.
//!
//! Frames keep their 12-byte virtio-net header end to end (the tap speaks the same header),
//! so checksum and TCP segmentation offloads negotiated with the guest are handed to the
//! host kernel as they are. Every transmitted frame passes the [`filter::SourceFilter`]
//! first. Each direction copies through one buffer allocated at activation: nothing is
//! allocated per frame.

pub mod filter;
pub mod tap;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};

use self::filter::{Refusal, SourceFilter};
use super::queue;
use super::rate_limiter::{self, RateLimiter};
use super::worker::{QueueHandler, QueueWorker};
use super::{read_config_bytes, take_queues, ActivateError, Activation, Interrupt, VirtioDevice};
use super::{DEVICE_TYPE_NET, INTERRUPT_VRING, VIRTIO_F_VERSION_1};
use crate::vmm::api::config::RateLimit;
use crate::vmm::devices::virtio::net::tap::{offload, Tap, VNET_HEADER_SIZE};
use crate::vmm::vstate::memory::GuestMemory;

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame either way, virtio-net header included: a 64 KiB TSO frame plus the
/// Ethernet and VLAN headers.
pub const MAX_FRAME: usize = VNET_HEADER_SIZE + 65_550;

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const TAP_SOURCE: usize = 0;
const RATE_LIMIT_SOURCE: usize = 1;

const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;

/// Frame counters of one interface.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Frames from the tap dropped: the guest's buffer was too small or unusable.
    pub rx_dropped: AtomicU64,
    /// Frames the guest sent that reached the tap.
    pub tx_frames: AtomicU64,
    /// Frames dropped for a source address other than the assigned one.
    pub tx_spoofed: AtomicU64,
    /// Frames dropped as malformed, oversized, or refused by the tap.
    pub tx_dropped: AtomicU64,
}

/// A virtio network interface on a tap.
pub struct VirtioNet {
    tap: Arc<Tap>,
    filter: SourceFilter,
    rate_limit: RateLimit,
    config: [u8; 6],
    stats: Arc<NetStats>,
    worker: Option<QueueWorker>,
}

impl VirtioNet {
    /// An interface with MAC address `mac` on `tap`, transmitting only what `filter` allows,
    /// moving frames (both ways together) within `rate_limit`.
    pub fn new(tap: Tap, mac: [u8; 6], filter: SourceFilter, rate_limit: RateLimit) -> Self {
        Self { tap: Arc::new(tap), filter, rate_limit, config: mac, stats: Arc::default(), worker: None }
    }
}

/// The tap offloads matching what the guest accepts on receive.
fn tap_offloads(features: u64) -> u32 {
    let mut flags = 0;
    if features & VIRTIO_NET_F_GUEST_CSUM != 0 {
        flags |= offload::CSUM;
        if features & VIRTIO_NET_F_GUEST_TSO4 != 0 {
            flags |= offload::TSO4;
        }
        if features & VIRTIO_NET_F_GUEST_TSO6 != 0 {
            flags |= offload::TSO6;
        }
    }
    flags
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_CSUM
            | VIRTIO_NET_F_GUEST_CSUM
            | VIRTIO_NET_F_GUEST_TSO4
            | VIRTIO_NET_F_GUEST_TSO6
            | VIRTIO_NET_F_HOST_TSO4
            | VIRTIO_NET_F_HOST_TSO6
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation { mem, queues, queue_events, interrupt, features } = activation;
        let [rx, tx] = take_queues(queues)?;
        self.tap.set_offload(tap_offloads(features)).map_err(|e| ActivateError(e.to_string()))?;
        let limiter =
            RateLimiter::new(&self.rate_limit).map_err(|e| ActivateError(format!("rate limiter: {e}")))?;
        let mut sources = vec![self.tap.as_raw_fd()];
        sources.extend(rate_limiter::timer_source(&limiter));
        let handler = NetQueues {
            mem,
            rx,
            tx,
            tap: self.tap.clone(),
            interrupt,
            filter: self.filter,
            stats: self.stats.clone(),
            rx_frame: vec![0; MAX_FRAME],
            rx_pending: 0,
            tx_frame: vec![0; MAX_FRAME],
            limiter,
        };
        let name = format!("net-{}", self.tap.name());
        let worker = QueueWorker::spawn(name, queue_events, &sources, handler)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread.
        self.worker = None;
    }
}

impl Drop for VirtioNet {
    fn drop(&mut self) {
        let s = &self.stats;
        tracing::info!(
            tap = self.tap.name(),
            rx_frames = s.rx_frames.load(Ordering::Relaxed),
            rx_dropped = s.rx_dropped.load(Ordering::Relaxed),
            tx_frames = s.tx_frames.load(Ordering::Relaxed),
            tx_spoofed = s.tx_spoofed.load(Ordering::Relaxed),
            tx_dropped = s.tx_dropped.load(Ordering::Relaxed),
            "virtio-net totals"
        );
    }
}

/// The worker-side state: both queues, the tap, and one frame buffer per direction.
struct NetQueues {
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    tap: Arc<Tap>,
    interrupt: Arc<Interrupt>,
    filter: SourceFilter,
    stats: Arc<NetStats>,
    rx_frame: Vec<u8>,
    /// Length of a frame read from the tap and not yet delivered (no guest buffer was free).
    rx_pending: usize,
    tx_frame: Vec<u8>,
    limiter: Option<RateLimiter>,
}

/// Adds one to `counter`, returning the new value.
fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

impl NetQueues {
    /// Moves frames from the tap into the guest's receive buffers until the tap is empty or
    /// the guest has no buffer left (it kicks the receive queue when it adds some).
    fn receive(&mut self) {
        let mut delivered = false;
        loop {
            if self.rx_pending == 0 {
                match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(n) if n > 0 => self.rx_pending = n,
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(tap = self.tap.name(), error = %e, "tap read failed");
                        break;
                    }
                }
            }
            if !rate_limiter::admits(&mut self.limiter, || self.rx_pending as u64) {
                break;
            }
            let Some(chain) = queue::next_chain(&mut self.rx, &self.mem) else { break };
            let head = chain.head_index();
            let frame = &self.rx_frame[..self.rx_pending];
            let used = match queue::copy_to_chain(&self.mem, chain, frame) {
                Some(n) => {
                    bump(&self.stats.rx_frames);
                    n
                }
                None => {
                    bump(&self.stats.rx_dropped);
                    0
                }
            };
            self.rx_pending = 0;
            if let Err(e) = self.rx.add_used(&self.mem, head, used) {
                tracing::warn!(error = ?e, "cannot return a receive buffer");
            }
            delivered = true;
        }
        if delivered && queue::needs_interrupt(&self.rx, &self.mem) {
            self.interrupt.signal(INTERRUPT_VRING);
        }
    }

    /// Sends every frame the guest queued, dropping those the filter refuses.
    fn transmit(&mut self) {
        let Self { mem, tx, tap, filter, stats, tx_frame, limiter, .. } = self;
        let completed = queue::drain(tx, mem, |chain| {
            if !rate_limiter::admits(limiter, || queue::chain_bytes(&chain)) {
                return None;
            }
            let verdict =
                queue::copy_from_chain(mem, chain, tx_frame).map_or(Err(Refusal::Malformed), |len| {
                    let frame = &tx_frame[..len];
                    filter.check(frame.get(VNET_HEADER_SIZE..).unwrap_or_default()).map(|()| frame)
                });
            match verdict {
                Ok(frame) => match tap.write_frame(frame) {
                    Ok(_) => {
                        bump(&stats.tx_frames);
                    }
                    Err(e) => {
                        // A full tap queue drops the frame, as a busy NIC would.
                        tracing::debug!(error = %e, "tap write failed");
                        bump(&stats.tx_dropped);
                    }
                },
                Err(Refusal::SourceMac | Refusal::SourceIp | Refusal::RouterRole) => {
                    let count = bump(&stats.tx_spoofed);
                    if count.is_power_of_two() {
                        tracing::warn!(
                            tap = tap.name(),
                            count,
                            "dropped frames with a spoofed source address"
                        );
                    }
                }
                Err(refusal) => {
                    tracing::debug!(?refusal, "transmit frame dropped");
                    bump(&stats.tx_dropped);
                }
            }
            Some(0)
        });
        if completed {
            self.interrupt.signal(INTERRUPT_VRING);
        }
    }
}

impl QueueHandler for NetQueues {
    fn process_queue(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.receive(),
            TX_QUEUE => self.transmit(),
            _ => {}
        }
    }

    fn process_source(&mut self, index: usize) {
        match index {
            TAP_SOURCE => self.receive(),
            RATE_LIMIT_SOURCE => {
                if let Some(limiter) = &mut self.limiter {
                    limiter.timer_fired();
                }
                self.transmit();
                self.receive();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
