//! The HTTP listener, as an application load balancer: HTTP/1.1 (keep-alive) and HTTP/2
//! (cleartext) from clients through hyper, each request sent to the target its group
//! chooses over a pool of HTTP/1.1 keep-alive connections, bodies streamed both ways,
//! `X-Forwarded-For/-Proto/-Port` added, and ELB's 502, 503 and 504 when a request cannot
//! be served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::http::uri;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tracing::debug;

use super::pool::Lease;
use super::{InFlight, Open, Serve};

/// How long a target may take to answer (ELB's idle timeout, 60 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client may take to send a request's head, and its largest size.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2 streams one client connection may have open.
const MAX_STREAMS: u32 = 128;

/// What the balancer answers: a target's body, or its own page.
type Answer = Response<BoxBody<Bytes, hyper::Error>>;

/// Serves one HTTP client connection (on a worker, until it closes).
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, serve: Arc<Serve>, open: Open) {
    let _open = open;
    let _ = stream.set_nodelay(true);
    let service = service_fn(|request| {
        let serve = serve.clone();
        async move { Ok::<_, Infallible>(forward(&serve, request, peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client may shut down its sending side once its request is out (busybox nc does):
    // it still gets its answer.
    builder
        .http1()
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(MAX_STREAMS);
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
        debug!(%peer, "connection: {e}");
    }
}

/// Sends one client request to a target of the listener's group and gives back its answer.
async fn forward(serve: &Serve, mut request: Request<Incoming>, peer: SocketAddr) -> Answer {
    let Some(group) = serve.group() else { return page(StatusCode::SERVICE_UNAVAILABLE) };
    let Some(flight) = group.choose() else { return page(StatusCode::SERVICE_UNAVAILABLE) };
    let target = flight.0.clone();
    // To the target in origin form: the path and query, the host in Host.
    let path = request.uri().path_and_query().cloned().unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    // HTTP/2 names the host in the URI's authority, HTTP/1.1 in Host.
    let host = request
        .headers()
        .get(HOST)
        .cloned()
        .or_else(|| request.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    *request.uri_mut() = Uri::from(path);
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    remove_hop_by_hop(headers);
    // HTTP/1.1 needs a Host: an HTTP/1.0 client's request without one names the target.
    let host = host.or_else(|| HeaderValue::from_str(&target.config.address.to_string()).ok());
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    add_forwarded(headers, peer, serve.port);

    let started = Instant::now();
    let mut gone = target.gone.subscribe();
    let answered = tokio::select! {
        answered = tokio::time::timeout(ANSWER_TIMEOUT, serve.pool.send(target.config.address, request)) => answered,
        _ = gone.wait_for(|gone| *gone) => {
            target.counters.failed();
            return page(StatusCode::BAD_GATEWAY);
        }
    };
    match answered {
        Ok(Ok((mut response, lease))) => {
            target.record_latency(started.elapsed());
            target.counters.answered(response.status().as_u16());
            remove_hop_by_hop(response.headers_mut());
            // The request stays outstanding until its body is through.
            response.map(|body| Tracked { body, lease, _flight: flight }.boxed())
        }
        Ok(Err(e)) => {
            target.counters.failed();
            debug!(target = %target.config.address, "request failed: {e}");
            page(StatusCode::BAD_GATEWAY)
        }
        Err(_) => {
            target.counters.failed();
            page(StatusCode::GATEWAY_TIMEOUT)
        }
    }
}

/// The headers that describe one hop (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers that describe one hop, never passed on, with those the Connection header
/// names. Most messages have none: one pass over their names says so.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(&name.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// ELB's `X-Forwarded-For` (the client appended to what came), `-Proto` and `-Port`.
fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr, port: u16) {
    let before: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    let mut chain = before.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&peer.ip().to_string());
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    headers.insert("x-forwarded-port", HeaderValue::from(port));
}

/// The balancer's own answer with `status`, a page as ELB's.
fn page(status: StatusCode) -> Answer {
    let reason = status.canonical_reason().unwrap_or("");
    let text = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut response = Response::new(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

/// A target's answer body, which holds its request in flight, and its connection, until it
/// is through.
struct Tracked {
    body: Incoming,
    lease: Lease<Incoming>,
    _flight: InFlight,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Read to its end: the connection can serve the next request.
        if self.body.is_end_stream() {
            self.lease.reusable = true;
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.lease.reusable = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("accept"));
    }

    #[test]
    fn the_client_is_appended_to_the_forwarded_chain() {
        let mut headers = HeaderMap::new();
        let peer: SocketAddr = "192.168.1.9:40000".parse().unwrap();
        add_forwarded(&mut headers, peer, 80);
        assert_eq!(headers["x-forwarded-for"], "192.168.1.9");
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        add_forwarded(&mut headers, peer, 8080);
        assert_eq!(headers["x-forwarded-for"], "10.1.1.1, 192.168.1.9");
        assert_eq!(
            (&headers["x-forwarded-proto"], &headers["x-forwarded-port"]),
            (&HeaderValue::from_static("http"), &HeaderValue::from(8080u16))
        );
        assert_eq!(page(StatusCode::BAD_GATEWAY).status(), 502);
    }
}
