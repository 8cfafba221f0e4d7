//! Device-model tests on in-memory queues over a real tap, created in a network namespace
//! of the test thread's own (so nothing leaves it): a packet socket on the tap plays the
//! host side. Needs root, as the tests of CI run.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::vmm::devices::virtio::test_rings::{TestRing, NEXT, WRITE};
use crate::vmm::vstate::memory::create_guest_memory;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 7, 2);
/// IEEE 802 local experimental ethertype: no host protocol answers it.
const TEST_ETHERTYPE: u16 = 0x88b5;
const RX_RING: TestRing = TestRing::at(0x1_0000);
const TX_RING: TestRing = TestRing::at(0x2_0000);
const BUFFERS: u64 = 0x10_0000;

/// The host end of a tap: a packet socket bound to it.
struct HostSide {
    packet: OwnedFd,
}

/// A tap in a fresh network namespace, up, and its host end.
fn host_side() -> (Tap, HostSide) {
    // SAFETY: unshare only changes the calling thread's namespaces.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET) needs root: {}", std::io::Error::last_os_error());
    let tap = Tap::open("nt0").unwrap();
    // No IPv6 chatter (router solicitations) on the test interface.
    let _ = std::fs::write("/proc/sys/net/ipv6/conf/nt0/disable_ipv6", "1");
    tap.set_link_up().unwrap();
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation; the result is checked.
    let raw =
        unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(protocol)) };
    assert!(raw >= 0, "packet socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor.
    let packet = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    // SAFETY: the name is a NUL-terminated string.
    addr.sll_ifindex = unsafe { libc::if_nametoindex(c"nt0".as_ptr()) } as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the given length.
    let rc = unsafe {
        libc::bind(
            packet.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    (tap, HostSide { packet })
}

impl HostSide {
    /// Sends `frame` out of the host end: it arrives on the tap for the guest.
    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is a valid buffer of its length.
        let n = unsafe { libc::send(self.packet.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
    }

    /// Test frames the host received within `wait`.
    fn received(&self, wait: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; MAX_FRAME];
        while Instant::now() < deadline {
            // SAFETY: `buf` is a valid, writable buffer of its length.
            let n = unsafe {
                libc::recv(self.packet.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if n > 0 {
                let frame = &buf[..n as usize];
                if frame.len() >= 14 && frame[12..14] == TEST_ETHERTYPE.to_be_bytes() {
                    frames.push(frame.to_vec());
                }
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        frames
    }
}

fn frame(source: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x52, 0x54, 0, 0, 0, 1];
    f.extend_from_slice(&source);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

struct Rig {
    mem: GuestMemory,
    queues: NetQueues,
    irq: EventFd,
    host: HostSide,
}

fn rig() -> Rig {
    limited_rig(RateLimit::default())
}

fn limited_rig(limit: RateLimit) -> Rig {
    let (tap, host) = host_side();
    let mem = create_guest_memory(4).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let queues = NetQueues {
        mem: mem.clone(),
        rx: RX_RING.queue(&mem, QUEUE_SIZE, 16),
        tx: TX_RING.queue(&mem, QUEUE_SIZE, 16),
        tap: Arc::new(tap),
        interrupt: Arc::new(Interrupt::new(irq.try_clone().unwrap())),
        filter: SourceFilter::new(MAC, Some(IP)),
        stats: Arc::default(),
        rx_frame: vec![0; MAX_FRAME],
        rx_pending: 0,
        tx_frame: vec![0; MAX_FRAME],
        limiter: RateLimiter::new(&limit).unwrap(),
    };
    Rig { mem, queues, irq, host }
}

impl Rig {
    /// Queues a two-descriptor transmit chain (header, then frame) at slot `n`.
    fn transmit(&mut self, n: u16, frame: &[u8]) {
        let header = BUFFERS + u64::from(n) * 0x2_0000;
        let data = header + 0x1000;
        self.mem.write_slice(&[0u8; VNET_HEADER_SIZE], GuestAddress(header)).unwrap();
        self.mem.write_slice(frame, GuestAddress(data)).unwrap();
        TX_RING.put_desc(&self.mem, 2 * n, (header, VNET_HEADER_SIZE as u32, NEXT, 2 * n + 1));
        TX_RING.put_desc(&self.mem, 2 * n + 1, (data, frame.len() as u32, 0, 0));
        TX_RING.publish(&self.mem, n, &[2 * n]);
        self.queues.process_queue(TX_QUEUE);
    }
}

#[test]
fn transmitted_frames_reach_the_host_and_spoofed_ones_do_not() {
    let mut r = rig();
    r.transmit(0, &frame(MAC, b"from the guest"));
    r.transmit(1, &frame([0x52, 0x54, 0, 0, 0, 0x99], b"spoofed mac"));
    let received = r.host.received(Duration::from_millis(300));
    assert_eq!(received.len(), 1, "only the genuine frame: {received:?}");
    assert!(received[0].ends_with(b"from the guest"));
    assert_eq!(TX_RING.used_count(&r.mem), 2, "both chains are returned");
    assert_eq!(r.queues.stats.tx_frames.load(Ordering::Relaxed), 1);
    assert_eq!(r.queues.stats.tx_spoofed.load(Ordering::Relaxed), 1);
    assert!(r.irq.read().unwrap() >= 1);
}

#[test]
fn rate_limited_frames_wait_for_the_timer() {
    let mut r = limited_rig(RateLimit { ops_per_sec: Some(2), bytes_per_sec: None });
    for n in 0..3 {
        r.transmit(n, &frame(MAC, &[n as u8; 60]));
    }
    assert_eq!(r.host.received(Duration::from_millis(200)).len(), 2, "a burst of two");
    assert_eq!(TX_RING.used_count(&r.mem), 2, "the third frame stays queued");
    r.queues.process_source(RATE_LIMIT_SOURCE); // waits for the timer (500 ms)
    assert_eq!(r.host.received(Duration::from_millis(200)).len(), 1);
    assert_eq!(TX_RING.used_count(&r.mem), 3);
}

#[test]
fn malformed_transmit_chains_are_dropped() {
    let mut r = rig();
    // A device-writable buffer in a transmit chain.
    TX_RING.put_desc(&r.mem, 0, (BUFFERS, 64, WRITE, 0));
    // A chain longer than the largest frame.
    TX_RING.put_desc(&r.mem, 1, (BUFFERS, 0x1_0000, NEXT, 2));
    TX_RING.put_desc(&r.mem, 2, (BUFFERS, 0x1_0000, 0, 0));
    // A buffer outside guest memory.
    TX_RING.put_desc(&r.mem, 3, (0xffff_0000, 64, 0, 0));
    // Only a header: no Ethernet frame.
    TX_RING.put_desc(&r.mem, 4, (BUFFERS, VNET_HEADER_SIZE as u32, 0, 0));
    TX_RING.publish(&r.mem, 0, &[0, 1, 3, 4]);
    r.queues.process_queue(TX_QUEUE);
    assert_eq!(TX_RING.used_count(&r.mem), 4);
    assert_eq!(r.queues.stats.tx_dropped.load(Ordering::Relaxed), 4);
    assert!(r.host.received(Duration::from_millis(100)).is_empty());
}

#[test]
fn received_frames_fill_guest_buffers_and_wait_for_them() {
    let mut r = rig();
    let incoming = frame([0x52, 0x54, 0, 0, 0, 1], &[0xab; 100]);
    // Nothing to receive into yet: the frame waits in the device.
    r.host.send(&incoming);
    std::thread::sleep(Duration::from_millis(50));
    r.queues.process_source(TAP_SOURCE);
    assert_eq!(RX_RING.used_count(&r.mem), 0);
    // A too-small buffer drops the frame; the next, split in two, receives the second one.
    RX_RING.put_desc(&r.mem, 0, (BUFFERS, 32, WRITE, 0));
    RX_RING.publish(&r.mem, 0, &[0]);
    r.queues.process_queue(RX_QUEUE);
    assert_eq!(RX_RING.used_entry(&r.mem, 0), (0, 0));
    assert_eq!(r.queues.stats.rx_dropped.load(Ordering::Relaxed), 1);

    RX_RING.put_desc(&r.mem, 1, (BUFFERS + 0x1000, 64, WRITE | NEXT, 2));
    RX_RING.put_desc(&r.mem, 2, (BUFFERS + 0x2000, 4096, WRITE, 0));
    RX_RING.publish(&r.mem, 1, &[1]);
    r.host.send(&incoming);
    std::thread::sleep(Duration::from_millis(50));
    r.queues.process_source(TAP_SOURCE);
    let total = VNET_HEADER_SIZE + incoming.len();
    assert_eq!(RX_RING.used_entry(&r.mem, 1), (1, total as u32));
    let mut got = vec![0u8; total];
    r.mem.read_slice(&mut got[..64], GuestAddress(BUFFERS + 0x1000)).unwrap();
    r.mem.read_slice(&mut got[64..], GuestAddress(BUFFERS + 0x2000)).unwrap();
    assert_eq!(&got[VNET_HEADER_SIZE..], &incoming[..]);
    assert_eq!(r.queues.stats.rx_frames.load(Ordering::Relaxed), 1);
}

#[test]
fn readable_buffers_in_a_receive_chain_are_refused() {
    let mut r = rig();
    RX_RING.put_desc(&r.mem, 0, (BUFFERS, 4096, 0, 0));
    RX_RING.publish(&r.mem, 0, &[0]);
    r.host.send(&frame([0x52, 0x54, 0, 0, 0, 1], b"x"));
    std::thread::sleep(Duration::from_millis(50));
    r.queues.process_source(TAP_SOURCE);
    assert_eq!(RX_RING.used_entry(&r.mem, 0), (0, 0));
    assert_eq!(r.queues.stats.rx_dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn offloads_follow_the_guest_features() {
    assert_eq!(tap_offloads(0), 0);
    assert_eq!(tap_offloads(VIRTIO_NET_F_GUEST_TSO4), 0, "TSO needs checksum offload");
    let all = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6;
    assert_eq!(tap_offloads(all), offload::CSUM | offload::TSO4 | offload::TSO6);
}
