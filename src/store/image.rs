//! Images (AMIs): a disk plus the kernel, initrd and command line that boot it. Registered
//! into a temporary directory, checksummed, then renamed into place: an image is either
//! fully there and available, or not there at all. Available images never change.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{
    free_space, io_error, read_json, sync_dir, write_json, RecoveryReport, Resource, Store, StoreError,
};
use crate::block::qcow2::Qcow2;
use crate::block::{BlockBackend, DiskFormat};
use crate::state::id::{new_id, now, valid_id};

/// An image's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Being registered.
    Pending,
    /// Ready to launch from.
    Available,
    /// Registration failed.
    Failed,
}

impl ImageState {
    /// EC2's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed => "failed",
        }
    }
}

/// An image's metadata (`image.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `ami-` and hex digits.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Always `x86_64` today.
    pub architecture: String,
    /// The file in the image directory the VMM boots: `vmlinux` where it was unpacked from
    /// the registered bzImage, `kernel` (the kernel as registered) otherwise.
    pub kernel: String,
    /// Initrd file name in the image directory.
    pub initrd: Option<String>,
    /// Default kernel command line.
    pub cmdline: String,
    /// The guest device of the root disk.
    pub root_device: String,
    /// Disk file name in the image directory.
    pub disk: String,
    /// The disk's format.
    pub disk_format: DiskFormat,
    /// The disk's virtual size in bytes.
    pub size: u64,
    /// SHA-256 of the disk file, hex.
    pub sha256: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Life-cycle state.
    pub state: ImageState,
}

/// Where an image's disk comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A raw or qcow2 disk image (standalone: no backing file) with the kernel and initrd
    /// to boot it.
    Disk {
        /// The disk file.
        disk: PathBuf,
        /// Its format.
        format: DiskFormat,
        /// The kernel.
        kernel: PathBuf,
        /// The initrd, if any.
        initrd: Option<PathBuf>,
    },
    /// A raw or qcow2 disk holding an ext2/3/4 file system, whole or in a partition (MBR
    /// or GPT), whose `/boot` has the kernel (`vmlinuz-*`) and initrd (`initrd.img-*`), as
    /// distributions' cloud disks do: the newest of each is extracted with `debugfs`,
    /// without mounting anything. A qcow2 disk is kept as raw (converted by `qemu-img`,
    /// sparse). Without a command line of its own, the image boots `root=` that partition.
    DiskWithBoot {
        /// The disk file.
        disk: PathBuf,
        /// Its format.
        format: DiskFormat,
    },
    /// A root file system, a directory or a tar archive (compressed or not), made into an
    /// ext4 disk (`mkfs.ext4 -d`, no mounting).
    RootDirectory {
        /// The directory or tarball.
        dir: PathBuf,
        /// Disk size in bytes.
        size: u64,
        /// The kernel.
        kernel: PathBuf,
        /// The initrd, if any.
        initrd: Option<PathBuf>,
    },
}

/// What to call the image and how to boot it.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// A name for people.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Default kernel command line.
    pub cmdline: String,
}

fn sha256_file(path: &Path) -> Result<String, StoreError> {
    // sha256sum is in coreutils on every host nuage supports; streaming a file through it
    // costs no dependency.
    let out = Command::new("sha256sum").arg(path).output().map_err(io_error(path))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(hex) if out.status.success() && hex.len() == 64 => Ok(hex.to_owned()),
        _ => Err(StoreError::BadImage(format!("cannot checksum {}", path.display()))),
    }
}

/// Runs `debugfs -R REQUEST DISK` read-only and returns its output.
fn debugfs(disk: &Path, request: &str) -> Result<String, StoreError> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(disk)
        .output()
        .map_err(io_error(Path::new("debugfs")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        || stderr.contains("Bad magic number")
        || stderr.contains("Couldn't find valid filesystem")
    {
        return Err(StoreError::BadImage(format!(
            "{} holds no ext2/3/4 file system debugfs can read",
            disk.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Byte offsets of the partitions of an MBR or GPT disk, or just 0 for a bare file system.
fn filesystem_offsets(disk: &Path) -> Result<Vec<(u64, Option<usize>)>, StoreError> {
    const SECTOR: u64 = 512;
    let mut head = vec![0u8; 34 * SECTOR as usize];
    let file = fs::File::open(disk).map_err(io_error(disk))?;
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).map_err(io_error(disk))?;
    head.truncate(n);
    let le32 = |b: &[u8], at: usize| {
        b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    let le64 = |b: &[u8], at: usize| {
        b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    if head.get(510..512) != Some(&[0x55, 0xaa]) {
        return Ok(vec![(0, None)]);
    }
    if head.get(512..520) == Some(b"EFI PART") {
        let (table_lba, count, size) = (le64(&head, 512 + 72), le32(&head, 512 + 80), le32(&head, 512 + 84));
        if !(128..=1024).contains(&size) || count > 256 {
            return Err(StoreError::BadImage(format!("{}: implausible GPT header", disk.display())));
        }
        let mut table = vec![0u8; (count * size) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut table, table_lba.saturating_mul(SECTOR))
            .map_err(io_error(disk))?;
        // A partition's number is its entry's place in the table, empty entries counted.
        return Ok(table
            .chunks_exact(size as usize)
            .enumerate()
            .filter(|(_, entry)| entry[..16].iter().any(|b| *b != 0))
            .map(|(i, entry)| (le64(entry, 32).saturating_mul(SECTOR), Some(i + 1)))
            .collect());
    }
    Ok((0..4)
        .map(|i| (i + 1, 446 + 16 * i))
        .filter(|&(_, at)| head[at + 4] != 0)
        .map(|(number, at)| (u64::from(le32(&head, at + 8)) * SECTOR, Some(number)))
        .collect())
}

/// The kernel and initrd found in a disk's `/boot`, and the guest device of the file
/// system holding them.
struct BootFiles {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    root_device: String,
}

/// Extracts the newest `/boot/vmlinuz-*` and matching `/boot/initrd.img-*` into `staging`,
/// from the first file system (whole disk or partition) that has them.
fn extract_boot_files(disk: &Path, staging: &Path) -> Result<BootFiles, StoreError> {
    let mut last_error = None;
    for (offset, partition) in filesystem_offsets(disk)? {
        // e2fsprogs reads a file system at an offset through the `?offset=` I/O option.
        let source = PathBuf::from(format!("{}?offset={offset}", disk.display()));
        match extract_from(&source, disk, staging) {
            Ok((kernel, initrd)) => {
                // The image's disk is the guest's first (vda).
                let root_device = partition.map_or("/dev/vda".into(), |n| format!("/dev/vda{n}"));
                return Ok(BootFiles { kernel, initrd, root_device });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| StoreError::BadImage(format!("{} has no partitions", disk.display()))))
}

fn extract_from(
    source: &Path,
    disk: &Path,
    staging: &Path,
) -> Result<(PathBuf, Option<PathBuf>), StoreError> {
    let listing = debugfs(source, "ls -p /boot")?;
    // `ls -p` lines: /inode/mode/uid/gid/name/size/
    let names: Vec<&str> =
        listing.lines().filter_map(|l| l.split('/').nth(5)).filter(|n| !n.is_empty()).collect();
    let mut kernels: Vec<&str> = names.iter().copied().filter(|n| n.starts_with("vmlinuz-")).collect();
    kernels.sort_by(|a, b| version_order(a, b));
    let Some(kernel) = kernels.last() else {
        return Err(StoreError::BadImage(format!("{} has no /boot/vmlinuz-*", disk.display())));
    };
    let version = &kernel["vmlinuz-".len()..];
    let dump = |name: &str, to: &str| -> Result<PathBuf, StoreError> {
        let out = staging.join(to);
        debugfs(source, &format!("dump /boot/{name} {}", out.display()))?;
        match fs::metadata(&out) {
            Ok(meta) if meta.len() > 0 => Ok(out),
            _ => Err(StoreError::BadImage(format!("cannot extract /boot/{name} from {}", disk.display()))),
        }
    };
    let kernel_path = dump(kernel, "kernel")?;
    let initrd_name = format!("initrd.img-{version}");
    let initrd =
        if names.contains(&initrd_name.as_str()) { Some(dump(&initrd_name, "initrd")?) } else { None };
    Ok((kernel_path, initrd))
}

/// Converts a qcow2 disk into a sparse raw one with `qemu-img`, once `qemu-img check` has
/// found it sound (a truncated or corrupt one would convert to zeros where data was) and
/// the staging directory has room for the data it holds (`qemu-img map`).
fn convert_to_raw(qcow2: &Path, raw: &Path, staging: &Path) -> Result<(), StoreError> {
    let qemu_img = |args: &[&str], to: Option<&Path>| {
        let mut command = Command::new("qemu-img");
        command.args(args).arg(qcow2);
        command.args(to);
        command.output().map_err(io_error(Path::new("qemu-img")))
    };
    let refused = |out: &std::process::Output| {
        let said = [&out.stdout[..], &out.stderr[..]].concat();
        StoreError::BadImage(format!(
            "{} is not a qcow2 disk qemu-img can read: {}",
            qcow2.display(),
            String::from_utf8_lossy(&said).trim()
        ))
    };
    // Status 3: leaked clusters only, which lose no data.
    let checked = qemu_img(&["check", "-q", "-f", "qcow2"], None)?;
    if !matches!(checked.status.code(), Some(0 | 3)) {
        return Err(refused(&checked));
    }
    #[derive(Deserialize)]
    struct Extent {
        length: u64,
        data: bool,
    }
    let mapped = qemu_img(&["map", "--output=json", "-f", "qcow2"], None)?;
    let extents: Vec<Extent> = match serde_json::from_slice(&mapped.stdout) {
        Ok(extents) if mapped.status.success() => extents,
        _ => return Err(refused(&mapped)),
    };
    ensure_space(staging, extents.iter().filter(|e| e.data).map(|e| e.length).sum())?;
    let converted = qemu_img(&["convert", "-q", "-f", "qcow2", "-O", "raw"], Some(raw))?;
    if !converted.status.success() {
        return Err(refused(&converted));
    }
    fs::set_permissions(raw, fs::Permissions::from_mode(0o600)).map_err(io_error(raw))
}

/// Orders `vmlinuz-6.1.0-9` before `vmlinuz-6.1.0-10`: numbers compare as numbers.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok()).collect()
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// Refuses an import of `needed` bytes that the store's file system has no room for.
pub(super) fn ensure_space(staging: &Path, needed: u64) -> Result<(), StoreError> {
    let free = free_space(staging)?;
    if needed > free {
        return Err(StoreError::NoSpace(format!("{needed} bytes needed, {free} free")));
    }
    Ok(())
}

/// Bytes copied between two progress reports.
const COPY_CHUNK: u64 = 4 << 20;

/// How far an import is: bytes of the disk copied so far, of how many.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn copy_into(from: &Path, to: &Path, progress: Progress<'_>) -> Result<(), StoreError> {
    let meta = fs::metadata(from).map_err(io_error(from))?;
    if !meta.is_file() {
        return Err(StoreError::InvalidParameter(format!("{} is not a regular file", from.display())));
    }
    let mut source = fs::File::open(from).map_err(io_error(from))?;
    let mut target = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .map_err(io_error(to))?;
    let total = meta.len();
    let mut done = 0;
    progress(done, total);
    loop {
        // In chunks, for the progress reports; std's copy uses copy_file_range underneath.
        let n = std::io::copy(&mut (&mut source).take(COPY_CHUNK), &mut target).map_err(io_error(to))?;
        if n == 0 {
            break;
        }
        done += n;
        progress(done, total);
    }
    target.sync_all().map_err(io_error(to))
}

/// Checks the disk is what it claims to be and returns its virtual size.
fn disk_size(path: &Path, format: DiskFormat) -> Result<u64, StoreError> {
    match format {
        DiskFormat::Raw => {
            let mut magic = [0u8; 4];
            let mut file = fs::File::open(path).map_err(io_error(path))?;
            let len = file.metadata().map_err(io_error(path))?.len();
            if file.read(&mut magic).map_err(io_error(path))? == 4 && magic == *b"QFI\xfb" {
                return Err(StoreError::BadImage(format!("{} is qcow2, not raw", path.display())));
            }
            Ok(len)
        }
        DiskFormat::Qcow2 => {
            let image = Qcow2::open(path, true).map_err(|e| StoreError::BadImage(e.to_string()))?;
            if image.header().backing_file.is_some() {
                return Err(StoreError::BadImage(format!(
                    "{} has a backing file: flatten it first (qemu-img convert)",
                    path.display()
                )));
            }
            Ok(image.size())
        }
    }
}

impl Store {
    fn image_dir(&self, id: &str) -> PathBuf {
        self.dir("images").join(id)
    }

    /// Registers an image from `source`; returns it once available.
    pub fn register_image(&self, spec: &ImageSpec, source: &ImageSource) -> Result<ImageRecord, StoreError> {
        self.import_image(spec, source, &mut |_, _| {})
    }

    /// Registers an image from `source`, reporting how much of its disk is copied.
    pub fn import_image(
        &self,
        spec: &ImageSpec,
        source: &ImageSource,
        progress: Progress<'_>,
    ) -> Result<ImageRecord, StoreError> {
        let id = new_id("ami");
        let staging = self.dir("images").join(format!("{id}.tmp"));
        fs::DirBuilder::new().mode(0o700).create(&staging).map_err(io_error(&staging))?;
        let result = self.stage_image(&id, spec, source, &staging, progress);
        let record = match result {
            Ok(record) => record,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let target = self.image_dir(&id);
        fs::rename(&staging, &target).map_err(io_error(&target))?;
        sync_dir(&self.dir("images"))?;
        Ok(record)
    }

    fn stage_image(
        &self,
        id: &str,
        spec: &ImageSpec,
        source: &ImageSource,
        staging: &Path,
        progress: Progress<'_>,
    ) -> Result<ImageRecord, StoreError> {
        // A disk with its own /boot is read (and kept) as raw: a qcow2 one is converted
        // first. It gives the kernel, the initrd and the root device.
        let (kernel, initrd, with_boot) = match source {
            ImageSource::Disk { kernel, initrd, .. } | ImageSource::RootDirectory { kernel, initrd, .. } => {
                (kernel.clone(), initrd.clone(), None)
            }
            ImageSource::DiskWithBoot { disk, format } => {
                let size = disk_size(disk, *format)?;
                let raw = staging.join("disk.raw");
                match format {
                    DiskFormat::Raw => {
                        ensure_space(staging, fs::metadata(disk).map_err(io_error(disk))?.len())?;
                        copy_into(disk, &raw, progress)?;
                    }
                    DiskFormat::Qcow2 => {
                        convert_to_raw(disk, &raw, staging)?;
                        progress(size, size);
                    }
                }
                let boot = extract_boot_files(&raw, staging)?;
                if !super::kernel::is_x86_kernel(&boot.kernel)? {
                    return Err(StoreError::BadImage(format!(
                        "the kernel in {}'s /boot is not an x86-64 Linux kernel (a bzImage or an ELF vmlinux)",
                        disk.display()
                    )));
                }
                (boot.kernel, boot.initrd, Some((boot.root_device, size)))
            }
        };
        // The disk's virtual size is taken from the source, checked before anything is copied.
        let (disk_name, format, size) = match source {
            ImageSource::DiskWithBoot { .. } => {
                ("disk.raw", DiskFormat::Raw, with_boot.as_ref().map_or(0, |(_, size)| *size))
            }
            ImageSource::Disk { disk, format, .. } => {
                ensure_space(staging, fs::metadata(disk).map_err(io_error(disk))?.len())?;
                let size = disk_size(disk, *format)?;
                let name = match format {
                    DiskFormat::Raw => "disk.raw",
                    DiskFormat::Qcow2 => "disk.qcow2",
                };
                copy_into(disk, &staging.join(name), progress)?;
                (name, *format, size)
            }
            ImageSource::RootDirectory { dir, size, .. } => {
                ensure_space(staging, *size)?;
                let unpacked = staging.join("rootfs.tmp");
                let dir = if dir.is_file() {
                    fs::DirBuilder::new().mode(0o700).create(&unpacked).map_err(io_error(&unpacked))?;
                    let out = Command::new("tar")
                        .arg("-xf")
                        .arg(dir)
                        .arg("-C")
                        .arg(&unpacked)
                        .output()
                        .map_err(io_error(Path::new("tar")))?;
                    if !out.status.success() {
                        return Err(StoreError::BadImage(format!(
                            "{} is not a tar archive tar can read: {}",
                            dir.display(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        )));
                    }
                    unpacked.clone()
                } else if dir.is_dir() {
                    dir.clone()
                } else {
                    return Err(StoreError::InvalidParameter(format!(
                        "{} is neither a directory nor a file",
                        dir.display()
                    )));
                };
                let out = staging.join("disk.raw");
                let status = Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-L", "root", "-d"])
                    .arg(dir)
                    .arg(&out)
                    .arg(format!("{}k", size / 1024))
                    .output()
                    .map_err(io_error(Path::new("mkfs.ext4")))?;
                let _ = fs::remove_dir_all(&unpacked);
                if !status.status.success() {
                    return Err(StoreError::BadImage(format!(
                        "mkfs.ext4 failed: {}",
                        String::from_utf8_lossy(&status.stderr).trim()
                    )));
                }
                ("disk.raw", DiskFormat::Raw, disk_size(&out, DiskFormat::Raw)?)
            }
        };
        if kernel != staging.join("kernel") {
            copy_into(&kernel, &staging.join("kernel"), &mut |_, _| {})?;
        }
        let booted_kernel = match super::kernel::unpack(&staging.join("kernel"), &staging.join("vmlinux"))? {
            Ok(()) => "vmlinux",
            Err(super::kernel::KeptAsIs::NotBzImage) => "kernel",
            Err(why) => {
                tracing::warn!(
                    image = id,
                    "the kernel boots as registered, decompressing itself on every boot: {why}"
                );
                "kernel"
            }
        };
        if let Some(initrd) = &initrd {
            if *initrd != staging.join("initrd") {
                copy_into(initrd, &staging.join("initrd"), &mut |_, _| {})?;
            }
        }
        let disk_path = staging.join(disk_name);
        let root_device = with_boot.as_ref().map_or("/dev/vda".into(), |(device, _)| device.clone());
        let cmdline = match &with_boot {
            Some(_) if spec.cmdline.is_empty() => format!("root={root_device} ro"),
            _ => spec.cmdline.clone(),
        };
        let record = ImageRecord {
            id: id.to_owned(),
            name: spec.name.clone(),
            description: spec.description.clone(),
            architecture: "x86_64".into(),
            kernel: booted_kernel.into(),
            initrd: initrd.as_ref().map(|_| "initrd".into()),
            cmdline,
            root_device,
            disk: disk_name.into(),
            disk_format: format,
            size,
            sha256: sha256_file(&disk_path)?,
            created: now(),
            state: ImageState::Available,
        };
        // Images are immutable: no one writes their files again.
        for file in fs::read_dir(staging).map_err(io_error(staging))?.flatten() {
            let mut perms = file.metadata().map_err(io_error(&file.path()))?.permissions();
            perms.set_readonly(true);
            fs::set_permissions(file.path(), perms).map_err(io_error(&file.path()))?;
        }
        write_json(&staging.join("image.json"), &record)?;
        Ok(record)
    }

    /// The image `id`.
    pub fn image(&self, id: &str) -> Result<ImageRecord, StoreError> {
        let not_found = || StoreError::NotFound { resource: Resource::Image, id: id.to_owned() };
        if !valid_id(id, "ami") {
            return Err(not_found());
        }
        let path = self.image_dir(id).join("image.json");
        if !path.exists() {
            return Err(not_found());
        }
        read_json(&path)
    }

    /// The path of an image's file (`kernel`, `initrd` or its disk).
    pub fn image_file(&self, image: &ImageRecord, name: &str) -> PathBuf {
        self.image_dir(&image.id).join(name)
    }

    /// All images.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.dir("images");
        let mut images = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if valid_id(&name, "ami") {
                images.push(self.image(&name)?);
            }
        }
        images.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(images)
    }

    /// Removes image `id`, refused while a volume or snapshot is built on it.
    pub fn deregister_image(&self, id: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.image(id)?;
        if let Some(user) = self.users_of(&super::Parent::Image(id.to_owned()))?.first() {
            return Err(StoreError::InUse { resource: Resource::Image, id: id.to_owned(), by: user.clone() });
        }
        let dir = self.image_dir(id);
        // Rename first: a crash leaves a temporary directory, which recovery removes.
        let doomed = self.dir("images").join(format!("{id}.deleting.tmp"));
        fs::rename(&dir, &doomed).map_err(io_error(&dir))?;
        sync_dir(&self.dir("images"))?;
        fs::remove_dir_all(&doomed).map_err(io_error(&doomed))
    }

    pub(super) fn recover_images(&self, report: &mut RecoveryReport) -> Result<(), StoreError> {
        let dir = self.dir("images");
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                fs::remove_dir_all(entry.path()).map_err(io_error(&entry.path()))?;
                report.actions.push(format!("removed unfinished image directory {name}"));
            } else if valid_id(&name, "ami") && !entry.path().join("image.json").exists() {
                fs::remove_dir_all(entry.path()).map_err(io_error(&entry.path()))?;
                report.actions.push(format!("removed image directory {name} without metadata"));
            }
        }
        Ok(())
    }
}
