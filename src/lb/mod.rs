//! `nuage-lb`: the load balancers' data plane, one process per load balancer, started and
//! supervised by the daemon's balancer controller (`crate::balancer`) as VMMs are, so a
//! daemon that dies or restarts drops no connection.
//!
//! It serves the listeners of its [`config::BalancerConfig`] (`lb.json`, reread on
//! SIGHUP without dropping anything that stays), checks every target's health, sends each
//! request (HTTP) or connection (TCP) to the target [`pick`] chooses, and writes what it
//! sees to `status.json` every second.
//!
//! ```text
//! client ──▶ listener (in the network plane's namespace) ──▶ group.choose() ──▶ target
//!            http: hyper, HTTP/1.1 + h2c in,            least outstanding     address on
//!                  pooled HTTP/1.1 keep-alive out        or round robin        a bridge → tap
//!            tcp:  copy_bidirectional                    (healthy, or all)      → guest
//! ```

pub mod config;
pub mod health;
mod http;
pub mod pick;
mod pool;
mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use config::{
    Algorithm, BalancerConfig, BalancerStatus, HealthCheck, ListenerStatus, Protocol, TargetConfig,
    TargetCounters, TargetGroupConfig, TargetGroupStatus, TargetHealth, TargetStatus, LATENCY_BUCKETS,
};
use health::HealthState;
use pick::{Candidate, Rotation, FULL_RAMP};

/// Connections one listener holds at once; more are closed as they come.
const MAX_CONNECTIONS: usize = 10_000;
/// How often the status file is written (and listeners that failed to bind retried).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Why a balancer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// Its configuration file cannot be read or is not one it can serve.
    #[error("{path}: {why}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A signal handler cannot be set up.
    #[error("signals: {0}")]
    Signals(std::io::Error),
    /// The worker threads cannot be started.
    #[error("worker threads: {0}")]
    Workers(std::io::Error),
}

// A thread that panicked while holding one of the balancer's locks left counters, health
// or the routing table at worst a step behind: serving goes on with them as they are.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads and checks the configuration file `path`.
pub fn read_config(path: &Path) -> Result<BalancerConfig, LbError> {
    let config: BalancerConfig = crate::state::file::read_json(path)
        .map_err(|e| LbError::Config { path: path.to_owned(), why: e.to_string() })?;
    config.check().map_err(|why| LbError::Config { path: path.to_owned(), why })?;
    Ok(config)
}

/// Serves `config_path` until SIGTERM or SIGINT, rereading it on SIGHUP and writing
/// `status_path` every second.
pub async fn run(config_path: PathBuf, status_path: PathBuf) -> Result<(), LbError> {
    let mut hangup = signal(SignalKind::hangup()).map_err(LbError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(LbError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(LbError::Signals)?;
    // The status is replaced through a file beside it, wherever the process runs from.
    let status_path = std::path::absolute(&status_path).unwrap_or(status_path);
    let balancer = Arc::new(Balancer::new().map_err(LbError::Workers)?);
    let config = read_config(&config_path)?;
    info!(name = %config.name, listeners = config.listeners.len(), "serving");
    balancer.apply(&config).await;
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tokio::select! {
            _ = hangup.recv() => match read_config(&config_path) {
                Ok(config) => {
                    balancer.apply(&config).await;
                    write_status(&balancer, &status_path);
                }
                // The old configuration keeps serving.
                Err(why) => warn!("configuration not reloaded: {why}"),
            },
            _ = tick.tick() => {
                balancer.retry_listeners().await;
                write_status(&balancer, &status_path);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!("stopping");
    Ok(())
}

fn write_status(balancer: &Balancer, path: &Path) {
    if let Err(e) = crate::state::file::write_json(path, &balancer.status()) {
        warn!(path = %path.display(), "cannot write the status: {e}");
    }
}

/// Milliseconds since the process started: the clock slow start ramps by.
fn uptime_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// [`Target::healthy_since`] of a target that is not healthy.
const NOT_HEALTHY: u64 = 0;
/// [`Target::healthy_since`] of a healthy target not in slow start: it became healthy
/// while its group had none (AWS's rule: turning slow start on slows no target already
/// serving).
const FULL_SHARE: u64 = u64::MAX;

/// One target while the balancer routes to it.
struct Target {
    config: TargetConfig,
    draining: std::sync::atomic::AtomicBool,
    health: Mutex<HealthState>,
    /// [`NOT_HEALTHY`], [`FULL_SHARE`] (healthy and not in slow start), or one more than
    /// the [`uptime_ms`] at which it became healthy with its group in slow start. The
    /// picker reads this, not `health`, so a pick takes no lock per target.
    healthy_since: AtomicU64,
    /// Requests or connections in flight, which the picker compares.
    outstanding: AtomicU64,
    counters: LiveCounters,
    /// Set once the target leaves the configuration: its work in flight is cut.
    gone: watch::Sender<bool>,
}

impl Target {
    fn new(config: TargetConfig) -> Arc<Self> {
        Arc::new(Self {
            draining: config.draining.into(),
            config,
            health: Mutex::default(),
            healthy_since: AtomicU64::new(NOT_HEALTHY),
            outstanding: AtomicU64::new(0),
            counters: LiveCounters::default(),
            gone: watch::channel(false).0,
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HealthState> {
        lock(&self.health)
    }

    /// Counts one request (or connection) whose answer (or connection) took `elapsed`.
    fn record_latency(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket =
            LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(LATENCY_BUCKETS.len());
        if let Some(count) = self.counters.latency_buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.counters.latency_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn status(&self) -> TargetStatus {
        let health = self.health().clone();
        let (state, (reason, description)) = if self.draining.load(Ordering::Relaxed) {
            (
                TargetHealth::Draining,
                (
                    Some("Target.DeregistrationInProgress".into()),
                    "Target deregistration is in progress".into(),
                ),
            )
        } else {
            (health.state, health.reason())
        };
        let counters = self.counters.snapshot(self.outstanding.load(Ordering::Relaxed));
        TargetStatus {
            id: self.config.id.clone(),
            address: self.config.address,
            health: state,
            reason,
            description,
            counters,
        }
    }
}

/// A target's counters while it serves, counted without a lock by every worker thread.
#[derive(Default)]
struct LiveCounters {
    requests: AtomicU64,
    http_2xx: AtomicU64,
    http_4xx: AtomicU64,
    http_5xx: AtomicU64,
    errors: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
}

impl LiveCounters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request sent (or a connection made).
    fn sent(&self) {
        Self::count(&self.requests);
    }

    /// Counts a request or connection that failed on the way (a 502 or 504).
    fn failed(&self) {
        Self::count(&self.errors);
    }

    /// Counts an answer by its status's class.
    fn answered(&self, status: u16) {
        match status {
            200..=299 => Self::count(&self.http_2xx),
            400..=499 => Self::count(&self.http_4xx),
            500..=599 => Self::count(&self.http_5xx),
            _ => {}
        }
    }

    /// The counts now, as the status file writes them, with `active` in flight.
    fn snapshot(&self, active: u64) -> TargetCounters {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TargetCounters {
            requests: get(&self.requests),
            active,
            http_2xx: get(&self.http_2xx),
            http_4xx: get(&self.http_4xx),
            http_5xx: get(&self.http_5xx),
            errors: get(&self.errors),
            latency_buckets: self.latency_buckets.iter().map(get).collect(),
            latency_seconds: get(&self.latency_micros) as f64 / 1e6,
        }
    }
}

/// A request or connection in flight to a target: counted as outstanding until dropped.
struct InFlight(Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a group picks and checks, as its configuration says.
struct GroupSettings {
    algorithm: Algorithm,
    slow_start_ms: u64,
    health_check: HealthCheck,
}

impl From<&TargetGroupConfig> for GroupSettings {
    fn from(config: &TargetGroupConfig) -> Self {
        Self {
            algorithm: config.algorithm,
            slow_start_ms: u64::from(config.slow_start_seconds) * 1000,
            health_check: config.health_check.clone(),
        }
    }
}

/// One target group while the balancer routes to it.
struct Group {
    id: String,
    settings: Mutex<GroupSettings>,
    targets: RwLock<Vec<Arc<Target>>>,
    /// The rotation, held while a pick is made so that picks made at once see each
    /// other's counts.
    rotation: Mutex<Rotation>,
    unrouted: AtomicU64,
}

/// The share of picks a target healthy since `since` (as [`Target::healthy_since`]) takes
/// at `now`, per mille, under a slow start of `slow_start_ms` (0: none).
fn ramp(since: u64, now: u64, slow_start_ms: u64) -> u16 {
    let elapsed = now.saturating_sub(since.saturating_sub(1));
    if slow_start_ms == 0 || since == NOT_HEALTHY || since == FULL_SHARE || elapsed >= slow_start_ms {
        return FULL_RAMP;
    }
    u16::try_from(elapsed * u64::from(FULL_RAMP) / slow_start_ms).unwrap_or(FULL_RAMP)
}

impl Group {
    fn health_check(&self) -> HealthCheck {
        lock(&self.settings).health_check.clone()
    }

    /// The target for the next request or connection, counted in flight; `None` when no
    /// target may take it.
    fn choose(&self) -> Option<InFlight> {
        let (algorithm, slow_start_ms) = {
            let settings = lock(&self.settings);
            (settings.algorithm, settings.slow_start_ms)
        };
        let now = if slow_start_ms == 0 { 0 } else { uptime_ms() };
        let targets = read(&self.targets);
        let mut rotation = lock(&self.rotation);
        let candidates: Vec<Candidate> = targets
            .iter()
            .map(|t| {
                let since = t.healthy_since.load(Ordering::Relaxed);
                Candidate {
                    healthy: since != NOT_HEALTHY,
                    draining: t.draining.load(Ordering::Relaxed),
                    outstanding: t.outstanding.load(Ordering::Relaxed),
                    ramp: ramp(since, now, slow_start_ms),
                }
            })
            .collect();
        let Some(chosen) = pick::pick(&candidates, algorithm, &mut rotation) else {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let target = targets[chosen].clone();
        target.outstanding.fetch_add(1, Ordering::Relaxed);
        target.counters.sent();
        Some(InFlight(target))
    }

    fn status(&self) -> TargetGroupStatus {
        let targets = read(&self.targets);
        TargetGroupStatus {
            id: self.id.clone(),
            unrouted: self.unrouted.load(Ordering::Relaxed),
            targets: targets.iter().map(|t| t.status()).collect(),
        }
    }
}

/// Checks `target` for as long as it is in `group`.
async fn check_health(group: Arc<Group>, target: Arc<Target>) {
    let mut gone = target.gone.subscribe();
    loop {
        let check = group.health_check();
        let result = tokio::select! {
            result = health::probe(target.config.address, &check) => result,
            _ = gone.wait_for(|gone| *gone) => return,
        };
        if let Err(failure) = &result {
            tracing::debug!(group = %group.id, target = %target.config.id, "health check failed: {failure:?}");
        }
        {
            let mut health = target.health();
            if health.record(result, &check) {
                let slow_start = lock(&group.settings).slow_start_ms > 0;
                let since = match health.state {
                    TargetHealth::Healthy if slow_start => uptime_ms() + 1,
                    TargetHealth::Healthy => FULL_SHARE,
                    _ => NOT_HEALTHY,
                };
                target.healthy_since.store(since, Ordering::Relaxed);
                let (reason, description) = health.reason();
                info!(
                    group = %group.id, target = %target.config.id, state = health.state.as_str(),
                    reason = reason.unwrap_or_default(),
                    "{}", if description.is_empty() { "passes its health checks" } else { &description }
                );
            }
        }
        let wait = Duration::from_secs(u64::from(check.interval_seconds));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = gone.wait_for(|gone| *gone) => return,
        }
    }
}

/// A listener: its accept loop, and what the balancer knows of it.
struct Listener {
    protocol: Protocol,
    /// The target group it forwards to (changed in place by a reload).
    group: Arc<Mutex<String>>,
    connections: Arc<AtomicU64>,
    /// Its accept loop, or why it is not listening.
    serving: Result<JoinHandle<()>, String>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(task) = &self.serving {
            task.abort();
        }
    }
}

/// What the accept loops share: the routing table, and the workers that serve clients.
pub(crate) struct Balancer {
    groups: RwLock<HashMap<String, Arc<Group>>>,
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, Listener>>,
    /// One single-threaded runtime per core, each serving the client connections handed
    /// to it with its own pool to the targets: a request and its target's answer are
    /// handled on one thread, without hand-offs between them.
    workers: Vec<Worker>,
}

/// A worker thread's runtime, and how many client connections it serves now.
struct Worker {
    runtime: tokio::runtime::Handle,
    serving: Arc<AtomicU64>,
}

/// Starts one worker thread per core, each running a single-threaded runtime for ever.
fn start_workers() -> std::io::Result<Vec<Worker>> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (0..cores)
        .map(|i| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("lb-worker-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
            Ok(Worker { runtime: handle, serving: Arc::default() })
        })
        .collect()
}

impl Balancer {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            groups: RwLock::default(),
            listeners: tokio::sync::Mutex::default(),
            workers: start_workers()?,
        })
    }

    fn group(&self, id: &str) -> Option<Arc<Group>> {
        read(&self.groups).get(id).cloned()
    }

    /// Makes the balancer serve `config`, keeping the targets (with their counters, health
    /// and work in flight) and listeners that stay.
    async fn apply(self: &Arc<Self>, config: &BalancerConfig) {
        self.apply_groups(&config.target_groups);
        let mut listeners = self.listeners.lock().await;
        listeners.retain(|address, listener| {
            config.listeners.iter().any(|l| l.address == *address && l.protocol == listener.protocol)
        });
        for wanted in &config.listeners {
            if let Some(listener) = listeners.get(&wanted.address) {
                *lock(&listener.group) = wanted.target_group.clone();
                continue;
            }
            let listener = Listener {
                protocol: wanted.protocol,
                group: Arc::new(Mutex::new(wanted.target_group.clone())),
                connections: Arc::new(AtomicU64::new(0)),
                serving: Err("not bound yet".into()),
            };
            listeners.insert(wanted.address, listener);
        }
        drop(listeners);
        self.retry_listeners().await;
    }

    fn apply_groups(&self, wanted: &[TargetGroupConfig]) {
        let mut groups = write(&self.groups);
        groups.retain(|id, group| {
            let keep = wanted.iter().any(|g| g.id == *id);
            if !keep {
                for target in read(&group.targets).iter() {
                    target.gone.send_replace(true);
                }
            }
            keep
        });
        for config in wanted {
            let group = groups
                .entry(config.id.clone())
                .or_insert_with(|| {
                    Arc::new(Group {
                        id: config.id.clone(),
                        settings: Mutex::new(config.into()),
                        targets: RwLock::default(),
                        rotation: Mutex::default(),
                        unrouted: AtomicU64::new(0),
                    })
                })
                .clone();
            *lock(&group.settings) = config.into();
            let mut targets = write(&group.targets);
            let mut kept = Vec::with_capacity(config.targets.len());
            for wanted in &config.targets {
                let existing = targets
                    .iter()
                    .find(|t| t.config.id == wanted.id && t.config.address == wanted.address)
                    .cloned();
                let target = existing.unwrap_or_else(|| {
                    let target = Target::new(wanted.clone());
                    tokio::spawn(check_health(group.clone(), target.clone()));
                    target
                });
                target.draining.store(wanted.draining, Ordering::Relaxed);
                kept.push(target);
            }
            for old in targets.iter() {
                if !kept.iter().any(|t| Arc::ptr_eq(t, old)) {
                    old.gone.send_replace(true);
                }
            }
            *targets = kept;
        }
    }

    /// Binds every listener that is not listening yet.
    async fn retry_listeners(self: &Arc<Self>) {
        let mut listeners = self.listeners.lock().await;
        for (address, listener) in listeners.iter_mut() {
            if listener.serving.is_ok() {
                continue;
            }
            match self.listen(*address, listener).await {
                Ok(tasks) => {
                    info!(%address, "listening");
                    listener.serving = Ok(tasks);
                }
                Err(e) => {
                    let why = e.to_string();
                    if listener.serving.as_ref().err() != Some(&why) {
                        warn!(%address, "cannot listen: {why}");
                    }
                    listener.serving = Err(why);
                }
            }
        }
    }

    /// Binds `address` and starts its accept loop (on the control runtime), which hands
    /// each connection to the worker serving the fewest.
    async fn listen(
        self: &Arc<Self>,
        address: SocketAddr,
        listener: &Listener,
    ) -> std::io::Result<JoinHandle<()>> {
        let socket = TcpListener::bind(address).await?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let serves: Vec<Arc<Serve>> = self
            .workers
            .iter()
            .map(|_| {
                Arc::new(Serve {
                    balancer: self.clone(),
                    group: listener.group.clone(),
                    connections: listener.connections.clone(),
                    slots: slots.clone(),
                    port: address.port(),
                    pool: Arc::default(),
                })
            })
            .collect();
        let this = self.clone();
        Ok(match listener.protocol {
            Protocol::Http => tokio::spawn(async move { this.accept(socket, serves, http::serve).await }),
            Protocol::Tcp => tokio::spawn(async move { this.accept(socket, serves, tcp::serve).await }),
        })
    }

    /// Accepts on `listener` until aborted, handing each connection, with the `Serve` of
    /// the worker serving the fewest (`serves`, one per worker), to `serve` on that
    /// worker; every [`SWEEP_INTERVAL`] each worker's idle connections to targets are
    /// looked over. One acceptor keeps the workers even: workers accepting on one socket
    /// each took what they could, and one of two served all 16 connections of a
    /// benchmark run while the other idled.
    async fn accept<F, Fut>(&self, listener: TcpListener, serves: Vec<Arc<Serve>>, serve: F)
    where
        F: Fn(tokio::net::TcpStream, SocketAddr, Arc<Serve>, Open) -> Fut + Copy + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = next_connection(&listener) => accepted,
                _ = sweep.tick() => {
                    serves.iter().for_each(|s| s.pool.sweep());
                    continue;
                }
            };
            let least_busy =
                self.workers.iter().zip(&serves).min_by_key(|(w, _)| w.serving.load(Ordering::Relaxed));
            let Some((worker, worker_serve)) = least_busy else { continue };
            let Some(open) = worker_serve.admit(worker.serving.clone()) else { continue };
            // Registered with the worker's reactor once there.
            let Ok(stream) = stream.into_std() else { continue };
            let worker_serve = worker_serve.clone();
            worker.runtime.spawn(async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => serve(stream, peer, worker_serve, open).await,
                    Err(e) => warn!(%peer, "cannot serve the connection: {e}"),
                }
            });
        }
    }

    fn status(&self) -> BalancerStatus {
        let mut target_groups: Vec<TargetGroupStatus> =
            read(&self.groups).values().map(|g| g.status()).collect();
        target_groups.sort_by(|a, b| a.id.cmp(&b.id));
        let listeners = self.listeners.try_lock().map_or_else(
            |_| Vec::new(),
            |listeners| {
                let mut listed: Vec<ListenerStatus> = listeners
                    .iter()
                    .map(|(address, l)| ListenerStatus {
                        address: *address,
                        connections: l.connections.load(Ordering::Relaxed),
                        error: l.serving.as_ref().err().cloned(),
                    })
                    .collect();
                listed.sort_by_key(|l| l.address);
                listed
            },
        );
        BalancerStatus { written_at: crate::state::id::now(), listeners, target_groups }
    }
}

/// How long a connection to a target may take (ELB's 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a target within [`CONNECT_TIMEOUT`], with Nagle's algorithm off; the
/// HTTP pool and the TCP listener both connect through it.
async fn connect_target(address: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address));
    let stream = connecting.await.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How often idle connections to targets are looked over.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The next connection on `listener`. An accept that fails (out of descriptors, most
/// likely) is retried after a pause rather than in a spin.
async fn next_connection(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What one listener's accept loop needs.
struct Serve {
    balancer: Arc<Balancer>,
    group: Arc<Mutex<String>>,
    connections: Arc<AtomicU64>,
    slots: Arc<Semaphore>,
    port: u16,
    /// This worker's connections to the targets.
    pool: Arc<pool::Pool<hyper::body::Incoming>>,
}

impl Serve {
    /// The group the listener forwards to now.
    fn group(&self) -> Option<Arc<Group>> {
        let id = lock(&self.group).clone();
        self.balancer.group(&id)
    }

    /// A slot for one more connection, counted open (by the listener and by the worker's
    /// `serving`) until dropped; `None` at the cap.
    fn admit(&self, serving: Arc<AtomicU64>) -> Option<Open> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.connections.fetch_add(1, Ordering::Relaxed);
        serving.fetch_add(1, Ordering::Relaxed);
        Some(Open { _permit: permit, connections: self.connections.clone(), serving })
    }
}

/// An accepted connection, counted until dropped.
struct Open {
    _permit: tokio::sync::OwnedSemaphorePermit,
    connections: Arc<AtomicU64>,
    serving: Arc<AtomicU64>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_ramps_linearly_over_the_slow_start_and_not_without_one() {
        // Healthy since uptime 1000 ms (stored as 1001), slow start 10 s.
        assert_eq!(ramp(1001, 1000, 10_000), 0);
        assert_eq!(ramp(1001, 3500, 10_000), 250);
        assert_eq!(ramp(1001, 10_999, 10_000), 999);
        assert_eq!(ramp(1001, 11_000, 10_000), FULL_RAMP);
        assert_eq!(ramp(1001, 1000, 0), FULL_RAMP, "no slow start");
        assert_eq!(
            ramp(NOT_HEALTHY, 1000, 10_000),
            FULL_RAMP,
            "not healthy: the picker's health rules apply"
        );
        assert_eq!(ramp(FULL_SHARE, 1000, 10_000), FULL_RAMP, "healthy before slow start was on");
    }
}
