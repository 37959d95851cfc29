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
use crate::log_limit::Limit;
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

/// The body of the answer to a connection beyond `--max-connections` on an HTTP port.
const AT_CONNECTION_LIMIT: &str = "the sidecar is at its connection limit\n";
/// How long a refused connection is given to take its answer.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes a connection beyond `--max-connections`, counted; an HTTP port first
/// answers 503 (a TCP port has no way to say why).
fn refuse(mut stream: tokio::net::TcpStream, context: &Context) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    context
        .metrics
        .refusals
        .with_label_values(&[crate::proxy::Refusal::MaxConnections.as_str()])
        .inc();
    if context.listener.protocol != Protocol::Http {
        return;
    }
    tokio::spawn(async move {
        let answer = async {
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{AT_CONNECTION_LIMIT}",
                AT_CONNECTION_LIMIT.len()
            );
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the client sent, so that closing does not reset the answer away.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
    });
}

/// Accepts on one listener until the phase stops accepting; the listener closes on return.
async fn accept(listener: TcpListener, context: Arc<Context>) {
    let mut phase = context.lifecycle.watch_phase();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let max = context.config.max_connections;
                    let open = usize::try_from(context.metrics.connections_open.get()).unwrap_or(0);
                    if max != 0 && open >= max {
                        refuse(stream, &context);
                        continue;
                    }
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
                    static ACCEPT_FAILED: Limit = Limit::new();
                    if let Some(suppressed) = ACCEPT_FAILED.allow() {
                        warn!(%error, suppressed, "accept failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            _ = async { phase.wait_for(|p| !p.accepts()).await.is_ok() } => return,
        }
    }
}
