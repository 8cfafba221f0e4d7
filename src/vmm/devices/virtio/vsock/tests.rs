//! The muxer against real Unix sockets, and the device on in-memory queues.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::muxer::{Muxer, BUFFER_SIZE};
use super::packet::{op, Header, HEADER_SIZE, HOST_CID, TYPE_STREAM};
use super::*;
use crate::vmm::devices::virtio::test_rings::{TestRing, NEXT, WRITE};
use crate::vmm::vstate::memory::create_guest_memory;

const GUEST_CID: u64 = 3;

struct Rig {
    _dir: tempfile::TempDir,
    uds: PathBuf,
    muxer: Muxer,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vsock.sock");
    let muxer = Muxer::new(GUEST_CID, &uds).unwrap();
    Rig { _dir: dir, uds, muxer }
}

/// A packet from the guest's port `guest_port` to the host's `host_port`.
fn from_guest(op: u16, guest_port: u32, host_port: u32, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: guest_port,
        dst_port: host_port,
        len,
        socket_type: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

impl Rig {
    fn next(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut buf = vec![0u8; 64 * 1024];
        self.muxer.process_events();
        let header = self.muxer.next_packet(&mut buf)?;
        Some((header, buf[..header.len as usize].to_vec()))
    }

    /// Waits (briefly) for the next packet, letting socket events arrive.
    fn expect(&mut self) -> (Header, Vec<u8>) {
        for _ in 0..100 {
            if let Some(packet) = self.next() {
                return packet;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no packet for the guest");
    }

    fn service(&self, port: u32) -> UnixListener {
        UnixListener::bind(format!("{}_{port}", self.uds.display())).unwrap()
    }
}

#[test]
fn guest_connects_to_a_host_service_and_data_flows_both_ways() {
    let mut r = rig();
    let service = r.service(5000);
    r.muxer.handle_guest_packet(&from_guest(op::REQUEST, 1234, 5000, 0, 65536, 0), &[]);
    let (response, _) = r.expect();
    assert_eq!(response.op, op::RESPONSE);
    assert_eq!((response.src_port, response.dst_port, response.dst_cid), (5000, 1234, GUEST_CID));
    assert_eq!(response.buf_alloc, BUFFER_SIZE);
    let (mut host, _) = service.accept().unwrap();

    r.muxer.handle_guest_packet(&from_guest(op::RW, 1234, 5000, 5, 65536, 0), b"hello");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");

    host.write_all(b"world").unwrap();
    let (rw, payload) = r.expect();
    assert_eq!((rw.op, payload.as_slice()), (op::RW, &b"world"[..]));
    assert_eq!(rw.fwd_cnt, 5, "the muxer reports the 5 bytes it forwarded");

    // The host closes: the guest is told, and its RST ends the connection.
    drop(host);
    let (shutdown, _) = r.expect();
    assert_eq!((shutdown.op, shutdown.flags), (op::SHUTDOWN, 2));
    r.muxer.handle_guest_packet(&from_guest(op::RST, 1234, 5000, 0, 0, 0), &[]);
    assert_eq!(r.muxer.connection_count(), 0);
}

#[test]
fn a_guest_half_close_lets_the_host_reply() {
    let mut r = rig();
    let service = r.service(5000);
    r.muxer.handle_guest_packet(&from_guest(op::REQUEST, 7, 5000, 0, 65536, 0), &[]);
    r.expect();
    let (mut host, _) = service.accept().unwrap();
    r.muxer.handle_guest_packet(&from_guest(op::RW, 7, 5000, 4, 65536, 0), b"ping");
    r.muxer.handle_guest_packet(&from_guest(op::SHUTDOWN, 7, 5000, 0, 65536, 0), &[]);
    let shutdown = from_guest(op::SHUTDOWN, 7, 5000, 0, 65536, 0);
    r.muxer.handle_guest_packet(&Header { flags: 2, ..shutdown }, &[]);
    let mut request = String::new();
    host.read_to_string(&mut request).unwrap();
    assert_eq!(request, "ping", "the host reads the guest's data, then end of file");
    host.write_all(b"pong").unwrap();
    drop(host);
    assert_eq!(r.expect().1, b"pong");
    let (end, _) = r.expect();
    assert_eq!(end.op, op::RST, "both sides done: the connection ends");
    assert_eq!(r.muxer.connection_count(), 0);
}

#[test]
fn connections_to_a_port_nobody_serves_are_refused() {
    let mut r = rig();
    r.muxer.handle_guest_packet(&from_guest(op::REQUEST, 1234, 6000, 0, 65536, 0), &[]);
    assert_eq!(r.expect().0.op, op::RST);
    assert_eq!(r.muxer.connection_count(), 0);
}

#[test]
fn host_connects_to_a_guest_port() {
    let mut r = rig();
    let mut host = UnixStream::connect(&r.uds).unwrap();
    // Data sent right after the line waits for the connection to be accepted.
    host.write_all(b"CONNECT 52\nearly").unwrap();
    let (request, _) = r.expect();
    assert_eq!(request.op, op::REQUEST);
    assert_eq!((request.dst_cid, request.dst_port, request.src_cid), (GUEST_CID, 52, HOST_CID));
    let host_port = request.src_port;
    r.muxer.handle_guest_packet(&from_guest(op::RESPONSE, 52, host_port, 0, 65536, 0), &[]);
    let mut line = [0u8; 32];
    let n = host.read(&mut line).unwrap();
    assert_eq!(std::str::from_utf8(&line[..n]).unwrap(), format!("OK {host_port}\n"));
    let (rw, payload) = r.expect();
    assert_eq!((rw.op, rw.dst_port, payload.as_slice()), (op::RW, 52, &b"early"[..]));
}

#[test]
fn bad_handshakes_are_answered_and_dropped() {
    let mut r = rig();
    let mut host = UnixStream::connect(&r.uds).unwrap();
    host.write_all(b"HELLO 52\n").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(r.next().is_none());
    let mut reply = String::new();
    host.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("ERROR"), "{reply:?}");
    // A line that never ends is cut off.
    let mut host = UnixStream::connect(&r.uds).unwrap();
    host.write_all(&[b'x'; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(r.next().is_none());
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    // Closed with our unread bytes still queued, the socket may report a reset instead.
    match host.read_to_string(&mut reply) {
        Ok(_) => assert!(reply.starts_with("ERROR"), "{reply:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

#[test]
fn the_guest_credit_bounds_what_it_is_sent() {
    let mut r = rig();
    let service = r.service(5000);
    r.muxer.handle_guest_packet(&from_guest(op::REQUEST, 1, 5000, 0, 4, 0), &[]);
    r.expect();
    let (mut host, _) = service.accept().unwrap();
    host.write_all(b"0123456789").unwrap();
    let (rw, payload) = r.expect();
    assert_eq!(payload, b"0123");
    assert_eq!(rw.len, 4);
    std::thread::sleep(Duration::from_millis(20));
    assert!(r.next().is_none(), "no credit left");
    r.muxer.handle_guest_packet(&from_guest(op::CREDIT_UPDATE, 1, 5000, 0, 4, 4), &[]);
    assert_eq!(r.expect().1, b"4567");
}

#[test]
fn a_guest_overrunning_the_host_buffer_is_reset() {
    let mut r = rig();
    let service = r.service(5000);
    r.muxer.handle_guest_packet(&from_guest(op::REQUEST, 1, 5000, 0, 65536, 0), &[]);
    r.expect();
    let (_host, _) = service.accept().unwrap(); // never reads
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..64 {
        r.muxer.handle_guest_packet(&from_guest(op::RW, 1, 5000, chunk.len() as u32, 65536, 0), &chunk);
        if r.muxer.connection_count() == 0 {
            break;
        }
    }
    assert_eq!(r.muxer.connection_count(), 0);
    let mut last = None;
    while let Some((header, _)) = r.next() {
        last = Some(header.op);
    }
    assert_eq!(last, Some(op::RST));
}

#[test]
fn misaddressed_and_unknown_packets_get_a_reset() {
    let mut r = rig();
    let mut spoofed = from_guest(op::REQUEST, 1, 5000, 0, 0, 0);
    spoofed.src_cid = 7;
    r.muxer.handle_guest_packet(&spoofed, &[]);
    let (rst, _) = r.expect();
    assert_eq!((rst.op, rst.dst_cid), (op::RST, GUEST_CID));
    r.muxer.handle_guest_packet(&from_guest(op::RW, 1, 5000, 1, 0, 0), b"x");
    assert_eq!(r.expect().0.op, op::RST, "data on no connection");
    r.muxer.handle_guest_packet(&from_guest(99, 1, 5000, 0, 0, 0), &[]);
    assert_eq!(r.expect().0.op, op::RST);
    // A RST for nothing is not answered.
    r.muxer.handle_guest_packet(&from_guest(op::RST, 1, 5000, 0, 0, 0), &[]);
    assert!(r.next().is_none());
}

#[test]
fn the_device_moves_packets_between_rings_and_the_muxer() {
    const RX: TestRing = TestRing::at(0x1_0000);
    const TX: TestRing = TestRing::at(0x2_0000);
    let r = rig();
    let _service = r.service(5000);
    let mem = create_guest_memory(4).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut queues = VsockQueues {
        mem: mem.clone(),
        rx: RX.queue(&mem, QUEUE_SIZE, 8),
        tx: TX.queue(&mem, QUEUE_SIZE, 8),
        muxer: Arc::new(Mutex::new(r.muxer)),
        interrupt: Arc::new(Interrupt::new(irq.try_clone().unwrap())),
        buf: vec![0; HEADER_SIZE + MAX_PAYLOAD],
    };
    // The guest's receive buffer: header and payload in two descriptors.
    RX.put_desc(&mem, 0, (0x10_0000, HEADER_SIZE as u32, WRITE | NEXT, 1));
    RX.put_desc(&mem, 1, (0x10_1000, 4096, WRITE, 0));
    RX.publish(&mem, 0, &[0]);
    // A connection request, with the header split over two descriptors.
    let request = from_guest(op::REQUEST, 1234, 5000, 0, 65536, 0).encode();
    mem.write_slice(&request, GuestAddress(0x20_0000)).unwrap();
    TX.put_desc(&mem, 0, (0x20_0000, 20, NEXT, 1));
    TX.put_desc(&mem, 1, (0x20_0014, (HEADER_SIZE - 20) as u32, 0, 0));
    // And a chain shorter than a header: dropped.
    TX.put_desc(&mem, 2, (0x20_0000, 8, 0, 0));
    TX.publish(&mem, 0, &[0, 2]);
    queues.process_queue(TX_QUEUE);
    assert_eq!(TX.used_count(&mem), 2);
    assert_eq!(RX.used_entry(&mem, 0), (0, HEADER_SIZE as u32));
    let mut reply = [0u8; HEADER_SIZE];
    mem.read_slice(&mut reply, GuestAddress(0x10_0000)).unwrap();
    assert_eq!(Header::decode(&reply).op, op::RESPONSE);
    assert!(irq.read().unwrap() >= 1);
}
