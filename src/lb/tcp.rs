//! The TCP listener, as a network load balancer: each connection goes to the target its
//! group chooses (by default the one with the fewest open connections) and its bytes are
//! copied both ways until either side closes, or the target leaves the group.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::debug;

use super::{Open, Serve};

/// Serves one TCP client connection (on a worker): to the target its group chooses, the
/// bytes copied both ways until either side closes or the target leaves.
pub(super) async fn serve(mut client: TcpStream, peer: SocketAddr, serve: Arc<Serve>, open: Open) {
    let _open = open;
    let Some(flight) = serve.group().and_then(|group| group.choose()) else { return };
    let target = flight.0.clone();
    let started = Instant::now();
    let mut upstream = match super::connect_target(target.config.address).await {
        Ok(stream) => stream,
        Err(e) => {
            target.counters.failed();
            debug!(%peer, target = %target.config.address, "connect: {e}");
            return;
        }
    };
    target.record_latency(started.elapsed());
    let _ = client.set_nodelay(true);
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
