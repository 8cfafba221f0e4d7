//! Per-device rate limits: token buckets for operations and bytes per second. A device asks
//! before serving each request; when a bucket is short, the request waits in the ring and
//! a timerfd (one of the worker's event sources) wakes the device when it may go on.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

use crate::vmm::api::config::RateLimit;

/// A bucket refilled at `rate` tokens per second, holding at most one second's worth.
/// It may go into debt by one request larger than the bucket, so such a request is
/// served (alone, after a full refill) instead of never.
#[derive(Debug)]
struct TokenBucket {
    rate: u64,
    tokens: i128,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64, now: Instant) -> Self {
        Self { rate, tokens: i128::from(rate), last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos() as i128;
        let added = elapsed * i128::from(self.rate) / 1_000_000_000;
        if added > 0 {
            self.tokens = (self.tokens + added).min(i128::from(self.rate));
            // Keep the remainder of a partial token for later.
            self.last += Duration::from_nanos((added * 1_000_000_000 / i128::from(self.rate)) as u64);
        }
        if self.tokens == i128::from(self.rate) {
            self.last = now;
        }
    }

    /// Whether `cost` may be taken now (or the bucket is full, for an oversized cost).
    fn allows(&self, cost: u64) -> bool {
        self.tokens >= i128::from(cost).min(i128::from(self.rate))
    }

    /// How long until [`TokenBucket::allows`] holds for `cost`.
    fn wait(&self, cost: u64) -> Duration {
        let missing = i128::from(cost).min(i128::from(self.rate)) - self.tokens;
        if missing <= 0 {
            return Duration::ZERO;
        }
        let nanos = (missing * 1_000_000_000 + i128::from(self.rate) - 1) / i128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The limits of one device.
pub struct RateLimiter {
    ops: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    timer: TimerFd,
}

impl RateLimiter {
    /// A limiter for `limit`; `None` when it limits nothing.
    pub fn new(limit: &RateLimit) -> std::io::Result<Option<Self>> {
        if limit.ops_per_sec.is_none() && limit.bytes_per_sec.is_none() {
            return Ok(None);
        }
        let now = Instant::now();
        Ok(Some(Self {
            ops: limit.ops_per_sec.map(|rate| TokenBucket::new(rate, now)),
            bytes: limit.bytes_per_sec.map(|rate| TokenBucket::new(rate, now)),
            timer: TimerFd::new()?,
        }))
    }

    /// Takes one operation of `bytes` if both buckets allow it. Otherwise takes nothing and
    /// arms the timer for when they will: the caller leaves the request queued.
    pub fn try_consume(&mut self, bytes: u64) -> bool {
        self.try_consume_at(bytes, Instant::now())
    }

    fn try_consume_at(&mut self, bytes: u64, now: Instant) -> bool {
        let mut wait = Duration::ZERO;
        for (bucket, cost) in [(&mut self.ops, 1), (&mut self.bytes, bytes)] {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                if !bucket.allows(cost) {
                    wait = wait.max(bucket.wait(cost));
                }
            }
        }
        if !wait.is_zero() {
            if let Err(e) = self.timer.reset(wait, None) {
                tracing::error!(error = %e, "cannot arm the rate-limit timer");
            }
            return false;
        }
        for (bucket, cost) in [(&mut self.ops, 1), (&mut self.bytes, bytes)] {
            if let Some(bucket) = bucket {
                bucket.tokens -= i128::from(cost);
            }
        }
        true
    }

    /// Acknowledges the timer's expiry.
    pub fn timer_fired(&mut self) {
        let _ = self.timer.wait();
    }
}

/// Whether an optional limiter lets an operation of `bytes()` through now. The size is only
/// computed when there is a limit (for a chain it means walking its descriptors again).
pub fn admits(limiter: &mut Option<RateLimiter>, bytes: impl FnOnce() -> u64) -> bool {
    match limiter {
        Some(limiter) => limiter.try_consume(bytes()),
        None => true,
    }
}

/// The limiter's timer, as a worker event source (none without a limiter).
pub fn timer_source(limiter: &Option<RateLimiter>) -> Vec<RawFd> {
    limiter.iter().map(AsRawFd::as_raw_fd).collect()
}

impl AsRawFd for RateLimiter {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(ops: Option<u64>, bytes: Option<u64>) -> RateLimiter {
        RateLimiter::new(&RateLimit { ops_per_sec: ops, bytes_per_sec: bytes }).unwrap().unwrap()
    }

    #[test]
    fn no_limits_means_no_limiter() {
        assert!(RateLimiter::new(&RateLimit::default()).unwrap().is_none());
    }

    #[test]
    fn operations_per_second() {
        let mut l = limiter(Some(10), None);
        let start = Instant::now();
        let served = (0..100).filter(|_| l.try_consume_at(4096, start)).count();
        assert_eq!(served, 10, "one second's burst");
        assert!(!l.try_consume_at(0, start + Duration::from_millis(50)));
        assert!(l.try_consume_at(0, start + Duration::from_millis(100)), "one token per 100 ms");
        // Over ten seconds, a hundred operations at most (plus the initial burst).
        let served =
            (1..=10_000u64).filter(|ms| l.try_consume_at(0, start + Duration::from_millis(100 + ms))).count();
        assert_eq!(served, 100);
    }

    #[test]
    fn bytes_per_second_and_oversized_requests() {
        let mut l = limiter(None, Some(1 << 20));
        let start = Instant::now();
        assert!(l.try_consume_at(1 << 20, start));
        assert!(!l.try_consume_at(4096, start));
        assert!(l.try_consume_at(4096, start + Duration::from_millis(4)), "4 KiB refills in ~3.9 ms");
        // A request larger than the bucket goes alone once the bucket is full again.
        assert!(!l.try_consume_at(8 << 20, start + Duration::from_millis(500)));
        assert!(l.try_consume_at(8 << 20, start + Duration::from_millis(1004)));
        assert!(!l.try_consume_at(1, start + Duration::from_millis(2000)), "paying off the debt");
    }

    #[test]
    fn a_refused_request_arms_the_timer() {
        let mut l = limiter(Some(1000), None);
        let now = Instant::now();
        while l.try_consume_at(0, now) {}
        let started = Instant::now();
        l.timer_fired(); // blocks until the timer expires (about 1 ms)
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
