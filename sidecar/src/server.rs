//! The serving port: accept while the phase accepts, then wait for every connection
//! and tunnel, cutting what is left at the drain timeout. Each connection is served
//! as HTTP (`connection`) or spliced as TCP (`tcp`).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Protocol;
use crate::context::Context;
use crate::lifecycle::DrainOutcome;
use crate::{connection, tcp};

/// Accepts connections until the phase reaches `Draining`, then waits for every
/// connection and tunnel to finish, cutting them at the drain timeout.
pub(crate) async fn serve(listener: TcpListener, context: Arc<Context>) -> DrainOutcome {
    let mut phase = context.lifecycle.watch_phase();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let for_connection = context.clone();
                    let open = context.metrics.connections_open.clone();
                    open.inc();
                    let protocol = context.config.protocol;
                    context.tasks.spawn(async move {
                        match protocol {
                            Protocol::Http => connection::serve(stream, peer, for_connection).await,
                            Protocol::Tcp => tcp::serve(stream, peer, for_connection).await,
                        }
                        open.dec();
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            _ = async { phase.wait_for(|p| !p.accepts()).await.is_ok() } => break,
        }
    }
    drop(listener);
    let drain_timeout = context.config.drain_timeout;
    info!(
        in_flight = context.metrics.requests_in_flight.get(),
        connections = context.metrics.connections_open.get(),
        ?drain_timeout,
        "listener closed, draining in-flight requests"
    );
    context.tasks.close();
    let deadline = Instant::now() + drain_timeout;
    if tokio::time::timeout_at(deadline, context.tasks.wait())
        .await
        .is_ok()
    {
        return DrainOutcome::Drained;
    }
    // What is cut: requests in HTTP mode, connections in TCP mode.
    let open = match context.config.protocol {
        Protocol::Http => context.metrics.requests_in_flight.get(),
        Protocol::Tcp => context.metrics.connections_open.get(),
    };
    let cut = u64::try_from(open).unwrap_or(0);
    warn!(
        requests_cut = cut,
        connections = context.metrics.connections_open.get(),
        "drain timeout passed, cutting what is left"
    );
    context.cut.cancel();
    context.tasks.wait().await;
    debug!("every connection closed");
    DrainOutcome::TimedOut { cut }
}
