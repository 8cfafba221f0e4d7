//! Sockets that take traffic from one interface only (a subnet's bridge), made inside the
//! plane's network namespace: the DHCP responder's and the metadata service's.

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A socket of `kind` (`SOCK_STREAM`, `SOCK_DGRAM`) bound to `addr` on interface
/// `device` only (`SO_BINDTODEVICE`), with `SO_REUSEADDR` and the other `SOL_SOCKET`
/// flags in `flags` set, made in namespace `netns` (`None`: the caller's own). Many such
/// sockets may share one address and port, each on its own device.
pub fn bound_to_device(
    netns: Option<&str>,
    device: &str,
    kind: libc::c_int,
    addr: SocketAddrV4,
    flags: &[libc::c_int],
) -> std::io::Result<OwnedFd> {
    let name = std::ffi::CString::new(device).map_err(std::io::Error::other)?;
    let flags: Vec<libc::c_int> = flags.iter().copied().chain([libc::SO_REUSEADDR]).collect();
    super::in_netns(netns, move || {
        // SAFETY: plain socket creation; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: the option values point at live data of the given lengths.
        let mut rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.as_bytes_with_nul().len() as u32,
            )
        };
        for flag in flags {
            // SAFETY: as above, a c_int option.
            rc |= unsafe {
                libc::setsockopt(raw, libc::SOL_SOCKET, flag, (&one as *const libc::c_int).cast(), 4)
            };
        }
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: `sockaddr` is a valid sockaddr_in of the given length.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&sockaddr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if bound != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(socket)
    })
}

/// A TCP listener on `addr`, taking connections that arrive on `device` only.
pub fn listen_on_device(
    netns: Option<&str>,
    device: &str,
    addr: SocketAddrV4,
) -> std::io::Result<std::net::TcpListener> {
    let socket = bound_to_device(netns, device, libc::SOCK_STREAM, addr, &[])?;
    // SAFETY: listen on a bound socket we own; the result is checked.
    if unsafe { libc::listen(socket.as_raw_fd(), 128) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::net::TcpListener::from(socket))
}
