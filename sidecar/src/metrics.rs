//! The sidecar's Prometheus metrics, registered on a registry the binary owns.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::lifecycle::{DrainOutcome, Phase};

/// Request duration buckets, seconds: sub-millisecond proxying up to long requests.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Drain duration buckets, seconds.
const DRAIN_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0,
];

/// Retry reason: nothing of the request had been written.
pub const RETRY_NOT_SENT: &str = "not_sent";
/// Retry reason: a bodiless idempotent request failed on a reused connection.
pub const RETRY_IDEMPOTENT: &str = "idempotent";
/// The `reason` label values of `lameduck_upstream_retries_total`.
pub const RETRY_REASONS: [&str; 2] = [RETRY_NOT_SENT, RETRY_IDEMPOTENT];

/// Where a client cancelled a request: before the response head was sent.
pub const CANCELLED_BEFORE_RESPONSE: &str = "before_response";
/// Where a client cancelled a request: while its response body was being sent.
pub const CANCELLED_DURING_RESPONSE: &str = "during_response";
/// The `stage` label values of `lameduck_requests_cancelled_total`.
pub const CANCELLED_STAGES: [&str; 2] = [CANCELLED_BEFORE_RESPONSE, CANCELLED_DURING_RESPONSE];

/// How a TCP-mode connection ended: either side closed it.
pub const TCP_CLOSED: &str = "closed";
/// How a TCP-mode connection ended: still open at the drain timeout.
pub const TCP_CUT: &str = "cut";
/// How a TCP-mode connection ended: the app could not be reached for it.
pub const TCP_APP_UNREACHABLE: &str = "app_unreachable";
/// The `outcome` label values of `lameduck_tcp_connections_total`.
pub const TCP_OUTCOMES: [&str; 3] = [TCP_CLOSED, TCP_CUT, TCP_APP_UNREACHABLE];

/// The request series of one phase.
#[derive(Debug)]
struct PhaseSeries {
    /// `lameduck_requests_total` by status class, 2xx to 5xx.
    by_class: [IntCounter; 4],
    /// `lameduck_request_duration_seconds`.
    duration: Histogram,
}

impl PhaseSeries {
    /// The requests counter of `status`'s class; none for 1xx.
    fn answered(&self, status: u16) -> Option<&IntCounter> {
        let class = usize::from(status.min(599) / 100);
        self.by_class.get(class.checked_sub(2)?)
    }
}

/// Every metric the sidecar exports. See docs/metrics.md.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests answered, by status class and the phase they started in.
    pub requests: IntCounterVec,
    /// Request duration (to the end of the response body), by phase.
    pub request_duration: HistogramVec,
    /// `requests` and `request_duration` resolved for the series created up front
    /// (2xx to 5xx, every phase a request starts in but `drained`): a request's
    /// accounting looks up no label.
    series: std::sync::Arc<Vec<(Phase, PhaseSeries)>>,
    /// Requests in flight.
    pub requests_in_flight: IntGauge,
    /// 1 for the current phase, 0 for the others.
    pub phase: IntGaugeVec,
    /// Whether the app passes its check.
    pub app_ready: IntGauge,
    /// Drains, by outcome.
    pub drains: IntCounterVec,
    /// Time from the drain trigger to its end.
    pub drain_duration: Histogram,
    /// Requests that waited for the app to start.
    pub startup_held_requests: IntCounter,
    /// Requests answered 503 because the app did not start within the startup hold.
    pub startup_hold_expired: IntCounter,
    /// Failed connects to the app.
    pub upstream_connect_errors: IntCounter,
    /// Requests sent again on a fresh connection, by reason.
    pub upstream_retries: IntCounterVec,
    /// Requests the client cancelled (closed its connection, reset its stream), by
    /// the phase the request started in and the stage it was cancelled at.
    pub requests_cancelled: IntCounterVec,
    /// Upgraded connections (WebSocket and the like) open now.
    pub tunnels_open: IntGauge,
    /// Upgraded connections still open at the drain timeout, cut.
    pub tunnels_cut: IntCounter,
    /// Requests the sidecar refused without asking the app, by reason.
    pub refusals: IntCounterVec,
    /// HTTP/1.1 connections to the app open now.
    pub upstream_connections_open: IntGauge,
    /// Requests waiting for a connection to the app (the connection limit is reached).
    pub upstream_requests_waiting: IntGauge,
    /// Requests cut at the drain timeout.
    pub requests_cut: IntCounter,
    /// Client connections open.
    pub connections_open: IntGauge,
    /// Idle HTTP/1 client connections parked (holding no HTTP state).
    pub connections_parked: IntGauge,
    /// Client connections closed for sending headers too slowly.
    pub header_read_timeouts: IntCounter,
    /// Client connections closed for reading nothing of a response for too long.
    pub response_send_timeouts: IntCounter,
    /// HTTP/2 connections to the app on which the app sent GOAWAY.
    pub app_goaways: IntCounter,
    /// Client HTTP/2 connections sent GOAWAY because the app sent one.
    pub goaways_relayed: IntCounter,
    /// TCP-mode connections, by the phase they were accepted in and how they ended.
    pub tcp_connections: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "lameduck_requests_total",
                "Requests answered by the sidecar, by status class and the phase the request started in.",
            ),
            &["code_class", "phase"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "lameduck_request_duration_seconds",
                "Time from request head to the end of the response body, by the phase the request started in.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["phase"],
        )?;
        let series = Phase::ALL
            .into_iter()
            .filter(|phase| *phase != Phase::Drained)
            .map(|phase| {
                let by_class = [200, 300, 400, 500].map(|status| {
                    requests.with_label_values(&[code_class(status), phase.as_str()])
                });
                let duration = request_duration.with_label_values(&[phase.as_str()]);
                (phase, PhaseSeries { by_class, duration })
            })
            .collect();
        let metrics = Self {
            requests,
            request_duration,
            series: std::sync::Arc::new(series),
            requests_in_flight: IntGauge::new(
                "lameduck_requests_in_flight",
                "Requests being proxied now.",
            )?,
            phase: IntGaugeVec::new(
                Opts::new(
                    "lameduck_phase",
                    "1 for the sidecar's current phase (starting, serving, shutdown_delay, draining, drained), 0 otherwise.",
                ),
                &["phase"],
            )?,
            app_ready: IntGauge::new(
                "lameduck_app_ready",
                "1 while the app passes its check.",
            )?,
            drains: IntCounterVec::new(
                Opts::new(
                    "lameduck_drains_total",
                    "Completed drains, by outcome (drained, timed_out).",
                ),
                &["outcome"],
            )?,
            drain_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "lameduck_drain_duration_seconds",
                    "Time from the drain trigger to the last in-flight request finishing or being cut.",
                )
                .buckets(DRAIN_BUCKETS.to_vec()),
            )?,
            startup_held_requests: IntCounter::new(
                "lameduck_startup_held_requests_total",
                "Requests that arrived before the app was ready and waited for it.",
            )?,
            startup_hold_expired: IntCounter::new(
                "lameduck_startup_hold_expired_total",
                "Requests answered 503 because the app was not ready within the startup hold.",
            )?,
            upstream_connect_errors: IntCounter::new(
                "lameduck_upstream_connect_errors_total",
                "Failed connection attempts to the app.",
            )?,
            upstream_retries: IntCounterVec::new(
                Opts::new(
                    "lameduck_upstream_retries_total",
                    "Requests sent again to the app on a fresh connection, by reason.",
                ),
                &["reason"],
            )?,
            requests_cancelled: IntCounterVec::new(
                Opts::new(
                    "lameduck_requests_cancelled_total",
                    "Requests the client gave up on (closed its connection or reset its stream), by the phase the request started in and the stage (before_response, during_response).",
                ),
                &["phase", "stage"],
            )?,
            tunnels_open: IntGauge::new(
                "lameduck_tunnels_open",
                "Upgraded HTTP/1.1 connections (WebSocket and the like) relayed byte for byte now.",
            )?,
            tunnels_cut: IntCounter::new(
                "lameduck_tunnels_cut_total",
                "Upgraded connections still open at the drain timeout, and cut.",
            )?,
            refusals: IntCounterVec::new(
                Opts::new(
                    "lameduck_refusals_total",
                    "Requests (max_connections: connections) the sidecar refused itself without asking the app, by reason (host, connect_method, open_files, bad_request_body, request_body_timeout, max_connections).",
                ),
                &["reason"],
            )?,
            upstream_connections_open: IntGauge::new(
                "lameduck_upstream_connections_open",
                "HTTP/1.1 connections to the app open now (at most --upstream-max-connections).",
            )?,
            upstream_requests_waiting: IntGauge::new(
                "lameduck_upstream_requests_waiting",
                "Requests waiting for a connection to the app because --upstream-max-connections are in use.",
            )?,
            requests_cut: IntCounter::new(
                "lameduck_requests_cut_total",
                "Requests (in TCP mode: connections) still in flight when the drain timeout passed.",
            )?,
            connections_open: IntGauge::new(
                "lameduck_connections_open",
                "Client connections open on the serving port.",
            )?,
            connections_parked: IntGauge::new(
                "lameduck_connections_parked",
                "Idle HTTP/1 client connections parked: open, holding no HTTP state or buffers until the client sends again.",
            )?,
            header_read_timeouts: IntCounter::new(
                "lameduck_header_read_timeouts_total",
                "Client connections closed for not sending a request head within the header read timeout.",
            )?,
            response_send_timeouts: IntCounter::new(
                "lameduck_response_send_timeouts_total",
                "Client connections closed because the client read nothing of its response within the response send timeout.",
            )?,
            app_goaways: IntCounter::new(
                "lameduck_app_goaways_total",
                "HTTP/2 connections to the app on which the app sent GOAWAY.",
            )?,
            goaways_relayed: IntCounter::new(
                "lameduck_goaways_relayed_total",
                "Client HTTP/2 connections sent GOAWAY because the app sent one.",
            )?,
            tcp_connections: IntCounterVec::new(
                Opts::new(
                    "lameduck_tcp_connections_total",
                    "TCP-mode connections, by the phase they were accepted in and how they ended (closed, cut, app_unreachable).",
                ),
                &["phase", "outcome"],
            )?,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.request_duration.clone()))?;
        registry.register(Box::new(metrics.requests_in_flight.clone()))?;
        registry.register(Box::new(metrics.phase.clone()))?;
        registry.register(Box::new(metrics.app_ready.clone()))?;
        registry.register(Box::new(metrics.drains.clone()))?;
        registry.register(Box::new(metrics.drain_duration.clone()))?;
        registry.register(Box::new(metrics.startup_held_requests.clone()))?;
        registry.register(Box::new(metrics.startup_hold_expired.clone()))?;
        registry.register(Box::new(metrics.upstream_connect_errors.clone()))?;
        registry.register(Box::new(metrics.upstream_retries.clone()))?;
        registry.register(Box::new(metrics.requests_cancelled.clone()))?;
        registry.register(Box::new(metrics.tunnels_open.clone()))?;
        registry.register(Box::new(metrics.tunnels_cut.clone()))?;
        registry.register(Box::new(metrics.refusals.clone()))?;
        registry.register(Box::new(metrics.upstream_connections_open.clone()))?;
        registry.register(Box::new(metrics.upstream_requests_waiting.clone()))?;
        registry.register(Box::new(metrics.requests_cut.clone()))?;
        registry.register(Box::new(metrics.connections_open.clone()))?;
        registry.register(Box::new(metrics.connections_parked.clone()))?;
        registry.register(Box::new(metrics.header_read_timeouts.clone()))?;
        registry.register(Box::new(metrics.response_send_timeouts.clone()))?;
        registry.register(Box::new(metrics.app_goaways.clone()))?;
        registry.register(Box::new(metrics.goaways_relayed.clone()))?;
        registry.register(Box::new(metrics.tcp_connections.clone()))?;
        // Pre-create label values so every series exists from the start.
        for phase in Phase::ALL {
            metrics.phase.with_label_values(&[phase.as_str()]).set(0);
        }
        for outcome in [DrainOutcome::Drained, DrainOutcome::TimedOut { cut: 0 }] {
            metrics.drains.with_label_values(&[outcome.as_str()]);
        }
        // Requests by class in every phase a request can start in: a pod drains once,
        // briefly, and increase() needs the 0 before the first 5xx to see it.
        for phase in Phase::ALL.iter().filter(|p| **p != Phase::Drained) {
            for class in ["2xx", "3xx", "4xx", "5xx"] {
                metrics.requests.with_label_values(&[class, phase.as_str()]);
            }
        }
        for phase in Phase::ALL.iter().filter(|p| p.accepts()) {
            for outcome in TCP_OUTCOMES {
                metrics
                    .tcp_connections
                    .with_label_values(&[phase.as_str(), outcome]);
            }
        }
        for phase in Phase::ALL.iter().filter(|p| **p != Phase::Drained) {
            for stage in CANCELLED_STAGES {
                metrics
                    .requests_cancelled
                    .with_label_values(&[phase.as_str(), stage]);
            }
        }
        for refusal in crate::proxy::Refusal::ALL {
            metrics.refusals.with_label_values(&[refusal.as_str()]);
        }
        for reason in RETRY_REASONS {
            metrics.upstream_retries.with_label_values(&[reason]);
        }
        metrics.set_phase(Phase::Starting);
        Ok(metrics)
    }

    /// Counts a request that started in `phase`, answered with `status`, that took
    /// `seconds`.
    pub fn record_request(&self, phase: Phase, status: u16, seconds: f64) {
        let series = self
            .series
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, s)| s);
        // Series not created up front (1xx, `drained`) are looked up by label.
        match series.and_then(|series| series.answered(status)) {
            Some(answered) => answered.inc(),
            None => self
                .requests
                .with_label_values(&[code_class(status), phase.as_str()])
                .inc(),
        }
        match series {
            Some(series) => series.duration.observe(seconds),
            None => self
                .request_duration
                .with_label_values(&[phase.as_str()])
                .observe(seconds),
        }
    }

    /// Marks `current` as the phase.
    pub fn set_phase(&self, current: Phase) {
        for phase in Phase::ALL {
            self.phase
                .with_label_values(&[phase.as_str()])
                .set(i64::from(phase == current));
        }
    }

    /// Records a finished drain.
    pub fn record_drain(&self, outcome: DrainOutcome, seconds: f64) {
        self.drains.with_label_values(&[outcome.as_str()]).inc();
        self.drain_duration.observe(seconds);
        if let DrainOutcome::TimedOut { cut } = outcome {
            self.requests_cut.inc_by(cut);
        }
    }
}

/// Renders `registry` in the Prometheus text format (0.0.4).
pub fn encode(registry: &Registry) -> (String, Vec<u8>) {
    let encoder = TextEncoder::new();
    let mut buffer = Vec::new();
    // Encoding into a Vec only fails on invalid metric families, which `register` rejects.
    if let Err(error) = encoder.encode(&registry.gather(), &mut buffer) {
        tracing::warn!(%error, "encoding metrics failed");
    }
    (encoder.format_type().to_owned(), buffer)
}

/// The status class label of a status code.
pub fn code_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
