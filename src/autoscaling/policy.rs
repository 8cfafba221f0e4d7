//! Target tracking: what each policy's metric asks of a group's capacity, and how several
//! policies' answers combine (as AWS does: out if any policy asks, in only if all agree).
//! Metrics are rates over the last minute, sampled each pass and kept in memory: after a
//! restart a policy waits for [`MIN_SPAN`] of samples before it asks for anything.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How far back a rate looks.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The shortest span a rate is believed over.
pub const MIN_SPAN: Duration = Duration::from_secs(10);
/// The warmup of a policy and group that give none, in seconds (AWS's default).
pub const DEFAULT_WARMUP: u32 = 300;
/// Samples kept per series (a pass a second fills the window with 60).
const MAX_SAMPLES: usize = 256;

/// A counter sampled over time.
#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<(Instant, f64)>,
}

impl Series {
    fn push(&mut self, at: Instant, value: f64) {
        self.samples.push_back((at, value));
        // One sample older than the window stays, as the base of the rate.
        while self.samples.len() > MAX_SAMPLES
            || self.samples.get(1).is_some_and(|(t, _)| at.duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The counter's growth per second over the window, once it spans [`MIN_SPAN`].
    fn rate(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let span = last.0.duration_since(first.0);
        (span >= MIN_SPAN).then(|| (last.1 - first.1).max(0.0) / span.as_secs_f64())
    }
}

/// A group's metrics, sampled pass by pass.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Each target's request counter as last read, by (target group, instance).
    last_requests: HashMap<(String, String), u64>,
    /// Requests each target group sent, summed over its targets.
    requests: HashMap<String, (u64, Series)>,
    /// Each instance's CPU seconds.
    cpu: HashMap<String, Series>,
    /// Since when each policy has asked for less than the capacity.
    below_since: HashMap<String, Instant>,
}

impl Sampler {
    /// Takes in target group `arn`'s request counters (per instance, counting up; a
    /// balancer restarted counts from 0 again, which is read as a fresh start).
    pub fn add_requests(&mut self, arn: &str, at: Instant, counters: &[(String, u64)]) {
        let mut grown = 0;
        for (id, count) in counters {
            let last = self.last_requests.insert((arn.to_owned(), id.clone()), *count);
            grown += match last {
                Some(last) if last <= *count => count - last,
                Some(_) => *count,
                None => 0,
            };
        }
        let (total, series) = self.requests.entry(arn.to_owned()).or_default();
        *total += grown;
        series.push(at, *total as f64);
    }

    /// Requests per minute target group `arn` sent over the last minute.
    pub fn requests_per_minute(&self, arn: &str) -> Option<f64> {
        self.requests.get(arn)?.1.rate().map(|per_second| per_second * 60.0)
    }

    /// Takes in instance `id`'s CPU seconds.
    pub fn add_cpu(&mut self, id: &str, at: Instant, seconds: f64) {
        self.cpu.entry(id.to_owned()).or_default().push(at, seconds);
    }

    /// Instance `id`'s CPU use over the last minute, in percent of its `vcpus`.
    pub fn cpu_percent(&self, id: &str, vcpus: u32) -> Option<f64> {
        Some(self.cpu.get(id)?.rate()? * 100.0 / f64::from(vcpus.max(1)))
    }

    /// Forgets instances that are gone.
    pub fn retain_instances(&mut self, live: &[&str]) {
        self.cpu.retain(|id, _| live.contains(&id.as_str()));
        self.last_requests.retain(|(_, id), _| live.contains(&id.as_str()));
    }

    /// Whether policy `name`, asking for less than the capacity now (`below`), has done
    /// so for `cooldown`.
    pub fn below_for(&mut self, name: &str, below: bool, at: Instant, cooldown: Duration) -> bool {
        if !below {
            self.below_since.remove(name);
            return false;
        }
        at.duration_since(*self.below_since.entry(name.to_owned()).or_insert(at)) >= cooldown
    }

    /// Starts every policy's cooldown again (after the capacity changed).
    pub fn restart_cooldowns(&mut self) {
        self.below_since.clear();
    }
}

/// What one policy asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The policy.
    pub policy: String,
    /// The capacity it asks for.
    pub capacity: u32,
    /// It may shrink the group (scale-in on, its cooldown over).
    pub may_scale_in: bool,
}

/// The capacity that brings a metric now at `value` with `counted` instances to `target`.
pub fn capacity_for(counted: u32, value: f64, target: f64) -> u32 {
    let wanted = (f64::from(counted) * value / target).ceil();
    if wanted.is_finite() && wanted >= 0.0 {
        // Saturates at u32::MAX; the group's max clamps it anyway.
        wanted.min(f64::from(u32::MAX)) as u32
    } else {
        counted
    }
}

/// The desired capacity `proposals` lead to from `current`, within `min..=max`: the
/// largest ask when any policy asks for more; the largest ask when every policy asks for
/// less and may scale in; else none (no change).
pub fn combine(current: u32, proposals: &[Proposal], min: u32, max: u32) -> Option<u32> {
    let largest = proposals.iter().map(|p| p.capacity).max()?;
    let grows = largest > current;
    if !grows && !proposals.iter().all(|p| p.capacity < current && p.may_scale_in) {
        return None;
    }
    let next = largest.clamp(min, max.max(min));
    (next != current).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(policy: &str, capacity: u32, may_scale_in: bool) -> Proposal {
        Proposal { policy: policy.into(), capacity, may_scale_in }
    }

    #[test]
    fn policies_combine_out_if_any_asks_in_only_if_all_agree() {
        assert_eq!(combine(2, &[ask("cpu", 3, true), ask("requests", 1, true)], 1, 10), Some(3));
        assert_eq!(combine(2, &[ask("cpu", 1, true), ask("requests", 2, true)], 1, 10), None, "one holds");
        assert_eq!(
            combine(4, &[ask("cpu", 1, true), ask("requests", 2, true)], 1, 10),
            Some(2),
            "to the largest"
        );
        assert_eq!(
            combine(4, &[ask("cpu", 1, true), ask("requests", 2, false)], 1, 10),
            None,
            "scale-in off"
        );
        assert_eq!(combine(4, &[ask("cpu", 1, true)], 2, 10), Some(2), "never below the min");
        assert_eq!(combine(4, &[ask("cpu", 40, true)], 2, 6), Some(6), "never above the max");
        assert_eq!(combine(6, &[ask("cpu", 40, true)], 2, 6), None, "already at the max");
        assert_eq!(combine(3, &[], 1, 10), None);
    }

    #[test]
    fn capacity_follows_the_metric_to_its_target() {
        assert_eq!(capacity_for(2, 90.0, 50.0), 4);
        assert_eq!(capacity_for(4, 20.0, 50.0), 2);
        assert_eq!(capacity_for(1, 50.0, 50.0), 1);
        assert_eq!(capacity_for(0, 0.0, 50.0), 0);
    }

    #[test]
    fn rates_span_the_last_minute_and_survive_a_balancer_restart() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        sampler.add_requests("tg", at(0), &[("i-1".into(), 100), ("i-2".into(), 0)]);
        assert_eq!(sampler.requests_per_minute("tg"), None, "no span yet");
        sampler.add_requests("tg", at(5), &[("i-1".into(), 150), ("i-2".into(), 50)]);
        assert_eq!(sampler.requests_per_minute("tg"), None, "5 s is too short to believe");
        sampler.add_requests("tg", at(10), &[("i-1".into(), 200), ("i-2".into(), 100)]);
        assert_eq!(sampler.requests_per_minute("tg"), Some(1200.0), "200 in 10 s");
        // The balancer restarted: counters from 0.
        sampler.add_requests("tg", at(20), &[("i-1".into(), 10), ("i-2".into(), 10)]);
        assert_eq!(sampler.requests_per_minute("tg"), Some(660.0), "220 in 20 s");
        for s in 21..=100 {
            sampler.add_requests("tg", at(s), &[("i-1".into(), 10), ("i-2".into(), 10)]);
        }
        assert_eq!(sampler.requests_per_minute("tg"), Some(0.0), "the old requests left the window");

        sampler.add_cpu("i-1", at(0), 3.0);
        sampler.add_cpu("i-1", at(20), 13.0);
        assert_eq!(sampler.cpu_percent("i-1", 2), Some(25.0), "0.5 CPU-seconds a second of 2 vCPUs");
        sampler.retain_instances(&["i-2"]);
        assert_eq!(sampler.cpu_percent("i-1", 2), None);
    }

    #[test]
    fn scale_in_waits_for_the_cooldown() {
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let cooldown = Duration::from_secs(30);
        assert!(!sampler.below_for("p", true, start, cooldown));
        assert!(!sampler.below_for("p", true, start + Duration::from_secs(29), cooldown));
        assert!(sampler.below_for("p", true, start + Duration::from_secs(30), cooldown));
        assert!(!sampler.below_for("p", false, start + Duration::from_secs(31), cooldown), "above again");
        assert!(!sampler.below_for("p", true, start + Duration::from_secs(32), cooldown), "starts over");
    }
}
