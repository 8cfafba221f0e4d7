//! virtio-vsock: stream sockets between the guest and host services, without a network.
//! The metadata and health-check features talk to guests over it.
//!
//! The device's three queues (receive, transmit, event) are served on its worker thread,
//! which also waits on the [`muxer::Muxer`]'s epoll descriptor: the muxer maps each guest
//! connection onto a Unix socket on the host.

pub mod muxer;
pub mod packet;

use std::path::Path;
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use self::muxer::{Muxer, MuxerError};
use self::packet::{Header, HEADER_SIZE};
use super::queue;
use super::worker::{QueueHandler, QueueWorker};
use super::{read_config_bytes, take_queues, ActivateError, Activation, Interrupt, VirtioDevice};
use super::{DEVICE_TYPE_VSOCK, INTERRUPT_VRING, VIRTIO_F_VERSION_1};
use crate::vmm::vstate::memory::GuestMemory;

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest payload per packet either way.
pub const MAX_PAYLOAD: usize = 64 * 1024;

const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;

/// The vsock device of one guest.
pub struct VirtioVsock {
    muxer: Arc<Mutex<Muxer>>,
    config: [u8; 8],
    worker: Option<QueueWorker>,
}

impl VirtioVsock {
    /// A device giving the guest context id `guest_cid`, with host services reached
    /// through Unix sockets at `uds_path` (see [`muxer`]).
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        let muxer = Muxer::new(guest_cid, uds_path)?;
        Ok(Self { muxer: Arc::new(Mutex::new(muxer)), config: guest_cid.to_le_bytes(), worker: None })
    }
}

impl VirtioDevice for VirtioVsock {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation { mem, queues, queue_events, interrupt, .. } = activation;
        let [rx, tx, _event] = take_queues(queues)?;
        let epoll_fd = lock(&self.muxer).epoll_fd();
        let handler = VsockQueues {
            mem,
            rx,
            tx,
            muxer: self.muxer.clone(),
            interrupt,
            buf: vec![0; HEADER_SIZE + MAX_PAYLOAD],
        };
        let worker = QueueWorker::spawn("vsock".into(), queue_events, &[epoll_fd], handler)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread.
        self.worker = None;
        lock(&self.muxer).reset_all();
    }
}

fn lock(muxer: &Mutex<Muxer>) -> std::sync::MutexGuard<'_, Muxer> {
    muxer.lock().unwrap_or_else(|p| p.into_inner())
}

/// The worker-side state: the queues, the muxer, and one packet buffer.
struct VsockQueues {
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    muxer: Arc<Mutex<Muxer>>,
    interrupt: Arc<Interrupt>,
    buf: Vec<u8>,
}

impl VsockQueues {
    /// Hands every packet the guest sent to the muxer. A chain that is not a header plus
    /// its payload is dropped.
    fn transmit(&mut self) -> bool {
        let Self { mem, tx, muxer, buf, .. } = self;
        let mut muxer = lock(muxer);
        queue::drain(tx, mem, |chain| {
            let Some(len) = queue::copy_from_chain(mem, chain, buf) else { return Some(0) };
            let Some(header_bytes) = buf.first_chunk::<HEADER_SIZE>() else { return Some(0) };
            let header = Header::decode(header_bytes);
            match buf.get(HEADER_SIZE..HEADER_SIZE + header.len as usize) {
                Some(payload) if HEADER_SIZE + payload.len() <= len => {
                    muxer.handle_guest_packet(&header, payload)
                }
                _ => tracing::debug!(?header, "vsock packet shorter than its header says: dropped"),
            }
            Some(0)
        })
    }

    /// Fills the guest's receive buffers with the muxer's packets.
    fn receive(&mut self) -> bool {
        let mut delivered = false;
        let mut muxer = lock(&self.muxer);
        while muxer.has_packets() {
            let Some(chain) = queue::next_chain(&mut self.rx, &self.mem) else { break };
            let head = chain.head_index();
            let room = usize::try_from(queue::chain_bytes(&chain)).unwrap_or(usize::MAX);
            let used = if room < HEADER_SIZE {
                0
            } else {
                let payload_room = (room - HEADER_SIZE).min(MAX_PAYLOAD);
                let (header_buf, payload_buf) = self.buf.split_at_mut(HEADER_SIZE);
                let Some(header) = muxer.next_packet(&mut payload_buf[..payload_room]) else {
                    self.rx.go_to_previous_position();
                    break;
                };
                header_buf.copy_from_slice(&header.encode());
                let total = HEADER_SIZE + header.len as usize;
                queue::copy_to_chain(&self.mem, chain, &self.buf[..total]).unwrap_or(0)
            };
            if let Err(e) = self.rx.add_used(&self.mem, head, used) {
                tracing::warn!(error = ?e, "cannot return a vsock receive buffer");
            }
            delivered = true;
        }
        delivered && queue::needs_interrupt(&self.rx, &self.mem)
    }

    fn serve(&mut self, transmit: bool) {
        let sent = transmit && self.transmit();
        // Transmitted packets may have queued replies: receive after transmitting.
        if self.receive() || sent {
            self.interrupt.signal(INTERRUPT_VRING);
        }
    }
}

impl QueueHandler for VsockQueues {
    fn process_queue(&mut self, index: usize) {
        match index {
            TX_QUEUE => self.serve(true),
            RX_QUEUE => self.serve(false),
            // The event queue only matters for live migration, which nuage does not do.
            _ => {}
        }
    }

    fn process_source(&mut self, _index: usize) {
        lock(&self.muxer).process_events();
        self.serve(false);
    }
}

#[cfg(test)]
mod tests;
