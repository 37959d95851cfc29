//! The webhook's Prometheus metrics, registered on a registry the binary owns.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Admission latency buckets, seconds: the transform takes well under a millisecond;
/// the API server gives up at the webhook's timeout (5 s by default).
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `outcome` label values of the admission metrics.
pub const OUTCOMES: [&str; 4] = ["injected", "skipped", "refused", "invalid"];

/// Every metric the webhook exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Admission requests answered, by outcome.
    pub admissions: IntCounterVec,
    /// Time from the request's arrival to its answer, by outcome.
    pub admission_duration: HistogramVec,
    /// Serving certificate reloads, by result (`reloaded`, `failed`).
    pub certificate_reloads: IntCounterVec,
    /// Events recorded on pods' owners, by result (`created`, `failed`).
    pub events: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            admissions: IntCounterVec::new(
                Opts::new(
                    "lameduck_webhook_admissions_total",
                    "Pod admission requests answered, by outcome.",
                ),
                &["outcome"],
            )?,
            admission_duration: HistogramVec::new(
                HistogramOpts::new(
                    "lameduck_webhook_admission_duration_seconds",
                    "Time to answer a pod admission request, by outcome.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["outcome"],
            )?,
            certificate_reloads: IntCounterVec::new(
                Opts::new(
                    "lameduck_webhook_certificate_reloads_total",
                    "Serving certificate changes seen on disk, by result.",
                ),
                &["result"],
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "lameduck_webhook_events_total",
                    "Events recorded about pods not injected and Services that bypass the sidecar (created or found already recorded; failed), by result.",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(metrics.admissions.clone()))?;
        registry.register(Box::new(metrics.admission_duration.clone()))?;
        registry.register(Box::new(metrics.certificate_reloads.clone()))?;
        registry.register(Box::new(metrics.events.clone()))?;
        // Every outcome is exported from the start, at zero.
        for outcome in OUTCOMES {
            metrics.admissions.with_label_values(&[outcome]);
        }
        Ok(metrics)
    }
}

/// The registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail on I/O; a metric family error leaves it partial.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}
