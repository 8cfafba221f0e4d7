//! Exit statistics (`nuage-vmm --stats`): how often each vCPU left the guest, why, for which
//! port or MMIO page, and how long the VMM took to answer; with a timeline of exits per
//! second since the VMM started, to set beside the guest's boot log. What slows a guest
//! down on KVM is mostly its exits to user space, so this is where a boot's time is found.
//!
//! Off by default: when on, each exit costs two clock reads. Every table is capped, so a
//! guest touching many addresses cannot grow the VMM's memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Most distinct ports or MMIO pages counted one by one; the rest share one entry.
const MAX_ADDRESSES: usize = 256;
/// Seconds of timeline kept (one hour).
const MAX_TIMELINE_SECONDS: usize = 3600;
/// Lines of the busiest ports and pages in the report.
const REPORT_TOP: usize = 8;

/// Why a vCPU left the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitKind {
    /// A port-I/O read.
    IoIn,
    /// A port-I/O write.
    IoOut,
    /// An MMIO read.
    MmioRead,
    /// An MMIO write.
    MmioWrite,
    /// `KVM_RUN` interrupted by a signal or with nothing to do (EINTR, EAGAIN, IRQ window).
    Interrupted,
    /// Anything else (shutdown, system events, errors).
    Other,
}

impl ExitKind {
    fn name(self) -> &'static str {
        match self {
            Self::IoIn => "io-in",
            Self::IoOut => "io-out",
            Self::MmioRead => "mmio-read",
            Self::MmioWrite => "mmio-write",
            Self::Interrupted => "interrupted",
            Self::Other => "other",
        }
    }
}

/// Where an exit went: a port, an MMIO page, or one of too many to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Port(u16),
    MmioPage(u64),
    Elsewhere,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    exits: u64,
    time: Duration,
}

impl Tally {
    fn add(&mut self, exits: u64, time: Duration) {
        self.exits += exits;
        self.time += time;
    }
}

/// One vCPU's counts, merged into the VM's at the end.
#[derive(Debug)]
pub struct ExitStats {
    started: Instant,
    in_guest: Duration,
    kinds: BTreeMap<ExitKind, Tally>,
    targets: BTreeMap<(ExitKind, Target), Tally>,
    timeline: Vec<u64>,
}

impl ExitStats {
    /// Empty statistics; the timeline counts seconds from `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            in_guest: Duration::ZERO,
            kinds: BTreeMap::new(),
            targets: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }

    /// Records time spent inside `KVM_RUN`.
    pub fn guest_ran(&mut self, time: Duration) {
        self.in_guest += time;
    }

    /// Records one exit of `kind` to `port` or MMIO `addr`, answered in `time`, at `now`.
    pub fn record(
        &mut self,
        kind: ExitKind,
        port: Option<u16>,
        addr: Option<u64>,
        time: Duration,
        now: Instant,
    ) {
        self.kinds.entry(kind).or_default().add(1, time);
        let target = match (port, addr) {
            (Some(port), _) => Some(Target::Port(port)),
            (None, Some(addr)) => Some(Target::MmioPage(addr & !0xfff)),
            (None, None) => None,
        };
        if let Some(target) = target {
            let key = if self.targets.len() < MAX_ADDRESSES || self.targets.contains_key(&(kind, target)) {
                (kind, target)
            } else {
                (kind, Target::Elsewhere)
            };
            self.targets.entry(key).or_default().add(1, time);
        }
        let second = now.saturating_duration_since(self.started).as_secs() as usize;
        if second < MAX_TIMELINE_SECONDS {
            if self.timeline.len() <= second {
                self.timeline.resize(second + 1, 0);
            }
            self.timeline[second] += 1;
        }
    }

    /// Adds `other`'s counts (another vCPU's) to these.
    pub fn merge(&mut self, other: &ExitStats) {
        self.in_guest += other.in_guest;
        for (kind, tally) in &other.kinds {
            self.kinds.entry(*kind).or_default().add(tally.exits, tally.time);
        }
        for (key, tally) in &other.targets {
            self.targets.entry(*key).or_default().add(tally.exits, tally.time);
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            *mine += theirs;
        }
    }

    /// The report printed when the VMM ends.
    pub fn report(&self, vcpus: usize) -> String {
        let mut out = String::new();
        let total: u64 = self.kinds.values().map(|t| t.exits).sum();
        let handling: Duration = self.kinds.values().map(|t| t.time).sum();
        let _ = writeln!(
            out,
            "exit statistics: {vcpus} vCPU(s), {:.3} s since start, {:.3} s in the guest, {total} exits, {:.3} s answering them",
            self.started.elapsed().as_secs_f64(),
            self.in_guest.as_secs_f64(),
            handling.as_secs_f64(),
        );
        let _ = writeln!(out, "  {:<12} {:>10} {:>12} {:>10}", "kind", "exits", "time ms", "mean µs");
        for (kind, tally) in &self.kinds {
            let _ = writeln!(
                out,
                "  {:<12} {:>10} {:>12.1} {:>10.1}",
                kind.name(),
                tally.exits,
                ms(tally.time),
                mean_us(tally)
            );
        }
        let mut busiest: Vec<_> = self.targets.iter().collect();
        busiest.sort_by(|a, b| b.1.exits.cmp(&a.1.exits).then(a.0.cmp(b.0)));
        let _ = writeln!(out, "  busiest targets:");
        for ((kind, target), tally) in busiest.into_iter().take(REPORT_TOP) {
            let target = match target {
                Target::Port(port) => format!("port {port:#06x}"),
                Target::MmioPage(page) => format!("page {page:#x}"),
                Target::Elsewhere => "(others)".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<12} {:<20} {:>10} exits {:>10.1} ms {:>8.1} µs each",
                kind.name(),
                target,
                tally.exits,
                ms(tally.time),
                mean_us(tally)
            );
        }
        let timeline: Vec<String> = self.timeline.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "  exits per second from start: {}", timeline.join(" "));
        out
    }
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1000.0
}

fn mean_us(tally: &Tally) -> f64 {
    if tally.exits == 0 {
        0.0
    } else {
        tally.time.as_secs_f64() * 1e6 / tally.exits as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kinds_targets_and_seconds() {
        let start = Instant::now();
        let mut a = ExitStats::new(start);
        let us = Duration::from_micros;
        a.record(ExitKind::IoOut, Some(0x3f8), None, us(10), start);
        a.record(ExitKind::IoOut, Some(0x3f8), None, us(30), start + Duration::from_millis(1500));
        a.record(ExitKind::Interrupted, None, None, us(1), start);
        let mut b = ExitStats::new(start);
        b.record(ExitKind::MmioWrite, None, Some(0xd000_0050), us(5), start + Duration::from_secs(2));
        b.guest_ran(Duration::from_secs(1));
        a.merge(&b);
        assert_eq!(a.kinds[&ExitKind::IoOut].exits, 2);
        assert_eq!(a.kinds[&ExitKind::IoOut].time, us(40));
        assert_eq!(a.targets[&(ExitKind::MmioWrite, Target::MmioPage(0xd000_0000))].exits, 1);
        assert_eq!(a.timeline, vec![2, 1, 1]);
        assert_eq!(a.in_guest, Duration::from_secs(1));
        let report = a.report(2);
        assert!(report.contains("4 exits"), "{report}");
        assert!(report.contains("port 0x03f8"), "{report}");
        assert!(report.contains("exits per second from start: 2 1 1"), "{report}");
    }

    #[test]
    fn tables_are_capped() {
        let start = Instant::now();
        let mut stats = ExitStats::new(start);
        for page in 0..10_000u64 {
            stats.record(ExitKind::MmioRead, None, Some(page << 12), Duration::ZERO, start);
        }
        stats.record(ExitKind::IoIn, Some(0x70), None, Duration::ZERO, start + Duration::from_secs(1 << 20));
        // The counted pages, then one shared entry per kind.
        assert_eq!(stats.targets.len(), MAX_ADDRESSES + 2);
        assert_eq!(
            stats.targets[&(ExitKind::MmioRead, Target::Elsewhere)].exits,
            10_000 - MAX_ADDRESSES as u64
        );
        assert_eq!(stats.timeline.len(), 1);
    }
}
