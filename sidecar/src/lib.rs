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
//! It is not a general-purpose proxy: one app, on loopback, plain HTTP. TLS, routing,
//! retries of requests that reached the app, and load balancing are out of scope.

pub mod config;
pub mod lifecycle;
pub mod metrics;
pub mod upstream;

mod admin;
mod app_check;
mod connection;
mod proxy;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Args, Config, ConfigError};
pub use lifecycle::{DrainOutcome, Lifecycle, Phase};
pub use metrics::Metrics;

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

/// How the process should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The drain finished (after a signal): exit 0.
    Drained(DrainOutcome),
    /// A second signal arrived during the drain: exit at once.
    Forced,
}

/// Runs the sidecar. `signals` yields once per SIGTERM/SIGINT (with its name); the
/// first starts the drain, the process should exit when this returns. After the
/// drain it waits for one more scrape of `/metrics` (see `--final-scrape-timeout`).
pub async fn run<S>(config: Config, registry: Registry, mut signals: S) -> Result<Exit, Error>
where
    S: FnMut() -> std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>,
{
    let metrics = Metrics::register(&registry)?;
    let final_scrape_timeout = config.final_scrape_timeout;
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { what, addr, source })
    };
    let listener = bind("serving", config.listen).await?;
    let admin_listener = bind("admin", config.admin).await?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin);
    info!(%listen, admin = %admin_addr, upstream = %config.upstream, "bound");

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
        }),
    ));
    let proxy = Arc::new(proxy::Proxy {
        upstream: Arc::new(upstream::Upstream::new(
            config.upstream,
            config.upstream_connect_timeout,
            config.upstream_idle_timeout,
            metrics.clone(),
        )),
        config: config.clone(),
        lifecycle: lifecycle.clone(),
        metrics: metrics.clone(),
        tasks: TaskTracker::new(),
        cut: CancellationToken::new(),
    });
    tokio::spawn(drain(listener, proxy, config, metrics));

    // The first signal starts the drain unless /drain already did; exit once drained.
    let signalled = tokio::select! {
        signal = signals() => {
            info!(signal, "signal received");
            lifecycle.trigger_drain(signal);
            true
        }
        _ = lifecycle.drained() => false,
    };
    if !signalled {
        // Drained through /drain: stay up (admin answers, /ready is 503) until told to exit.
        let signal = signals().await;
        info!(signal, "signal received after the drain");
    } else {
        tokio::select! {
            _ = lifecycle.drained() => {}
            signal = signals() => {
                warn!(signal, "second signal during the drain, exiting at once");
                return Ok(Exit::Forced);
            }
        }
    }
    let outcome = lifecycle.drained().await;
    wait_for_final_scrape(&lifecycle, final_scrape_timeout, &mut signals).await;
    Ok(Exit::Drained(outcome))
}

/// Before exiting, lets Prometheus scrape the drain's outcome once: without this the
/// counters of the last seconds of a pod's life are never seen. Skipped when nothing
/// ever scraped `/metrics` (nobody is watching) and cut short by another signal.
async fn wait_for_final_scrape<S>(lifecycle: &Lifecycle, timeout: Duration, signals: &mut S)
where
    S: FnMut() -> std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>,
{
    if timeout.is_zero() || !lifecycle.was_scraped() {
        return;
    }
    let waited = Instant::now();
    tokio::select! {
        _ = lifecycle.outcome_scraped() => {
            info!(seconds = waited.elapsed().as_secs_f64(), "final scrape done, exiting");
        }
        _ = tokio::time::sleep(timeout) => {
            info!(?timeout, "no scrape after the drain within the final scrape timeout, exiting");
        }
        signal = signals() => {
            info!(signal, "signal while waiting for the final scrape, exiting");
        }
    }
}

/// The drain sequence: wait for a trigger, keep accepting for the shutdown delay,
/// close the listener, wait for in-flight requests.
async fn drain(listener: TcpListener, proxy: Arc<proxy::Proxy>, config: Config, metrics: Metrics) {
    let lifecycle = proxy.lifecycle.clone();
    let serving = tokio::spawn(server::serve(listener, proxy));
    let cause = lifecycle.drain_triggered().await;
    let started = Instant::now();
    info!(cause, shutdown_delay = ?config.shutdown_delay, drain_timeout = ?config.drain_timeout, "drain started");
    lifecycle.advance(Phase::ShutdownDelay);
    tokio::time::sleep(config.shutdown_delay).await;
    lifecycle.advance(Phase::Draining);
    let outcome = serving.await.unwrap_or(DrainOutcome::Drained);
    let seconds = started.elapsed().as_secs_f64();
    metrics.record_drain(outcome, seconds);
    match outcome {
        DrainOutcome::Drained => info!(seconds, "drain finished: every request completed"),
        DrainOutcome::TimedOut { cut } => {
            warn!(
                seconds,
                requests_cut = cut,
                "drain finished: requests cut at the drain timeout"
            )
        }
    }
    lifecycle.finish_drain(outcome);
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
