//! The scenarios, and the runner that plays one: pods of the old revision settle, the
//! POST load starts through the ingress, the Deployment controller rolls the pods to
//! the new revision while the endpoints publisher tells the ingress (late), and every
//! failed request is attributed once the load has seen the new pods serve.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use lameduck_load::{Limit, LoadConfig, LoadError, Progress, Report};
use lameduck_manifests::{InjectError, ManifestError, Mode, Options};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::attribution::{self, Cause};
use crate::cluster::Cluster;
use crate::deployment::{self, Action};
use crate::endpoints::{self, Publisher};
use crate::ingress::lag::Lag;
use crate::ingress::{Entry, Front, IngressError, IngressKind, Try};
use crate::timeline::{Event, Timeline};
use crate::workload::{Workload, WorkloadError};
use crate::{LabConfig, ScenarioResult, Trace, prometheus::Targets};

/// The initial pods must be ready within this.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The rollout must be complete within this.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the Deployment controller reconciles.
const RECONCILE_PERIOD: Duration = Duration::from_millis(10);
/// Set to print the evidence behind every attributed failure.
const DEBUG_ENV: &str = "LAMEDUCK_LAB_DEBUG";
/// The drain token every injected lab pod gets.
const LAB_DRAIN_TOKEN: &str = "lab-drain-token-0123456789";

const PLAIN: &str = include_str!("../../../k8s/rendered/plain.yaml");
const READINESS: &str = include_str!("../../../k8s/rendered/readiness.yaml");
const GRACEFUL: &str = include_str!("../../../k8s/rendered/graceful-shutdown.yaml");
const FIXED: &str = include_str!("../../../k8s/rendered/fixed.yaml");

/// One way of rolling the same Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// The app as it is: no probe, no preStop, no graceful shutdown.
    Plain,
    /// Plus a readiness probe.
    Readiness,
    /// Plus graceful shutdown in the app.
    GracefulShutdown,
    /// Plus a preStop sleep and a longer grace period: the classic fix.
    PreStop,
    /// The plain app with lameduck injected (native sidecar).
    Sidecar,
    /// The plain app with lameduck injected as a regular container.
    SidecarClassic,
}

impl Scenario {
    /// Every scenario, in the default order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Plain,
        Scenario::Readiness,
        Scenario::GracefulShutdown,
        Scenario::PreStop,
        Scenario::Sidecar,
        Scenario::SidecarClassic,
    ];

    /// Its name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "plain",
            Scenario::Readiness => "+readiness",
            Scenario::GracefulShutdown => "+graceful-shutdown",
            Scenario::PreStop => "+prestop",
            Scenario::Sidecar => "sidecar",
            Scenario::SidecarClassic => "sidecar-classic",
        }
    }

    /// Whether it runs on a manifest of the user's (the classic fixes are shipped
    /// overlays of the demo; the sidecar is injected into any manifest).
    pub fn takes_any_manifest(self) -> bool {
        matches!(
            self,
            Scenario::Plain | Scenario::Sidecar | Scenario::SidecarClassic
        )
    }

    /// The manifests it rolls on a real cluster: as in the lab, but the sidecar's
    /// drain token is generated (the lab's fixed one is for loopback only).
    pub fn manifests(self, manifest: Option<&Vec<Value>>) -> Result<Vec<Value>, ScenarioError> {
        self.documents(manifest, None)
    }

    /// The manifests it rolls: the shipped overlay, or `manifest` with the sidecar
    /// injected as the scenario says (with `drain_token`, or a generated one).
    fn documents(
        self,
        manifest: Option<&Vec<Value>>,
        drain_token: Option<&str>,
    ) -> Result<Vec<Value>, ScenarioError> {
        let parse = |text: &str| lameduck_manifests::parse_documents(self.name(), text);
        let plain = match manifest {
            Some(documents) => documents.clone(),
            None => parse(PLAIN)?,
        };
        let inject = |mode: Mode| {
            let mut documents = plain.clone();
            let options = Options {
                mode,
                drain_token: drain_token.map(str::to_owned),
                ..Options::default()
            };
            lameduck_manifests::inject(&mut documents, &options)?;
            Ok::<_, ScenarioError>(documents)
        };
        match (self, manifest) {
            (Scenario::Plain, _) => Ok(plain),
            (Scenario::Sidecar, _) => inject(Mode::Native),
            (Scenario::SidecarClassic, _) => inject(Mode::Classic),
            (_, Some(_)) => Err(ScenarioError::NeedsTheDemo),
            (Scenario::Readiness, None) => Ok(parse(READINESS)?),
            (Scenario::GracefulShutdown, None) => Ok(parse(GRACEFUL)?),
            (Scenario::PreStop, None) => Ok(parse(FIXED)?),
        }
    }

    /// What it runs: the workload read from its manifests.
    pub(crate) fn workload(self, config: &LabConfig) -> Result<Workload, ScenarioError> {
        let documents = self.documents(config.manifest.as_ref(), Some(LAB_DRAIN_TOKEN))?;
        let workload =
            crate::workload::workload(&documents, config.time_scale, config.app_cmd.as_deref())?;
        Ok(workload)
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no scenario.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario {0:?}")]
pub struct UnknownScenario(pub String);

impl std::str::FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| UnknownScenario(name.to_owned()))
    }
}

/// Why a scenario could not be played to its end.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The classic fixes are overlays of the shipped demo only.
    #[error("with a manifest of your own only plain, sidecar and sidecar-classic run")]
    NeedsTheDemo,
    /// A shipped manifest did not parse.
    #[error("reading its manifests")]
    Manifest(#[from] ManifestError),
    /// The sidecar could not be injected.
    #[error("injecting the sidecar")]
    Inject(#[from] InjectError),
    /// The manifests hold nothing the lab can run.
    #[error("reading the workload")]
    Workload(#[from] WorkloadError),
    /// The ingress did not start.
    #[error("starting the ingress")]
    Ingress(#[from] IngressError),
    /// The initial pods did not become ready.
    #[error("the initial pods did not become ready within {0:?}")]
    NotReady(Duration),
    /// The rollout did not complete.
    #[error("the rollout did not finish within {0:?}")]
    RolloutStuck(Duration),
    /// The load could not start.
    #[error("starting the load")]
    Load(#[from] LoadError),
    /// The load task panicked.
    #[error("the load task failed")]
    LoadTask(#[from] tokio::task::JoinError),
}

/// The POST load of a scenario, running.
struct Load {
    task: JoinHandle<Result<Report, LoadError>>,
    stop: oneshot::Sender<()>,
    /// When it started, on the timeline (records count from there).
    offset: Duration,
}

impl Load {
    fn start(
        config: &LabConfig,
        front: &Front,
        long_wait: f64,
        timeline: &Timeline,
    ) -> Result<Self, LoadError> {
        let base = format!("http://{}/", front.addr());
        let urls: Vec<Uri> = ["0", "0.05", "0.2", &format!("{long_wait:.3}")]
            .iter()
            .filter_map(|w| format!("{base}?wait={w}").parse().ok())
            .collect();
        let mut load =
            LoadConfig::posts(urls, config.rate, Limit::Duration(Duration::from_secs(600)));
        // nginx stands in for ingress-nginx by reloading, and a reload closes idle
        // client keep-alive connections (seen: a request sent into one got EOF and
        // nginx never logged it). ingress-nginx changes endpoints without reloading,
        // so in nginx mode the load uses a connection per request to keep that
        // artifact out of the verdicts.
        load.keepalive = config.ingress == IngressKind::Embedded;
        if let Some((method, message)) = &config.grpc {
            // One target: the calls' own durations come from the method and message.
            load.urls.truncate(1);
            lameduck_load::grpc_request(&mut load, method, message)?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let offset = timeline.now();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stopped.await;
            };
            lameduck_load::run(&load, stop, Arc::new(Progress::default())).await
        });
        Ok(Self { task, stop, offset })
    }

    async fn finish(self) -> Result<Report, ScenarioError> {
        let _ = self.stop.send(());
        Ok(self.task.await??)
    }
}

/// Plays `scenario` (the `index`th of the run) and attributes its failures.
pub(crate) async fn run(
    scenario: Scenario,
    index: usize,
    workload: Arc<Workload>,
    config: &LabConfig,
) -> Result<ScenarioResult, ScenarioError> {
    let scale = config.time_scale;
    let timeline = Arc::new(Timeline::new());
    let publisher = Publisher::new(timeline.clone());
    let lag = Lag {
        sync_interval: config.sync_interval.mul_f64(scale),
        poll_interval: config.poll_interval.mul_f64(scale),
    };
    let front = Front::start(
        config.ingress,
        publisher.subscribe(),
        lag,
        timeline.clone(),
        config.grpc.is_some(),
    )
    .await?;
    let targets = config.prometheus_targets.clone().map(Targets::new);
    let mut cluster = Cluster::new(
        scenario.name(),
        index,
        workload.clone(),
        config.binaries.clone(),
        timeline.clone(),
        targets,
    );
    for _ in 0..workload.rollout.replicas {
        cluster.create(false);
    }
    settle(&cluster).await?;
    publisher.publish(endpoints::ready(&cluster.views(), workload.service_port));
    // Let the ingress see the initial endpoints before load starts.
    tokio::time::sleep(lag.worst() + Duration::from_millis(50)).await;

    let long_wait = 10.0 * scale;
    let load = Load::start(config, &front, long_wait, &timeline)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rollout_started = timeline.now();
    roll(&mut cluster, &workload, &publisher, &timeline).await?;
    let rollout_seconds = (timeline.now() - rollout_started).as_secs_f64();
    // Keep the load on until the ingress has seen the new pods and they have started:
    // lag + app start-up + the longest request.
    let tail = (config.sync_interval + config.poll_interval + Duration::from_secs(5))
        .mul_f64(scale)
        + Duration::from_secs_f64(long_wait);
    tokio::time::sleep(tail).await;
    let offset = load.offset;
    let report = load.finish().await?;
    let entries = front.entries(&timeline, &cluster.addresses()).await;
    cluster.stop();
    front.stop().await;
    let events = timeline.events();
    Ok(result(
        scenario,
        &report,
        offset,
        &entries,
        events,
        rollout_seconds,
    ))
}

/// Waits for the old pods to be ready and serving.
async fn settle(cluster: &Cluster) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !cluster.settled() {
        cluster.sync_targets();
        if Instant::now() > deadline {
            return Err(ScenarioError::NotReady(SETTLE_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs the Deployment controller and the endpoints publisher until the rollout is done.
async fn roll(
    cluster: &mut Cluster,
    workload: &Workload,
    publisher: &Publisher,
    timeline: &Timeline,
) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    loop {
        let step = deployment::reconcile(&workload.rollout, &cluster.views(), timeline.now());
        for action in step.actions {
            match action {
                Action::Create => cluster.create(true),
                Action::Delete(pod) => cluster.delete(pod),
            }
        }
        cluster.sync_targets();
        publisher.publish(endpoints::ready(&cluster.views(), workload.service_port));
        if step.complete {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ScenarioError::RolloutStuck(ROLLOUT_TIMEOUT));
        }
        tokio::time::sleep(RECONCILE_PERIOD).await;
    }
}

/// The scenario's outcome: every failed request attributed to one cause.
fn result(
    scenario: Scenario,
    report: &Report,
    offset: Duration,
    entries: &std::collections::HashMap<u64, Entry>,
    events: Vec<Event>,
    rollout_seconds: f64,
) -> ScenarioResult {
    let summary = lameduck_load::Summary::of(report);
    // `LAMEDUCK_LAB_DEBUG=1` prints the evidence behind every failure.
    let debug = std::env::var_os(DEBUG_ENV).is_some();
    let mut causes: BTreeMap<Cause, u64> = Cause::ALL.iter().map(|c| (*c, 0)).collect();
    let mut requests = Vec::with_capacity(report.records.len());
    for (seq, record) in report.records.iter().enumerate() {
        let sent = (offset + Duration::from_micros(record.scheduled_us)).as_secs_f64();
        if record.ok() {
            requests.push((sent, None));
            continue;
        }
        let done = offset + Duration::from_micros(record.done_us);
        let entry = entries.get(&(seq as u64));
        let cause = attribution::attribute(done, entry, &events);
        if debug {
            eprintln!(
                "{scenario} seq {seq} {cause} done at {done:?}: status {:?} grpc-status {:?} error {:?} ingress {entry:?}",
                record.status(),
                record.grpc_status(),
                record.error(),
            );
            let mut pods: Vec<usize> = entry
                .map(|e| e.tries.iter().map(Try::pod).collect())
                .unwrap_or_default();
            pods.dedup();
            for event in events.iter().filter(|e| pods.contains(&e.pod)) {
                eprintln!("    pod {} at {:?}: {:?}", event.pod, event.at, event.kind);
            }
        }
        *causes.entry(cause).or_insert(0) += 1;
        requests.push((sent, Some(cause)));
    }
    ScenarioResult {
        name: scenario.name().to_owned(),
        requests: summary.requests,
        failed: summary.failed,
        causes,
        rollout_seconds,
        p99_ms: summary.latency_from_scheduled.map_or(0.0, |l| l.p99_ms),
        trace: Some(Trace { requests, events }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_custom_manifests_take_only_the_sidecar_and_plain() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
        }
        assert!("+nothing".parse::<Scenario>().is_err());
        let custom = lameduck_manifests::parse_documents("t", PLAIN).expect("plain");
        for scenario in Scenario::ALL {
            let documents = scenario.documents(Some(&custom), Some(LAB_DRAIN_TOKEN));
            assert_eq!(
                documents.is_ok(),
                scenario.takes_any_manifest(),
                "{scenario}"
            );
        }
        let injected = Scenario::Sidecar
            .documents(None, Some(LAB_DRAIN_TOKEN))
            .expect("sidecar");
        let text = lameduck_manifests::to_yaml(&injected).expect("yaml");
        assert!(text.contains(LAB_DRAIN_TOKEN));
    }
}
