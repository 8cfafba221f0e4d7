//! Raw disk files: the guest's sector N is the file's bytes at N × 512. Sparse-aware:
//! discards and zero writes punch holes instead of writing zeros.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use vm_memory::VolatileSlice;

use super::BlockBackend;

/// A raw disk image file.
pub struct RawFile {
    file: File,
    size: u64,
}

impl RawFile {
    /// Opens `path` read-only or read-write.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        Ok(Self { file, size: metadata.len() })
    }

    fn write_zero_bytes(&mut self, mut offset: u64, len: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(ZEROS.len() as u64) as usize;
            std::os::unix::fs::FileExt::write_all_at(&self.file, &ZEROS[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// Releases `len` bytes of `file` at `offset`; they read back as zeros.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    // SAFETY: fallocate only acts on the given file descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Fills `buf` from `file` at `offset`.
pub(crate) fn read_into(file: &File, offset: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: pread writes at most `len` bytes into the range `transfer` hands it.
    transfer(buf, offset, |ptr, len, off| unsafe { libc::pread(fd, ptr, len, off) })
}

/// Writes all of `buf` to `file` at `offset`.
pub(crate) fn write_from(file: &File, offset: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: pwrite reads at most `len` bytes from the range `transfer` hands it.
    transfer(buf, offset, |ptr, len, off| unsafe { libc::pwrite(fd, ptr, len, off) })
}

/// Runs a positional read or write syscall until `buf` is done.
fn transfer(
    buf: &VolatileSlice<'_>,
    mut offset: u64,
    mut op: impl FnMut(*mut libc::c_void, usize, libc::off_t) -> isize,
) -> io::Result<()> {
    let guard = buf.ptr_guard_mut();
    let base = guard.as_ptr();
    let mut done = 0usize;
    while done < buf.len() {
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `base + done .. base + len` lies inside the guest memory slice, which
        // vm-memory checked and which stays mapped while `guard` lives.
        let ptr = unsafe { base.add(done) };
        let n = op(ptr.cast(), buf.len() - done, off);
        match n {
            n if n > 0 => {
                done += n as usize;
                offset += n as u64;
            }
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
        read_into(&self.file, offset, buf)
    }

    fn write_at(&mut self, offset: u64, buf: &VolatileSlice<'_>) -> io::Result<()> {
        write_from(&self.file, offset, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        punch_hole(&self.file, offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match punch_hole(&self.file, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => self.write_zero_bytes(offset, len),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    use crate::vmm::vstate::memory::create_guest_memory;

    fn disk(len: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(len).unwrap();
        f
    }

    #[test]
    fn write_then_read_through_guest_memory() {
        let mem = create_guest_memory(4).unwrap();
        let f = disk(1 << 20);
        let mut raw = RawFile::open(f.path(), false).unwrap();
        mem.write_slice(&[0xab; 4096], GuestAddress(0x1000)).unwrap();
        raw.write_at(8192, &mem.get_slice(GuestAddress(0x1000), 4096).unwrap()).unwrap();
        raw.read_at(8192, &mem.get_slice(GuestAddress(0x4000), 4096).unwrap()).unwrap();
        let mut back = [0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(0x4000)).unwrap();
        assert_eq!(back, [0xab; 4096]);
        raw.flush().unwrap();
    }

    #[test]
    fn reads_past_the_end_fail() {
        let mem = create_guest_memory(4).unwrap();
        let f = disk(4096);
        let mut raw = RawFile::open(f.path(), true).unwrap();
        assert!(raw.read_at(2048, &mem.get_slice(GuestAddress(0), 4096).unwrap()).is_err());
    }

    #[test]
    fn read_only_files_refuse_writes() {
        let mem = create_guest_memory(4).unwrap();
        let f = disk(4096);
        let mut raw = RawFile::open(f.path(), true).unwrap();
        assert!(raw.write_at(0, &mem.get_slice(GuestAddress(0), 512).unwrap()).is_err());
    }

    #[test]
    fn discard_punches_holes() {
        let f = disk(0);
        std::fs::write(f.path(), vec![0x5a; 1 << 20]).unwrap();
        let before = std::fs::metadata(f.path()).unwrap().blocks();
        let mut raw = RawFile::open(f.path(), false).unwrap();
        raw.discard(0, 512 * 1024).unwrap();
        raw.write_zeroes(512 * 1024, 256 * 1024).unwrap();
        let after = std::fs::metadata(f.path()).unwrap().blocks();
        assert!(after < before, "blocks {before} -> {after}");
        let data = std::fs::read(f.path()).unwrap();
        assert!(data[..768 * 1024].iter().all(|b| *b == 0));
        assert!(data[768 * 1024..].iter().all(|b| *b == 0x5a));
        assert_eq!(data.len(), 1 << 20);
    }
}
