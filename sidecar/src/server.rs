//! The serving port: accept until the shutdown delay ends, then drain.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::connection;
use crate::lifecycle::{DrainOutcome, Phase};
use crate::proxy::Proxy;

/// Accepts connections until the phase reaches `Draining`, then waits for every
/// connection and tunnel to finish, cutting them at the drain timeout.
pub(crate) async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> DrainOutcome {
    let mut phase = proxy.lifecycle.watch_phase();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let proxy_for_conn = proxy.clone();
                    let open = proxy.metrics.connections_open.clone();
                    open.inc();
                    proxy.tasks.spawn(async move {
                        connection::serve(stream, peer, proxy_for_conn).await;
                        open.dec();
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            _ = async { phase.wait_for(|p| *p >= Phase::Draining).await.is_ok() } => break,
        }
    }
    drop(listener);
    let drain_timeout = proxy.config.drain_timeout;
    info!(
        in_flight = proxy.metrics.requests_in_flight.get(),
        connections = proxy.metrics.connections_open.get(),
        ?drain_timeout,
        "listener closed, draining in-flight requests"
    );
    proxy.tasks.close();
    let deadline = Instant::now() + drain_timeout;
    if tokio::time::timeout_at(deadline, proxy.tasks.wait())
        .await
        .is_ok()
    {
        return DrainOutcome::Drained;
    }
    let cut = u64::try_from(proxy.metrics.requests_in_flight.get()).unwrap_or(0);
    warn!(
        requests_cut = cut,
        connections = proxy.metrics.connections_open.get(),
        "drain timeout passed, cutting what is left"
    );
    proxy.cut.cancel();
    proxy.tasks.wait().await;
    debug!("every connection closed");
    DrainOutcome::TimedOut { cut }
}
