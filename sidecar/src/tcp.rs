//! One client connection in TCP mode (`--protocol tcp`), for apps that are not HTTP
//! (Redis, PostgreSQL, MySQL, brokers): spliced to the app byte for byte.
//!
//! The drain is the HTTP mode's, by connection instead of by request: a connection
//! that arrives while the app starts waits for it (up to the startup hold); during the
//! shutdown delay new connections are still accepted and served (a layer-4 proxy has
//! no way to tell a client to go away); once the listener closes, open connections
//! have until the drain timeout to end by themselves, and are then cut and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;
use tracing::debug;

use crate::context::Context;
use crate::metrics::{TCP_APP_UNREACHABLE, TCP_CLOSED, TCP_CUT};

/// Serves one accepted connection until either side closes it or it is cut.
pub(crate) async fn serve(mut client: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let _ = client.set_nodelay(true);
    let phase = context.lifecycle.phase();
    context.tunnels.fetch_add(1, Ordering::Relaxed);
    let outcome = tokio::select! {
        outcome = splice(&mut client, peer, &context) => outcome,
        _ = context.cut.cancelled() => TCP_CUT,
    };
    context.tunnels.fetch_sub(1, Ordering::Relaxed);
    context
        .metrics
        .tcp_connections
        .with_label_values(&[phase.as_str(), outcome])
        .inc();
}

/// Connects to the app (holding while it starts) and copies both ways until the end.
async fn splice(client: &mut TcpStream, peer: SocketAddr, context: &Context) -> &'static str {
    let (config, metrics) = (&context.config, &context.metrics);
    let Ok(hold_until) = context.hold_for_app().await else {
        debug!(%peer, "the app did not become ready within the startup hold");
        return TCP_APP_UNREACHABLE;
    };
    let connected = crate::upstream::connect(
        context.listener.upstream,
        config.upstream_connect_timeout,
        hold_until,
        metrics,
    )
    .await;
    let mut app = match connected {
        Ok(app) => app,
        Err(error) => {
            debug!(%peer, %error, "connecting to the app failed");
            return TCP_APP_UNREACHABLE;
        }
    };
    match tokio::io::copy_bidirectional(client, &mut app).await {
        Ok((up, down)) => debug!(%peer, up, down, "connection closed"),
        Err(error) => debug!(%peer, %error, "connection ended with an error"),
    }
    TCP_CLOSED
}
