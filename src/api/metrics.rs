//! Prometheus metrics on `GET /metrics` (when `nuaged --metrics-address` is given):
//! instances by state, each running instance's VMM CPU time and resident memory, and the
//! API's request counts and latencies by method.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::http;

use crate::balancer::Balancers;
use crate::daemon::Daemon;
use crate::lb::config::{TargetHealth, LATENCY_BUCKETS};
use crate::state::instance::InstanceState;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];
/// Methods tracked one by one; calls to others (unknown paths a client made up) are
/// counted together, so no caller can grow the table without bound.
const MAX_METHODS: usize = 64;
/// Longest request head read from a scraper.
const MAX_REQUEST_HEAD: usize = 8 << 10;

#[derive(Default, Clone)]
struct Histogram {
    /// Calls at or under each bucket's bound.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The API's request counts and latencies.
#[derive(Default)]
pub struct ApiMetrics {
    methods: Mutex<HashMap<String, Histogram>>,
}

impl ApiMetrics {
    fn observe(&self, method: &str, elapsed: Duration) {
        let mut methods = self.methods.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if methods.contains_key(method) || methods.len() < MAX_METHODS { method } else { "other" };
        let histogram = methods.entry(key.to_owned()).or_default();
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    fn render(&self, out: &mut String) {
        let methods = self.methods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut names: Vec<&String> = methods.keys().collect();
        names.sort();
        out.push_str("# HELP nuage_api_request_duration_seconds Time to answer an API call.\n");
        out.push_str("# TYPE nuage_api_request_duration_seconds histogram\n");
        for name in names {
            let h = &methods[name];
            let method = escape(name);
            for (bound, count) in BUCKETS.iter().zip(h.buckets) {
                let _ = writeln!(
                    out,
                    "nuage_api_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "nuage_api_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "nuage_api_request_duration_seconds_sum{{method=\"{method}\"}} {}", h.sum);
            let _ =
                writeln!(out, "nuage_api_request_duration_seconds_count{{method=\"{method}\"}} {}", h.count);
        }
    }
}

/// A label value in the exposition format.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Which callers of a listener may change something; the others may only read
/// (Describe, Get, Watch, health, reflection).
#[derive(Clone)]
pub enum Access {
    /// Every caller.
    Full,
    /// No caller.
    ReadOnly,
    /// Every caller but those presenting a client certificate with one of these
    /// fingerprints (as [`super::audit::parse_fingerprint`] writes them).
    ReadOnlyCertificates(Arc<BTreeSet<String>>),
}

impl Access {
    /// Whether the caller in `extensions` may only read.
    fn reads_only(&self, extensions: &http::Extensions) -> bool {
        match self {
            Access::Full => false,
            Access::ReadOnly => true,
            Access::ReadOnlyCertificates(fingerprints) => super::audit::certificate_fingerprint(extensions)
                .is_some_and(|fingerprint| fingerprints.contains(&fingerprint)),
        }
    }
}

/// What every API call goes through (a tower layer on the gRPC server): it is timed into
/// [`ApiMetrics`], written to the audit trail when it changes something, and refused when
/// it changes something but its caller may only read.
#[derive(Clone)]
pub struct CallLayer {
    /// Where calls are timed.
    pub metrics: Arc<ApiMetrics>,
    /// Who may change something.
    pub access: Access,
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = Call<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Call { inner, layer: self.clone() }
    }
}

/// A service wrapped by [`CallLayer`].
#[derive(Clone)]
pub struct Call<S> {
    inner: S,
    layer: CallLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Call<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::BoxBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        if super::audit::changes_something(&method) && self.layer.access.reads_only(request.extensions()) {
            let caller = super::audit::caller(request.extensions());
            tracing::warn!(target: "nuage::audit", method = %method, caller = %caller, "refused to a read-only caller");
            let refusal = tonic::Status::permission_denied(format!(
                "UnauthorizedOperation: {method} changes something; this caller may only read"
            ));
            return Box::pin(std::future::ready(Ok(refusal.into_http())));
        }
        super::audit::record(&method, request.extensions());
        let metrics = self.layer.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            metrics.observe(&method, started.elapsed());
            response
        })
    }
}

/// The instances' part of the page (it reads the database, cgroups or /proc: blocking work).
fn render_instances(daemon: &Daemon) -> String {
    let mut out = String::new();
    let instances = daemon.instances.describe(&[], &[]).unwrap_or_default();
    out.push_str("# HELP nuage_instances Instances by state.\n# TYPE nuage_instances gauge\n");
    for state in InstanceState::ALL {
        let count = instances.iter().filter(|i| i.state == state).count();
        let _ = writeln!(out, "nuage_instances{{state=\"{state}\"}} {count}");
    }
    let usage: Vec<(String, f64, u64)> = instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| daemon.instances.usage(i).map(|u| (i.id.clone(), u.cpu_seconds, u.memory_bytes)))
        .collect();
    out.push_str("# HELP nuage_instance_cpu_seconds_total CPU time of the instance's VMM (all its threads; from its cgroup where it has one).\n");
    out.push_str("# TYPE nuage_instance_cpu_seconds_total counter\n");
    for (id, cpu, _) in &usage {
        let _ = writeln!(out, "nuage_instance_cpu_seconds_total{{instance_id=\"{id}\"}} {cpu}");
    }
    out.push_str("# HELP nuage_instance_memory_bytes Memory of the instance's VMM (guest RAM it touched included): its cgroup's charge, or its resident set.\n");
    out.push_str("# TYPE nuage_instance_memory_bytes gauge\n");
    for (id, _, rss) in &usage {
        let _ = writeln!(out, "nuage_instance_memory_bytes{{instance_id=\"{id}\"}} {rss}");
    }
    out
}

/// The load balancers' part of the page: what each balancer process last reported, per
/// target group and target.
fn render_balancers(balancers: &Balancers) -> String {
    let statuses = balancers.statuses();
    let mut groups = Vec::new();
    let mut targets = Vec::new();
    for (lb, status) in &statuses {
        for group in &status.target_groups {
            let labels = format!("load_balancer=\"{}\",target_group=\"{}\"", lb.name, group.id);
            for target in &group.targets {
                targets.push((
                    format!("{labels},target=\"{}\",address=\"{}\"", target.id, target.address),
                    target,
                ));
            }
            groups.push((labels, group.unrouted));
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, lines: &dyn Fn(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        lines(&mut out);
    };
    family(
        "nuage_lb_unrouted_total",
        "counter",
        "Requests or connections no target could take (503s).",
        &|out| {
            for (labels, unrouted) in &groups {
                let _ = writeln!(out, "nuage_lb_unrouted_total{{{labels}}} {unrouted}");
            }
        },
    );
    family(
        "nuage_lb_target_requests_total",
        "counter",
        "HTTP requests (or TCP connections) sent to the target.",
        &|out| {
            for (labels, t) in &targets {
                let _ = writeln!(out, "nuage_lb_target_requests_total{{{labels}}} {}", t.counters.requests);
            }
        },
    );
    family("nuage_lb_target_active", "gauge", "Requests (or connections) in flight to the target.", &|out| {
        for (labels, t) in &targets {
            let _ = writeln!(out, "nuage_lb_target_active{{{labels}}} {}", t.counters.active);
        }
    });
    family("nuage_lb_target_responses_total", "counter", "The target's HTTP answers, by class.", &|out| {
        for (labels, t) in &targets {
            let c = &t.counters;
            for (class, count) in [("2xx", c.http_2xx), ("4xx", c.http_4xx), ("5xx", c.http_5xx)] {
                let _ = writeln!(out, "nuage_lb_target_responses_total{{{labels},code=\"{class}\"}} {count}");
            }
        }
    });
    let errors = "Requests or connections that failed on the way to the target (the balancer's 502 and 504).";
    family("nuage_lb_target_errors_total", "counter", errors, &|out| {
        for (labels, t) in &targets {
            let _ = writeln!(out, "nuage_lb_target_errors_total{{{labels}}} {}", t.counters.errors);
        }
    });
    family(
        "nuage_lb_target_healthy",
        "gauge",
        "1 while the target passes its health checks, by its state.",
        &|out| {
            for (labels, t) in &targets {
                let healthy = u8::from(t.health == TargetHealth::Healthy);
                let _ = writeln!(
                    out,
                    "nuage_lb_target_healthy{{{labels},state=\"{}\"}} {healthy}",
                    t.health.as_str()
                );
            }
        },
    );
    let latency = "Time to the target's answer (HTTP) or connection (TCP).";
    family("nuage_lb_target_response_seconds", "histogram", latency, &|out| {
        for (labels, t) in &targets {
            let mut cumulative = 0;
            for (i, count) in t.counters.latency_buckets.iter().enumerate() {
                cumulative += count;
                let le = LATENCY_BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
                let _ = writeln!(
                    out,
                    "nuage_lb_target_response_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = t.counters.latency_seconds;
            let _ = writeln!(out, "nuage_lb_target_response_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "nuage_lb_target_response_seconds_count{{{labels}}} {cumulative}");
        }
    });
    out
}

/// Serves `GET /metrics` on `listener` for ever.
pub async fn serve(
    listener: TcpListener,
    daemon: Arc<Daemon>,
    balancers: Arc<Balancers>,
    api: Arc<ApiMetrics>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (daemon, balancers, api) = (daemon.clone(), balancers.clone(), api.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &daemon, &balancers, &api).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("binding the metrics address {address}"))
}

/// Reads one request head (bounded in size and time) and answers it.
async fn answer(
    mut stream: TcpStream,
    daemon: &Arc<Daemon>,
    balancers: &Arc<Balancers>,
    api: &ApiMetrics,
) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .context("the request head took too long")??;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
        let (daemon, balancers) = (daemon.clone(), balancers.clone());
        let mut page =
            tokio::task::spawn_blocking(move || render_instances(&daemon) + &render_balancers(&balancers))
                .await?;
        api.render(&mut page);
        ("200 OK", page)
    } else {
        ("404 Not Found", "only /metrics is served here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
