//! A registered bzImage's kernel, unpacked once so that every boot skips the decompressor.
//!
//! Distributions ship kernels as bzImages: a small setup stub and a compressed ELF
//! `vmlinux` (XZ in Debian's generic flavour, LZ4 in its cloud one, ZSTD in Ubuntu's). Booted
//! as such, every guest first decompresses its own kernel, which costs Debian's generic
//! kernel most of a boot. The payload is found through the boot protocol's setup header
//! (`payload_offset`, `payload_length`, protocol 2.08+), recognised by its magic number,
//! never by guessing, and decompressed by the distribution's own tool, its output capped at
//! the size the kernel build appends to the payload. What comes out is kept only when it is
//! an x86-64 ELF with loadable segments; anything else leaves the image booting its bzImage.
//!
//! The guest then starts at the ELF's 64-bit entry without the decompressor, which is also
//! what randomises the kernel's load address: such guests boot without KASLR, as under
//! Firecracker (docs/SECURITY.md).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{io_error, StoreError};

/// The largest bzImage read for unpacking, and the largest kernel it may unpack to.
const MAX_BZIMAGE_BYTES: u64 = 128 << 20;
const MAX_VMLINUX_BYTES: u64 = 512 << 20;
/// How much of the unpacked kernel the ELF check reads: its header and program headers.
const ELF_HEAD_BYTES: u64 = 64 << 10;

/// Setup header fields (offsets in the file, boot protocol documentation).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const PROTOCOL_VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// The first protocol with `payload_offset` and `payload_length`.
const PROTOCOL_2_08: u16 = 0x0208;

/// The compressions Linux builds an x86 payload with: magic number, the tool and its
/// arguments that decompress standard input to standard output.
const DECOMPRESSORS: &[(&[u8], &str, &[&str])] = &[
    (&[0x1f, 0x8b], "gzip", &["-dc"]),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz", &["-dc"]),
    (&[0x02, 0x21, 0x4c, 0x18], "lz4", &["-dc"]),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dcq"]),
    (b"BZh", "bzip2", &["-dc"]),
    (&[0x5d, 0x00, 0x00], "xz", &["--format=lzma", "-dc"]),
    (&[0x89, b'L', b'Z', b'O'], "lzop", &["-dc"]),
];

/// Why a kernel is booted as it is rather than unpacked (none of these fails a registration).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeptAsIs {
    /// Not a bzImage at all (an ELF vmlinux already, or something the VMM will reject).
    #[error("not a bzImage")]
    NotBzImage,
    /// A bzImage too old to say where its payload is, or whose fields point outside it.
    #[error("the bzImage's payload cannot be located: {0}")]
    NoPayload(String),
    /// A compression this module does not know, or whose tool is not installed.
    #[error("the payload's compression is unknown or its tool is missing: {0}")]
    Unsupported(String),
    /// The tool failed, or its output is not the kernel the header promised.
    #[error("the payload does not unpack to an x86-64 ELF kernel: {0}")]
    Malformed(String),
}

/// Unpacks the bzImage `kernel` to `vmlinux` (created 0600, nothing left behind when this
/// fails). `Ok(Err(why))` when the kernel is booted as it is; `Err` for the store's own
/// failures (I/O, no space) while writing.
pub fn unpack(kernel: &Path, vmlinux: &Path) -> Result<Result<(), KeptAsIs>, StoreError> {
    let image = match read_capped(kernel)? {
        Some(image) => image,
        None => return Ok(Err(KeptAsIs::NotBzImage)),
    };
    match payload_of(&image) {
        Ok(payload) => decompress(payload, vmlinux),
        Err(why) => Ok(Err(why)),
    }
}

/// Whether `kernel` is one nuage-vmm can boot: a bzImage (the x86 boot protocol's setup
/// header) or an x86-64 ELF executable. An arm64 `Image` or a file that is no kernel is not.
pub fn is_x86_kernel(kernel: &Path) -> Result<bool, StoreError> {
    let mut head = Vec::new();
    let file = fs::File::open(kernel).map_err(io_error(kernel))?;
    file.take(ELF_HEAD_BYTES).read_to_end(&mut head).map_err(io_error(kernel))?;
    Ok(head.get(HEADER_MAGIC..HEADER_MAGIC + 4) == Some(b"HdrS") || check_elf(&head).is_ok())
}

/// The file, when it is small enough to be a bzImage.
fn read_capped(kernel: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut image = Vec::new();
    let file = fs::File::open(kernel).map_err(io_error(kernel))?;
    file.take(MAX_BZIMAGE_BYTES + 1).read_to_end(&mut image).map_err(io_error(kernel))?;
    Ok((image.len() as u64 <= MAX_BZIMAGE_BYTES).then_some(image))
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// The compressed kernel inside a bzImage, as the setup header places it.
fn payload_of(image: &[u8]) -> Result<&[u8], KeptAsIs> {
    if image.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err(KeptAsIs::NotBzImage);
    }
    let version = u16_at(image, PROTOCOL_VERSION).unwrap_or(0);
    if version < PROTOCOL_2_08 {
        return Err(KeptAsIs::NoPayload(format!("boot protocol {version:#06x} predates 2.08")));
    }
    let setup_sects = match image[SETUP_SECTS] {
        0 => 4,
        n => usize::from(n),
    };
    let fields = (u32_at(image, PAYLOAD_OFFSET), u32_at(image, PAYLOAD_LENGTH));
    let (Some(offset), Some(length)) = fields else {
        return Err(KeptAsIs::NoPayload("the header is truncated".into()));
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    start
        .checked_add(length as usize)
        .and_then(|end| image.get(start..end))
        .ok_or_else(|| KeptAsIs::NoPayload(format!("{length} bytes at {start:#x} lie beyond the file")))
}

/// Decompresses `payload` into the new file `vmlinux` with the tool its magic number names,
/// and checks that an x86-64 ELF kernel came out. The kernel build appends the uncompressed
/// size (32-bit, little endian) to the payload: output of any other size is refused, and no
/// more than that is ever read.
fn decompress(payload: &[u8], vmlinux: &Path) -> Result<Result<(), KeptAsIs>, StoreError> {
    let Some((&(_, tool, args), split)) = DECOMPRESSORS
        .iter()
        .find(|(magic, _, _)| payload.starts_with(magic))
        .zip(payload.len().checked_sub(4))
    else {
        let head: Vec<String> = payload.iter().take(6).map(|b| format!("{b:02x}")).collect();
        return Ok(Err(KeptAsIs::Unsupported(format!("magic {}", head.join(" ")))));
    };
    let (stream, size) = payload.split_at(split);
    let size = u64::from(u32::from_le_bytes([size[0], size[1], size[2], size[3]]));
    if size > MAX_VMLINUX_BYTES {
        return Ok(Err(KeptAsIs::Malformed(format!(
            "it claims {size} bytes, more than {MAX_VMLINUX_BYTES}"
        ))));
    }
    super::image::ensure_space(vmlinux.parent().unwrap_or(Path::new(".")), size)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(vmlinux)
        .map_err(io_error(vmlinux))?;
    let outcome = run_tool(tool, args, stream, size, &mut file, vmlinux);
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = fs::remove_file(vmlinux);
    }
    outcome
}

/// Runs `tool` with `args` on `stream` into `file`, expecting `size` bytes (see [`decompress`]).
fn run_tool(
    tool: &str,
    args: &[&str],
    stream: &[u8],
    size: u64,
    file: &mut fs::File,
    vmlinux: &Path,
) -> Result<Result<(), KeptAsIs>, StoreError> {
    let mut child = match Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Ok(Err(KeptAsIs::Unsupported(format!("{tool}: {e}")))),
    };
    let (Some(mut input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(Err(KeptAsIs::Unsupported(format!("{tool}: no pipes"))));
    };
    // The tool's input is written from a thread, so that a tool filling its output pipe
    // before it has read everything cannot deadlock with us; the thread borrows the
    // payload and ends (at the latest with a broken pipe) once the tool has.
    let (copied, status) = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = input.write_all(stream);
        });
        let copied = copy_capped(output, file, size + 1, vmlinux);
        if !matches!(copied, Ok(Ok(n)) if n <= size) {
            let _ = child.kill();
        }
        (copied, child.wait())
    });
    let copied = match copied? {
        Ok(n) => n,
        Err(e) => return Ok(Err(KeptAsIs::Malformed(format!("{tool}: {e}")))),
    };
    match status {
        Ok(status) if status.success() && copied == size => {}
        Ok(status) => {
            return Ok(Err(KeptAsIs::Malformed(format!(
                "{tool} gave {copied} bytes where {size} were promised ({status})"
            ))))
        }
        Err(e) => return Ok(Err(KeptAsIs::Malformed(format!("{tool}: {e}")))),
    }
    file.sync_all().map_err(io_error(vmlinux))?;
    let mut head = Vec::new();
    fs::File::open(vmlinux)
        .and_then(|f| f.take(ELF_HEAD_BYTES).read_to_end(&mut head))
        .map_err(io_error(vmlinux))?;
    Ok(check_elf(&head))
}

/// Copies at most `limit` bytes from the tool's output to the file: `Ok(Err)` when reading
/// the tool fails, `Err` when writing the store's file does.
fn copy_capped(
    mut from: impl Read,
    to: &mut fs::File,
    limit: u64,
    path: &Path,
) -> Result<std::io::Result<u64>, StoreError> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    while copied < limit {
        let want = buffer.len().min(usize::try_from(limit - copied).unwrap_or(usize::MAX));
        let n = match from.read(&mut buffer[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(e)),
        };
        to.write_all(&buffer[..n]).map_err(io_error(path))?;
        copied += n as u64;
    }
    Ok(Ok(copied))
}

/// Accepts a 64-bit little-endian x86-64 ELF executable with at least one loadable segment
/// (its program headers within `ELF_HEAD_BYTES`).
fn check_elf(elf: &[u8]) -> Result<(), KeptAsIs> {
    const PT_LOAD: u32 = 1;
    const EM_X86_64: u16 = 62;
    const ET_EXEC: u16 = 2;
    let bad = |why: &str| Err(KeptAsIs::Malformed(why.to_owned()));
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return bad("no 64-bit little-endian ELF header");
    }
    if u16_at(elf, 0x10) != Some(ET_EXEC) || u16_at(elf, 0x12) != Some(EM_X86_64) {
        return bad("not an x86-64 executable");
    }
    let table =
        elf.get(0x20..0x28).and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok());
    let (Some(table), Some(entry_size), Some(count)) = (table, u16_at(elf, 0x36), u16_at(elf, 0x38)) else {
        return bad("truncated ELF header");
    };
    let loads = (0..usize::from(count))
        .filter_map(|i| u32_at(elf, table.checked_add(i * usize::from(entry_size))?))
        .filter(|&kind| kind == PT_LOAD)
        .count();
    if loads == 0 {
        return bad("no loadable segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal x86-64 ELF executable: its header and one PT_LOAD program header.
    fn tiny_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 0x78 + 256];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes());
        elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        elf
    }

    fn compressed(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
        let mut child =
            Command::new(tool).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap().stdout
    }

    /// A bzImage-shaped file: one setup sector after the boot sector, then `payload` at
    /// `payload_offset` 0, with the header fields the boot protocol puts there.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 2 * 512];
        image[SETUP_SECTS] = 1;
        image[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        image[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        image[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image
    }

    /// The payload as the kernel build writes it: the stream, then the unpacked size.
    fn with_size(stream: Vec<u8>, size: usize) -> Vec<u8> {
        let mut payload = stream;
        payload.extend_from_slice(&(size as u32).to_le_bytes());
        payload
    }

    fn unpack_bytes(image: &[u8]) -> (Result<(), KeptAsIs>, Option<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, vmlinux) = (dir.path().join("kernel"), dir.path().join("vmlinux"));
        fs::write(&kernel, image).unwrap();
        let outcome = unpack(&kernel, &vmlinux).unwrap();
        (outcome, fs::read(&vmlinux).ok())
    }

    #[test]
    fn each_compression_unpacks_to_the_exact_kernel() {
        let elf = tiny_elf();
        for (tool, args) in [
            ("gzip", &["-c"][..]),
            ("xz", &["-c", "--check=crc32"]),
            ("lz4", &["-l", "-c"]),
            ("zstd", &["-c", "-q"]),
        ] {
            let image = bzimage(&with_size(compressed(tool, args, &elf), elf.len()));
            let (outcome, written) = unpack_bytes(&image);
            assert_eq!(outcome, Ok(()), "{tool}");
            assert_eq!(written.as_deref(), Some(&elf[..]), "{tool}");
        }
    }

    #[test]
    fn the_unpacked_kernel_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let elf = tiny_elf();
        let dir = tempfile::tempdir().unwrap();
        let (kernel, vmlinux) = (dir.path().join("kernel"), dir.path().join("vmlinux"));
        fs::write(&kernel, bzimage(&with_size(compressed("gzip", &["-c"], &elf), elf.len()))).unwrap();
        assert_eq!(unpack(&kernel, &vmlinux).unwrap(), Ok(()));
        assert_eq!(fs::metadata(&vmlinux).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn anything_else_boots_as_registered_and_leaves_no_file() {
        let elf = tiny_elf();
        let gz = compressed("gzip", &["-c"], &elf);
        let mut past_end = bzimage(&with_size(gz.clone(), elf.len()));
        past_end.truncate(past_end.len() - 10);
        let mut old = bzimage(&with_size(gz.clone(), elf.len()));
        old[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&0x0207u16.to_le_bytes());
        let text = b"not an ELF kernel at all, but a compressed text".to_vec();
        type Expect = fn(&KeptAsIs) -> bool;
        let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
            ("an ELF vmlinux", elf.clone(), |k| *k == KeptAsIs::NotBzImage),
            ("a short file", b"HdrS".to_vec(), |k| *k == KeptAsIs::NotBzImage),
            ("protocol 2.07", old, |k| matches!(k, KeptAsIs::NoPayload(_))),
            ("a payload past the end", past_end, |k| matches!(k, KeptAsIs::NoPayload(_))),
            ("an unknown compression", bzimage(&with_size(vec![0x42; 64], 64)), |k| {
                matches!(k, KeptAsIs::Unsupported(_))
            }),
            ("a size that lies", bzimage(&with_size(gz.clone(), elf.len() - 1)), |k| {
                matches!(k, KeptAsIs::Malformed(_))
            }),
            ("a size too large to believe", bzimage(&with_size(gz.clone(), u32::MAX as usize)), |k| {
                matches!(k, KeptAsIs::Malformed(_))
            }),
            ("a corrupt stream", bzimage(&with_size(gz[..gz.len() / 2].to_vec(), elf.len())), |k| {
                matches!(k, KeptAsIs::Malformed(_))
            }),
            (
                "a payload that is no ELF",
                bzimage(&with_size(compressed("gzip", &["-c"], &text), text.len())),
                |k| matches!(k, KeptAsIs::Malformed(_)),
            ),
        ];
        for (what, image, expected) in cases {
            let (outcome, written) = unpack_bytes(&image);
            let kept = outcome.expect_err(what);
            assert!(expected(&kept), "{what}: {kept:?}");
            assert_eq!(written, None, "{what}: nothing written");
        }
    }

    #[test]
    fn a_registered_bzimage_boots_its_unpacked_kernel_and_keeps_the_original() {
        use crate::block::DiskFormat;
        use crate::store::image::{ImageSource, ImageSpec};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = crate::store::Store::open(&dir.path().join("store")).unwrap();
        let elf = tiny_elf();
        let image = bzimage(&with_size(compressed("xz", &["-c", "--check=crc32"], &elf), elf.len()));
        let (disk, kernel) = (dir.path().join("disk.raw"), dir.path().join("vmlinuz"));
        fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let spec = ImageSpec { name: "bz".into(), description: String::new(), cmdline: String::new() };
        for (file, booted) in [(&image, "vmlinux"), (&elf, "kernel")] {
            fs::write(&kernel, file).unwrap();
            let source = ImageSource::Disk {
                disk: disk.clone(),
                format: DiskFormat::Raw,
                kernel: kernel.clone(),
                initrd: None,
            };
            let record = store.register_image(&spec, &source).unwrap();
            assert_eq!(record.kernel, booted);
            assert_eq!(fs::read(store.image_file(&record, &record.kernel)).unwrap(), elf);
            assert_eq!(
                &fs::read(store.image_file(&record, "kernel")).unwrap(),
                file,
                "the kernel as registered stays"
            );
        }
    }
}
