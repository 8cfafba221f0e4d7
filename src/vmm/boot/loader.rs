//! Loading the kernel image, initrd and command line into guest memory.
//!
//! Two kernel formats are accepted, both through `linux-loader`: a bzImage (what
//! distributions ship as `vmlinuz`), entered through its 64-bit entry point, and an
//! uncompressed ELF `vmlinux`, entered at its ELF entry address.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion};

use crate::vmm::arch::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, DEFAULT_INITRD_ADDR_MAX, HIMEM_START};
use crate::vmm::vstate::memory::GuestMemory;

/// Offset of the 64-bit entry point from a bzImage's protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has a 64-bit entry point (boot protocol 2.12+).
const XLF_KERNEL_64: u16 = 1 << 0;
/// Boot protocol version that introduced `xloadflags`.
const BOOT_PROTOCOL_2_12: u16 = 0x020c;
/// Offset of the "HdrS" magic in a bzImage file.
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const PAGE_SIZE: u64 = 4096;

/// Errors while loading boot images. Every one is detected before a vCPU runs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {path}: {source}")]
    KernelIo {
        /// The kernel path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel file is neither an ELF vmlinux nor a bzImage.
    #[error("{0} is not a Linux kernel: neither an ELF vmlinux nor a bzImage (no \"HdrS\" header)")]
    NotAKernel(PathBuf),
    /// The bzImage has no 64-bit entry point.
    #[error(
        "{0} is a bzImage without a 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 is required)"
    )]
    No64BitEntry(PathBuf),
    /// linux-loader rejected the image.
    #[error("cannot load kernel {path}: {source}")]
    Kernel {
        /// The kernel path.
        path: PathBuf,
        /// What the loader reported.
        source: linux_loader::loader::Error,
    },
    /// The initrd cannot be opened or read.
    #[error("cannot read initrd {path}: {source}")]
    InitrdIo {
        /// The initrd path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The initrd does not fit between the kernel and the highest address it may use.
    #[error(
        "initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x}; give the VM more memory"
    )]
    InitrdTooLarge {
        /// The initrd path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The highest address it could reach.
        limit: u64,
    },
    /// The command line is too long or holds a NUL byte.
    #[error("kernel command line is invalid: {0}")]
    Cmdline(String),
    /// Writing into guest memory failed (the guest is too small for the layout).
    #[error("guest memory too small for the boot layout: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

/// What the VMM needs to know about a loaded kernel.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Guest-physical address of the 64-bit entry point.
    pub entry: GuestAddress,
    /// First guest-physical address past the kernel image.
    pub end: u64,
    /// The bzImage setup header, copied into the zero page; `None` for ELF kernels.
    pub setup_header: Option<setup_header>,
}

/// Where an initrd was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    /// Guest-physical start address (page aligned).
    pub address: GuestAddress,
    /// Size in bytes.
    pub size: u64,
}

/// Loads the kernel at `path` into `mem`, choosing the loader by the file's magic numbers.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, LoadError> {
    let io_err = |source| LoadError::KernelIo { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io_err)?;
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(LoadError::NotAKernel(path.to_owned()));
    }
    let load_err = |source| LoadError::Kernel { path: path.to_owned(), source };
    if read_magic(&mut file, 0).map_err(io_err)?.as_ref() == Some(ELF_MAGIC) {
        let result = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(load_err)?;
        return Ok(LoadedKernel { entry: result.kernel_load, end: result.kernel_end, setup_header: None });
    }
    if read_magic(&mut file, BZIMAGE_MAGIC_OFFSET).map_err(io_err)?.as_ref() != Some(BZIMAGE_MAGIC) {
        return Err(LoadError::NotAKernel(path.to_owned()));
    }
    let result = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(load_err)?;
    let header = result.setup_header.ok_or_else(|| LoadError::NotAKernel(path.to_owned()))?;
    let (version, xloadflags) = (header.version, header.xloadflags);
    if version < BOOT_PROTOCOL_2_12 || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoadError::No64BitEntry(path.to_owned()));
    }
    Ok(LoadedKernel {
        entry: result.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
        end: result.kernel_end,
        setup_header: Some(header),
    })
}

fn read_magic(file: &mut File, offset: u64) -> std::io::Result<Option<[u8; 4]>> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(offset))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(Some(magic)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Highest address (inclusive) the kernel allows for its initrd.
pub fn initrd_addr_max(kernel: &LoadedKernel) -> u64 {
    match kernel.setup_header {
        Some(h) if h.initrd_addr_max != 0 => u64::from(h.initrd_addr_max),
        _ => DEFAULT_INITRD_ADDR_MAX,
    }
}

/// Loads the initrd as high as allowed in the first RAM region, page aligned, above the kernel.
pub fn load_initrd(mem: &GuestMemory, path: &Path, kernel: &LoadedKernel) -> Result<LoadedInitrd, LoadError> {
    let io_err = |source| LoadError::InitrdIo { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let low_ram_end =
        mem.iter().next().map(|region| region.start_addr().raw_value() + region.len()).unwrap_or(0);
    let limit = low_ram_end.min(initrd_addr_max(kernel).saturating_add(1));
    let too_large = || LoadError::InitrdTooLarge { path: path.to_owned(), size, limit };
    let start = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE_SIZE - 1);
    if start < kernel.end.next_multiple_of(PAGE_SIZE) {
        return Err(too_large());
    }
    let address = GuestAddress(start);
    mem.read_exact_volatile_from(address, &mut file, size as usize).map_err(|e| match e {
        vm_memory::GuestMemoryError::IOError(source) => LoadError::InitrdIo { path: path.to_owned(), source },
        other => LoadError::GuestMemory(other),
    })?;
    Ok(LoadedInitrd { address, size })
}

/// Writes the NUL-terminated command line at [`CMDLINE_START`]; returns its length without NUL.
pub fn load_cmdline(mem: &GuestMemory, cmdline: &str, max_size: usize) -> Result<usize, LoadError> {
    let max = max_size.min(CMDLINE_MAX_SIZE);
    if cmdline.as_bytes().contains(&0) {
        return Err(LoadError::Cmdline("it contains a NUL byte".into()));
    }
    if cmdline.len() + 1 > max {
        return Err(LoadError::Cmdline(format!(
            "{} bytes, the kernel accepts at most {}",
            cmdline.len(),
            max - 1
        )));
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))?;
    Ok(cmdline.len())
}

/// The largest command line (with NUL) the kernel accepts.
pub fn cmdline_max_size(kernel: &LoadedKernel) -> usize {
    match kernel.setup_header {
        // `cmdline_size` excludes the terminating NUL.
        Some(h) if h.cmdline_size != 0 => h.cmdline_size as usize + 1,
        _ => CMDLINE_MAX_SIZE,
    }
}
