//! The TCP listener, as a network load balancer: each connection goes to the target its
//! group chooses (by default the one with the fewest open connections) and its bytes are
//! copied both ways until either side closes, or the target leaves the group.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tracing::debug;

use super::{Open, Serve};

/// How long a connection to a target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one TCP client connection (on a worker): to the target its group chooses, the
/// bytes copied both ways until either side closes or the target leaves.
pub(super) async fn serve(mut client: TcpStream, peer: SocketAddr, serve: Arc<Serve>, open: Open) {
    let _open = open;
    let Some(flight) = serve.group().and_then(|group| group.choose()) else { return };
    let target = flight.0.clone();
    let started = Instant::now();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.config.address)).await;
    let mut upstream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            target.counters.failed();
            debug!(%peer, target = %target.config.address, "connect: {e}");
            return;
        }
        Err(_) => {
            target.counters.failed();
            return;
        }
    };
    target.record_latency(started.elapsed());
    let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
    let mut gone = target.gone.subscribe();
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                debug!(%peer, "connection: {e}");
            }
        }
        _ = gone.wait_for(|gone| *gone) => {}
    }
    drop(flight);
}
