//! Storage benchmark: constant-time snapshots and clones, and the qcow2 backend's 4 KiB
//! random I/O against a raw file on the same file system, reported as ratios.
//!
//!   cargo bench --bench storage [-- DIR]   (DIR: where to put the files, default a temp dir)

#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::time::{Duration, Instant};

use nuage::block::qcow2::Qcow2;
use nuage::block::raw::RawFile;
use nuage::block::BlockBackend;
use nuage::store::{Parent, Store};
use vm_memory::VolatileSlice;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time to snapshot a volume of `size` and to create a volume from the snapshot.
fn snapshot_and_clone(store: &Store, size: u64) -> (Duration, Duration) {
    let (mut snap, mut clone) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let volume = store.create_volume(Parent::None, Some(size)).unwrap();
        let mut disk = Qcow2::open(&store.volume_path(&volume.id).unwrap(), false).unwrap();
        let mut data = vec![0x5au8; MIB as usize];
        disk.write_at(size / 2, &VolatileSlice::from(&mut data[..])).unwrap();
        drop(disk);
        let start = Instant::now();
        let snapshot = store.create_snapshot(&volume.id).unwrap();
        snap.push(start.elapsed());
        let start = Instant::now();
        let copy = store.create_volume(Parent::Snapshot(snapshot.id.clone()), None).unwrap();
        clone.push(start.elapsed());
        store.delete_volume(&copy.id).unwrap();
        store.delete_volume(&volume.id).unwrap();
        store.delete_snapshot(&snapshot.id).unwrap();
    }
    (median(snap), median(clone))
}

/// xorshift64 offsets, the same sequence for both backends.
fn offsets(count: usize, blocks: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % blocks) * 4096
        })
        .collect()
}

/// (random-write, random-read) operations per second of 4 KiB on `disk`, already filled.
/// Writes land in the page cache; the flush after them is not timed (it measures the
/// device, which is the same for both formats).
fn random_iops(disk: &mut dyn BlockBackend) -> (f64, f64) {
    let ops = offsets(40_000, disk.size() / 4096);
    let mut buf = vec![0xa5u8; 4096];
    // No writeback of earlier runs in flight while timing.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let start = Instant::now();
    for &offset in &ops {
        disk.write_at(offset, &VolatileSlice::from(&mut buf[..])).unwrap();
    }
    let write = ops.len() as f64 / start.elapsed().as_secs_f64();
    disk.flush().unwrap();
    let start = Instant::now();
    for &offset in &ops {
        disk.read_at(offset, &VolatileSlice::from(&mut buf[..])).unwrap();
    }
    let read = ops.len() as f64 / start.elapsed().as_secs_f64();
    (write, read)
}

fn fill(disk: &mut dyn BlockBackend) {
    let mut chunk = vec![0x11u8; MIB as usize];
    for offset in (0..disk.size()).step_by(MIB as usize) {
        disk.write_at(offset, &VolatileSlice::from(&mut chunk[..])).unwrap();
    }
    disk.flush().unwrap();
}

fn main() {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let temp = tempfile::tempdir().unwrap();
    let dir = arg.map_or_else(|| temp.path().to_owned(), Into::into);
    let (store, _) = Store::open(&dir.join("store")).unwrap();
    println!("storage benchmark in {}", dir.display());
    println!("snapshot and clone (median of 15), sparse volumes:");
    let mut first = None;
    for size in [GIB, 10 * GIB, 100 * GIB] {
        let (snap, clone) = snapshot_and_clone(&store, size);
        let (snap0, clone0) = *first.get_or_insert((snap, clone));
        println!(
            "  {:>4} GiB: snapshot {:>8.3} ms ({:.2}x the 1 GiB time), clone {:>8.3} ms ({:.2}x)",
            size / GIB,
            snap.as_secs_f64() * 1e3,
            snap.as_secs_f64() / snap0.as_secs_f64(),
            clone.as_secs_f64() * 1e3,
            clone.as_secs_f64() / clone0.as_secs_f64()
        );
    }
    let size = 256 * MIB;
    let raw_path = dir.join("bench.raw");
    std::fs::write(&raw_path, vec![0u8; size as usize]).unwrap();
    let mut raw = RawFile::open(&raw_path, false).unwrap();
    fill(&mut raw);
    let qcow_path = dir.join("bench.qcow2");
    let _ = std::fs::remove_file(&qcow_path);
    Qcow2::create(&qcow_path, size, None).unwrap();
    let mut qcow = Qcow2::open(&qcow_path, false).unwrap();
    fill(&mut qcow);
    // Alternate the two, five rounds, and keep each one's median.
    let (mut raw_runs, mut qcow_runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        qcow_runs.push(random_iops(&mut qcow));
        raw_runs.push(random_iops(&mut raw));
    }
    let med = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_w, raw_r) = (med(&raw_runs, |r| r.0), med(&raw_runs, |r| r.1));
    let (q_w, q_r) = (med(&qcow_runs, |r| r.0), med(&qcow_runs, |r| r.1));
    println!("4 KiB random I/O on a filled 256 MiB disk (40000 ops, page cache warm, median of 5):");
    println!("  write: raw {raw_w:>9.0} IOPS, qcow2 {q_w:>9.0} IOPS, qcow2/raw {:.3}x", q_w / raw_w);
    println!("  read:  raw {raw_r:>9.0} IOPS, qcow2 {q_r:>9.0} IOPS, qcow2/raw {:.3}x", q_r / raw_r);
}
