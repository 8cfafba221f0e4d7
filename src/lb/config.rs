//! The daemon↔balancer contract. The controller (`crate::balancer`) writes what one
//! `nuage-lb` process serves as [`BalancerConfig`] (`lb.json`) and sends it SIGHUP; the
//! balancer rereads the file and keeps every connection, counter and health state it can.
//! The balancer writes what it sees as [`BalancerStatus`] (`status.json`) every second,
//! which the daemon reads for `describe-target-health` and the metrics page.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Listeners one balancer may serve.
pub const MAX_LISTENERS: usize = 50;
/// Target groups one balancer may route to.
pub const MAX_TARGET_GROUPS: usize = 100;
/// Targets in one target group (ELB's quota).
pub const MAX_TARGETS: usize = 1000;
/// The longest health check path.
pub const MAX_PATH_LEN: usize = 1024;

/// What one balancer process serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalancerConfig {
    /// The load balancer's name, for logs.
    pub name: String,
    /// Its listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The target groups its listeners forward to.
    pub target_groups: Vec<TargetGroupConfig>,
}

/// The protocol of a listener, a target group or a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 (cleartext) from clients, HTTP/1.1 to targets.
    Http,
    /// TCP streams, passed through.
    Tcp,
}

/// One listening socket and where it sends what it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerConfig {
    /// The address it binds, in the balancer's network namespace.
    pub address: SocketAddr,
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// The target group (its id in [`BalancerConfig::target_groups`]) it forwards to.
    pub target_group: String,
}

/// How a target group chooses a target for each request (HTTP) or connection (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// The target with the fewest requests in flight (HTTP) or open connections (TCP);
    /// ties in turn.
    #[default]
    LeastOutstandingRequests,
    /// Each target in turn.
    RoundRobin,
}

/// A target group: its targets, how it picks among them and how it checks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroupConfig {
    /// Its id (the target group's ARN).
    pub id: String,
    /// What it speaks to its targets.
    pub protocol: Protocol,
    /// How it picks a target.
    pub algorithm: Algorithm,
    /// Seconds a target that became healthy takes to ramp up to its full share (0: at
    /// once).
    #[serde(default)]
    pub slow_start_seconds: u32,
    /// How it checks its targets.
    pub health_check: HealthCheck,
    /// Its targets.
    pub targets: Vec<TargetConfig>,
}

/// A target: an instance's address and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetConfig {
    /// Its id (the instance id).
    pub id: String,
    /// Where it is reached.
    pub address: SocketAddr,
    /// Deregistered: it gets no new request or connection, and those in flight finish
    /// until the controller removes it (after the deregistration delay).
    pub draining: bool,
}

/// How a target group checks its targets, with ELB's ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// A TCP connection, or an HTTP GET.
    pub protocol: Protocol,
    /// The port checked; `None`: the target's own.
    pub port: Option<u16>,
    /// The HTTP path.
    pub path: String,
    /// The HTTP status codes that pass.
    pub matcher: Matcher,
    /// Seconds between checks (5–300).
    pub interval_seconds: u32,
    /// Seconds a check may take (2–120, less than the interval).
    pub timeout_seconds: u32,
    /// Consecutive passes that make a target healthy (2–10).
    pub healthy_threshold: u32,
    /// Consecutive failures that make it unhealthy (2–10).
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    /// ELB's defaults for a target group speaking `protocol`.
    pub fn defaults(protocol: Protocol) -> Self {
        Self {
            protocol,
            port: None,
            path: "/".into(),
            matcher: Matcher::parse("200").unwrap_or_default(),
            interval_seconds: 30,
            timeout_seconds: if protocol == Protocol::Http { 5 } else { 10 },
            healthy_threshold: 5,
            unhealthy_threshold: 2,
        }
    }

    /// Whether every setting is in ELB's range; the first that is not, otherwise.
    pub fn check(&self) -> Result<(), String> {
        let within = |name: &str, value: u32, low: u32, high: u32| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(format!("{name} must be from {low} to {high}, not {value}"))
            }
        };
        within("the health check interval", self.interval_seconds, 5, 300)?;
        within("the health check timeout", self.timeout_seconds, 2, 120)?;
        within("the healthy threshold", self.healthy_threshold, 2, 10)?;
        within("the unhealthy threshold", self.unhealthy_threshold, 2, 10)?;
        if self.timeout_seconds >= self.interval_seconds {
            return Err("the health check timeout must be less than its interval".into());
        }
        if self.port == Some(0) {
            return Err("the health check port must be from 1 to 65535".into());
        }
        if !self.path.starts_with('/')
            || self.path.len() > MAX_PATH_LEN
            || self.path.bytes().any(|b| !(0x21..0x7f).contains(&b))
        {
            return Err(format!(
                "the health check path must start with / and hold at most {MAX_PATH_LEN} visible ASCII characters"
            ));
        }
        Ok(())
    }
}

/// HTTP status codes that pass a health check: ELB's `200`, `200,302`, `200-299`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Matcher(Vec<(u16, u16)>);

impl Matcher {
    /// Parses codes and ranges separated by commas, each from 200 to 499.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a list of HTTP codes or ranges from 200 to 499");
        let code = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (200..500).contains(c));
        let ranges = text
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((low, high)) => match (code(low), code(high)) {
                    (Some(low), Some(high)) if low <= high => Some((low, high)),
                    _ => None,
                },
                None => code(part).map(|c| (c, c)),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        if ranges.is_empty() || ranges.len() > 20 {
            return Err(bad());
        }
        Ok(Self(ranges))
    }

    /// Whether `status` passes.
    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|&(low, high)| (low..=high).contains(&status))
    }
}

impl TryFrom<String> for Matcher {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<Matcher> for String {
    fn from(matcher: Matcher) -> String {
        let parts: Vec<String> = matcher
            .0
            .iter()
            .map(|&(low, high)| if low == high { low.to_string() } else { format!("{low}-{high}") })
            .collect();
        parts.join(",")
    }
}

impl BalancerConfig {
    /// Whether the configuration is one a balancer can serve: within the caps, every
    /// listener's target group present and of its protocol, no address twice.
    pub fn check(&self) -> Result<(), String> {
        if self.listeners.len() > MAX_LISTENERS || self.target_groups.len() > MAX_TARGET_GROUPS {
            return Err(format!("at most {MAX_LISTENERS} listeners and {MAX_TARGET_GROUPS} target groups"));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if self.listeners[..i].iter().any(|other| other.address == listener.address) {
                return Err(format!("two listeners on {}", listener.address));
            }
            let group = self.target_groups.iter().find(|g| g.id == listener.target_group);
            match group {
                None => return Err(format!("listener {} names no target group", listener.address)),
                Some(group) if group.protocol != listener.protocol => {
                    return Err(format!(
                        "listener {} and its target group differ in protocol",
                        listener.address
                    ))
                }
                Some(_) => {}
            }
        }
        for group in &self.target_groups {
            group.health_check.check().map_err(|why| format!("target group {}: {why}", group.id))?;
            if group.targets.len() > MAX_TARGETS {
                return Err(format!("target group {} has more than {MAX_TARGETS} targets", group.id));
            }
        }
        Ok(())
    }
}

/// What a target's health is, in ELB's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetHealth {
    /// Registered; its first health checks have not decided yet.
    Initial,
    /// It passed its last `healthy_threshold` checks (or has not failed since).
    Healthy,
    /// It failed its last `unhealthy_threshold` checks.
    Unhealthy,
    /// Deregistered: in-flight work finishes, nothing new comes.
    Draining,
    /// Registered but not in rotation: its instance is not running, or no listener
    /// forwards to its group.
    Unused,
    /// Its health is not known: its balancer is not running.
    Unavailable,
}

impl TargetHealth {
    /// ELB's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
            Self::Unused => "unused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets; one more counts the rest.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What a balancer counted for one target since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetCounters {
    /// HTTP requests sent to it, or TCP connections made to it.
    pub requests: u64,
    /// Requests (HTTP) or connections (TCP) in flight now.
    pub active: u64,
    /// Its answers by class.
    pub http_2xx: u64,
    /// 4xx answers.
    pub http_4xx: u64,
    /// 5xx answers (its own, not the balancer's).
    pub http_5xx: u64,
    /// Requests or connections that failed on the way to it (the balancer's 502 and 504).
    pub errors: u64,
    /// Time to its answer's head (HTTP) or to connect (TCP): counts per
    /// [`LATENCY_BUCKETS`] bucket (not cumulative), the last one past them.
    pub latency_buckets: Vec<u64>,
    /// The sum of those times, in seconds.
    pub latency_seconds: f64,
}

/// One target as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Its id.
    pub id: String,
    /// Its address.
    pub address: SocketAddr,
    /// Its state.
    pub health: TargetHealth,
    /// ELB's reason code where the state is not healthy (`Target.Timeout`, ...).
    pub reason: Option<String>,
    /// The reason in words.
    pub description: String,
    /// What went to it.
    pub counters: TargetCounters,
}

/// One target group as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroupStatus {
    /// Its id.
    pub id: String,
    /// Requests or connections no target took: 503s when it has none, the balancer's
    /// own answers otherwise.
    pub unrouted: u64,
    /// Its targets.
    pub targets: Vec<TargetStatus>,
}

/// What a balancer reports (`status.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerStatus {
    /// Seconds since the epoch when it was written.
    pub written_at: u64,
    /// The listeners serving, by address, and why any is not.
    pub listeners: Vec<ListenerStatus>,
    /// Every target group it routes to.
    pub target_groups: Vec<TargetGroupStatus>,
}

/// One listener as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Its address.
    pub address: SocketAddr,
    /// Connections open now.
    pub connections: u64,
    /// Why it is not listening, if it is not.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_take_codes_and_ranges_and_refuse_the_rest() {
        let m = Matcher::parse("200,302-304").unwrap();
        assert!(m.matches(200) && m.matches(303) && !m.matches(201) && !m.matches(500));
        assert_eq!(String::from(m), "200,302-304");
        for bad in ["", "abc", "199", "500", "300-200", "200,", "200-", "-", "2000"] {
            assert!(Matcher::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn health_checks_keep_to_elbs_ranges() {
        assert_eq!(HealthCheck::defaults(Protocol::Http).check(), Ok(()));
        let bad = [
            HealthCheck { interval_seconds: 4, ..HealthCheck::defaults(Protocol::Http) },
            HealthCheck { timeout_seconds: 30, ..HealthCheck::defaults(Protocol::Http) },
            HealthCheck { healthy_threshold: 11, ..HealthCheck::defaults(Protocol::Tcp) },
            HealthCheck { unhealthy_threshold: 1, ..HealthCheck::defaults(Protocol::Tcp) },
            HealthCheck { path: "no-slash".into(), ..HealthCheck::defaults(Protocol::Http) },
            HealthCheck { path: "/a b".into(), ..HealthCheck::defaults(Protocol::Http) },
            HealthCheck { port: Some(0), ..HealthCheck::defaults(Protocol::Http) },
        ];
        for check in bad {
            assert!(check.check().is_err(), "{check:?}");
        }
    }

    #[test]
    fn a_configuration_names_what_it_uses() {
        let group = |id: &str, protocol| TargetGroupConfig {
            id: id.into(),
            protocol,
            algorithm: Algorithm::default(),
            slow_start_seconds: 0,
            health_check: HealthCheck::defaults(protocol),
            targets: vec![],
        };
        let listener = |port: u16, protocol, group: &str| ListenerConfig {
            address: SocketAddr::from(([0, 0, 0, 0], port)),
            protocol,
            target_group: group.into(),
        };
        let mut config = BalancerConfig {
            name: "web".into(),
            listeners: vec![listener(80, Protocol::Http, "tg-a")],
            target_groups: vec![group("tg-a", Protocol::Http), group("tg-b", Protocol::Tcp)],
        };
        assert_eq!(config.check(), Ok(()));
        config.listeners.push(listener(80, Protocol::Http, "tg-a"));
        assert!(config.check().unwrap_err().contains("two listeners"));
        config.listeners[1] = listener(81, Protocol::Http, "tg-b");
        assert!(config.check().unwrap_err().contains("protocol"));
        config.listeners[1] = listener(81, Protocol::Tcp, "tg-c");
        assert!(config.check().unwrap_err().contains("names no target group"));
        let text = serde_json::to_string(&HealthCheck::defaults(Protocol::Http)).unwrap();
        assert!(text.contains(r#""matcher":"200""#), "{text}");
    }
}
