//! The sidecar's phases, what each one means, and the shared state that moves
//! through them.
//!
//! `Starting` → `Serving` when the app first passes its check; any drain trigger
//! (SIGTERM, SIGINT, `/drain`) moves to `ShutdownDelay` (still accepting, clients told
//! to go away), then `Draining` (listener closed, in-flight requests finishing), then
//! `Drained`. Triggers are idempotent: every caller waits for the same outcome.
//! What each phase means for the listener, the connections and the requests is
//! decided in one place, the `impl Phase` below; the sequence that moves through the
//! phases is `crate::drain`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Where the sidecar is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The app has not passed its check yet; requests are held.
    Starting,
    /// Normal operation.
    Serving,
    /// Drain started: still accepting, `Connection: close` and GOAWAY on everything.
    ShutdownDelay,
    /// The listener is closed; in-flight requests are finishing.
    Draining,
    /// Nothing is left in flight (or it was cut at the drain timeout).
    Drained,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [
        Phase::Starting,
        Phase::Serving,
        Phase::ShutdownDelay,
        Phase::Draining,
        Phase::Drained,
    ];

    /// The metric label / log name of the phase.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::ShutdownDelay => "shutdown_delay",
            Phase::Draining => "draining",
            Phase::Drained => "drained",
        }
    }

    /// Whether the drain has started.
    pub fn is_draining(self) -> bool {
        self >= Phase::ShutdownDelay
    }
}

/// What each phase means, in one place:
///
/// | phase | held | accepting | HTTP/1 `Connection: close` | HTTP/2 GOAWAY | graceful shutdown | app check |
/// |---|---|---|---|---|---|---|
/// | `Starting` | yes | yes | no | no | no | fast |
/// | `Serving` | no | yes | no | no | no | period |
/// | `ShutdownDelay` | no | yes | yes | yes (new connections: after their first request) | HTTP/2 only | period |
/// | `Draining` | no | no | yes | yes | yes | period |
/// | `Drained` | no | no | yes | yes | yes | period |
///
/// `/ready` is 200 while the app passes its check, until the listener closes; with
/// `--ready-during-shutdown-delay=false`, only until the drain starts.
impl Phase {
    /// Requests wait for the app to pass its check (up to the startup hold).
    pub fn holds_requests(self) -> bool {
        self == Phase::Starting
    }

    /// The serving listener accepts connections.
    pub fn accepts(self) -> bool {
        self < Phase::Draining
    }

    /// Every HTTP/1 response says `Connection: close`, so pooled clients retire the
    /// connection after it. Idle keep-alive connections are left open meanwhile:
    /// closing them would race a client writing into them.
    pub fn h1_connection_close(self) -> bool {
        self.is_draining()
    }

    /// HTTP/2 connections are sent GOAWAY (in-flight streams finish).
    pub fn h2_goaway(self) -> bool {
        self.is_draining()
    }

    /// A connection of this protocol is shut down gracefully: idle ones close, busy
    /// ones after their in-flight requests. HTTP/2 at once (that is its GOAWAY);
    /// HTTP/1 only once the listener has closed.
    pub fn shuts_down(self, h2: bool) -> bool {
        if h2 {
            self.h2_goaway()
        } else {
            !self.accepts()
        }
    }

    /// An HTTP/2 connection accepted in this phase is told GOAWAY once its first
    /// request has arrived, not at once. A GOAWAY that races a client's connection
    /// set-up can strand the client's calls on a connection it never uses (seen with
    /// grpc-core: calls hung until their deadline); after a first request the
    /// client is surely set up, and the GOAWAY it then gets is an ordinary one.
    pub fn h2_goaway_after_first_request(self) -> bool {
        self == Phase::ShutdownDelay
    }

    /// The app is checked every 100 ms instead of every period, so held requests
    /// wait little.
    pub fn fast_app_check(self) -> bool {
        self == Phase::Starting
    }

    /// A scrape of `/metrics` now carries the drain's outcome (it is recorded before
    /// the phase becomes `Drained`).
    pub fn metrics_carry_outcome(self) -> bool {
        self == Phase::Drained
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight request finished.
    Drained,
    /// The drain timeout passed; this many requests were cut.
    TimedOut {
        /// Requests still in flight at the deadline.
        cut: u64,
    },
    /// The serving task itself failed (a bug): what was in flight is unknown.
    Failed,
}

impl DrainOutcome {
    /// The metric label of the outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainOutcome::Drained => "drained",
            DrainOutcome::TimedOut { .. } => "timed_out",
            DrainOutcome::Failed => "failed",
        }
    }
}

/// Shared handle on the phase; cheap to clone into every connection.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    phase: watch::Sender<Phase>,
    app_ready: watch::Sender<bool>,
    /// The first drain trigger's cause; later triggers join that drain.
    trigger: watch::Sender<Option<&'static str>>,
    /// When the first drain trigger came (the pod's deletion, near enough).
    triggered_at: std::sync::OnceLock<tokio::time::Instant>,
    outcome: watch::Sender<Option<DrainOutcome>>,
    /// `/metrics` has been scraped at least once: somebody is watching.
    scraped: AtomicBool,
    /// A scrape has seen the drain's outcome.
    outcome_scraped: watch::Sender<bool>,
    /// `/drain` requests whose answer has not been written out yet.
    drain_answers: watch::Sender<usize>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A lifecycle in `Starting`.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                phase: watch::channel(Phase::Starting).0,
                app_ready: watch::channel(false).0,
                trigger: watch::channel(None).0,
                triggered_at: std::sync::OnceLock::new(),
                outcome: watch::channel(None).0,
                scraped: AtomicBool::new(false),
                outcome_scraped: watch::channel(false).0,
                drain_answers: watch::channel(0).0,
            }),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// A receiver that sees every phase change.
    pub fn watch_phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// Moves to `next` if it is later than the current phase; returns whether it moved.
    pub fn advance(&self, next: Phase) -> bool {
        self.inner.phase.send_if_modified(|phase| {
            if next > *phase {
                *phase = next;
                true
            } else {
                false
            }
        })
    }

    /// Records the app check's verdict; the first pass ends `Starting`.
    pub fn set_app_ready(&self, ready: bool) {
        self.inner.app_ready.send_if_modified(|current| {
            let changed = *current != ready;
            *current = ready;
            changed
        });
        if ready {
            self.advance(Phase::Serving);
        }
    }

    /// Whether the app currently passes its check.
    pub fn app_ready(&self) -> bool {
        *self.inner.app_ready.borrow()
    }

    /// Whether `/ready` says the pod can serve: the app passes its check and the
    /// listener accepts; during the shutdown delay only if `during_shutdown_delay`.
    ///
    /// Staying ready through the delay is what Kubernetes routing wants: an
    /// EndpointSlice marks a terminating pod `ready: false` whatever its readiness,
    /// so ingress controllers and kube-proxy stop choosing it either way, while
    /// `serving` keeps following readiness, and kube-proxy falls back to serving
    /// terminating endpoints when no ready one is left. Failing readiness at once
    /// only gives up that fallback; load balancers that probe pods themselves
    /// instead of reading EndpointSlices need it, hence the choice.
    pub fn ready(&self, during_shutdown_delay: bool) -> bool {
        self.app_ready()
            && match self.phase() {
                Phase::Starting | Phase::Serving => true,
                Phase::ShutdownDelay => during_shutdown_delay,
                Phase::Draining | Phase::Drained => false,
            }
    }

    /// Waits until the app has passed its check at least once (the phase left `Starting`).
    pub async fn app_started(&self) {
        let mut phase = self.watch_phase();
        let _ = phase.wait_for(|p| !p.holds_requests()).await;
    }

    /// Starts the drain (idempotent); `cause` names the trigger for logs.
    pub fn trigger_drain(&self, cause: &'static str) -> bool {
        self.inner.trigger.send_if_modified(|trigger| {
            let first = trigger.is_none();
            if first {
                *trigger = Some(cause);
                let _ = self.inner.triggered_at.set(tokio::time::Instant::now());
            }
            first
        })
    }

    /// When the drain was triggered, if it was.
    pub fn drain_triggered_at(&self) -> Option<tokio::time::Instant> {
        self.inner.triggered_at.get().copied()
    }

    /// Waits for the first drain trigger and returns its cause.
    pub async fn drain_triggered(&self) -> &'static str {
        let mut trigger = self.inner.trigger.subscribe();
        match trigger.wait_for(Option::is_some).await {
            Ok(cause) => cause.unwrap_or("unknown"),
            // The sender lives in `self`, so it cannot be dropped while we wait.
            Err(_) => "unknown",
        }
    }

    /// Records the end of the drain.
    pub fn finish_drain(&self, outcome: DrainOutcome) {
        self.inner.outcome.send_replace(Some(outcome));
        self.advance(Phase::Drained);
    }

    /// Waits until the drain has finished.
    pub async fn drained(&self) -> DrainOutcome {
        let mut outcome = self.inner.outcome.subscribe();
        match outcome.wait_for(Option::is_some).await {
            Ok(o) => o.unwrap_or(DrainOutcome::Drained),
            Err(_) => DrainOutcome::Drained,
        }
    }
}

impl Lifecycle {
    /// Records a scrape of `/metrics`; `delivered_outcome` once a scrape that began
    /// after the drain (so it carries the outcome) has been written out.
    pub fn record_scrape(&self, delivered_outcome: bool) {
        self.inner.scraped.store(true, Ordering::Release);
        if delivered_outcome {
            self.inner.outcome_scraped.send_replace(true);
        }
    }

    /// A `/drain` request is waiting for the drain (its answer is owed).
    pub fn drain_answer_owed(&self) {
        self.inner.drain_answers.send_modify(|n| *n += 1);
    }

    /// A `/drain` answer has been written out (or its client went away).
    pub fn drain_answer_written(&self) {
        self.inner
            .drain_answers
            .send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Waits until every `/drain` request has had its answer: a classic sidecar gets
    /// SIGTERM while the app's preStop waits on `/drain`, and exiting first would
    /// fail that hook.
    pub async fn drain_answers_written(&self) {
        let mut owed = self.inner.drain_answers.subscribe();
        let _ = owed.wait_for(|n| *n == 0).await;
    }

    /// Whether `/metrics` has ever been scraped.
    pub fn was_scraped(&self) -> bool {
        self.inner.scraped.load(Ordering::Acquire)
    }

    /// Waits until a scrape has carried the drain's outcome.
    pub async fn outcome_scraped(&self) {
        let mut scraped = self.inner.outcome_scraped.subscribe();
        let _ = scraped.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        let lifecycle = Lifecycle::new();
        assert!(!lifecycle.ready(true));
        lifecycle.set_app_ready(true);
        assert_eq!(lifecycle.phase(), Phase::Serving);
        assert!(lifecycle.ready(false));
        assert!(lifecycle.advance(Phase::ShutdownDelay));
        assert!(lifecycle.ready(true), "ready through the delay by default");
        assert!(!lifecycle.ready(false), "or not ready once draining");
        assert!(!lifecycle.advance(Phase::Serving));
        lifecycle.set_app_ready(true);
        assert_eq!(lifecycle.phase(), Phase::ShutdownDelay);
        assert!(lifecycle.advance(Phase::Draining));
        assert!(!lifecycle.ready(true), "never once the listener closed");
    }

    #[test]
    fn drain_trigger_is_idempotent() {
        let lifecycle = Lifecycle::new();
        assert!(lifecycle.trigger_drain("SIGTERM"));
        assert!(!lifecycle.trigger_drain("/drain"));
    }

    #[tokio::test]
    async fn the_first_trigger_names_the_drain() {
        let lifecycle = Lifecycle::new();
        lifecycle.trigger_drain("/drain");
        lifecycle.trigger_drain("SIGTERM");
        assert_eq!(lifecycle.drain_triggered().await, "/drain");
    }

    #[test]
    fn what_each_phase_means() {
        use Phase::*;
        let table = |p: Phase| {
            (
                p.holds_requests(),
                p.accepts(),
                p.h1_connection_close(),
                p.h2_goaway(),
                p.shuts_down(false),
                p.shuts_down(true),
            )
        };
        assert_eq!(table(Starting), (true, true, false, false, false, false));
        assert_eq!(table(Serving), (false, true, false, false, false, false));
        assert_eq!(table(ShutdownDelay), (false, true, true, true, false, true));
        assert_eq!(table(Draining), (false, false, true, true, true, true));
        assert_eq!(table(Drained), (false, false, true, true, true, true));
        assert!(Starting.fast_app_check() && !Serving.fast_app_check());
        assert!(Drained.metrics_carry_outcome() && !Draining.metrics_carry_outcome());
    }
}
