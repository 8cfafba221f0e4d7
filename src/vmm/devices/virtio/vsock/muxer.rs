//! The host side of virtio-vsock: guest stream connections mapped onto Unix sockets.
//!
//! - A guest connecting to the host (CID 2) on port P reaches the Unix socket `UDS_P`
//!   (the configured path, `_`, the port) that a host service listens on.
//! - A host process connects to the Unix socket `UDS` itself and writes `CONNECT P\n`; once
//!   the guest accepts on port P it reads `OK <host port>\n`, then the stream is the
//!   connection.
//!
//! Flow control follows the virtio credit scheme both ways: the muxer never sends the guest
//! more than the guest's advertised buffer has room for, and advertises a fixed buffer per
//! connection of its own, refusing (RST) a guest that overruns it. Connections, pending
//! host handshakes and queued control packets are all capped, so a guest cannot make the
//! VMM allocate without bound.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::packet::{op, Header, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_RECEIVE, SHUTDOWN_SEND, TYPE_STREAM};

/// Receive buffer the muxer advertises per connection (guest data not yet written out).
pub const BUFFER_SIZE: u32 = 256 * 1024;
/// Most simultaneous connections per device.
pub const MAX_CONNECTIONS: usize = 256;
/// Most host connections still sending their `CONNECT` line.
const MAX_HANDSHAKES: usize = 32;
/// Most control packets waiting for guest receive buffers.
const MAX_CONTROL: usize = 1024;
/// Longest `CONNECT <port>\n` line accepted.
const MAX_HANDSHAKE_LINE: usize = 32;
/// Local ports for host-initiated connections start here.
const FIRST_HOST_PORT: u32 = 1 << 30;

const LISTENER_TOKEN: u64 = u64::MAX;
const HANDSHAKE_BIT: u64 = 1 << 62;

/// A connection: (host-side port, guest-side port).
type Key = (u32, u32);

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Host-initiated: the REQUEST is out, waiting for the guest's RESPONSE.
    Connecting,
    /// Data flows (each side may have shut its sending half).
    Established,
}

struct Connection {
    stream: UnixStream,
    state: State,
    token: u64,
    /// Guest data accepted but not yet written to the stream (at most [`BUFFER_SIZE`]).
    pending: Vec<u8>,
    /// Bytes of guest data written to the stream, ever (wrapping).
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: u32,
    /// Bytes sent to the guest, ever (wrapping).
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The stream has data (or end of file) to read.
    readable: bool,
    /// The host side will send no more (end of file read).
    host_done: bool,
    /// SHUTDOWN flags the guest has sent.
    guest_shutdown: u32,
}

impl Connection {
    fn new(stream: UnixStream, state: State, token: u64, peer: &Header) -> Self {
        Self {
            stream,
            state,
            token,
            pending: Vec::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            tx_cnt: 0,
            peer_buf_alloc: peer.buf_alloc,
            peer_fwd_cnt: peer.fwd_cnt,
            readable: false,
            host_done: false,
            guest_shutdown: 0,
        }
    }

    /// Whether data from the host may be read for the guest now.
    fn can_send_to_guest(&self) -> bool {
        self.readable
            && self.state == State::Established
            && !self.host_done
            && self.guest_shutdown & SHUTDOWN_RECEIVE == 0
            && self.peer_credit() > 0
    }

    /// Ends the stream's writing half once the guest has shut its sending half and all it
    /// sent is written.
    fn finish_writes(&self) {
        if self.guest_shutdown & SHUTDOWN_SEND != 0 && self.pending.is_empty() {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
    }

    /// How many bytes the guest can take now.
    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc.saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Writes as much pending guest data to the stream as it takes.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A host connection that has not sent its `CONNECT` line yet.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

/// Errors while setting the muxer up.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// The listening socket cannot be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The internal epoll failed.
    #[error("vsock epoll: {0}")]
    Epoll(std::io::Error),
}

/// Connections between one guest and host Unix sockets.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    connections: HashMap<Key, Connection>,
    tokens: HashMap<u64, Key>,
    handshakes: HashMap<u64, Handshake>,
    control: VecDeque<Header>,
    next_token: u64,
    next_host_port: u32,
}

impl Muxer {
    /// Listens on `uds_path` (replacing a stale socket file) for guest `guest_cid`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        let listen_err = |source| MuxerError::Listen { path: uds_path.to_owned(), source };
        if std::fs::symlink_metadata(uds_path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(uds_path).map_err(listen_err)?;
        }
        let listener = UnixListener::bind(uds_path).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        epoll
            .ctl(ControlOperation::Add, listener.as_raw_fd(), EpollEvent::new(EventSet::IN, LISTENER_TOKEN))
            .map_err(MuxerError::Epoll)?;
        Ok(Self {
            guest_cid,
            uds_path: uds_path.to_owned(),
            listener,
            epoll,
            connections: HashMap::new(),
            tokens: HashMap::new(),
            handshakes: HashMap::new(),
            control: VecDeque::new(),
            next_token: 0,
            next_host_port: FIRST_HOST_PORT,
        })
    }

    /// The descriptor that becomes readable when a socket needs attention.
    pub fn epoll_fd(&self) -> i32 {
        self.epoll.as_raw_fd()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Drops every connection and queued packet: the guest driver reset the device.
    pub fn reset_all(&mut self) {
        let keys: Vec<Key> = self.connections.keys().copied().collect();
        for key in keys {
            self.close(key);
        }
        for (_, handshake) in self.handshakes.drain() {
            let _ =
                self.epoll.ctl(ControlOperation::Delete, handshake.stream.as_raw_fd(), EpollEvent::default());
        }
        self.control.clear();
    }

    fn token(&mut self) -> u64 {
        self.next_token = (self.next_token + 1) % HANDSHAKE_BIT;
        self.next_token
    }

    fn push_control(&mut self, header: Header) {
        if self.control.len() < MAX_CONTROL {
            self.control.push_back(header);
        } else {
            tracing::debug!(op = header.op, "vsock control queue full: packet dropped");
        }
    }

    /// A packet to the guest on connection `key`, carrying our credit.
    fn header_for(&self, key: Key, op: u16) -> Header {
        let (buf_alloc, fwd_cnt) = self.connections.get(&key).map_or((0, 0), |c| (BUFFER_SIZE, c.fwd_cnt));
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            socket_type: TYPE_STREAM,
            op,
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    fn reset(&mut self, key: Key) {
        let rst = self.header_for(key, op::RST);
        self.close(key);
        self.push_control(rst);
    }

    fn close(&mut self, key: Key) {
        if let Some(conn) = self.connections.remove(&key) {
            self.tokens.remove(&conn.token);
            let _ = self.epoll.ctl(ControlOperation::Delete, conn.stream.as_raw_fd(), EpollEvent::default());
        }
    }

    fn watch(&self, fd: i32, token: u64, events: EventSet) -> std::io::Result<()> {
        self.epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }

    /// Handles one packet the guest sent; `payload` is its data (RW only).
    pub fn handle_guest_packet(&mut self, header: &Header, payload: &[u8]) {
        let key = (header.dst_port, header.src_port);
        let addressed = header.src_cid == self.guest_cid && header.dst_cid == HOST_CID;
        if !addressed || header.socket_type != TYPE_STREAM {
            tracing::debug!(?header, "vsock packet with a wrong address or type");
            if header.op != op::RST {
                self.push_control(Header {
                    src_cid: HOST_CID,
                    dst_cid: self.guest_cid,
                    ..header.reply(op::RST)
                });
            }
            return;
        }
        if let Some(conn) = self.connections.get_mut(&key) {
            conn.peer_buf_alloc = header.buf_alloc;
            conn.peer_fwd_cnt = header.fwd_cnt;
        }
        match header.op {
            op::REQUEST => self.guest_connects(key, header),
            op::RESPONSE => self.guest_accepts(key),
            op::RW => self.guest_sends(key, payload),
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST if self.connections.contains_key(&key) => {
                let update = self.header_for(key, op::CREDIT_UPDATE);
                self.push_control(update);
            }
            op::SHUTDOWN if self.connections.contains_key(&key) => self.guest_shuts(key, header.flags),
            op::RST => self.close(key),
            _ => self.reset(key),
        }
    }

    fn guest_connects(&mut self, key: Key, header: &Header) {
        if self.connections.contains_key(&key) || self.connections.len() >= MAX_CONNECTIONS {
            self.push_control(self.header_for(key, op::RST));
            return;
        }
        let path = PathBuf::from(format!("{}_{}", self.uds_path.display(), key.0));
        let stream = match UnixStream::connect(&path) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "guest connection refused");
                self.push_control(self.header_for(key, op::RST));
                return;
            }
        };
        let token = self.token();
        let watched =
            stream.set_nonblocking(true).and_then(|()| self.watch(stream.as_raw_fd(), token, EventSet::IN));
        if watched.is_err() {
            self.push_control(self.header_for(key, op::RST));
            return;
        }
        self.connections.insert(key, Connection::new(stream, State::Established, token, header));
        self.tokens.insert(token, key);
        self.push_control(self.header_for(key, op::RESPONSE));
    }

    fn guest_shuts(&mut self, key: Key, flags: u32) {
        let Some(conn) = self.connections.get_mut(&key) else { return };
        conn.guest_shutdown |= flags & SHUTDOWN_BOTH;
        let _ = conn.flush();
        conn.finish_writes();
        let both_done = conn.guest_shutdown == SHUTDOWN_BOTH
            || (conn.guest_shutdown & SHUTDOWN_SEND != 0 && conn.host_done);
        if both_done {
            self.reset(key);
        }
    }

    fn guest_accepts(&mut self, key: Key) {
        let Some(conn) = self.connections.get_mut(&key).filter(|c| c.state == State::Connecting) else {
            self.reset(key);
            return;
        };
        conn.state = State::Established;
        let reply = format!("OK {}\n", key.0);
        if conn.stream.write_all(reply.as_bytes()).is_err() {
            self.reset(key);
        }
    }

    fn guest_sends(&mut self, key: Key, payload: &[u8]) {
        let Some(conn) = self.connections.get_mut(&key).filter(|c| c.state == State::Established) else {
            self.reset(key);
            return;
        };
        if conn.guest_shutdown & SHUTDOWN_SEND != 0
            || conn.pending.len() + payload.len() > BUFFER_SIZE as usize
        {
            tracing::warn!(port = key.0, "guest overran its vsock credit: connection reset");
            self.reset(key);
            return;
        }
        conn.pending.extend_from_slice(payload);
        if conn.flush().is_err() {
            self.reset(key);
            return;
        }
        let token = conn.token;
        let fd = conn.stream.as_raw_fd();
        let events = if conn.pending.is_empty() { EventSet::IN } else { EventSet::IN | EventSet::OUT };
        let _ = self.epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token));
        self.maybe_update_credit(key);
    }

    /// Tells the guest about freed buffer space once a quarter of the buffer was forwarded.
    fn maybe_update_credit(&mut self, key: Key) {
        let Some(conn) = self.connections.get_mut(&key) else { return };
        if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_sent) >= BUFFER_SIZE / 4 {
            conn.fwd_cnt_sent = conn.fwd_cnt;
            let update = self.header_for(key, op::CREDIT_UPDATE);
            self.push_control(update);
        }
    }

    /// Serves the sockets that are ready: new host connections, handshakes, stream data
    /// and room to write.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        // Sockets accepted in one round are served in the next; the bound keeps one busy
        // guest from monopolising the worker.
        for _ in 0..16 {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "vsock epoll failed");
                    return;
                }
            };
            for event in &events[..n] {
                let token = event.data();
                if token == LISTENER_TOKEN {
                    self.accept_host_connections();
                } else if token & HANDSHAKE_BIT != 0 {
                    self.read_handshake(token);
                } else if let Some(&key) = self.tokens.get(&token) {
                    self.stream_ready(key, event.event_set());
                }
            }
            if n == 0 {
                return;
            }
        }
    }

    fn accept_host_connections(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.handshakes.len() < MAX_HANDSHAKES => {
                    let token = self.token() | HANDSHAKE_BIT;
                    if stream.set_nonblocking(true).is_ok()
                        && self.watch(stream.as_raw_fd(), token, EventSet::IN).is_ok()
                    {
                        self.handshakes.insert(token, Handshake { stream, line: Vec::new() });
                    }
                }
                Ok(_) => tracing::warn!("too many vsock handshakes in progress: host connection dropped"),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn read_handshake(&mut self, token: u64) {
        let Some(handshake) = self.handshakes.get_mut(&token) else { return };
        let mut byte = [0u8; 1];
        // Byte by byte: nothing after the line may be consumed, it belongs to the guest.
        let done = loop {
            match handshake.stream.read(&mut byte) {
                Ok(0) => break None,
                Ok(_) if byte[0] == b'\n' => break Some(true),
                Ok(_) if handshake.line.len() < MAX_HANDSHAKE_LINE => handshake.line.push(byte[0]),
                Ok(_) => break None,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Some(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break None,
            }
        };
        if done == Some(false) {
            return;
        }
        let Some(Handshake { mut stream, line }) = self.handshakes.remove(&token) else { return };
        let _ = self.epoll.ctl(ControlOperation::Delete, stream.as_raw_fd(), EpollEvent::default());
        let port = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let (Some(true), Some(port)) = (done, port) else {
            let _ = stream.write_all(b"ERROR expected CONNECT <port>\n");
            return;
        };
        if self.connections.len() >= MAX_CONNECTIONS {
            let _ = stream.write_all(b"ERROR too many connections\n");
            return;
        }
        let local = self.next_host_port;
        self.next_host_port = self.next_host_port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
        let key = (local, port);
        let token = self.token();
        if self.watch(stream.as_raw_fd(), token, EventSet::IN).is_err() {
            return;
        }
        let peer = Header { buf_alloc: 0, fwd_cnt: 0, ..Header::default() };
        self.connections.insert(key, Connection::new(stream, State::Connecting, token, &peer));
        self.tokens.insert(token, key);
        let request = self.header_for(key, op::REQUEST);
        self.push_control(request);
    }

    fn stream_ready(&mut self, key: Key, events: EventSet) {
        let Some(conn) = self.connections.get_mut(&key) else { return };
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR) {
            conn.readable = true;
        }
        if events.contains(EventSet::OUT) {
            if conn.flush().is_err() {
                self.reset(key);
                return;
            }
            if conn.pending.is_empty() {
                let _ = self.epoll.ctl(
                    ControlOperation::Modify,
                    conn.stream.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, conn.token),
                );
                conn.finish_writes();
            }
            self.maybe_update_credit(key);
        }
    }

    /// Whether a packet for the guest may be waiting.
    pub fn has_packets(&self) -> bool {
        !self.control.is_empty() || self.connections.values().any(Connection::can_send_to_guest)
    }

    /// The next packet for the guest, with up to `buf.len()` bytes of payload read into
    /// `buf`; `None` when there is nothing to send.
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Option<Header> {
        if let Some(header) = self.control.pop_front() {
            return Some(header);
        }
        // Each pass returns, or clears the connection's `readable`: the loop ends.
        while let Some(key) = self.connections.iter().find(|(_, c)| c.can_send_to_guest()).map(|(k, _)| *k) {
            let Some(conn) = self.connections.get_mut(&key) else { break };
            let room = (conn.peer_credit() as usize).min(buf.len());
            match conn.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    // The host side sends no more. When the guest is done too, the connection
                    // ends; otherwise the guest hears SHUTDOWN and may still send.
                    conn.host_done = true;
                    conn.readable = false;
                    if conn.guest_shutdown & SHUTDOWN_SEND != 0 {
                        self.reset(key);
                        return self.control.pop_back();
                    }
                    let mut shutdown = self.header_for(key, op::SHUTDOWN);
                    shutdown.flags = SHUTDOWN_SEND;
                    return Some(shutdown);
                }
                Ok(n) => {
                    conn.tx_cnt = conn.tx_cnt.wrapping_add(n as u32);
                    conn.fwd_cnt_sent = conn.fwd_cnt;
                    let mut rw = self.header_for(key, op::RW);
                    rw.len = n as u32;
                    return Some(rw);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => conn.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.reset(key);
                    return self.control.pop_back();
                }
            }
        }
        None
    }
}
