//! Store operations and their refusals, on a temporary directory.

use std::path::Path;

use vm_memory::VolatileSlice;

use super::image::ImageSpec;

impl Store {
    /// Whether an image's directory holds anything but its files and metadata.
    fn image_dir_has_leftovers(&self, id: &str) -> bool {
        std::fs::read_dir(self.dir("images").join(id)).unwrap().flatten().any(|e| {
            !["image.json", "kernel", "vmlinux", "initrd", "disk.raw", "disk.qcow2"]
                .contains(&e.file_name().to_str().unwrap())
        })
    }
}
use super::*;
use crate::block::qcow2::Qcow2;
use crate::block::{BlockBackend, DiskFormat};
use crate::state::id::valid_id;

const MIB: u64 = 1 << 20;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = Store::open(dir.path()).unwrap();
    assert!(report.actions.is_empty());
    (dir, store)
}

fn spec() -> ImageSpec {
    ImageSpec { name: "base".into(), description: "test".into(), cmdline: "console=ttyS0".into() }
}

/// Registers a raw image of 4 MiB whose first bytes are "base-image".
fn image(store: &Store, scratch: &Path) -> ImageRecord {
    let disk = scratch.join("disk.img");
    let mut bytes = vec![0u8; 4 * MIB as usize];
    bytes[..10].copy_from_slice(b"base-image");
    std::fs::write(&disk, bytes).unwrap();
    std::fs::write(scratch.join("vmlinuz"), b"kernel").unwrap();
    let source =
        ImageSource::Disk { disk, format: DiskFormat::Raw, kernel: scratch.join("vmlinuz"), initrd: None };
    store.register_image(&spec(), &source).unwrap()
}

fn read_start(store: &Store, volume: &str) -> Vec<u8> {
    let mut disk = Qcow2::open(&store.volume_path(volume).unwrap(), true).unwrap();
    let mut buf = vec![0u8; 16];
    disk.read_at(0, &VolatileSlice::from(&mut buf[..])).unwrap();
    buf
}

fn write_start(store: &Store, volume: &str, data: &[u8]) {
    let mut disk = Qcow2::open(&store.volume_path(volume).unwrap(), false).unwrap();
    let mut data = data.to_vec();
    disk.write_at(0, &VolatileSlice::from(&mut data[..])).unwrap();
    disk.flush().unwrap();
}

#[test]
fn images_are_registered_checksummed_and_listed() {
    let (dir, store) = store();
    let scratch = tempfile::tempdir().unwrap();
    let image = image(&store, scratch.path());
    assert!(valid_id(&image.id, "ami"));
    assert_eq!(
        (image.size, image.state, image.disk_format),
        (4 * MIB, ImageState::Available, DiskFormat::Raw)
    );
    assert_eq!(image.sha256.len(), 64);
    assert_eq!(store.images().unwrap(), vec![image.clone()]);
    assert_eq!(std::fs::read(store.image_file(&image, "kernel")).unwrap(), b"kernel");
    // Reopening finds it, and nothing to repair.
    let (again, report) = Store::open(dir.path()).unwrap();
    assert!(report.actions.is_empty());
    assert_eq!(again.image(&image.id).unwrap(), image);
}

#[test]
fn root_directories_become_ext4_images() {
    let (_dir, store) = store();
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"nuage\n").unwrap();
    std::fs::write(scratch.path().join("vmlinuz"), b"kernel").unwrap();
    let source = ImageSource::RootDirectory {
        dir: root,
        size: 16 * MIB,
        kernel: scratch.path().join("vmlinuz"),
        initrd: None,
    };
    let image = store.register_image(&spec(), &source).unwrap();
    assert_eq!(image.size, 16 * MIB);
    assert_eq!(hostname_in(&store, &image), "nuage\n");

    // The same tree as a compressed tarball.
    let tarball = scratch.path().join("rootfs.tar.gz");
    let out = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(scratch.path().join("rootfs"))
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    let kernel = scratch.path().join("vmlinuz");
    let from_tar =
        ImageSource::RootDirectory { dir: tarball, size: 16 * MIB, kernel: kernel.clone(), initrd: None };
    let image = store.register_image(&spec(), &from_tar).unwrap();
    assert_eq!(hostname_in(&store, &image), "nuage\n");
    assert!(!store.image_dir_has_leftovers(&image.id));

    // Not a tarball, and more than the free space.
    let junk = scratch.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar archive").unwrap();
    let bad = ImageSource::RootDirectory { dir: junk, size: 16 * MIB, kernel: kernel.clone(), initrd: None };
    assert!(store.register_image(&spec(), &bad).unwrap_err().to_string().contains("not a tar archive"));
    let rootfs = scratch.path().join("rootfs");
    let huge = ImageSource::RootDirectory { dir: rootfs, size: u64::MAX / 4, kernel, initrd: None };
    assert!(matches!(store.register_image(&spec(), &huge), Err(StoreError::NoSpace(_))));
    assert_eq!(store.images().unwrap().len(), 2, "failed registrations leave nothing");
}

/// /etc/hostname in an image's ext4 disk, read with debugfs.
fn hostname_in(store: &Store, image: &ImageRecord) -> String {
    let disk = store.image_file(image, &image.disk);
    let out =
        std::process::Command::new("debugfs").args(["-R", "cat /etc/hostname"]).arg(&disk).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file shaped like a bzImage (the x86 boot protocol's header magic), ending in `marker`.
fn fake_bzimage(marker: &str) -> Vec<u8> {
    let mut image = vec![0u8; 1024];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image.extend_from_slice(marker.as_bytes());
    image
}

/// An ext4 file system image of `size` holding `files` (path, contents) under `/`.
fn ext4_with(scratch: &Path, name: &str, files: &[(&str, Vec<u8>)], size: &str) -> std::path::PathBuf {
    let root = scratch.join(format!("{name}.root"));
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    let disk = scratch.join(name);
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-d"])
        .arg(&root)
        .arg(&disk)
        .arg(size)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    disk
}

/// `fs` behind a one-partition table (`gpt` or `dos`) starting at 1 MiB.
fn partitioned(scratch: &Path, fs: &Path, label: &str) -> std::path::PathBuf {
    let disk = scratch.join(format!("{label}.raw"));
    let mut bytes = vec![0u8; MIB as usize];
    bytes.extend(std::fs::read(fs).unwrap());
    bytes.extend(vec![0u8; MIB as usize]); // room for the backup GPT
    std::fs::write(&disk, bytes).unwrap();
    let mut sfdisk = std::process::Command::new("sfdisk")
        .arg("--quiet")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (util-linux)");
    use std::io::Write as _;
    let sectors = std::fs::metadata(fs).unwrap().len() / 512;
    let table = format!("label: {label}\nstart=2048, size={sectors}, type=L\n");
    sfdisk.stdin.take().unwrap().write_all(table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success());
    disk
}

#[test]
fn kernels_are_found_in_the_disks_boot_directory() {
    let (dir, store) = store();
    let scratch = tempfile::tempdir().unwrap();
    let files = [
        ("boot/vmlinuz-6.1.0-9-amd64", fake_bzimage("old kernel")),
        ("boot/vmlinuz-6.1.0-10-amd64", fake_bzimage("new kernel")),
        ("boot/initrd.img-6.1.0-10-amd64", b"new initrd".to_vec()),
        ("boot/initrd.img-6.1.0-9-amd64", b"old initrd".to_vec()),
    ];
    let fs = ext4_with(scratch.path(), "disk.ext4", &files, "8M");
    let raw = |disk: &Path| ImageSource::DiskWithBoot { disk: disk.to_owned(), format: DiskFormat::Raw };
    let image = store.register_image(&spec(), &raw(&fs)).unwrap();
    assert_eq!(std::fs::read(store.image_file(&image, "kernel")).unwrap(), fake_bzimage("new kernel"));
    assert_eq!(std::fs::read_to_string(store.image_file(&image, "initrd")).unwrap(), "new initrd");
    assert_eq!(image.root_device, "/dev/vda");
    assert_eq!(image.cmdline, spec().cmdline, "a command line of its own is kept");
    // The same file system inside a partition, of a GPT and of an MBR disk; as qcow2 too.
    // Without a command line, the image boots its root from that partition.
    let bare = ImageSpec { cmdline: String::new(), ..spec() };
    for label in ["gpt", "dos"] {
        let disk = partitioned(scratch.path(), &fs, label);
        let image = store.register_image(&bare, &raw(&disk)).unwrap();
        assert_eq!(
            std::fs::read(store.image_file(&image, "kernel")).unwrap(),
            fake_bzimage("new kernel"),
            "{label}"
        );
        assert_eq!((image.root_device.as_str(), image.cmdline.as_str()), ("/dev/vda1", "root=/dev/vda1 ro"));
    }
    let qcow2 = scratch.path().join("gpt.qcow2");
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(scratch.path().join("gpt.raw"))
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(converted.success());
    let image = store
        .register_image(&bare, &ImageSource::DiskWithBoot { disk: qcow2.clone(), format: DiskFormat::Qcow2 })
        .unwrap();
    assert_eq!((image.disk.as_str(), image.disk_format), ("disk.raw", DiskFormat::Raw), "kept as raw");
    assert_eq!(image.size, std::fs::metadata(scratch.path().join("gpt.raw")).unwrap().len());
    assert_eq!(std::fs::read(store.image_file(&image, "kernel")).unwrap(), fake_bzimage("new kernel"));
    assert_eq!(image.cmdline, "root=/dev/vda1 ro");
    let registered = store.images().unwrap().len();

    // Refused, each with its reason, leaving nothing behind: no file system, no kernel in
    // /boot, a kernel that is not x86's, a truncated qcow2, a raw disk said to be qcow2.
    let blank = scratch.path().join("blank.raw");
    std::fs::write(&blank, vec![0u8; MIB as usize]).unwrap();
    let no_kernel = ext4_with(scratch.path(), "nokernel.ext4", &[("etc/hostname", b"x".to_vec())], "8M");
    let mut arm64 = vec![0u8; 4096];
    arm64[0x38..0x3c].copy_from_slice(b"ARM\x64");
    let arm = ext4_with(scratch.path(), "arm.ext4", &[("boot/vmlinuz-6.1.0-10-arm64", arm64)], "8M");
    let whole = std::fs::read(&qcow2).unwrap();
    let truncated = scratch.path().join("truncated.qcow2");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let cases = [
        (blank, DiskFormat::Raw, "no ext2/3/4 file system"),
        (no_kernel, DiskFormat::Raw, "no /boot/vmlinuz"),
        (arm, DiskFormat::Raw, "not an x86-64 Linux kernel"),
        (truncated, DiskFormat::Qcow2, "not a qcow2 disk qemu-img can read"),
        (scratch.path().join("gpt.raw"), DiskFormat::Qcow2, "not a qcow2 image"),
    ];
    for (disk, format, expected) in cases {
        let err = store.register_image(&bare, &ImageSource::DiskWithBoot { disk, format }).unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
    assert_eq!(store.images().unwrap().len(), registered);
    let staging = std::fs::read_dir(dir.path().join("images")).unwrap().flatten();
    assert!(
        staging.filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).count() == 0,
        "no staging left"
    );
}

#[test]
fn bad_image_sources_are_refused_and_leave_nothing() {
    let (dir, store) = store();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("vmlinuz"), b"kernel").unwrap();
    let kernel = scratch.path().join("vmlinuz");
    let qcow = scratch.path().join("disguised.raw");
    Qcow2::create(&qcow, MIB, None).unwrap();
    let truncated = scratch.path().join("truncated.qcow2");
    std::fs::write(&truncated, &std::fs::read(&qcow).unwrap()[..60]).unwrap();
    let overlay = scratch.path().join("overlay.qcow2");
    Qcow2::create(&overlay, MIB, Some(("disguised.raw", "raw"))).unwrap();
    let cases = [
        (qcow.clone(), DiskFormat::Raw, "is qcow2, not raw"),
        (truncated, DiskFormat::Qcow2, "shorter than a qcow2 header"),
        (overlay, DiskFormat::Qcow2, "has a backing file"),
        (scratch.path().join("missing"), DiskFormat::Raw, "missing"),
    ];
    for (disk, format, expected) in cases {
        let source = ImageSource::Disk { disk, format, kernel: kernel.clone(), initrd: None };
        let err = store.register_image(&spec(), &source).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    let source = ImageSource::Disk {
        disk: qcow,
        format: DiskFormat::Qcow2,
        kernel: scratch.path().join("nokernel"),
        initrd: None,
    };
    assert!(store.register_image(&spec(), &source).is_err());
    assert!(store.images().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path().join("images")).unwrap().count(), 0, "no staging left behind");
}

#[test]
fn volumes_clone_images_and_snapshots_freeze_them() {
    let (_dir, store) = store();
    let scratch = tempfile::tempdir().unwrap();
    let image = image(&store, scratch.path());
    let volume = store.create_volume(Parent::Image(image.id.clone()), Some(8 * MIB)).unwrap();
    assert_eq!(&read_start(&store, &volume.id)[..10], b"base-image");
    write_start(&store, &volume.id, b"first-write");
    let snapshot = store.create_snapshot(&volume.id).unwrap();
    assert_eq!((snapshot.volume_id.as_str(), snapshot.size), (volume.id.as_str(), 8 * MIB));
    // The volume goes on writing; the snapshot keeps what was there.
    write_start(&store, &volume.id, b"second-write");
    let clone = store.create_volume(Parent::Snapshot(snapshot.id.clone()), None).unwrap();
    assert_eq!(&read_start(&store, &clone.id)[..11], b"first-write");
    assert_eq!(&read_start(&store, &volume.id)[..12], b"second-write");
    assert_eq!(store.volume(&volume.id).unwrap().parent, Parent::Snapshot(snapshot.id.clone()));

    // What others are built on cannot go.
    assert!(matches!(
        store.deregister_image(&image.id),
        Err(StoreError::InUse { resource: Resource::Image, .. })
    ));
    assert!(matches!(
        store.delete_snapshot(&snapshot.id),
        Err(StoreError::InUse { resource: Resource::Snapshot, .. })
    ));
    store.delete_volume(&clone.id).unwrap();
    store.delete_volume(&volume.id).unwrap();
    store.delete_snapshot(&snapshot.id).unwrap();
    store.deregister_image(&image.id).unwrap();
    assert!(store.volumes().unwrap().is_empty() && store.snapshots().unwrap().is_empty());
}

#[test]
fn volumes_grow_and_keep_their_data() {
    let (_dir, store) = store();
    let volume = store.create_volume(Parent::None, Some(MIB)).unwrap();
    write_start(&store, &volume.id, b"before-growing");
    let grown = store.resize_volume(&volume.id, 100 << 30).unwrap();
    assert_eq!(grown.size, 100 << 30);
    assert_eq!(&read_start(&store, &volume.id)[..14], b"before-growing");
    assert!(store.resize_volume(&volume.id, MIB).unwrap_err().to_string().contains("below the current size"));
    store.attach_volume(&volume.id, "i-1", false).unwrap();
    assert!(store.resize_volume(&volume.id, 200 << 30).is_err());
}

#[test]
fn one_read_write_attachment_at_a_time() {
    let (_dir, store) = store();
    let volume = store.create_volume(Parent::None, Some(MIB)).unwrap();
    store.attach_volume(&volume.id, "i-1", false).unwrap();
    assert!(matches!(
        store.attach_volume(&volume.id, "i-2", false),
        Err(StoreError::InUse { resource: Resource::Volume, .. })
    ));
    assert!(store.delete_volume(&volume.id).is_err());
    assert!(matches!(store.create_snapshot(&volume.id), Err(StoreError::Attached { .. })));
    store.detach_volume(&volume.id).unwrap();
    store.attach_volume(&volume.id, "i-2", false).unwrap();
}

#[test]
fn bad_requests_name_the_problem() {
    let (_dir, store) = store();
    let not_found = |result: Result<_, StoreError>, wanted: Resource| matches!(result, Err(StoreError::NotFound { resource, .. }) if resource == wanted);
    assert!(not_found(store.image("ami-0123456789abcdef0").map(drop), Resource::Image));
    assert!(not_found(store.image("../../etc").map(drop), Resource::Image));
    assert!(not_found(store.volume("vol-nothex!").map(drop), Resource::Volume));
    assert!(store.create_snapshot("vol-0123456789abcdef0").is_err());
    assert!(store.create_volume(Parent::None, None).unwrap_err().to_string().contains("needs a size"));
    let scratch = tempfile::tempdir().unwrap();
    let image = image(&store, scratch.path());
    let err = store.create_volume(Parent::Image(image.id), Some(MIB)).unwrap_err().to_string();
    assert!(err.contains("below the source"), "{err}");
    let result = store.create_volume(Parent::Snapshot("snap-0123456789abcdef0".into()), None);
    assert!(not_found(result.map(drop), Resource::Snapshot));
}

#[test]
fn recovery_finishes_or_undoes_interrupted_operations() {
    let (dir, store) = store();
    let volume = store.create_volume(Parent::None, Some(MIB)).unwrap();
    write_start(&store, &volume.id, b"kept");
    // A snapshot interrupted right after its volume's file moved aside.
    let interrupted = SnapshotRecord {
        id: "snap-00000000000000001".into(),
        volume_id: volume.id.clone(),
        size: MIB,
        parent: Parent::None,
        created: 0,
        completed: false,
        deleting: false,
    };
    write_json(&dir.path().join("snapshots/snap-00000000000000001.json"), &interrupted).unwrap();
    std::fs::rename(
        dir.path().join(format!("volumes/{}.qcow2", volume.id)),
        dir.path().join("snapshots/snap-00000000000000001.qcow2"),
    )
    .unwrap();
    // A snapshot interrupted before anything moved, an orphaned volume file, a temporary file.
    let early = SnapshotRecord { id: "snap-00000000000000002".into(), ..interrupted.clone() };
    write_json(&dir.path().join("snapshots/snap-00000000000000002.json"), &early).unwrap();
    std::fs::write(dir.path().join("volumes/vol-00000000000000009.qcow2"), b"orphan").unwrap();
    std::fs::write(dir.path().join("volumes/vol-00000000000000008.qcow2.tmp"), b"partial").unwrap();

    let (store, report) = Store::open(dir.path()).unwrap();
    assert_eq!(report.actions.len(), 4, "{:?}", report.actions);
    let finished = store.snapshot("snap-00000000000000001").unwrap();
    assert!(finished.completed);
    assert!(store.snapshot("snap-00000000000000002").is_err());
    assert_eq!(store.volume(&volume.id).unwrap().parent, Parent::Snapshot(finished.id));
    assert_eq!(&read_start(&store, &volume.id)[..4], b"kept");
    assert!(!dir.path().join("volumes/vol-00000000000000009.qcow2").exists());
    assert!(!dir.path().join("volumes/vol-00000000000000008.qcow2.tmp").exists());
    let (_, again) = Store::open(dir.path()).unwrap();
    assert!(again.actions.is_empty(), "recovery is idempotent: {:?}", again.actions);
}

/// Racing callers (issue 15): eight threads attach one volume to eight instances at once,
/// round after round; exactly one is told yes, and the record names that one. Snapshots
/// and a delete of one volume race too: every snapshot that was granted exists, and a
/// granted delete leaves no volume behind.
#[test]
fn racing_changes_have_one_winner_and_the_record_agrees() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    for round in 0..25 {
        let volume = store.create_volume(Parent::None, Some(MIB)).unwrap();
        let winners: Vec<String> = std::thread::scope(|scope| {
            let tries: Vec<_> = (0..8)
                .map(|n| {
                    let (store, id) = (store.clone(), volume.id.clone());
                    scope.spawn(move || {
                        store.attach_volume(&id, &format!("i-{n}"), false).map(|v| v.attached_to)
                    })
                })
                .collect();
            tries
                .into_iter()
                .filter_map(|t| match t.join().unwrap() {
                    Ok(owner) => owner,
                    Err(StoreError::InUse { .. }) => None,
                    Err(e) => panic!("round {round}: {e}"),
                })
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(store.volume(&volume.id).unwrap().attached_to.as_ref(), winners.first(), "round {round}");
        store.detach_volume(&volume.id).unwrap();

        let (snapshots, deleted) = std::thread::scope(|scope| {
            let snapshots: Vec<_> = (0..4)
                .map(|_| {
                    let (store, id) = (store.clone(), volume.id.clone());
                    scope.spawn(move || store.create_snapshot(&id))
                })
                .collect();
            let delete = {
                let (store, id) = (store.clone(), volume.id.clone());
                scope.spawn(move || store.delete_volume(&id))
            };
            let snapshots: Vec<_> = snapshots.into_iter().map(|s| s.join().unwrap()).collect();
            (snapshots, delete.join().unwrap())
        });
        assert!(deleted.is_ok(), "round {round}: the delete had nothing in its way: {deleted:?}");
        assert!(matches!(store.volume(&volume.id), Err(StoreError::NotFound { .. })), "round {round}");
        for snapshot in snapshots {
            match snapshot {
                Ok(snapshot) => assert!(store.snapshot(&snapshot.id).unwrap().completed, "round {round}"),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }
    let (_, report) = Store::open(store.root()).unwrap();
    assert_eq!(report.actions, Vec::<String>::new(), "nothing half-done for recovery to find");
}
