//! Everything that happens in a scenario, on one clock: pod lifecycle events from the
//! kubelets, endpoint changes from the controller, ingress view changes. The recorder
//! is shared by every task; queries run on a slice of events, so the controllers and
//! the attribution can be tested on synthetic timelines.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Something that happened to a pod, for the timeline and for attribution.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The kubelet created the pod.
    Created,
    /// The app answers requests from now on (its startup delay has passed).
    AppServing,
    /// Every container passes its readiness probe.
    Ready,
    /// A container stopped passing its readiness probe.
    NotReady,
    /// The pod was deleted: termination starts.
    Deleted,
    /// A container's preStop hook returned.
    PreStopDone(String),
    /// A container was sent SIGTERM.
    Sigterm(String),
    /// A container was killed at the end of the grace period.
    Sigkill(String),
    /// A container's process exited.
    Exited(String),
    /// The EndpointSlice changed (pod 0: not about one pod); the ready pods.
    Endpoints(Vec<usize>),
    /// The ingress workers picked up a new endpoint set (pod 0).
    IngressView(Vec<usize>),
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Since the scenario started.
    pub at: Duration,
    /// The pod it is about (0: the cluster).
    pub pod: usize,
    /// What happened.
    pub kind: EventKind,
}

/// When `pod` first had an event matching `what`.
pub(crate) fn first(
    events: &[Event],
    pod: usize,
    what: impl Fn(&EventKind) -> bool,
) -> Option<Duration> {
    events.iter().find(matching(pod, &what)).map(|e| e.at)
}

/// When `pod` last had an event matching `what`.
pub(crate) fn last(
    events: &[Event],
    pod: usize,
    what: impl Fn(&EventKind) -> bool,
) -> Option<Duration> {
    events.iter().rev().find(matching(pod, &what)).map(|e| e.at)
}

fn matching(pod: usize, what: &impl Fn(&EventKind) -> bool) -> impl Fn(&&Event) -> bool {
    move |e| e.pod == pod && what(&e.kind)
}

/// The recorder of a running scenario.
#[derive(Debug)]
pub(crate) struct Timeline {
    pub(crate) start: Instant,
    /// The same moment on the wall clock (nginx logs wall-clock times).
    pub(crate) epoch: SystemTime,
    events: Mutex<Vec<Event>>,
}

impl Timeline {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            epoch: SystemTime::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// The scenario's clock.
    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub(crate) fn record(&self, pod: usize, kind: EventKind) {
        let at = self.now();
        if let Ok(mut events) = self.events.lock() {
            events.push(Event { at, pod, kind });
        }
    }

    /// Every event so far, in order.
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// When `pod` first had an event matching `what`.
    pub(crate) fn first(&self, pod: usize, what: impl Fn(&EventKind) -> bool) -> Option<Duration> {
        first(&self.events.lock().ok()?, pod, what)
    }

    /// When `pod` last had an event matching `what`.
    pub(crate) fn last(&self, pod: usize, what: impl Fn(&EventKind) -> bool) -> Option<Duration> {
        last(&self.events.lock().ok()?, pod, what)
    }
}
