//! The EndpointSlice controller's rule and its publisher: a pod receives traffic while
//! it is Ready and not being deleted. What is published is the truth the ingress then
//! follows, late (see `ingress::lag`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::deployment::PodView;
use crate::timeline::{EventKind, Timeline};

/// A pod address the Service routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) pod: usize,
    pub(crate) addr: SocketAddr,
}

/// The ready endpoints of `pods` on `port`.
pub(crate) fn ready(pods: &[PodView], port: u16) -> Vec<Endpoint> {
    pods.iter()
        .filter(|p| p.ready_since.is_some() && !p.deleted)
        .map(|p| Endpoint {
            pod: p.id,
            addr: (p.ip, port).into(),
        })
        .collect()
}

/// Publishes the endpoint set, recording each change on the timeline.
#[derive(Debug)]
pub(crate) struct Publisher {
    tx: watch::Sender<Vec<Endpoint>>,
    timeline: Arc<Timeline>,
}

impl Publisher {
    pub(crate) fn new(timeline: Arc<Timeline>) -> Self {
        Self {
            tx: watch::channel(Vec::new()).0,
            timeline,
        }
    }

    /// What the ingress follows.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Vec<Endpoint>> {
        self.tx.subscribe()
    }

    /// Publishes `endpoints` if they differ from the current set.
    pub(crate) fn publish(&self, endpoints: Vec<Endpoint>) {
        self.tx.send_if_modified(|current| {
            if *current == endpoints {
                return false;
            }
            let pods = endpoints.iter().map(|e| e.pod).collect();
            self.timeline.record(0, EventKind::Endpoints(pods));
            *current = endpoints;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_ready_pods_that_are_not_being_deleted_get_traffic() {
        let pod = |id: u8, ready: bool, deleted: bool| PodView {
            id: usize::from(id),
            ip: Ipv4Addr::new(127, 0, 0, id),
            new: false,
            ready_since: ready.then_some(Duration::ZERO),
            deleted,
            gone: false,
        };
        let pods = [
            pod(1, true, false),
            pod(2, false, false),
            pod(3, true, true),
        ];
        let published = ready(&pods, 8080);
        assert_eq!(
            published,
            [Endpoint {
                pod: 1,
                addr: "127.0.0.1:8080".parse().expect("addr")
            }]
        );
    }

    #[test]
    fn a_change_is_published_and_recorded_once() {
        let timeline = Arc::new(Timeline::new());
        let publisher = Publisher::new(timeline.clone());
        let mut rx = publisher.subscribe();
        let one = vec![Endpoint {
            pod: 1,
            addr: "127.0.0.1:1".parse().expect("addr"),
        }];
        publisher.publish(one.clone());
        publisher.publish(one.clone());
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(*rx.borrow_and_update(), one);
        let changes = timeline
            .events()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Endpoints(_)));
        assert_eq!(changes.count(), 1);
    }
}
