//! How late an ingress learns about endpoint changes, modelled on ingress-nginx: the
//! controller applies changes at most once per `sync_interval` (its rate limit 0.3/s,
//! burst 1), and the workers pick the synced set up every `poll_interval`
//! (`BACKENDS_SYNC_INTERVAL`, 1 s). The one model both ingresses follow.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::endpoints::Endpoint;

/// The lag, already scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lag {
    pub(crate) sync_interval: Duration,
    pub(crate) poll_interval: Duration,
}

impl Lag {
    /// The longest a change takes to reach the workers.
    pub(crate) fn worst(&self) -> Duration {
        self.sync_interval + self.poll_interval
    }

    /// Follows `endpoints` with the lag: the returned view is what the workers see.
    /// Its tasks end once the endpoints' sender and the view's receivers are gone.
    pub(crate) fn follow(
        self,
        endpoints: watch::Receiver<Vec<Endpoint>>,
    ) -> watch::Receiver<Vec<Endpoint>> {
        let initial = endpoints.borrow().clone();
        let (synced_tx, synced_rx) = watch::channel(initial.clone());
        let (view_tx, view_rx) = watch::channel(initial);
        tokio::spawn(sync(endpoints, synced_tx, self.sync_interval));
        tokio::spawn(poll(synced_rx, view_tx, self.poll_interval));
        view_rx
    }
}

/// The controller: applies endpoint changes at most once per `interval` (token
/// bucket, burst 1).
async fn sync(
    mut endpoints: watch::Receiver<Vec<Endpoint>>,
    synced: watch::Sender<Vec<Endpoint>>,
    interval: Duration,
) {
    let mut last_sync: Option<Instant> = None;
    while endpoints.changed().await.is_ok() {
        if let Some(last) = last_sync {
            tokio::time::sleep_until(last + interval).await;
        }
        let latest = endpoints.borrow_and_update().clone();
        synced.send_replace(latest);
        last_sync = Some(Instant::now());
    }
}

/// The workers: pick up the synced endpoints every `interval`.
async fn poll(
    synced: watch::Receiver<Vec<Endpoint>>,
    view: watch::Sender<Vec<Endpoint>>,
    interval: Duration,
) {
    while !view.is_closed() {
        tokio::time::sleep(interval).await;
        let latest = synced.borrow().clone();
        view.send_if_modified(|current| {
            let changed = *current != latest;
            *current = latest;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(pod: usize) -> Endpoint {
        Endpoint {
            pod,
            addr: ([127, 0, 0, 1], 8000).into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_arrive_after_the_poll_and_at_most_once_per_sync_interval() {
        let (tx, rx) = watch::channel(Vec::new());
        let lag = Lag {
            sync_interval: Duration::from_secs(3),
            poll_interval: Duration::from_secs(1),
        };
        let mut view = lag.follow(rx);
        let start = Instant::now();
        tx.send_replace(vec![endpoint(1)]);
        view.changed().await.expect("first change");
        let first = start.elapsed();
        assert!(
            first <= Duration::from_secs(1),
            "synced at once, seen at the next poll: {first:?}"
        );
        tx.send_replace(vec![endpoint(1), endpoint(2)]);
        view.changed().await.expect("second change");
        let second = start.elapsed();
        assert!(
            second >= Duration::from_secs(3) && second <= Duration::from_secs(4),
            "held back by the sync interval, then the poll: {second:?}"
        );
        assert_eq!(view.borrow().len(), 2);
        assert_eq!(lag.worst(), Duration::from_secs(4));
    }
}
