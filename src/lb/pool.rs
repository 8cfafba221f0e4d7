//! Keep-alive HTTP/1.1 connections to targets, one pool per listener and worker thread.
//!
//! A request takes an idle connection to its target (the most recently used, which is the
//! least likely to have been closed by the target) or opens one; the connection comes back
//! when the answer's body is through. Unlike a general-purpose client pool, nothing runs
//! per request beside the request itself: no task waits for the connection to become
//! ready again, since a connection only comes back once its answer is read to the end. A
//! request that a reused connection dropped before sending it (the target closed the
//! connection as it went idle) is sent once more on a new one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tracing::debug;

/// How long an idle connection is kept (ELB's idle timeout, 60 s).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 256;

/// Why a request did not reach its target or got no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// The target could not be connected to in time.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// An idle connection.
struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// The pool, for requests with bodies of type `B` (the client's, streamed through).
pub(super) struct Pool<B> {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle<B>>>>,
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Self { idle: Mutex::default() }
    }
}

/// A connection lent to one request: it goes back to the pool when dropped after the
/// answer's body was read to its end, and is closed otherwise.
pub(super) struct Lease<B> {
    pool: Arc<Pool<B>>,
    address: SocketAddr,
    sender: Option<SendRequest<B>>,
    /// The answer's body was read to its end: the connection can take the next request.
    pub(super) reusable: bool,
}

impl<B> Drop for Lease<B> {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take().filter(|s| self.reusable && !s.is_closed()) {
            self.pool.put(self.address, sender);
        }
    }
}

impl<B> Pool<B> {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle<B>>>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put(&self, address: SocketAddr, sender: SendRequest<B>) {
        let mut idle = self.idle();
        let kept = idle.entry(address).or_default();
        if kept.len() < MAX_IDLE_PER_TARGET {
            kept.push(Idle { sender, since: Instant::now() });
        }
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] or closed by their
    /// target (and so those to targets no longer used).
    pub(super) fn sweep(&self) {
        let mut idle = self.idle();
        for kept in idle.values_mut() {
            kept.retain(|i| i.since.elapsed() < IDLE_TIMEOUT && !i.sender.is_closed());
        }
        idle.retain(|_, kept| !kept.is_empty());
    }
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// An idle connection to `address` that can take a request now.
    async fn reuse(&self, address: SocketAddr) -> Option<SendRequest<B>> {
        loop {
            let Idle { mut sender, since } = self.idle().get_mut(&address)?.pop()?;
            if since.elapsed() >= IDLE_TIMEOUT || sender.is_closed() {
                continue;
            }
            // Its last answer was read to the end; ready at once, or failed if the target
            // closed it meanwhile.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new connection to `address`, served by a task of its own until it closes.
    async fn connect(address: SocketAddr) -> Result<SendRequest<B>, SendError> {
        let stream = super::connect_target(address).await.map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%address, "target connection: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends `request` to `address`; returns the answer and the connection it came on.
    pub(super) async fn send(
        self: &Arc<Self>,
        address: SocketAddr,
        request: Request<B>,
    ) -> Result<(Response<Incoming>, Lease<B>), SendError> {
        let (mut sender, reused) = match self.reuse(address).await {
            Some(sender) => (sender, true),
            None => (Self::connect(address).await?, false),
        };
        let answer = match sender.try_send_request(request).await {
            Ok(answer) => answer,
            Err(mut failed) => match failed.take_message() {
                Some(request) if reused => {
                    sender = Self::connect(address).await?;
                    sender.send_request(request).await?
                }
                _ => return Err(failed.into_error().into()),
            },
        };
        let lease = Lease { pool: self.clone(), address, sender: Some(sender), reusable: false };
        Ok((answer, lease))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;

    use super::*;

    /// An HTTP/1.1 server on loopback answering "ok", counting the connections it takes;
    /// with `keep_alive` off it closes each after one answer.
    async fn server(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    let _ =
                        builder.keep_alive(keep_alive).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (address, accepted)
    }

    /// Sends one request; the lease goes back reusable when `read_to_end`.
    async fn get(pool: &Arc<Pool<Empty<Bytes>>>, address: SocketAddr, read_to_end: bool) -> Bytes {
        let request = Request::builder().uri("/").header("host", "t").body(Empty::new()).unwrap();
        let (answer, mut lease) = pool.send(address, request).await.unwrap();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        lease.reusable = read_to_end;
        body
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_serves_the_next_request() {
        let (address, accepted) = server(true).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            assert_eq!(get(&pool, address, true).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for three requests");
        get(&pool, address, false).await;
        get(&pool, address, true).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a lease not read to the end is not reused");
    }

    #[tokio::test]
    async fn connections_the_target_closes_are_not_reused() {
        let (address, accepted) = server(false).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            assert_eq!(get(&pool, address, true).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // Each connection's own task sees the close; a sweep then drops it.
        for _ in 0..100 {
            pool.sweep();
            if pool.idle().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("closed connections are kept: {}", pool.idle().len());
    }

    #[tokio::test]
    async fn a_target_that_refuses_is_a_connect_error() {
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let pool: Arc<Pool<Empty<Bytes>>> = Arc::new(Pool::default());
        let request = Request::builder().uri("/").body(Empty::new()).unwrap();
        assert!(matches!(pool.send(address, request).await, Err(SendError::Connect(_))));
    }
}
