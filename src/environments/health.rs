//! An environment's health as Beanstalk's basic health reports it: a colour from what its
//! target group's health checks say of its instances and from the share of its requests
//! that failed over the last minute, and the causes in words.

use std::collections::VecDeque;

use super::environment::{Environment, Status};
use crate::balancer::TargetHealthView;
use crate::lb::config::{BalancerStatus, TargetHealth};

/// How far back the failed share of requests looks.
const WINDOW_SECONDS: u64 = 60;
/// Samples kept at most (a pass may be woken often).
const MAX_SAMPLES: usize = 256;
/// Fewer requests than this in the window say nothing of a failure rate.
const MIN_REQUESTS: u64 = 10;
/// Above this share of failed requests (in percent) the environment is Yellow, above
/// [`RED_PERCENT`] Red (Beanstalk's enhanced health warns and degrades at 1 % and 10 %).
const YELLOW_PERCENT: u64 = 1;
/// See [`YELLOW_PERCENT`].
const RED_PERCENT: u64 = 10;

/// Requests through an environment's balancer and those that failed (the application's
/// 5xx, the balancer's own 502, 503 and 504), counted since the balancer started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Every request.
    pub total: u64,
    /// Those that failed.
    pub failed: u64,
}

impl Requests {
    /// What a balancer's status counts.
    pub fn of(status: &BalancerStatus) -> Self {
        let mut counts = Self::default();
        for group in &status.target_groups {
            counts.total += group.unrouted;
            counts.failed += group.unrouted;
            for target in &group.targets {
                counts.total += target.counters.requests;
                counts.failed += target.counters.http_5xx + target.counters.errors;
            }
        }
        counts
    }
}

/// The last minute of an environment's request counts, one sample per pass.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<(u64, Requests)>,
}

impl Window {
    /// Adds the counts seen at `now` (seconds).
    pub fn push(&mut self, now: u64, counts: Requests) {
        // A restarted balancer counts from zero: what it counted before says nothing now.
        if self
            .samples
            .back()
            .is_some_and(|(_, last)| counts.total < last.total || counts.failed < last.failed)
        {
            self.samples.clear();
        }
        self.samples.push_back((now, counts));
        while self.samples.len() > MAX_SAMPLES
            || self.samples.front().is_some_and(|(t, _)| now.saturating_sub(*t) > WINDOW_SECONDS)
        {
            self.samples.pop_front();
        }
    }

    /// The requests and failures within the window.
    pub fn recent(&self) -> Requests {
        match (self.samples.front(), self.samples.back()) {
            (Some((_, first)), Some((_, last))) => {
                Requests { total: last.total - first.total, failed: last.failed - first.failed }
            }
            _ => Requests::default(),
        }
    }
}

/// Beanstalk's colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Every instance passes.
    Green,
    /// Some fail.
    Yellow,
    /// None serves.
    Red,
    /// Not known: launching, updating or terminating.
    Grey,
}

impl Colour {
    /// AWS's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "Green",
            Self::Yellow => "Yellow",
            Self::Red => "Red",
            Self::Grey => "Grey",
        }
    }

    /// The enhanced-health status word for it.
    pub fn status(self) -> &'static str {
        match self {
            Self::Green => "Ok",
            Self::Yellow => "Warning",
            Self::Red => "Severe",
            Self::Grey => "Pending",
        }
    }
}

/// An environment's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The colour.
    pub colour: Colour,
    /// Why, in words (none when Green).
    pub causes: Vec<String>,
    /// Instances registered and not draining.
    pub instances: u32,
    /// Those passing their health checks.
    pub healthy: u32,
}

impl Health {
    /// `env`'s health, given its target group's `targets` and its `recent` requests.
    pub fn of(env: &Environment, targets: &[TargetHealthView], recent: Requests) -> Self {
        let serving: Vec<&TargetHealthView> =
            targets.iter().filter(|t| t.state != TargetHealth::Draining).collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let instances = count(serving.len());
        let healthy = count(serving.iter().filter(|t| t.state == TargetHealth::Healthy).count());
        let mut causes = Vec::new();
        let colour = match env.status {
            Status::Launching => {
                causes.push("The environment is launching.".into());
                Colour::Grey
            }
            Status::Terminating | Status::Terminated => {
                causes.push("The environment is terminating.".into());
                Colour::Grey
            }
            Status::Updating => {
                causes.push("A deployment is in progress.".into());
                Colour::Grey
            }
            Status::Ready if instances == 0 => {
                causes.push("No instance is registered with the load balancer.".into());
                Colour::Red
            }
            Status::Ready if healthy == instances => Colour::Green,
            Status::Ready => {
                causes
                    .push(format!("{} of {instances} instances failing health checks.", instances - healthy));
                if healthy == 0 {
                    Colour::Red
                } else {
                    Colour::Yellow
                }
            }
        };
        let failed_percent = (recent.total >= MIN_REQUESTS).then(|| recent.failed * 100 / recent.total);
        let colour = match failed_percent {
            Some(percent) if env.status == Status::Ready && percent >= YELLOW_PERCENT => {
                causes.push(format!(
                    "{percent} % of the requests to the load balancer failed (HTTP 5xx) over the last minute."
                ));
                match colour {
                    _ if percent >= RED_PERCENT => Colour::Red,
                    Colour::Green => Colour::Yellow,
                    other => other,
                }
            }
            _ => colour,
        };
        Self { colour, causes, instances, healthy }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environments::environment::Made;

    fn env(status: Status) -> Environment {
        Environment {
            id: "e-1".into(),
            name: "web".into(),
            arn: String::new(),
            application: "app".into(),
            version_label: "v1".into(),
            description: String::new(),
            settings: crate::environments::environment::tests::settings(),
            port: 8000,
            cname: String::new(),
            status,
            failure: None,
            made: Made::default(),
            deployment: None,
            created: 0,
            updated: 0,
        }
    }

    fn target(id: &str, state: TargetHealth) -> TargetHealthView {
        TargetHealthView {
            instance_id: id.into(),
            port: 5000,
            state,
            reason: None,
            description: String::new(),
        }
    }

    #[test]
    fn colours_follow_the_health_checks() {
        use TargetHealth::*;
        let ready = env(Status::Ready);
        let quiet = Requests::default();
        let both = [target("i-1", Healthy), target("i-2", Healthy), target("i-3", Draining)];
        assert_eq!(Health::of(&ready, &both, quiet).colour, Colour::Green);
        let one = [target("i-1", Healthy), target("i-2", Unhealthy)];
        let health = Health::of(&ready, &one, quiet);
        assert_eq!(
            (health.colour, health.causes[0].as_str()),
            (Colour::Yellow, "1 of 2 instances failing health checks.")
        );
        assert_eq!(Health::of(&ready, &[target("i-2", Unhealthy)], quiet).colour, Colour::Red);
        assert_eq!(Health::of(&ready, &[], quiet).colour, Colour::Red);
        assert_eq!(Health::of(&env(Status::Launching), &both, quiet).colour, Colour::Grey);
    }

    #[test]
    fn failed_requests_over_the_last_minute_colour_it_too() {
        let ready = env(Status::Ready);
        let both = [target("i-1", TargetHealth::Healthy), target("i-2", TargetHealth::Healthy)];
        let of = |total, failed| Health::of(&ready, &both, Requests { total, failed });
        assert_eq!(of(1000, 5).colour, Colour::Green, "under 1 %");
        let some = of(1000, 50);
        assert_eq!((some.colour, some.causes.len()), (Colour::Yellow, 1), "{:?}", some.causes);
        assert!(some.causes[0].starts_with("5 % of the requests"), "{:?}", some.causes);
        assert_eq!(of(100, 20).colour, Colour::Red);
        assert_eq!(of(5, 5).colour, Colour::Green, "too few requests to say");
    }

    #[test]
    fn the_window_counts_the_last_minute_and_forgets_a_restart() {
        let counts = |total, failed| Requests { total, failed };
        let mut window = Window::default();
        window.push(0, counts(100, 10));
        window.push(30, counts(200, 10));
        assert_eq!(window.recent(), counts(100, 0));
        window.push(70, counts(300, 40));
        assert_eq!(window.recent(), counts(100, 30), "the sample at 0 is past the minute");
        window.push(72, counts(5, 1));
        assert_eq!(window.recent(), counts(0, 0), "a restarted balancer starts the window again");
        window.push(74, counts(25, 2));
        assert_eq!(window.recent(), counts(20, 1));
    }
}
