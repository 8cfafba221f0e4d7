//! The VMM's own log: its stderr, which the daemon keeps as the instance's `vmm.log`.
//!
//! A guest can make the VMM warn (a refused feature negotiation, a broken ring) as fast as
//! it can write a register, so the log is bounded two ways: a message from one place in
//! the code is written at most [`PER_WINDOW`] times per [`WINDOW`], the rest counted and
//! the count written once; and the whole log of one VMM run stops at [`LOG_LIMIT`] bytes.
//! Debug and trace messages, which someone asked for, are only subject to the cap.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::vmm::api::LOG_LIMIT;

/// How long a message's allowance lasts.
const WINDOW: Duration = Duration::from_secs(10);
/// How many times a message from one place is written per window.
const PER_WINDOW: u32 = 3;

/// Sets up the log: `filter` (e.g. `warn`, `nuage=debug`) on stderr, with colour when it
/// is a terminal. The returned handle writes what was held back when the VMM ends.
///
/// The filter is a list of targets and levels, which is all a VMM's log needs; the daemon's
/// span and field filters (`EnvFilter`) would bring a regular-expression engine into every
/// VMM, compiled at start and resident for the guest's life.
pub fn init(filter: &str, colour: bool) -> Repeats {
    let filter = targets(filter);
    let out = CappedStderr::new(LOG_LIMIT);
    let repeats = Repeats { seen: Arc::new(Mutex::new(HashMap::new())), out: out.clone() };
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(out)
        .with_filter(filter)
        .with_filter(repeats.clone());
    tracing_subscriber::registry().with(layer).init();
    repeats
}

/// The filter `text` names, or warnings and errors from everywhere when it names none.
fn targets(text: &str) -> Targets {
    text.parse().unwrap_or_else(|_| Targets::new().with_default(Level::WARN))
}

/// How often one message was seen in its current window.
struct Seen {
    since: Instant,
    written: u32,
    held_back: u64,
}

/// Holds back a message repeated from one place beyond its allowance, and says how many.
#[derive(Clone)]
pub struct Repeats {
    seen: Arc<Mutex<HashMap<Identifier, (&'static Metadata<'static>, Seen)>>>,
    out: CappedStderr,
}

impl Repeats {
    fn admit(&self, metadata: &'static Metadata<'static>, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = Seen { since: now, written: 0, held_back: 0 };
        let (_, entry) = seen.entry(metadata.callsite()).or_insert((metadata, fresh));
        if now.duration_since(entry.since) >= WINDOW {
            self.report(metadata, entry.held_back);
            *entry = Seen { since: now, written: 0, held_back: 0 };
        }
        if entry.written < PER_WINDOW {
            entry.written += 1;
            true
        } else {
            entry.held_back += 1;
            false
        }
    }

    fn report(&self, metadata: &Metadata<'_>, held_back: u64) {
        if held_back == 0 {
            return;
        }
        let place = format!("{}:{}", metadata.file().unwrap_or("?"), metadata.line().unwrap_or(0));
        let line = format!(
            "nuage-vmm: {held_back} more {} messages from {} ({place}) were not logged\n",
            metadata.level(),
            metadata.target()
        );
        let _ = self.out.make_writer().write_all(line.as_bytes());
    }

    /// Writes the counts still held back: the VMM is ending.
    pub fn flush(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (metadata, entry) in seen.values_mut() {
            self.report(metadata, std::mem::take(&mut entry.held_back));
        }
    }
}

impl<S> Filter<S> for Repeats {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        // Decided per event, so never cached.
        Interest::sometimes()
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let metadata = event.metadata();
        *metadata.level() > tracing::Level::INFO || self.admit(metadata, Instant::now())
    }
}

/// Stderr until a number of bytes was written, then a last line saying so, then nothing.
#[derive(Clone)]
struct CappedStderr {
    written: Arc<AtomicU64>,
    limit: u64,
}

impl CappedStderr {
    fn new(limit: u64) -> Self {
        Self { written: Arc::new(AtomicU64::new(0)), limit }
    }
}

/// What of a write goes out.
#[derive(Debug, PartialEq, Eq)]
enum Portion {
    Whole,
    /// The write that crosses the limit: the notice instead.
    Notice,
    Nothing,
}

impl CappedStderr {
    fn portion(&self, len: usize) -> Portion {
        let before = self.written.fetch_add(len as u64, Ordering::Relaxed);
        if before + len as u64 <= self.limit {
            Portion::Whole
        } else if before <= self.limit {
            Portion::Notice
        } else {
            Portion::Nothing
        }
    }
}

impl Write for CappedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.portion(buf.len()) {
            Portion::Whole => std::io::stderr().write_all(buf)?,
            Portion::Notice => {
                let notice =
                    format!("nuage-vmm: the log reached {} bytes; later messages are dropped\n", self.limit);
                std::io::stderr().write_all(notice.as_bytes())?;
            }
            Portion::Nothing => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for CappedStderr {
    type Writer = CappedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_targets_and_levels_and_falls_back_to_warnings() {
        let filter = targets("warn,nuage::vmm::cli=info");
        assert!(filter.would_enable("nuage::vmm::cli", &Level::INFO));
        assert!(!filter.would_enable("nuage::vmm::builder", &Level::INFO));
        assert!(filter.would_enable("nuage::vmm::builder", &Level::WARN));
        let fallback = targets("nuage=loud");
        assert!(fallback.would_enable("nuage", &Level::WARN));
        assert!(!fallback.would_enable("nuage", &Level::INFO));
    }

    #[test]
    fn a_repeated_message_is_written_a_few_times_per_window() {
        let repeats = Repeats { seen: Arc::default(), out: CappedStderr::new(0) };
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::sink).with_filter(repeats.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            for _ in 0..1000 {
                tracing::warn!("the same warning");
            }
        });
        let (metadata, written, held_back) = {
            let seen = repeats.seen.lock().unwrap();
            let (metadata, seen) = seen.values().next().unwrap();
            (*metadata, seen.written, seen.held_back)
        };
        assert_eq!((written, held_back), (PER_WINDOW, 1000 - u64::from(PER_WINDOW)));
        // A new window: the count is reported and the allowance renewed.
        assert!(repeats.admit(metadata, Instant::now() + WINDOW));
        assert_eq!(repeats.seen.lock().unwrap().values().next().unwrap().1.held_back, 0);
    }

    #[test]
    fn the_log_stops_at_its_limit() {
        let out = CappedStderr::new(10);
        let portions: Vec<_> = [5, 5, 1, 1, 100].into_iter().map(|len| out.portion(len)).collect();
        assert_eq!(
            portions,
            [Portion::Whole, Portion::Whole, Portion::Notice, Portion::Nothing, Portion::Nothing]
        );
    }
}
