//! vsock probe for nuage's test guest and its host side. Standard library only (the vsock
//! socket calls are declared by hand), so it builds with plain `rustc` into a static binary.
//!
//!   nuage-vsock echo PORT                 guest: answer each connection with "echo:" + data
//!   nuage-vsock send CID PORT TEXT        guest: send TEXT, print the reply
//!   nuage-vsock uds-connect PATH PORT TEXT  host: reach guest PORT through the VMM's socket
//!   nuage-vsock uds-serve PATH            host: answer one guest connection with "pong:" + data

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::exit;

const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const VMADDR_CID_ANY: u32 = u32::MAX;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept(fd: i32, addr: *mut u8, len: *mut u32) -> i32;
    fn connect(fd: i32, addr: *const SockaddrVm, len: u32) -> i32;
}

fn fail(message: String) -> ! {
    eprintln!("nuage-vsock: {message}");
    exit(1)
}

fn check(rc: i32, what: &str) -> i32 {
    if rc < 0 {
        fail(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    rc
}

fn address(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm { family: AF_VSOCK as u16, reserved: 0, port, cid, flags: 0, zero: [0; 3] }
}

/// A connected vsock socket as a stream (UnixStream is only used for its Read/Write/shutdown
/// on a plain socket descriptor).
fn stream(fd: i32) -> UnixStream {
    // SAFETY: `fd` is a fresh socket descriptor nothing else owns.
    UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn echo(port: u32) {
    // SAFETY: plain socket calls on descriptors this function owns; results are checked.
    let fd = check(unsafe { socket(AF_VSOCK, SOCK_STREAM, 0) }, "socket");
    let addr = address(VMADDR_CID_ANY, port);
    // SAFETY: as above; `addr` is a valid sockaddr_vm.
    check(unsafe { bind(fd, &addr, std::mem::size_of::<SockaddrVm>() as u32) }, "bind");
    // SAFETY: as above.
    check(unsafe { listen(fd, 8) }, "listen");
    loop {
        // SAFETY: as above; a null address is allowed.
        let conn = check(unsafe { accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) }, "accept");
        let mut s = stream(conn);
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(b"echo:");
        let _ = s.write_all(&buf[..n]);
    }
}

fn send(cid: u32, port: u32, text: &str) {
    // SAFETY: plain socket calls on a descriptor this function owns; results are checked.
    let fd = check(unsafe { socket(AF_VSOCK, SOCK_STREAM, 0) }, "socket");
    let addr = address(cid, port);
    // SAFETY: as above; `addr` is a valid sockaddr_vm.
    check(unsafe { connect(fd, &addr, std::mem::size_of::<SockaddrVm>() as u32) }, "connect");
    let mut s = stream(fd);
    s.write_all(text.as_bytes()).unwrap_or_else(|e| fail(format!("send: {e}")));
    let _ = s.shutdown(Shutdown::Write);
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap_or_else(|e| fail(format!("receive: {e}")));
    println!("reply={reply}");
}

fn uds_connect(path: &str, port: &str, text: &str) {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| fail(format!("{path}: {e}")));
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap_or_else(|e| fail(format!("send: {e}")));
    let mut reader = BufReader::new(s.try_clone().unwrap_or_else(|e| fail(format!("clone: {e}"))));
    let mut line = String::new();
    reader.read_line(&mut line).unwrap_or_else(|e| fail(format!("handshake: {e}")));
    if !line.starts_with("OK ") {
        fail(format!("handshake refused: {line:?}"));
    }
    s.write_all(text.as_bytes()).unwrap_or_else(|e| fail(format!("send: {e}")));
    let mut reply = String::new();
    reader.read_to_string(&mut reply).unwrap_or_else(|e| fail(format!("receive: {e}")));
    println!("handshake={} reply={reply}", line.trim_end().replace(' ', "_"));
}

fn uds_serve(path: &str) {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap_or_else(|e| fail(format!("{path}: {e}")));
    let (mut s, _) = listener.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
    let mut data = String::new();
    s.read_to_string(&mut data).unwrap_or_else(|e| fail(format!("receive: {e}")));
    s.write_all(format!("pong:{data}").as_bytes()).unwrap_or_else(|e| fail(format!("send: {e}")));
    println!("received={data}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| fail("missing argument; see the source header".into()));
    let number = |i: usize| arg(i).parse::<u32>().unwrap_or_else(|_| fail(format!("not a number: {}", arg(i))));
    match arg(0).as_str() {
        "echo" => echo(number(1)),
        "send" => send(number(1), number(2), &arg(3)),
        "uds-connect" => uds_connect(&arg(1), &arg(2), &arg(3)),
        "uds-serve" => uds_serve(&arg(1)),
        other => fail(format!("unknown mode {other}")),
    }
}
