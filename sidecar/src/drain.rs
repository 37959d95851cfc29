//! The drain, as two readable sequences.
//!
//! [`drive`] moves the phases: wait for the first trigger (SIGTERM, SIGINT or
//! `/drain`), keep accepting for the shutdown delay while clients are told to go
//! away, close the listener, wait for what is in flight up to the drain timeout, and
//! record the outcome.
//!
//! [`exit`] decides when the process ends:
//! 1. A signal starts the drain (or joins a `/drain` one); a second signal during the
//!    drain ends the process at once ([`Exit::Forced`]).
//! 2. A drain started by `/drain` that finishes first keeps the process up (the admin
//!    port answers, `/ready` is 503) until a signal: in a native-sidecar pod the
//!    kubelet sends it once the app has exited.
//! 3. After the drain, every `/drain` caller gets its answer first (a classic
//!    sidecar receives SIGTERM while the app's preStop waits on `/drain`).
//! 4. After the drain, one more scrape of `/metrics` is waited for, so that the
//!    outcome reaches Prometheus (bounded by the final scrape timeout and by what the
//!    pod's grace period has left, skipped when nobody scrapes, cut short by a
//!    signal).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::context::{self, Context};
use crate::lifecycle::{DrainOutcome, Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::server;
use crate::signal::Signals;

/// How the process should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The drain finished (after a signal).
    Drained(DrainOutcome),
    /// A second signal arrived during the drain: exit at once.
    Forced,
}

/// Serves the listeners and drains them once triggered; the outcome goes to the lifecycle.
pub(crate) async fn drive(
    listeners: Vec<(TcpListener, Arc<Context>)>,
    drain: context::Drain,
    lifecycle: Lifecycle,
    config: Config,
    metrics: Metrics,
) {
    let serving = tokio::spawn(server::serve(listeners, drain));
    let cause = lifecycle.drain_triggered().await;
    let started = Instant::now();
    info!(cause, shutdown_delay = ?config.shutdown_delay, drain_timeout = ?config.drain_timeout, "drain started");
    lifecycle.advance(Phase::ShutdownDelay);
    tokio::time::sleep(config.shutdown_delay).await;
    lifecycle.advance(Phase::Draining);
    let outcome = outcome(serving.await);
    let seconds = started.elapsed().as_secs_f64();
    metrics.record_drain(outcome, seconds);
    match outcome {
        DrainOutcome::Drained => info!(seconds, "drain finished: every request completed"),
        DrainOutcome::TimedOut { cut } => warn!(
            seconds,
            requests_cut = cut,
            "drain finished: requests cut at the drain timeout"
        ),
        DrainOutcome::Failed => {}
    }
    lifecycle.finish_drain(outcome);
}

/// The drain's outcome from the serving task's end: a task that panicked or was
/// cancelled did not drain, whatever was in flight.
fn outcome(joined: Result<DrainOutcome, tokio::task::JoinError>) -> DrainOutcome {
    joined.unwrap_or_else(|failure| {
        error!(error = %failure, "the serving task failed: the drain's outcome is unknown");
        DrainOutcome::Failed
    })
}

/// The longest the exit waits for `/drain` answers to be written out.
const DRAIN_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// What the grace period must keep after the final-scrape wait: the kubelet's own
/// latency between the pod's deletion and the drain's trigger, and the exit.
const GRACE_MARGIN: Duration = Duration::from_secs(2);

/// How long the sidecar may wait, after the drain, for a scrape that carries its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinalScrape {
    /// `--final-scrape-timeout`: 0 never waits.
    pub timeout: Duration,
    /// `--grace-period`: the pod's `terminationGracePeriodSeconds`, counted from the
    /// drain's trigger; the wait ends [`GRACE_MARGIN`] before it runs out.
    pub grace_period: Option<Duration>,
}

impl FinalScrape {
    /// Never waits.
    pub const NEVER: Self = Self {
        timeout: Duration::ZERO,
        grace_period: None,
    };

    /// The wait allowed at `now` for a drain triggered at `triggered`.
    fn wait(&self, triggered: Option<Instant>, now: Instant) -> Duration {
        match (self.grace_period, triggered) {
            (Some(grace), Some(at)) => {
                let left = (at + grace).saturating_duration_since(now);
                self.timeout.min(left.saturating_sub(GRACE_MARGIN))
            }
            _ => self.timeout,
        }
    }
}

/// The exit sequence (see the module doc); returns once the process should exit.
pub async fn exit(
    lifecycle: &Lifecycle,
    signals: &mut impl Signals,
    final_scrape: FinalScrape,
) -> Exit {
    let signalled = tokio::select! {
        signal = signals.next() => {
            info!(signal = signal.as_str(), "signal received");
            lifecycle.trigger_drain(signal.as_str());
            true
        }
        _ = lifecycle.drained() => false,
    };
    if signalled {
        tokio::select! {
            _ = lifecycle.drained() => {}
            signal = signals.next() => {
                warn!(signal = signal.as_str(), "second signal during the drain, exiting at once");
                return Exit::Forced;
            }
        }
    } else {
        let signal = signals.next().await;
        info!(signal = signal.as_str(), "signal received after the drain");
    }
    let outcome = lifecycle.drained().await;
    // A `/drain` caller (a classic sidecar's preStop) gets its answer before we go.
    let answered = tokio::time::timeout(DRAIN_ANSWER_WAIT, lifecycle.drain_answers_written());
    if answered.await.is_err() {
        warn!(
            ?DRAIN_ANSWER_WAIT,
            "a /drain answer was not written out in time, exiting"
        );
    }
    let wait = final_scrape.wait(lifecycle.drain_triggered_at(), Instant::now());
    wait_for_final_scrape(lifecycle, wait, signals).await;
    Exit::Drained(outcome)
}

/// Before exiting, lets Prometheus scrape the drain's outcome once: without this the
/// counters of the last seconds of a pod's life are never seen. Skipped when nothing
/// ever scraped `/metrics` (nobody is watching) and cut short by another signal.
async fn wait_for_final_scrape(
    lifecycle: &Lifecycle,
    timeout: Duration,
    signals: &mut impl Signals,
) {
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
        signal = signals.next() => {
            info!(signal = signal.as_str(), "signal while waiting for the final scrape, exiting");
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::signal::Signal;

    const NO_SCRAPE: FinalScrape = FinalScrape::NEVER;
    const SCRAPE_30S: FinalScrape = FinalScrape {
        timeout: Duration::from_secs(30),
        grace_period: None,
    };

    #[tokio::test]
    async fn a_signal_starts_the_drain_and_the_drained_outcome_ends_it() {
        let lifecycle = Lifecycle::new();
        let (tx, mut signals) = mpsc::unbounded_channel();
        let _ = tx.send(Signal::Terminate);
        let drained = lifecycle.clone();
        tokio::spawn(async move {
            assert_eq!(drained.drain_triggered().await, "SIGTERM");
            drained.finish_drain(DrainOutcome::Drained);
        });
        let exit = exit(&lifecycle, &mut signals, NO_SCRAPE).await;
        assert_eq!(exit, Exit::Drained(DrainOutcome::Drained));
    }

    #[tokio::test]
    async fn a_panicked_serving_task_is_a_failed_drain_not_a_clean_one() {
        let panicked = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("the serving task fails");
            }
            DrainOutcome::Drained
        })
        .await;
        assert_eq!(outcome(panicked), DrainOutcome::Failed);
        let served = tokio::spawn(async { DrainOutcome::TimedOut { cut: 1 } }).await;
        assert_eq!(outcome(served), DrainOutcome::TimedOut { cut: 1 });
    }

    #[tokio::test]
    async fn a_second_signal_during_the_drain_forces_the_exit() {
        let lifecycle = Lifecycle::new();
        let (tx, mut signals) = mpsc::unbounded_channel();
        let _ = tx.send(Signal::Terminate);
        let _ = tx.send(Signal::Interrupt);
        let exit = exit(&lifecycle, &mut signals, NO_SCRAPE).await;
        assert_eq!(exit, Exit::Forced, "the drain never finishes here");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_drain_by_the_admin_port_the_process_stays_up_until_a_signal() {
        let lifecycle = Lifecycle::new();
        lifecycle.trigger_drain("/drain");
        lifecycle.finish_drain(DrainOutcome::TimedOut { cut: 2 });
        let (tx, mut signals) = mpsc::unbounded_channel();
        let waiting = exit(&lifecycle, &mut signals, NO_SCRAPE);
        tokio::pin!(waiting);
        let early = tokio::time::timeout(Duration::from_secs(60), &mut waiting).await;
        assert!(early.is_err(), "still up a minute after the drain");
        let _ = tx.send(Signal::Terminate);
        assert_eq!(
            waiting.await,
            Exit::Drained(DrainOutcome::TimedOut { cut: 2 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scraped_sidecar_waits_for_the_scrape_that_carries_the_outcome() {
        let lifecycle = Lifecycle::new();
        lifecycle.record_scrape(false);
        let (tx, mut signals) = mpsc::unbounded_channel();
        let _ = tx.send(Signal::Terminate);
        let drained = lifecycle.clone();
        tokio::spawn(async move {
            drained.drain_triggered().await;
            drained.finish_drain(DrainOutcome::Drained);
            tokio::time::sleep(Duration::from_secs(5)).await;
            drained.record_scrape(true);
        });
        let started = Instant::now();
        let exit = exit(&lifecycle, &mut signals, SCRAPE_30S).await;
        assert_eq!(exit, Exit::Drained(DrainOutcome::Drained));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(30),
            "waited {waited:?}"
        );
    }

    #[test]
    fn the_final_scrape_wait_ends_before_the_grace_period_does() {
        let triggered = Instant::now();
        let scrape = FinalScrape {
            timeout: Duration::from_secs(30),
            grace_period: Some(Duration::from_secs(55)),
        };
        let after = |secs| scrape.wait(Some(triggered), triggered + Duration::from_secs(secs));
        assert_eq!(after(10), Duration::from_secs(30), "plenty left");
        assert_eq!(after(40), Duration::from_secs(13), "55 - 40 - 2");
        assert_eq!(after(54), Duration::ZERO, "nothing left");
        assert_eq!(
            SCRAPE_30S.wait(Some(triggered), triggered),
            Duration::from_secs(30)
        );
    }
}
