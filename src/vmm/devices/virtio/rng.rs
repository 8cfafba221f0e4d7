//! virtio-rng: fills the guest's buffers from the host kernel's CSPRNG (`getrandom`), so a
//! freshly booted guest never blocks waiting for entropy.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{Address, Bytes};

use super::queue::{self, Chain};
use super::worker::{QueueHandler, QueueWorker};
use super::VIRTIO_F_VERSION_1;
use super::{
    take_queues, ActivateError, Activation, Interrupt, VirtioDevice, DEVICE_TYPE_RNG, INTERRUPT_VRING,
};
use crate::vmm::vstate::memory::GuestMemory;

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 64;
/// Most bytes served per request: a guest asking for more gets this much (the driver
/// accepts short fills), so one request cannot keep the worker busy.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// The entropy device.
#[derive(Default)]
pub struct VirtioRng {
    worker: Option<QueueWorker>,
}

impl VirtioDevice for VirtioRng {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation { mem, queues, queue_events, interrupt, .. } = activation;
        let [queue] = take_queues(queues)?;
        let handler = RngQueue { mem, queue, interrupt, buf: vec![0; 4096] };
        let worker = QueueWorker::spawn("rng".into(), queue_events, &[], handler)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread.
        self.worker = None;
    }
}

struct RngQueue {
    mem: GuestMemory,
    queue: Queue,
    interrupt: Arc<Interrupt>,
    buf: Vec<u8>,
}

/// Fills the chain's writable buffers with random bytes, up to [`MAX_BYTES_PER_REQUEST`];
/// returns how many were written. A readable buffer or one outside guest memory ends it.
fn fill(mem: &GuestMemory, chain: Chain<'_>, buf: &mut [u8]) -> u32 {
    let mut written = 0usize;
    for desc in chain {
        if !desc.is_write_only() {
            break;
        }
        let mut done = 0usize;
        let len = (desc.len() as usize).min(MAX_BYTES_PER_REQUEST - written);
        while done < len {
            let n = (len - done).min(buf.len());
            if getrandom(&mut buf[..n]).is_err() {
                return written as u32;
            }
            let Some(addr) = desc.addr().checked_add(done as u64) else { return written as u32 };
            if mem.write_slice(&buf[..n], addr).is_err() {
                return written as u32;
            }
            done += n;
            written += n;
        }
        if written == MAX_BYTES_PER_REQUEST {
            break;
        }
    }
    written as u32
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

impl QueueHandler for RngQueue {
    fn process_queue(&mut self, _index: usize) {
        let Self { mem, queue, buf, .. } = self;
        if queue::drain(queue, mem, |chain| Some(fill(mem, chain, buf))) {
            self.interrupt.signal(INTERRUPT_VRING);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::devices::virtio::test_rings::{TestRing, NEXT, WRITE};
    use crate::vmm::vstate::memory::create_guest_memory;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const RING: TestRing = TestRing::at(0x1_0000);

    fn rng_queue(mem: &GuestMemory) -> (RngQueue, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irq.try_clone().unwrap()));
        (
            RngQueue {
                mem: mem.clone(),
                queue: RING.queue(mem, QUEUE_SIZE, 8),
                interrupt,
                buf: vec![0; 4096],
            },
            irq,
        )
    }

    #[test]
    fn buffers_are_filled_and_huge_requests_capped() {
        let mem = create_guest_memory(4).unwrap();
        let (mut q, irq) = rng_queue(&mem);
        RING.put_desc(&mem, 0, (0x10_0000, 16, WRITE | NEXT, 1));
        RING.put_desc(&mem, 1, (0x10_1000, 6000, WRITE, 0));
        RING.put_desc(&mem, 2, (0x20_0000, 1 << 20, WRITE, 0));
        RING.publish(&mem, 0, &[0, 2]);
        q.process_queue(0);
        assert_eq!(RING.used_entry(&mem, 0), (0, 6016));
        assert_eq!(RING.used_entry(&mem, 1), (2, MAX_BYTES_PER_REQUEST as u32));
        let mut bytes = [0u8; 6000];
        mem.read_slice(&mut bytes, GuestAddress(0x10_1000)).unwrap();
        assert!(bytes.iter().filter(|b| **b == 0).count() < 100, "random, not zeros");
        assert_eq!(irq.read().unwrap(), 1);
    }

    #[test]
    fn readable_or_out_of_range_buffers_end_the_request() {
        let mem = create_guest_memory(4).unwrap();
        let (mut q, _irq) = rng_queue(&mem);
        RING.put_desc(&mem, 0, (0x10_0000, 16, 0, 0));
        RING.put_desc(&mem, 1, (0x3f_f000, 0x2000, WRITE, 0)); // runs past the end of RAM
        RING.publish(&mem, 0, &[0, 1]);
        q.process_queue(0);
        assert_eq!(RING.used_entry(&mem, 0), (0, 0));
        assert_eq!(RING.used_count(&mem), 2);
    }
}
