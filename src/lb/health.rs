//! Health checks: one probe (a TCP connection or an HTTP GET) and the state machine its
//! results drive, with ELB's thresholds and reason codes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::config::{HealthCheck, Protocol, TargetHealth};

/// Why a probe failed, as ELB names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// The connection was refused or broke.
    Connection(String),
    /// The HTTP status was not one the matcher takes.
    ResponseCode(u16),
}

impl Failure {
    /// ELB's reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout => "Target.Timeout",
            Self::Connection(_) => "Target.FailedHealthChecks",
            Self::ResponseCode(_) => "Target.ResponseCodeMismatch",
        }
    }

    /// The reason in words.
    pub fn description(&self) -> String {
        match self {
            Self::Timeout => "Request timed out".into(),
            Self::Connection(why) => format!("Health checks failed: {why}"),
            Self::ResponseCode(code) => format!("Health checks failed with these codes: [{code}]"),
        }
    }
}

/// A target's health as its checks decide it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    /// Initial, healthy or unhealthy.
    pub state: TargetHealth,
    /// Consecutive passes.
    passes: u32,
    /// Consecutive failures.
    failures: u32,
    /// The last failure, until the target is healthy again.
    pub last_failure: Option<Failure>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self { state: TargetHealth::Initial, passes: 0, failures: 0, last_failure: None }
    }
}

impl HealthState {
    /// Takes one probe's result; true when the state changed.
    pub fn record(&mut self, result: Result<(), Failure>, check: &HealthCheck) -> bool {
        let before = self.state;
        match result {
            Ok(()) => {
                self.passes = self.passes.saturating_add(1);
                self.failures = 0;
                if self.state != TargetHealth::Healthy && self.passes >= check.healthy_threshold {
                    self.state = TargetHealth::Healthy;
                    self.last_failure = None;
                }
            }
            Err(failure) => {
                self.failures = self.failures.saturating_add(1);
                self.passes = 0;
                self.last_failure = Some(failure);
                if self.state != TargetHealth::Unhealthy && self.failures >= check.unhealthy_threshold {
                    self.state = TargetHealth::Unhealthy;
                }
            }
        }
        self.state != before
    }

    /// ELB's reason code and words for this state.
    pub fn reason(&self) -> (Option<String>, String) {
        match (self.state, &self.last_failure) {
            (TargetHealth::Healthy, _) => (None, String::new()),
            (TargetHealth::Initial, _) => {
                (Some("Elb.InitialHealthChecking".into()), "Initial health checks in progress".into())
            }
            (_, Some(failure)) => (Some(failure.reason().into()), failure.description()),
            (_, None) => (Some("Target.FailedHealthChecks".into()), "Health checks failed".into()),
        }
    }
}

/// One probe of `target` as `check` says.
pub async fn probe(target: SocketAddr, check: &HealthCheck) -> Result<(), Failure> {
    let address = SocketAddr::new(target.ip(), check.port.unwrap_or(target.port()));
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds));
    match tokio::time::timeout(timeout, probe_once(address, check)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn probe_once(address: SocketAddr, check: &HealthCheck) -> Result<(), Failure> {
    let stream = TcpStream::connect(address).await.map_err(|e| Failure::Connection(e.to_string()))?;
    if check.protocol == Protocol::Tcp {
        return Ok(());
    }
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(check.path.as_str())
        .header(hyper::header::HOST, address.to_string())
        .header(hyper::header::USER_AGENT, "ELB-HealthChecker/2.0")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let answer = sender.send_request(request).await;
    driver.abort();
    let status = answer.map_err(|e| Failure::Connection(e.to_string()))?.status().as_u16();
    if check.matcher.matches(status) {
        Ok(())
    } else {
        Err(Failure::ResponseCode(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheck {
        HealthCheck { healthy_threshold: 3, unhealthy_threshold: 2, ..HealthCheck::defaults(Protocol::Http) }
    }

    fn run(results: &[bool]) -> Vec<TargetHealth> {
        let mut state = HealthState::default();
        results
            .iter()
            .map(|&ok| {
                state.record(if ok { Ok(()) } else { Err(Failure::Timeout) }, &check());
                state.state
            })
            .collect()
    }

    use TargetHealth::{Healthy as H, Initial as I, Unhealthy as U};

    #[test]
    fn a_new_target_needs_the_healthy_threshold_in_a_row() {
        assert_eq!(run(&[true, true, true]), [I, I, H]);
        assert_eq!(run(&[true, true, false, true, true, true]), [I, I, I, I, I, H]);
    }

    #[test]
    fn failures_in_a_row_make_it_unhealthy_and_passes_bring_it_back() {
        assert_eq!(run(&[true, true, true, false, true, false, false]), [I, I, H, H, H, H, U]);
        assert_eq!(run(&[false, false, true, true, false, true, true, true]), [I, U, U, U, U, U, U, H]);
    }

    #[test]
    fn reasons_follow_the_last_failure() {
        let mut state = HealthState::default();
        assert_eq!(state.reason().0.as_deref(), Some("Elb.InitialHealthChecking"));
        state.record(Err(Failure::ResponseCode(500)), &check());
        assert!(state.record(Err(Failure::ResponseCode(500)), &check()), "now unhealthy");
        let (code, words) = state.reason();
        assert_eq!(code.as_deref(), Some("Target.ResponseCodeMismatch"));
        assert!(words.contains("[500]"), "{words}");
        for _ in 0..3 {
            state.record(Ok(()), &check());
        }
        assert_eq!(state.reason(), (None, String::new()));
    }

    #[tokio::test]
    async fn probes_see_codes_refusals_and_silence() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                "HTTP/1.1 503 No\r\ncontent-length: 0\r\n\r\n",
                "",
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let n = stream.read(&mut head).await.unwrap();
                assert!(String::from_utf8_lossy(&head[..n]).starts_with("GET /health HTTP/1.1"));
                if answer.is_empty() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let http = HealthCheck { path: "/health".into(), timeout_seconds: 2, ..check() };
        assert_eq!(probe(address, &http).await, Ok(()));
        assert_eq!(probe(address, &http).await, Err(Failure::ResponseCode(503)));
        assert_eq!(probe(address, &http).await, Err(Failure::Timeout));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(matches!(probe(closed, &http).await, Err(Failure::Connection(_))));
        let tcp = HealthCheck { protocol: Protocol::Tcp, ..http };
        assert!(matches!(probe(closed, &tcp).await, Err(Failure::Connection(_))));
    }
}
