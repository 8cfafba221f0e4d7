//! Tap devices: the host end of a guest's network interface. Frames carry a 12-byte
//! virtio-net header (`IFF_VNET_HDR`) so checksum and segmentation offloads pass between
//! the guest and the host kernel untouched.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const IFNAMSIZ: usize = 16;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
// _IOW('T', n, int) and _IOR('T', n, unsigned int) from <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// Sets the offloads a tap may hand over (at activation, from what the guest accepted).
pub const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// Offloads the host may hand the guest (`TUNSETOFFLOAD` flags).
pub mod offload {
    /// Frames with partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TCP segmentation offload, IPv4.
    pub const TSO4: u32 = 0x02;
    /// TCP segmentation offload, IPv6.
    pub const TSO6: u32 = 0x04;
}

/// Errors while opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty, too long or contains a NUL.
    #[error("invalid tap name {0:?} (1 to 15 bytes)")]
    Name(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// The kernel refused an ioctl.
    #[error("tap {name}: {what} failed: {source}")]
    Ioctl {
        /// The interface.
        name: String,
        /// Which operation.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A descriptor handed in is not a tap opened with the flags nuage needs.
    #[error("descriptor {0} is not a tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR")]
    NotATap(RawFd),
}

/// `struct ifreq` as the tun ioctls use it: a name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: i16) -> Self {
        let mut req = IfReq { name: [0; IFNAMSIZ], flags, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }

    fn name(&self) -> String {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..len]).into_owned()
    }
}

/// An open, non-blocking tap queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl From<Tap> for OwnedFd {
    fn from(tap: Tap) -> Self {
        tap.file.into()
    }
}

impl Tap {
    /// Opens the tap `name`, creating it (non-persistent, needs CAP_NET_ADMIN) when it does
    /// not exist yet.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(TapError::Name(name.to_owned()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq::new(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
        ioctl(&file, TUNSETIFF, &mut req).map_err(|source| TapError::Ioctl {
            name: name.to_owned(),
            what: "TUNSETIFF",
            source,
        })?;
        let tap = Self { file, name: req.name() };
        tap.set_vnet_header_size()?;
        Ok(tap)
    }

    /// Takes over a tap descriptor opened by a more privileged parent process.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let raw = fd.as_raw_fd();
        let file = File::from(fd);
        let mut req = IfReq::new("", 0);
        ioctl(&file, TUNGETIFF, &mut req).map_err(|_| TapError::NotATap(raw))?;
        let needed = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if req.flags & needed != needed {
            return Err(TapError::NotATap(raw));
        }
        // SAFETY: F_GETFL/F_SETFL only change the status flags of our own descriptor.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(TapError::NotATap(raw));
        }
        let tap = Self { file, name: req.name() };
        tap.set_vnet_header_size()?;
        Ok(tap)
    }

    /// Takes over descriptor `fd` inherited from the parent process; a number that is not
    /// open is refused without being touched.
    ///
    /// # Safety
    /// If `fd` is open, nothing else in this process may own it.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Result<Self, TapError> {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(TapError::NotATap(fd));
        }
        // SAFETY: `fd` is open, and the caller guarantees nothing else owns it.
        Self::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn set_vnet_header_size(&self) -> Result<(), TapError> {
        let mut size: libc::c_int = VNET_HEADER_SIZE as libc::c_int;
        ioctl(&self.file, TUNSETVNETHDRSZ, &mut size).map_err(|source| self.error("TUNSETVNETHDRSZ", source))
    }

    /// Tells the kernel which offloads (see [`offload`]) the guest accepts on received frames.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and only reads it.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
        if rc < 0 {
            return Err(self.error("TUNSETOFFLOAD", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn error(&self, what: &'static str, source: io::Error) -> TapError {
        TapError::Ioctl { name: self.name.clone(), what, source }
    }

    /// Brings the interface up (needs CAP_NET_ADMIN in the tap's network namespace).
    pub fn set_link_up(&self) -> Result<(), TapError> {
        // SAFETY: creating a socket has no memory-safety preconditions; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(self.error("socket", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let socket = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        let mut req = IfReq::new(&self.name, 0);
        ioctl(&socket, libc::SIOCGIFFLAGS as libc::c_ulong, &mut req)
            .map_err(|source| self.error("SIOCGIFFLAGS", source))?;
        req.flags |= libc::IFF_UP as i16;
        ioctl(&socket, libc::SIOCSIFFLAGS as libc::c_ulong, &mut req)
            .map_err(|source| self.error("SIOCSIFFLAGS", source))
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (with its virtio-net header) into `buf`; `WouldBlock` when none waits.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.file, buf)
    }

    /// Writes one frame (with its virtio-net header).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        io::Write::write(&mut &self.file, frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Size of the virtio-net header on every frame (`struct virtio_net_hdr_v1`).
pub const VNET_HEADER_SIZE: usize = 12;

fn ioctl<T>(file: &File, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request used here reads or writes at most `size_of::<T>()` bytes at
    // `arg`, which is a live, exclusive reference for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(matches!(Tap::open(""), Err(TapError::Name(_))));
        assert!(matches!(Tap::open("a-name-far-too-long"), Err(TapError::Name(_))));
    }

    #[test]
    fn a_file_is_not_a_tap() {
        let file = tempfile::tempfile().unwrap();
        assert!(matches!(Tap::from_fd(OwnedFd::from(file)), Err(TapError::NotATap(_))));
    }
}
