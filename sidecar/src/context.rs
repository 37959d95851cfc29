//! What every connection and request of the serving port shares: one value per
//! sidecar, built in `run` and handed down (the linkerd2-proxy way), so no module
//! reaches for globals and the connection and proxy modules need not know each other.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// The serving port's shared context.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: Metrics,
    pub(crate) upstream: Arc<Upstream>,
    /// Connection and tunnel tasks, awaited by the drain.
    pub(crate) tasks: TaskTracker,
    /// Cancelled at the drain timeout: everything still open is cut.
    pub(crate) cut: CancellationToken,
    /// Changes each time the app sends GOAWAY (relayed to HTTP/2 clients).
    pub(crate) app_goaways: watch::Receiver<u64>,
}

impl Context {
    pub(crate) fn new(config: Config, lifecycle: Lifecycle, metrics: Metrics) -> Self {
        let upstream = Upstream::new(
            config.upstream,
            config.upstream_connect_timeout,
            config.upstream_idle_timeout,
            metrics.clone(),
        );
        Self {
            app_goaways: upstream.app_goaways(),
            upstream: Arc::new(upstream),
            config,
            lifecycle,
            metrics,
            tasks: TaskTracker::new(),
            cut: CancellationToken::new(),
        }
    }
}
