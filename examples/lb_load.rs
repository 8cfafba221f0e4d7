//! The load balancer benchmark's client (`scripts/bench-lb.sh`): N connections, each a
//! keep-alive HTTP/1.1 connection sending one GET after another for a while; every
//! request's latency is kept, and the run prints `requests_per_second p50_ms p99_ms
//! failures` on one line.
//!
//! `lb_load --url-address 10.0.0.1:8080 --connections 16 --seconds 5`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, Parser)]
struct Args {
    /// The balancer.
    #[arg(long)]
    address: SocketAddr,
    /// Connections at once, each with one request in flight.
    #[arg(long)]
    connections: usize,
    /// How long to send.
    #[arg(long)]
    seconds: u64,
}

/// Sends requests on one connection until `until`: each request's latency, and failures.
async fn connection(address: SocketAddr, until: Instant) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    while Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
            failures += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, driver)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            failures += 1;
            continue;
        };
        let driver = tokio::spawn(driver);
        while Instant::now() < until {
            let request = Request::get("/").header("host", address.to_string()).body(Empty::<Bytes>::new());
            let Ok(request) = request else { break };
            let started = Instant::now();
            let answered = match sender.send_request(request).await {
                Ok(response) if response.status().is_success() => {
                    response.into_body().collect().await.is_ok()
                }
                _ => false,
            };
            if !answered {
                failures += 1;
                break;
            }
            latencies.push(started.elapsed());
        }
        driver.abort();
    }
    (latencies, failures)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> =
        (0..args.connections).map(|_| tokio::spawn(connection(args.address, until))).collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        if let Ok((mut mine, failed)) = task.await {
            latencies.append(&mut mine);
            failures += failed;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:.0} {:.3} {:.3} {failures}",
        latencies.len() as f64 / elapsed,
        percentile(0.50),
        percentile(0.99)
    );
}
