//! What a run amounts to: counts, latency percentiles, failures by class and status,
//! requests per serving version.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Report;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// The summary of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Requests scheduled (one record each).
    pub requests: u64,
    /// Requests the limit asked for.
    pub planned: u64,
    /// 2xx/3xx responses.
    pub ok: u64,
    /// Everything else.
    pub failed: u64,
    /// Failures with no status, by error class.
    pub errors: BTreeMap<String, u64>,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// gRPC calls by `grpc-status` (empty for plain HTTP).
    pub grpc_statuses: BTreeMap<u8, u64>,
    /// Responses by `x-version` (`-` when absent).
    pub versions: BTreeMap<String, u64>,
    /// The rate asked for.
    pub rate: f64,
    /// The rate sends achieved (between the first and last send).
    pub achieved_rate: f64,
    /// Seconds from start to the last record.
    pub duration_seconds: f64,
    /// Latency from the scheduled time (no coordinated omission).
    pub latency_from_scheduled: Option<Latency>,
    /// Latency from the send time.
    pub latency_from_sent: Option<Latency>,
    /// Times a request waited for an in-flight slot: the rate was not held.
    pub max_inflight_waits: u64,
    /// Times a due request found every connection busy (`--connections`) and waited;
    /// the wait is in the latency from the scheduled time.
    pub connection_waits: u64,
    /// The run was stopped before its end.
    pub interrupted: bool,
}

fn latency(histogram: &Histogram<u64>) -> Option<Latency> {
    if histogram.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p90_ms: ms(histogram.value_at_quantile(0.9)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .expect("1 µs to 1 h at 3 significant figures are valid histogram bounds")
}

impl Summary {
    /// Summarizes a report.
    pub fn of(report: &Report) -> Self {
        let mut from_scheduled = new_histogram();
        let mut from_sent = new_histogram();
        let mut errors = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut grpc_statuses = BTreeMap::new();
        let mut versions = BTreeMap::new();
        let (mut ok, mut failed) = (0, 0);
        let (mut first_sent, mut last_sent, mut sends) = (u64::MAX, 0, 0u64);
        for record in &report.records {
            if record.ok() {
                ok += 1;
            } else {
                failed += 1;
            }
            if let Some(class) = record.error() {
                *errors.entry(class.as_str().to_owned()).or_insert(0) += 1;
            }
            if let Some(status) = record.grpc_status() {
                *grpc_statuses.entry(status).or_insert(0) += 1;
            }
            if let Some(status) = record.status() {
                *statuses.entry(status).or_insert(0) += 1;
                let version = record
                    .version()
                    .and_then(|i| report.strings.get(i))
                    .unwrap_or("-");
                *versions.entry(version.to_owned()).or_insert(0) += 1;
            }
            if record.sent_us != 0 {
                sends += 1;
                first_sent = first_sent.min(record.sent_us);
                last_sent = last_sent.max(record.sent_us);
                from_sent.saturating_record(record.latency_from_sent_us().max(1));
            }
            from_scheduled.saturating_record(record.latency_from_scheduled_us().max(1));
        }
        let achieved_rate = if sends >= 2 && last_sent > first_sent {
            (sends - 1) as f64 / ((last_sent - first_sent) as f64 / 1e6)
        } else {
            0.0
        };
        Self {
            requests: report.records.len() as u64,
            planned: report.planned,
            ok,
            failed,
            errors,
            statuses,
            grpc_statuses,
            versions,
            rate: report.rate,
            achieved_rate,
            duration_seconds: report.elapsed.as_secs_f64(),
            latency_from_scheduled: latency(&from_scheduled),
            latency_from_sent: latency(&from_sent),
            max_inflight_waits: report.max_inflight_waits,
            connection_waits: report.connection_waits,
            interrupted: report.interrupted,
        }
    }

    /// The summary for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "requests   {} of {} planned in {:.2}s ({}), rate {:.1}/s asked, {:.1}/s achieved",
            self.requests,
            self.planned,
            self.duration_seconds,
            if self.interrupted {
                "interrupted"
            } else {
                "complete"
            },
            self.rate,
            self.achieved_rate
        );
        let _ = writeln!(out, "ok         {}", self.ok);
        let _ = writeln!(out, "failed     {}", self.failed);
        for (class, count) in &self.errors {
            let _ = writeln!(out, "  error    {class}: {count}");
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        let _ = writeln!(out, "statuses   {}", statuses.join(", "));
        if !self.grpc_statuses.is_empty() {
            let grpc: Vec<String> = self
                .grpc_statuses
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            let _ = writeln!(out, "grpc       {}", grpc.join(", "));
        }
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(v, n)| format!("{}: {n}", if v.is_empty() { "(empty)" } else { v }))
            .collect();
        let _ = writeln!(out, "versions   {}", versions.join(", "));
        for (name, latency) in [
            ("from scheduled", self.latency_from_scheduled),
            ("from sent", self.latency_from_sent),
        ] {
            if let Some(l) = latency {
                let _ = writeln!(
                    out,
                    "latency    {name}: p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
                );
            }
        }
        if self.max_inflight_waits > 0 {
            let _ = writeln!(
                out,
                "WARNING    the in-flight cap was reached {} times: the rate was not held",
                self.max_inflight_waits
            );
        }
        if self.connection_waits > 0 {
            let _ = writeln!(
                out,
                "note       {} requests found every connection busy and waited (in the latency from scheduled)",
                self.connection_waits
            );
        }
        out
    }
}
