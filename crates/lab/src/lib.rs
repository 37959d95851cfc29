//! The lab: the same Deployment rolled under POST load as the plain app, with the
//! classic patches added one by one, and with lameduck injected, using real
//! processes on loopback, kubelet and Deployment-controller semantics and an
//! ingress that learns about endpoints as late as ingress-nginx does. Every failed
//! request is attributed to one cause.
//!
//! Durations from the manifests (probe periods, preStop, grace period, the apps'
//! own delays, ingress lag) are all multiplied by one time scale, so the ratios that
//! decide the outcome stay real while a scenario takes seconds.
//!
//! The pieces, as a cluster has them:
//! - [`scenario`]: the scenarios and the runner that wires the rest together;
//! - `deployment`: the Deployment controller, a reconcile function over pods and `now`;
//! - `endpoints`: the EndpointSlice rule and the publisher the ingress follows;
//! - `kubelet`: a pod as real processes (probes, preStop, SIGTERM, SIGKILL);
//! - `cluster`: the pods of a scenario and their addresses;
//! - `ingress`: the embedded ingress or nginx, both behind one lag model;
//! - `timeline`: every event on one clock; `attribution`: why each failure happened;
//! - [`report`] (HTML) and [`prometheus`] (a configuration to watch a run);
//! - [`observed`]: a real cluster's watched Pods, EndpointSlices, Events and ingress
//!   access log turned into the same timeline, so its failures get the same causes.
//!
//! Not for: running a real cluster (the controllers and the attribution are pure so
//! that a cluster's Pods and EndpointSlices can feed them), or for benchmarking.

mod attribution;
mod binaries;
mod cluster;
mod deployment;
mod endpoints;
mod ingress;
mod kubelet;
pub mod observed;
pub mod prometheus;
pub mod report;
pub mod scenario;
mod timeline;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use attribution::Cause;
pub use binaries::{Binaries, BinariesError, find_binaries};
pub use ingress::{Entry, IngressError, IngressKind, Try};
pub use scenario::{Scenario, ScenarioError, UnknownScenario};
pub use timeline::{Event, EventKind};
pub use workload::WorkloadError;

/// Lab settings.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The ingress.
    pub ingress: IngressKind,
    /// Scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Every manifest duration is multiplied by this.
    pub time_scale: f64,
    /// POST load rate.
    pub rate: f64,
    /// ingress-nginx's controller sync interval (before scaling).
    pub sync_interval: Duration,
    /// ingress-nginx's worker poll interval (before scaling).
    pub poll_interval: Duration,
    /// A Deployment (+ Service) to use instead of the shipped demo.
    pub manifest: Option<Vec<Value>>,
    /// The programs.
    pub binaries: Binaries,
    /// Runs this instead of demo-app (`{host}`, `{port}`, `{addr}` replaced).
    pub app_cmd: Option<String>,
    /// The Prometheus `file_sd` target file to keep up to date.
    pub prometheus_targets: Option<PathBuf>,
    /// Unary gRPC calls instead of HTTP POSTs: (method `/package.Service/Method`, the
    /// serialized request message). Needs a gRPC app and the embedded ingress.
    pub grpc: Option<(String, Vec<u8>)>,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests failed.
    pub failed: u64,
    /// Failures by cause.
    pub causes: BTreeMap<Cause, u64>,
    /// From the first new pod to the last old pod gone.
    pub rollout_seconds: f64,
    /// p99 latency from the scheduled time, ms.
    pub p99_ms: f64,
    /// For the HTML report.
    #[serde(skip)]
    pub trace: Option<Trace>,
}

/// What a scenario's report draws: its requests and its pods' timeline.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Each request: (send time on the timeline, cause or `None` when it succeeded).
    pub requests: Vec<(f64, Option<Cause>)>,
    /// Every pod and cluster event, in order.
    pub(crate) events: Vec<timeline::Event>,
}

/// Errors that stop the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A scenario could not be played.
    #[error("scenario {scenario}")]
    Scenario {
        /// Which.
        scenario: Scenario,
        /// Why.
        #[source]
        source: ScenarioError,
    },
}

/// Runs the scenarios one after the other.
pub async fn run(
    config: &LabConfig,
    mut on_result: impl FnMut(&ScenarioResult),
) -> Result<Vec<ScenarioResult>, LabError> {
    let mut results = Vec::new();
    for (index, scenario) in config.scenarios.iter().copied().enumerate() {
        let failed = |source| LabError::Scenario { scenario, source };
        let workload = scenario.workload(config).map_err(failed)?;
        let result = scenario::run(scenario, index, Arc::new(workload), config)
            .await
            .map_err(failed)?;
        on_result(&result);
        results.push(result);
    }
    Ok(results)
}
