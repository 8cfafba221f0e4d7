//! qcow2 against an in-memory model, against qemu-img, and against broken files.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

fn read(image: &mut dyn BlockBackend, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    image.read_at(offset, &VolatileSlice::from(&mut buf[..])).unwrap();
    buf
}

fn write(image: &mut dyn BlockBackend, offset: u64, data: &[u8]) {
    let mut data = data.to_vec();
    image.write_at(offset, &VolatileSlice::from(&mut data[..])).unwrap();
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect()
}

/// Runs a qemu tool, failing clearly when qemu-utils is missing.
fn qemu(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian package qemu-utils) is needed: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn qemu_check(path: &Path) {
    let out = qemu("qemu-img", &["check", "-f", "qcow2", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No errors were found"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
}

fn qemu_read_all(path: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join("converted.raw");
    let _ = std::fs::remove_file(&raw);
    qemu("qemu-img", &["convert", "-f", "qcow2", "-O", "raw", path.to_str().unwrap(), raw.to_str().unwrap()]);
    std::fs::read(raw).unwrap()
}

#[test]
fn writes_read_back_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.qcow2");
    Qcow2::create(&path, 64 * MIB, None).unwrap();
    let mut image = Qcow2::open(&path, false).unwrap();
    assert_eq!(read(&mut image, 0, 4096), vec![0; 4096], "a new image reads as zeros");
    write(&mut image, 100, &pattern(1, 300)); // inside one cluster
    write(&mut image, 65536 - 1000, &pattern(2, 3000)); // across a cluster boundary
    write(&mut image, 10 * MIB, &pattern(3, 128 * 1024)); // two whole clusters
    image.flush().unwrap();
    drop(image);
    let mut image = Qcow2::open(&path, true).unwrap();
    assert_eq!(read(&mut image, 100, 300), pattern(1, 300));
    assert_eq!(read(&mut image, 65536 - 1000, 3000), pattern(2, 3000));
    assert_eq!(read(&mut image, 10 * MIB, 128 * 1024), pattern(3, 128 * 1024));
    assert_eq!(read(&mut image, 0, 100), vec![0; 100]);
    qemu_check(&path);
    let all = qemu_read_all(&path, dir.path());
    assert_eq!(&all[100..400], &pattern(1, 300)[..]);
    assert_eq!(&all[10 * MIB as usize..10 * MIB as usize + 128 * 1024], &pattern(3, 128 * 1024)[..]);
}

#[test]
fn overlays_copy_on_write_over_a_raw_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, pattern(9, 4 * MIB as usize)).unwrap();
    let overlay = dir.path().join("overlay.qcow2");
    Qcow2::create(&overlay, 4 * MIB, Some(("base.raw", "raw"))).unwrap();
    let mut image = Qcow2::open(&overlay, false).unwrap();
    assert_eq!(read(&mut image, 70_000, 5000), pattern(9, 4 * MIB as usize)[70_000..75_000].to_vec());
    write(&mut image, 70_000, b"overlay");
    let mut expected = pattern(9, 4 * MIB as usize);
    expected[70_000..70_007].copy_from_slice(b"overlay");
    assert_eq!(read(&mut image, 0, 4 * MIB as usize), expected, "the rest of the cluster came from the base");
    assert_eq!(std::fs::read(&base).unwrap(), pattern(9, 4 * MIB as usize), "the base is untouched");
    // Discarded clusters read as zeros, not as the base below them.
    image.discard(MIB, MIB).unwrap();
    assert_eq!(read(&mut image, MIB, 4096), vec![0; 4096]);
    drop(image);
    qemu_check(&overlay);
    let mut expected_after = expected.clone();
    expected_after[MIB as usize..2 * MIB as usize].fill(0);
    assert_eq!(qemu_read_all(&overlay, dir.path()), expected_after);
}

#[test]
fn images_made_and_written_by_qemu_read_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let top = dir.path().join("top.qcow2");
    let b = base.to_str().unwrap();
    let t = top.to_str().unwrap();
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", b, "8M"]);
    qemu("qemu-io", &["-f", "qcow2", "-c", "write -P 0x11 0 1M", b]);
    qemu("qemu-img", &["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", t]);
    qemu("qemu-io", &["-f", "qcow2", "-c", "write -P 0x22 512k 64k", "-c", "write -z 2M 1M", t]);
    let mut image = Qcow2::open(&top, false).unwrap();
    assert_eq!(read(&mut image, 0, 4096), vec![0x11; 4096], "from the qcow2 base");
    assert_eq!(read(&mut image, 512 * 1024, 65536), vec![0x22; 65536], "from the top");
    assert_eq!(read(&mut image, 2 * MIB, 4096), vec![0; 4096]);
    // Our writes into qemu's image keep it consistent for qemu.
    write(&mut image, 3 * MIB + 12345, &pattern(4, 100_000));
    drop(image);
    qemu_check(&top);
    let all = qemu_read_all(&top, dir.path());
    assert_eq!(&all[3 * MIB as usize + 12345..3 * MIB as usize + 112_345], &pattern(4, 100_000)[..]);
    assert_eq!(&all[..4096], &[0x11; 4096][..]);
}

#[test]
fn creating_is_constant_time_and_space_whatever_the_size() {
    let dir = tempfile::tempdir().unwrap();
    for (name, size) in [("1g", 1u64 << 30), ("100g", 100 << 30), ("10t", 10 << 40)] {
        let path = dir.path().join(name);
        Qcow2::create(&path, size, None).unwrap();
        // Header, refcount table and block, and an L1 table of 8 bytes per 512 MiB.
        let len = std::fs::metadata(&path).unwrap().len();
        let l1_clusters = (size / (512 * MIB) * 8).div_ceil(65536).max(1);
        assert_eq!(len, (3 + l1_clusters) * 65536, "{name}");
        assert!(len < MIB, "{name}: {len} bytes");
        assert_eq!(Qcow2::open(&path, true).unwrap().size(), size);
    }
    assert!(Qcow2::create(&dir.path().join("1g"), MIB, None).is_err(), "an existing file is not overwritten");
}

#[test]
fn images_grow_in_place_or_by_moving_their_l1_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grow.qcow2");
    Qcow2::create(&path, MIB, None).unwrap();
    let mut image = Qcow2::open(&path, false).unwrap();
    write(&mut image, 1000, &pattern(6, 5000));
    image.resize(10 << 30).unwrap(); // 20 L1 entries: still in the first L1 cluster
    write(&mut image, (10 << 30) - 4096, &pattern(7, 4096));
    image.resize(5 << 40).unwrap(); // 10240 entries: the table moves
    assert!(image.resize(MIB).is_err(), "shrinking is refused");
    write(&mut image, (5 << 40) - 65536, &pattern(8, 65536));
    drop(image);
    let mut image = Qcow2::open(&path, true).unwrap();
    assert_eq!(image.size(), 5 << 40);
    assert_eq!(read(&mut image, 1000, 5000), pattern(6, 5000));
    assert_eq!(read(&mut image, (10 << 30) - 4096, 4096), pattern(7, 4096));
    assert_eq!(read(&mut image, (5 << 40) - 65536, 65536), pattern(8, 65536));
    assert_eq!(read(&mut image, 3 << 40, 4096), vec![0; 4096]);
    qemu_check(&path);
    let info = qemu("qemu-img", &["info", "-f", "qcow2", path.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("5 TiB"),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
}

fn corrupt_copy(dir: &Path, name: &str, edit: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let good = dir.join("good.qcow2");
    if !good.exists() {
        Qcow2::create(&good, 16 * MIB, None).unwrap();
        let mut image = Qcow2::open(&good, false).unwrap();
        write(&mut image, 0, &pattern(5, 65536));
    }
    let mut bytes = std::fs::read(&good).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn broken_images_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        ("truncated", corrupt_copy(d, "truncated", |b| b.truncate(50)), "shorter than"),
        ("bad magic", corrupt_copy(d, "magic", |b| b[0] = b'X'), "not a qcow2"),
        ("version 4", corrupt_copy(d, "v4", |b| b[7] = 4), "version 4"),
        ("encrypted", corrupt_copy(d, "crypt", |b| b[35] = 1), "encrypted"),
        ("huge clusters", corrupt_copy(d, "clusters", |b| b[23] = 30), "cluster size"),
        ("L1 beyond the file", corrupt_copy(d, "l1", |b| b[41] = 0x7f), "L1 table"),
        ("unknown feature", corrupt_copy(d, "feature", |b| b[79] = 0x10), "incompatible features"),
        ("marked corrupt", corrupt_copy(d, "corrupt", |b| b[79] = 0x02), "marked corrupt"),
        (
            "backing name outside",
            corrupt_copy(d, "name", |b| {
                b[8..16].copy_from_slice(&70_000u64.to_be_bytes());
                b[16..20].copy_from_slice(&4u32.to_be_bytes());
            }),
            "backing file name",
        ),
    ];
    for (what, path, expected) in cases {
        let err = Qcow2::open(&path, true).expect_err(what).to_string();
        assert!(err.contains(expected), "{what}: {err}");
    }
}

#[test]
fn tables_pointing_outside_the_file_fail_the_read_not_the_process() {
    let dir = tempfile::tempdir().unwrap();
    // The first L1 entry (at cluster 3) now points far beyond the end of the file.
    let path = corrupt_copy(dir.path(), "l2", |b| {
        let at = 3 * 65536;
        b[at..at + 8].copy_from_slice(&((1u64 << 40) | COPIED).to_be_bytes());
    });
    let mut image = Qcow2::open(&path, false).unwrap();
    let mut buf = vec![0u8; 512];
    assert!(image.read_at(0, &VolatileSlice::from(&mut buf[..])).is_err());
    assert!(image.write_at(0, &VolatileSlice::from(&mut buf[..])).is_err());
}

#[test]
fn backing_chains_that_loop_escape_or_lack_a_format_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Qcow2::create(&d.join("a.qcow2"), MIB, Some(("b.qcow2", "qcow2"))).unwrap();
    Qcow2::create(&d.join("b.qcow2"), MIB, Some(("a.qcow2", "qcow2"))).unwrap();
    let err = Qcow2::open(&d.join("a.qcow2"), true).unwrap_err().to_string();
    assert!(err.contains("loops"), "{err}");
    Qcow2::create(&d.join("self.qcow2"), MIB, Some(("self.qcow2", "qcow2"))).unwrap();
    assert!(Qcow2::open(&d.join("self.qcow2"), true).unwrap_err().to_string().contains("loops"));

    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.raw"), vec![1u8; 4096]).unwrap();
    let escape = format!("{}/secret.raw", outside.path().display());
    Qcow2::create(&d.join("escape.qcow2"), 4096, Some((&escape, "raw"))).unwrap();
    let err = Qcow2::open_with(&d.join("escape.qcow2"), true, ChainPolicy::confined_to(d)).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");

    Qcow2::create(&d.join("noformat.qcow2"), MIB, None).unwrap();
    // Give it a backing name but no format extension, as old tools did.
    let mut bytes = std::fs::read(d.join("noformat.qcow2")).unwrap();
    let name = b"a.qcow2";
    bytes[8..16].copy_from_slice(&512u64.to_be_bytes());
    bytes[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    bytes[512..512 + name.len()].copy_from_slice(name);
    std::fs::write(d.join("noformat.qcow2"), bytes).unwrap();
    let err = Qcow2::open(&d.join("noformat.qcow2"), true).unwrap_err().to_string();
    assert!(err.contains("no backing format"), "{err}");

    Qcow2::create(&d.join("missing.qcow2"), MIB, Some(("nowhere.raw", "raw"))).unwrap();
    assert!(Qcow2::open(&d.join("missing.qcow2"), true).is_err());
}

/// A jail is given the files of a disk's chain, top down; a live snapshot stacks a new layer
/// over the disk as it is open, moved aside on disk (the daemon renames it to a snapshot).
#[test]
fn chains_are_listed_and_layers_stack_over_an_open_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::write(d.join("base.raw"), pattern(1, MIB as usize)).unwrap();
    Qcow2::create(&d.join("mid.qcow2"), MIB, Some(("base.raw", "raw"))).unwrap();
    Qcow2::create(&d.join("top.qcow2"), MIB, Some(("mid.qcow2", "qcow2"))).unwrap();
    let chain = Qcow2::backing_chain(&d.join("top.qcow2"), ChainPolicy::confined_to(&d)).unwrap();
    assert_eq!(chain, [d.join("mid.qcow2"), d.join("base.raw")]);
    assert!(Qcow2::backing_chain(&d.join("base.raw"), ChainPolicy::default()).is_err(), "not a qcow2");

    let mut open = Qcow2::open(&d.join("top.qcow2"), false).unwrap();
    write(&mut open, 4096, &pattern(2, 4096));
    std::fs::rename(d.join("top.qcow2"), d.join("frozen.qcow2")).unwrap();
    Qcow2::create(&d.join("top.qcow2"), MIB, Some(("frozen.qcow2", "qcow2"))).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(d.join("top.qcow2")).unwrap();
    let mut stacked = Qcow2::layer(file, &d.join("top.qcow2")).unwrap().over(Box::new(open));
    write(&mut stacked, 0, &pattern(3, 4096));
    assert_eq!(read(&mut stacked, 0, 4096), pattern(3, 4096));
    assert_eq!(read(&mut stacked, 4096, 4096), pattern(2, 4096));
    assert_eq!(read(&mut stacked, 8192, 512), pattern(1, 8192 + 512)[8192..]);
    drop(stacked);
    let mut frozen = Qcow2::open(&d.join("frozen.qcow2"), true).unwrap();
    assert_eq!(read(&mut frozen, 0, 4096), pattern(1, 4096), "the layer below took no write");
}

#[test]
fn read_only_images_refuse_writes_and_reads_past_the_end_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.qcow2");
    Qcow2::create(&path, MIB, None).unwrap();
    let mut image = Qcow2::open(&path, true).unwrap();
    let mut buf = vec![0u8; 512];
    assert_eq!(
        image.write_at(0, &VolatileSlice::from(&mut buf[..])).unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
    assert!(image.read_at(MIB - 256, &VolatileSlice::from(&mut buf[..])).is_err());
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        len: usize,
        seed: u8,
    },
    Discard {
        offset: u64,
        len: u64,
    },
    /// Freeze the top image and continue in a new overlay on it.
    Snapshot,
}

const MODEL_SIZE: u64 = 2 * MIB;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..MODEL_SIZE - 1, 1usize..200_000, any::<u8>()).prop_map(|(offset, len, seed)| Op::Write {
            offset,
            len: len.min((MODEL_SIZE - offset) as usize),
            seed
        }),
        2 => (0..MODEL_SIZE - 1, 1u64..300_000).prop_map(|(offset, len)| Op::Discard {
            offset,
            len: len.min(MODEL_SIZE - offset)
        }),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random writes, discards and snapshots through a growing backing chain read exactly
    /// like a plain byte array, and every layer passes qemu-img check.
    #[test]
    fn a_snapshot_chain_behaves_like_memory(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("layer0.qcow2");
        Qcow2::create(&base, MODEL_SIZE, None).unwrap();
        let mut layers = vec![base];
        let mut image = Qcow2::open(&layers[0], false).unwrap();
        let mut model = vec![0u8; MODEL_SIZE as usize];
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data = pattern(seed, len);
                    write(&mut image, offset, &data);
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
                Op::Discard { offset, len } => {
                    image.discard(offset, len).unwrap();
                    model[offset as usize..(offset + len) as usize].fill(0);
                }
                Op::Snapshot => {
                    image.flush().unwrap();
                    drop(image);
                    let below = layers.last().unwrap().file_name().unwrap().to_str().unwrap().to_owned();
                    let next = dir.path().join(format!("layer{}.qcow2", layers.len()));
                    Qcow2::create(&next, MODEL_SIZE, Some((&below, "qcow2"))).unwrap();
                    layers.push(next);
                    image = Qcow2::open(layers.last().unwrap(), false).unwrap();
                }
            }
        }
        prop_assert_eq!(read(&mut image, 0, MODEL_SIZE as usize), model.clone());
        drop(image);
        for layer in &layers {
            qemu_check(layer);
        }
        prop_assert_eq!(qemu_read_all(layers.last().unwrap(), dir.path()), model);
    }
}
