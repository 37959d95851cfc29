//! What every connection and request of a serving port shares: one value per
//! listener, built in `run` and handed down (the linkerd2-proxy way), so no module
//! reaches for globals and the connection and proxy modules need not know each other.
//! The listeners of one sidecar share its lifecycle, metrics and [`Drain`]; each has
//! its own app port and pool to it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Listener};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// What the drain of every listener shares: the tasks it waits for, and the signal
/// that cuts them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drain {
    /// Connection and tunnel tasks of every listener, awaited by the drain.
    pub(crate) tasks: TaskTracker,
    /// Cancelled at the drain timeout: everything still open is cut.
    pub(crate) cut: CancellationToken,
    /// TCP-mode connections and HTTP upgrade tunnels open (each is one thing cut at
    /// the drain timeout).
    pub(crate) tunnels: Arc<AtomicU64>,
}

/// One serving port's shared context.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    /// This serving port and its app port.
    pub(crate) listener: Listener,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: Metrics,
    pub(crate) upstream: Arc<Upstream>,
    /// Connection and tunnel tasks, awaited by the drain (shared by every listener).
    pub(crate) tasks: TaskTracker,
    /// Cancelled at the drain timeout: everything still open is cut.
    pub(crate) cut: CancellationToken,
    /// TCP-mode connections and HTTP upgrade tunnels open, across listeners.
    pub(crate) tunnels: Arc<AtomicU64>,
    /// Changes each time the app sends GOAWAY (relayed to HTTP/2 clients).
    pub(crate) app_goaways: watch::Receiver<u64>,
}

impl Context {
    pub(crate) fn new(
        config: Config,
        listener: Listener,
        lifecycle: Lifecycle,
        metrics: Metrics,
        drain: &Drain,
    ) -> Self {
        let settings = crate::upstream::Settings {
            connect_timeout: config.upstream_connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
            max_connections: config.upstream_max_connections,
        };
        let upstream = Upstream::new(listener.upstream, settings, metrics.clone());
        Self {
            app_goaways: upstream.app_goaways(),
            upstream: Arc::new(upstream),
            config,
            listener,
            lifecycle,
            metrics,
            tasks: drain.tasks.clone(),
            cut: drain.cut.clone(),
            tunnels: drain.tunnels.clone(),
        }
    }
}

/// The app did not pass its check within the startup hold (counted).
#[derive(Debug)]
pub(crate) struct StartupHoldExpired;

impl Context {
    /// Holds a request or TCP connection that arrived before the app passed its
    /// check, up to the startup hold. `Some(deadline)` when it was held: connects
    /// may be retried until then; `None` when the app was already serving.
    pub(crate) async fn hold_for_app(&self) -> Result<Option<Instant>, StartupHoldExpired> {
        if !self.lifecycle.phase().holds_requests() {
            return Ok(None);
        }
        // Boxed: only requests that arrive early wait, and every request carries
        // this future.
        Box::pin(self.hold()).await.map(Some)
    }

    async fn hold(&self) -> Result<Instant, StartupHoldExpired> {
        self.metrics.startup_held_requests.inc();
        let deadline = Instant::now() + self.config.startup_hold;
        if tokio::time::timeout_at(deadline, self.lifecycle.app_started())
            .await
            .is_err()
        {
            self.metrics.startup_hold_expired.inc();
            return Err(StartupHoldExpired);
        }
        Ok(deadline)
    }
}
