//! `lameduck-sidecar`: the drain proxy that makes a pod safe to roll.
//!
//! It sits in front of an unmodified app in the same pod and:
//! - gates readiness (`/ready` on the admin port) on the app's own check;
//! - holds requests that arrive before the app can serve, instead of failing them;
//! - on SIGTERM, SIGINT or `/drain`, keeps accepting for the shutdown delay while
//!   telling every client to go away (`Connection: close`, HTTP/2 GOAWAY), so that
//!   ingress controllers and kube-proxy have time to forget the pod; then closes the
//!   listener and lets in-flight requests finish, up to the drain timeout;
//! - exports Prometheus metrics about all of it.
//!
//! It speaks HTTP/1.1 and HTTP/2 (prior knowledge) to clients, and HTTP/1.1, HTTP/2
//! (h2c, for gRPC apps) or the client's own protocol to the app; apps that are not
//! HTTP get a layer-4 drain (`--protocol tcp`: connections instead of requests).
//!
//! It is not a general-purpose proxy: one app, on loopback, no TLS. Routing, retries
//! of requests that reached the app, and load balancing are out of scope.
//!
//! Where things are: `lifecycle` (the phases and what each means), `drain` (the drain
//! and exit sequences), `signal`, `config`, `metrics`; the serving port is `server`
//! (accept) → `connection` (one client connection, with its `watchdog`) → `proxy`
//! (one request; its body is `request_body`, `Expect: 100-continue` is `expect`) →
//! `upstream` (the pool to the app), sharing one `context`; the admin port is
//! `admin`, the readiness gate `app_check`; TCP mode is `tcp`; warnings a client can
//! cause are limited by `log_limit`.

pub mod config;
pub mod drain;
pub mod lifecycle;
pub mod log_limit;
pub mod metrics;
pub mod signal;
pub mod upstream;

mod admin;
mod app_check;
mod connection;
mod context;
mod expect;
mod h2_frames;
mod proxy;
mod request_body;
mod server;
mod tcp;
mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::Registry;
use tokio::net::TcpListener;
use tracing::info;

pub use config::{Args, Config, ConfigError};
pub use drain::Exit;
pub use lifecycle::{DrainOutcome, Lifecycle, Phase};
pub use metrics::Metrics;
pub use signal::{Signal, Signals, UnixSignals};

/// Errors that stop the sidecar before it serves.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be bound.
    #[error("binding the {what} address {addr}")]
    Bind {
        /// Which address.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics could not be registered.
    #[error("registering metrics")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the sidecar until the process should exit (see [`drain::exit`]): binds every
/// serving port and the admin port, starts the app check, the admin port and the serving port, and hands the
/// one [`Lifecycle`] to each.
pub async fn run(
    config: Config,
    registry: Registry,
    mut signals: impl Signals,
) -> Result<Exit, Error> {
    let metrics = Metrics::register(&registry)?;
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { what, addr, source })
    };
    let mut listeners = Vec::new();
    for listener in config.listeners() {
        listeners.push((bind("serving", listener.listen).await?, *listener));
    }
    let admin_listener = bind("admin", config.admin).await?;
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);
    for (bound, listener) in listeners.iter().skip(1) {
        let listen = bound.local_addr().unwrap_or(listener.listen);
        info!(%listen, upstream = %listener.upstream, protocol = ?listener.protocol, upstream_protocol = ?listener.upstream_protocol, "listener bound");
    }
    if let Some((bound, listener)) = listeners.first() {
        let listen = bound.local_addr().unwrap_or(listener.listen);
        info!(
            %listen,
            admin = %admin_addr,
            upstream = %listener.upstream,
            protocol = ?listener.protocol,
            upstream_protocol = ?listener.upstream_protocol,
            "bound"
        );
    }

    let lifecycle = Lifecycle::new();
    tokio::spawn(watch_phase(lifecycle.clone(), metrics.clone()));
    tokio::spawn(app_check::run(
        config.clone(),
        lifecycle.clone(),
        metrics.clone(),
    ));
    tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(admin::Admin {
            lifecycle: lifecycle.clone(),
            registry,
            drain_token: config.drain_token.clone(),
            ready_during_shutdown_delay: config.ready_during_shutdown_delay,
        }),
    ));
    let final_scrape = drain::FinalScrape {
        timeout: config.final_scrape_timeout,
        grace_period: config.grace_period,
    };
    let shared = context::Drain::default();
    let serving = listeners
        .into_iter()
        .map(|(bound, listener)| {
            let context = context::Context::new(
                config.clone(),
                listener,
                lifecycle.clone(),
                metrics.clone(),
                &shared,
            );
            (bound, Arc::new(context))
        })
        .collect();
    tokio::spawn(drain::drive(
        serving,
        shared,
        lifecycle.clone(),
        config,
        metrics,
    ));
    Ok(drain::exit(&lifecycle, &mut signals, final_scrape).await)
}

/// Mirrors phase changes into the metrics and the log.
async fn watch_phase(lifecycle: Lifecycle, metrics: Metrics) {
    let mut phase = lifecycle.watch_phase();
    loop {
        let current = *phase.borrow_and_update();
        metrics.set_phase(current);
        info!(phase = current.as_str(), "phase");
        if phase.changed().await.is_err() {
            return;
        }
    }
}
