//! I/O benchmark run inside nuage's test guest and, as the baseline, on its host: block
//! throughput (sequential and random 4 KiB and sequential 1 MiB at queue depth 1, random
//! 4 KiB at queue depth 32 — 32 threads each with one request in flight; reads and writes;
//! O_DIRECT where the file system allows it) and one TCP stream. Standard library only, so it builds
//! with plain `rustc` into a static binary for the initramfs.
//!
//!   nuage-bench blk PATH SECONDS_PER_TEST   prints one "blk ..." line per test
//!   nuage-bench tcp-send ADDR:PORT MIB      streams MIB MiB, prints "tcp-send ..."
//!   nuage-bench tcp-recv PORT               receives one stream, prints "tcp-recv ..."

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::exit;
use std::time::{Duration, Instant};

const O_DIRECT: i32 = 0o40000;
const MIB: u64 = 1 << 20;

/// A page-aligned buffer, as O_DIRECT requires.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Self { ptr, layout }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `layout.size()` initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn fail(message: String) -> ! {
    eprintln!("nuage-bench: {message}");
    exit(1)
}

fn open(path: &str) -> (File, bool) {
    let direct = OpenOptions::new().read(true).write(true).custom_flags(O_DIRECT).open(path);
    match direct {
        Ok(file) => (file, true),
        Err(_) => match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => (file, false),
            Err(e) => fail(format!("{path}: {e}")),
        },
    }
}

fn size_of(file: &File) -> u64 {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::End(0)).unwrap_or_else(|e| fail(format!("size: {e}")))
}

/// xorshift64: reproducible offsets without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One block test: `block`-byte requests, `depth` of them in flight at once.
struct BlkTest {
    name: &'static str,
    block: usize,
    write: bool,
    random: bool,
    depth: u64,
}

const BLK_TESTS: [BlkTest; 8] = [
    BlkTest { name: "seq-write-4k", block: 4096, write: true, random: false, depth: 1 },
    BlkTest { name: "seq-read-4k", block: 4096, write: false, random: false, depth: 1 },
    BlkTest { name: "rand-write-4k", block: 4096, write: true, random: true, depth: 1 },
    BlkTest { name: "rand-read-4k", block: 4096, write: false, random: true, depth: 1 },
    BlkTest { name: "rand-write-4k-qd32", block: 4096, write: true, random: true, depth: 32 },
    BlkTest { name: "rand-read-4k-qd32", block: 4096, write: false, random: true, depth: 32 },
    BlkTest { name: "seq-write-1m", block: MIB as usize, write: true, random: false, depth: 1 },
    BlkTest { name: "seq-read-1m", block: MIB as usize, write: false, random: false, depth: 1 },
];

/// Issues requests of `test` on `file` until `limit` has passed; returns how many. Worker
/// `worker` of a deeper queue starts its sequence elsewhere.
fn blk_worker(file: &File, test: &BlkTest, worker: u64, limit: Duration) -> u64 {
    let blocks = size_of(file) / test.block as u64;
    let mut buf = Aligned::new(test.block);
    buf.bytes().iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (worker + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < limit {
        // Check the clock every 64 operations only.
        for _ in 0..64 {
            let index = if test.random { rng.next() % blocks } else { (ops + worker * blocks / test.depth) % blocks };
            let offset = index * test.block as u64;
            let data = buf.bytes();
            let result = if test.write { file.write_all_at(data, offset) } else { file.read_exact_at(data, offset) };
            result.unwrap_or_else(|e| fail(format!("{} at {offset}: {e}", test.name)));
            ops += 1;
        }
    }
    ops
}

fn blk(path: &str, seconds: u64) {
    let (file, direct) = open(path);
    let size = size_of(&file);
    let limit = Duration::from_secs(seconds);
    for test in &BLK_TESTS {
        if size < test.block as u64 {
            fail(format!("{path} is smaller than {} bytes", test.block));
        }
        let start = Instant::now();
        let ops: u64 = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..test.depth)
                .map(|worker| {
                    let file = file.try_clone().unwrap_or_else(|e| fail(format!("dup: {e}")));
                    scope.spawn(move || blk_worker(&file, test, worker, limit))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|_| fail("a worker panicked".into()))).sum()
        });
        if test.write {
            file.sync_data().unwrap_or_else(|e| fail(format!("fdatasync: {e}")));
        }
        let secs = start.elapsed().as_secs_f64();
        let mbs = (ops * test.block as u64) as f64 / MIB as f64 / secs;
        println!(
            "blk test={} direct={direct} ops={ops} seconds={secs:.2} iops={:.0} mib_s={mbs:.1}",
            test.name,
            ops as f64 / secs
        );
    }
}

fn tcp_send(addr: &str, mib: u64) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| fail(format!("connect {addr}: {e}")));
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    for _ in 0..mib * 16 {
        stream.write_all(&chunk).unwrap_or_else(|e| fail(format!("send: {e}")));
    }
    drop(stream);
    let secs = start.elapsed().as_secs_f64();
    println!("tcp-send mib={mib} seconds={secs:.2} mib_s={:.1}", mib as f64 / secs);
}

fn tcp_recv(port: &str) {
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| fail(format!("bind: {e}")));
    let (mut stream, _) = listener.accept().unwrap_or_else(|e| fail(format!("accept: {e}")));
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut start = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                start.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            Err(e) => fail(format!("receive: {e}")),
        }
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-6);
    println!("tcp-recv bytes={total} seconds={secs:.2} mib_s={:.1}", total as f64 / MIB as f64 / secs);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| fail("missing argument; see the source header".into()));
    let number = |i: usize| arg(i).parse::<u64>().unwrap_or_else(|_| fail(format!("not a number: {}", arg(i))));
    match arg(0).as_str() {
        "blk" => blk(&arg(1), number(2)),
        "tcp-send" => tcp_send(&arg(1), number(2)),
        "tcp-recv" => tcp_recv(&arg(1)),
        other => fail(format!("unknown mode {other}")),
    }
}
