//! The serving ports: accept on every listener while the phase accepts, then wait for
//! every connection and tunnel of all of them, cutting what is left at the drain
//! timeout. Each connection is served as HTTP (`connection`) or spliced as TCP
//! (`tcp`), as its listener says.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::Protocol;
use crate::context::{Context, Drain};
use crate::lifecycle::DrainOutcome;
use crate::{connection, tcp};

/// Accepts on every listener until the phase reaches `Draining`, then waits for every
/// connection and tunnel to finish, cutting them at the drain timeout.
pub(crate) async fn serve(
    listeners: Vec<(TcpListener, Arc<Context>)>,
    drain: Drain,
) -> DrainOutcome {
    let Some(context) = listeners.first().map(|(_, context)| context.clone()) else {
        return DrainOutcome::Drained;
    };
    let mut accepting = tokio::task::JoinSet::new();
    for (listener, context) in listeners {
        accepting.spawn(accept(listener, context));
    }
    while accepting.join_next().await.is_some() {}
    let drain_timeout = context.config.drain_timeout;
    info!(
        in_flight = context.metrics.requests_in_flight.get(),
        connections = context.metrics.connections_open.get(),
        ?drain_timeout,
        "listener closed, draining in-flight requests"
    );
    drain.tasks.close();
    let deadline = Instant::now() + drain_timeout;
    if tokio::time::timeout_at(deadline, drain.tasks.wait())
        .await
        .is_ok()
    {
        return DrainOutcome::Drained;
    }
    // What is cut: requests of HTTP listeners, connections of TCP ones.
    let requests = u64::try_from(context.metrics.requests_in_flight.get()).unwrap_or(0);
    let cut = requests + drain.tunnels.load(Ordering::Relaxed);
    warn!(
        requests_cut = cut,
        connections = context.metrics.connections_open.get(),
        "drain timeout passed, cutting what is left"
    );
    drain.cut.cancel();
    drain.tasks.wait().await;
    debug!("every connection closed");
    DrainOutcome::TimedOut { cut }
}

/// Accepts on one listener until the phase stops accepting; the listener closes on return.
async fn accept(listener: TcpListener, context: Arc<Context>) {
    let mut phase = context.lifecycle.watch_phase();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let for_connection = context.clone();
                    let open = context.metrics.connections_open.clone();
                    open.inc();
                    let protocol = context.listener.protocol;
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
            _ = async { phase.wait_for(|p| !p.accepts()).await.is_ok() } => return,
        }
    }
}
