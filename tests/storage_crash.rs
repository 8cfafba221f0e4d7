//! Crash safety of the storage store: a child process runs volume, snapshot and delete
//! sequences in a loop and is killed with SIGKILL at random moments; after each kill the
//! store is reopened (which recovers it) and must be consistent: every record has its
//! file, every file its record, every chain opens and passes `qemu-img check`, and every
//! snapshot still holds what its volume had when it was taken.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nuage::block::qcow2::Qcow2;
use nuage::block::BlockBackend;
use nuage::store::{Parent, Store};
use vm_memory::VolatileSlice;

const MIB: u64 = 1 << 20;
const ROOT_VAR: &str = "NUAGE_CRASH_STORE";

fn marker(disk: &Path) -> Vec<u8> {
    let mut image = Qcow2::open(disk, true).unwrap();
    let mut buf = vec![0u8; 21];
    image.read_at(0, &VolatileSlice::from(&mut buf[..])).unwrap();
    buf
}

fn set_marker(disk: &Path, id: &str) {
    let mut image = Qcow2::open(disk, false).unwrap();
    let mut bytes = id.as_bytes().to_vec();
    image.write_at(0, &VolatileSlice::from(&mut bytes[..])).unwrap();
    image.flush().unwrap();
}

/// The child: create, mark, snapshot, clone and delete, forever. Run only by the test
/// below, which points it at a store through the environment.
#[test]
#[ignore = "the worker process of store_survives_sigkill_at_any_moment"]
fn crash_worker() {
    let root = std::env::var(ROOT_VAR).expect("run by store_survives_sigkill_at_any_moment");
    let (store, _) = Store::open(Path::new(&root)).unwrap();
    loop {
        let volume = store.create_volume(Parent::None, Some(4 * MIB)).unwrap();
        set_marker(&store.volume_path(&volume.id).unwrap(), &volume.id);
        let snapshot = store.create_snapshot(&volume.id).unwrap();
        let clone = store.create_volume(Parent::Snapshot(snapshot.id.clone()), None).unwrap();
        set_marker(&store.volume_path(&clone.id).unwrap(), &clone.id);
        let second = store.create_snapshot(&clone.id).unwrap();
        store.delete_volume(&clone.id).unwrap();
        store.delete_snapshot(&second.id).unwrap();
        if store.volumes().unwrap().len() > 6 {
            let victim = store.volumes().unwrap().remove(0);
            store.delete_volume(&victim.id).unwrap();
        }
    }
}

fn check_consistent(root: &Path) {
    let (store, _report) = Store::open(root).unwrap();
    for dir in ["volumes", "snapshots"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".tmp"), "temporary file {name} survived recovery");
            if let Some(id) = name.strip_suffix(".qcow2") {
                assert!(root.join(dir).join(format!("{id}.json")).exists(), "orphan {dir}/{name}");
            }
        }
    }
    for volume in store.volumes().unwrap() {
        let path = store.volume_path(&volume.id).unwrap();
        assert!(path.exists(), "volume {} lost its file", volume.id);
        let chain_ok = Qcow2::open(&path, true);
        assert!(chain_ok.is_ok(), "volume {}: {:?}", volume.id, chain_ok.err());
        qemu_check(&path);
        if let Parent::Snapshot(snapshot) = &volume.parent {
            store.snapshot(snapshot).unwrap();
        }
    }
    for snapshot in store.snapshots().unwrap() {
        let path = root.join(format!("snapshots/{}.qcow2", snapshot.id));
        qemu_check(&path);
        let held = marker(&path);
        // A snapshot taken before its volume was marked (a kill in between) holds zeros.
        assert!(
            held == snapshot.volume_id.as_bytes() || held.iter().all(|b| *b == 0),
            "snapshot {} of {} holds {:?}",
            snapshot.id,
            snapshot.volume_id,
            String::from_utf8_lossy(&held)
        );
    }
}

fn qemu_check(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(path)
        .output()
        .expect("qemu-img (Debian package qemu-utils) is needed");
    // Exit 3 is "leaked clusters": a crash mid-allocation may leak, never corrupt.
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "qemu-img check {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn store_survives_sigkill_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = std::process::id() as u64;
    let mut kills = 0;
    for round in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "crash_worker", "--nocapture"])
            .env(ROOT_VAR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(30 + (seed >> 33) % 250));
        let alive = child.try_wait().unwrap().is_none();
        assert!(alive, "round {round}: the worker died on its own (see crash_worker)");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        check_consistent(dir.path());
    }
    assert_eq!(kills, 12);
    let (store, _) = Store::open(dir.path()).unwrap();
    assert!(!store.volumes().unwrap().is_empty(), "the worker made progress");
}
