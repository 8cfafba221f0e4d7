//! The metadata service's HTTP side: one listener per subnet bridge, kept in step with
//! the subnets by a reconcile loop (a subnet made or deleted while the daemon runs gains
//! or loses its listener within a second; a restarted daemon listens again at once).
//! HTTP/1.1 is hyper's; what a guest can make it hold is capped: connections per bridge,
//! request rate per caller, header size and wait, a connection's life.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::token::TokenKey;
use super::{answer, Ask, Listening, Reply, Source, TOKEN_HEADER, TTL_HEADER};
use crate::state::id::now;

/// How often the listeners are compared with the subnets.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// Connections served at once on one bridge; more are closed as they come.
const MAX_CONNECTIONS: usize = 64;
/// Requests one caller may make per second; more are answered 429, as EC2 throttles.
const MAX_REQUESTS_PER_SECOND: u32 = 200;
/// Callers whose rates are tracked at once on one bridge (a bridge's subnet has at most
/// this many addresses that pass the VMMs' source filters anyway).
const MAX_TRACKED_CALLERS: usize = 4096;
/// How long a request's head may take to arrive, and its largest size.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD_BYTES: usize = 8192;
/// The longest a connection is kept, however busy.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(300);

/// Serves the metadata service on every subnet `source` names, for as long as the
/// daemon runs.
pub async fn run(source: Arc<dyn Source>, key: Arc<TokenKey>) {
    let mut serving: HashMap<Listening, JoinHandle<()>> = HashMap::new();
    let mut failed: HashMap<Listening, String> = HashMap::new();
    loop {
        let wanted = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || source.subnets()).await
        };
        match wanted.map_err(|e| e.to_string()).and_then(|listed| listed) {
            Ok(wanted) => {
                serving.retain(|listening, task| {
                    let keep = wanted.contains(listening) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                failed.retain(|listening, _| wanted.contains(listening));
                let new: Vec<Listening> = wanted.into_iter().filter(|l| !serving.contains_key(l)).collect();
                for listening in new {
                    match bind(&source, &listening.bridge).await {
                        Ok(listener) => {
                            info!(bridge = %listening.bridge, "serving the metadata service");
                            failed.remove(&listening);
                            let served =
                                Bridge::new(listening.subnet_id.clone(), source.clone(), key.clone());
                            serving.insert(listening, tokio::spawn(served.accept(listener)));
                        }
                        Err(why) => {
                            // Said once per bridge and reason, then retried quietly.
                            if failed.get(&listening) != Some(&why) {
                                warn!(bridge = %listening.bridge, "metadata service not listening: {why}");
                                failed.insert(listening, why);
                            }
                        }
                    }
                }
            }
            Err(why) => warn!("metadata service: listing subnets: {why}"),
        }
        tokio::time::sleep(RECONCILE_INTERVAL).await;
    }
}

async fn bind(source: &Arc<dyn Source>, bridge: &str) -> Result<TcpListener, String> {
    let (source, bridge) = (source.clone(), bridge.to_owned());
    let listener = tokio::task::spawn_blocking(move || source.listen(&bridge))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpListener::from_std(listener).map_err(|e| e.to_string())
}

/// The service on one bridge.
#[derive(Clone)]
struct Bridge {
    subnet_id: Arc<str>,
    source: Arc<dyn Source>,
    key: Arc<TokenKey>,
    connections: Arc<Semaphore>,
    /// Each caller's requests in the current second.
    rates: Arc<Mutex<HashMap<Ipv4Addr, (Instant, u32)>>>,
}

impl Bridge {
    fn new(subnet_id: String, source: Arc<dyn Source>, key: Arc<TokenKey>) -> Self {
        Self {
            subnet_id: subnet_id.into(),
            source,
            key,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            rates: Arc::default(),
        }
    }

    async fn accept(self, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("metadata service: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let IpAddr::V4(caller) = peer.ip() else { continue };
            let Ok(slot) = self.connections.clone().try_acquire_owned() else { continue };
            let bridge = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let socket = Socket(stream.as_raw_fd());
                let service = hyper::service::service_fn(move |request| {
                    let bridge = bridge.clone();
                    async move { Ok::<_, Infallible>(bridge.serve(caller, socket, request).await) }
                });
                // Half-closed connections are answered: simple clients (busybox nc, some
                // HTTP/1.0 ones) shut their side down once the request is sent.
                let connection = http1::Builder::new()
                    .half_close(true)
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
            });
        }
    }

    /// Whether `caller` may make one more request this second.
    fn admit(&self, caller: Ipv4Addr) -> bool {
        let mut rates = self.rates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if rates.len() >= MAX_TRACKED_CALLERS && !rates.contains_key(&caller) {
            rates.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(1));
            if rates.len() >= MAX_TRACKED_CALLERS {
                return false;
            }
        }
        let (since, count) = rates.entry(caller).or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(1) {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        *count <= MAX_REQUESTS_PER_SECOND
    }

    async fn serve(
        &self,
        caller: Ipv4Addr,
        socket: Socket,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        if !self.admit(caller) {
            return respond(Reply::status(429, "Too Many Requests"));
        }
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let ask = Ask {
            method: request.method().as_str(),
            path: request.uri().path(),
            token: header(TOKEN_HEADER),
            ttl: header(TTL_HEADER),
            forwarded: request.headers().contains_key("x-forwarded-for"),
        };
        let found = {
            let (source, subnet_id) = (self.source.clone(), self.subnet_id.clone());
            tokio::task::spawn_blocking(move || source.instance_at(&subnet_id, caller)).await
        };
        let found = found.map_err(|e| e.to_string()).and_then(|found| found);
        let reply = match found {
            Ok(instance) => answer(&ask, instance.as_ref(), &self.key, now()),
            Err(why) => {
                warn!(%caller, "metadata service: looking up the caller: {why}");
                Reply::status(500, "Internal Server Error")
            }
        };
        // The answer goes out with the TTL it asks for; the next one with the default.
        if let Err(e) = socket.set_ttl(reply.hop_limit) {
            warn!(%caller, "metadata service: setting the IP TTL: {e}");
        }
        respond(reply)
    }
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    if let Some(ttl) = reply.token_ttl {
        headers.insert(TTL_HEADER, ttl.into());
    }
    if reply.status == 405 {
        headers.insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD, PUT"));
    }
    response
}

/// A served connection's socket, for its IP TTL. It is only used by the service of that
/// connection, which hyper drops with the connection, so the descriptor is open whenever
/// it is used.
#[derive(Clone, Copy)]
struct Socket(RawFd);

impl Socket {
    /// Sends what follows with IP TTL `ttl` (`None`: the host's default).
    fn set_ttl(self, ttl: Option<u8>) -> std::io::Result<()> {
        let value: libc::c_int = ttl.map_or(-1, libc::c_int::from);
        // SAFETY: the descriptor is the live connection's (see the type), and the option
        // value is a c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(self.0, libc::IPPROTO_IP, libc::IP_TTL, (&value as *const libc::c_int).cast(), 4)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::InstanceMetadata;

    /// A source with no subnet and no instance: the rate limit needs neither.
    struct Nothing;

    impl Source for Nothing {
        fn subnets(&self) -> Result<Vec<Listening>, String> {
            Ok(Vec::new())
        }
        fn listen(&self, _: &str) -> std::io::Result<std::net::TcpListener> {
            Err(std::io::Error::other("no bridges here"))
        }
        fn instance_at(&self, _: &str, _: Ipv4Addr) -> Result<Option<InstanceMetadata>, String> {
            Ok(None)
        }
    }

    #[test]
    fn each_caller_gets_its_requests_per_second_and_no_more() {
        let bridge = Bridge::new("subnet-1".into(), Arc::new(Nothing), Arc::new(TokenKey::random().unwrap()));
        let (busy, quiet) = (Ipv4Addr::new(10, 0, 7, 5), Ipv4Addr::new(10, 0, 7, 6));
        let admitted = (0..MAX_REQUESTS_PER_SECOND + 50).filter(|_| bridge.admit(busy)).count();
        assert_eq!(admitted, MAX_REQUESTS_PER_SECOND as usize, "the rest are answered 429");
        assert!(bridge.admit(quiet), "another caller is not held back");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(bridge.admit(busy), "a new second, new requests");
    }

    #[test]
    fn the_callers_tracked_are_capped() {
        let bridge = Bridge::new("subnet-1".into(), Arc::new(Nothing), Arc::new(TokenKey::random().unwrap()));
        for n in 0..MAX_TRACKED_CALLERS as u32 {
            assert!(bridge.admit(Ipv4Addr::from(0x0a00_0000 + n)));
        }
        // All seen within this second: one more caller is refused rather than tracked.
        assert!(!bridge.admit(Ipv4Addr::new(10, 200, 0, 1)));
        assert_eq!(bridge.rates.lock().unwrap().len(), MAX_TRACKED_CALLERS);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            bridge.admit(Ipv4Addr::new(10, 200, 0, 1)),
            "old entries make room once their second is over"
        );
        assert_eq!(bridge.rates.lock().unwrap().len(), 1);
    }
}
