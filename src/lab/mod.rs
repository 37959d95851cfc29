//! The lab: the same Deployment rolled under POST load as the plain app, with the
//! classic patches added one by one, and with lameduck injected, using real
//! processes on loopback, kubelet and Deployment-controller semantics and an
//! ingress that learns about endpoints as late as ingress-nginx does. Every failed
//! request is attributed to one cause.
//!
//! Durations from the manifests (probe periods, preStop, grace period, the apps'
//! own delays, ingress lag) are all multiplied by one time scale, so the ratios that
//! decide the outcome stay real while a scenario takes seconds.

mod ingress;
mod model;
mod nginx;
mod pod;
pub mod prometheus;
pub mod report;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::inject::{Mode, Options};
use crate::load::{Limit, LoadConfig, Progress, Record};
use ingress::{Endpoint, Try};
use pod::{Binaries, EventKind, Pod, PodSpec, Timeline};

/// The failure causes, in report order.
pub const CAUSES: [&str; 6] = [
    "premature-activation",
    "inflight-cut",
    "stale-upstream",
    "keepalive-race",
    "grace-expired",
    "other",
];

/// The default scenarios, in order.
pub const SCENARIOS: [&str; 6] = [
    "plain",
    "+readiness",
    "+graceful-shutdown",
    "+prestop",
    "sidecar",
    "sidecar-classic",
];

/// What stands in for the ingress controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressKind {
    /// The embedded ingress with ingress-nginx's semantics.
    Embedded,
    /// The real nginx (Debian package), reloaded after the same lag.
    Nginx,
}

/// Lab settings.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The ingress.
    pub ingress: IngressKind,
    /// Scenarios to run, in order.
    pub scenarios: Vec<String>,
    /// Every manifest duration is multiplied by this.
    pub time_scale: f64,
    /// POST load rate.
    pub rate: f64,
    /// ingress-nginx's controller sync interval (before scaling).
    pub sync_interval: Duration,
    /// ingress-nginx's worker poll interval (before scaling).
    pub poll_interval: Duration,
    /// `--manifest`: a Deployment (+ Service) to use instead of the shipped demo.
    pub manifest: Option<Vec<Value>>,
    /// The programs.
    pub binaries: (PathBuf, PathBuf),
    /// Runs this instead of demo-app (`{host}`, `{port}`, `{addr}` replaced).
    pub app_cmd: Option<String>,
    /// `--prometheus-config`: the `file_sd` target file to keep up to date.
    pub prometheus_targets: Option<PathBuf>,
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
    pub causes: BTreeMap<String, u64>,
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
    pub requests: Vec<(f64, Option<&'static str>)>,
    /// Every pod and cluster event, in order.
    pub(crate) events: Vec<pod::Event>,
}

/// Errors that stop the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A manifest the lab cannot run.
    #[error("scenario {scenario}: {message}")]
    Scenario {
        /// Which.
        scenario: String,
        /// Why.
        message: String,
    },
    /// The programs could not be found or built.
    #[error("{0}")]
    Binaries(String),
}

const PLAIN: &str = include_str!("../../k8s/rendered/plain.yaml");
const READINESS: &str = include_str!("../../k8s/rendered/readiness.yaml");
const GRACEFUL: &str = include_str!("../../k8s/rendered/graceful-shutdown.yaml");
const FIXED: &str = include_str!("../../k8s/rendered/fixed.yaml");

fn scenario_documents(name: &str, manifest: Option<&Vec<Value>>) -> Result<Vec<Value>, String> {
    let parse =
        |text: &str| crate::manifest::parse_documents(name, text).map_err(|e| e.to_string());
    let plain = match manifest {
        Some(docs) => docs.clone(),
        None => parse(PLAIN)?,
    };
    let inject = |mode: Mode| {
        let mut docs = plain.clone();
        let options = Options {
            mode,
            drain_token: Some("lab-drain-token-0123456789".to_owned()),
            ..Options::default()
        };
        crate::inject::inject(&mut docs, &options).map_err(|e| e.to_string())?;
        Ok::<_, String>(docs)
    };
    match name {
        "plain" => Ok(plain),
        "+readiness" if manifest.is_none() => parse(READINESS),
        "+graceful-shutdown" if manifest.is_none() => parse(GRACEFUL),
        "+prestop" if manifest.is_none() => parse(FIXED),
        "sidecar" => inject(Mode::Native),
        "sidecar-classic" => inject(Mode::Classic),
        other => Err(format!(
            "unknown scenario {other:?} (with --manifest only plain, sidecar and sidecar-classic)"
        )),
    }
}

/// Finds `demo-app` and `lameduck-sidecar`: beside this executable, else built with cargo.
pub fn find_binaries() -> Result<(PathBuf, PathBuf), LabError> {
    let exe = std::env::current_exe()
        .map_err(|e| LabError::Binaries(format!("locating lameduck: {e}")))?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if workspace.join("Cargo.toml").is_file() {
        // Keep them as fresh as lameduck itself: a no-op when nothing changed.
        let release = dir.ends_with("release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.current_dir(&workspace).args([
            "build",
            "-q",
            "-p",
            "demo-app",
            "-p",
            "lameduck-sidecar",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| LabError::Binaries(format!("running cargo build: {e}")))?;
        if !status.success() {
            return Err(LabError::Binaries(
                "cargo build -p demo-app -p lameduck-sidecar failed".to_owned(),
            ));
        }
    }
    let (demo, sidecar) = (dir.join("demo-app"), dir.join("lameduck-sidecar"));
    if demo.is_file() && sidecar.is_file() {
        return Ok((demo, sidecar));
    }
    Err(LabError::Binaries(format!(
        "demo-app and lameduck-sidecar are not in {}: build them (cargo build --release) or pass --demo-app and --sidecar",
        dir.display()
    )))
}

/// Runs the scenarios one after the other.
pub async fn run(
    config: &LabConfig,
    mut on_result: impl FnMut(&ScenarioResult),
) -> Result<Vec<ScenarioResult>, LabError> {
    let mut results = Vec::new();
    for (index, name) in config.scenarios.iter().enumerate() {
        let documents = scenario_documents(name, config.manifest.as_ref()).map_err(|message| {
            LabError::Scenario {
                scenario: name.clone(),
                message,
            }
        })?;
        let workload = model::workload(&documents, config.time_scale, config.app_cmd.as_deref())
            .map_err(|e| LabError::Scenario {
                scenario: name.clone(),
                message: e.to_string(),
            })?;
        let result = scenario(name, index, Arc::new(workload), config)
            .await
            .map_err(|message| LabError::Scenario {
                scenario: name.clone(),
                message,
            })?;
        on_result(&result);
        results.push(result);
    }
    Ok(results)
}

/// The ingress in front of the pods.
enum Front {
    Embedded(ingress::Ingress),
    Nginx(Box<nginx::Nginx>),
}

struct Member {
    pod: Pod,
    new: bool,
}

fn endpoints(members: &[Member], port: u16) -> Vec<Endpoint> {
    members
        .iter()
        .filter(|m| m.pod.is_ready() && !m.pod.is_deleted())
        .map(|m| Endpoint {
            pod: m.pod.id,
            addr: (m.pod.ip, port).into(),
        })
        .collect()
}

async fn scenario(
    name: &str,
    index: usize,
    workload: Arc<Workload>,
    config: &LabConfig,
) -> Result<ScenarioResult, String> {
    let scale = config.time_scale;
    let timeline = Arc::new(Timeline::new());
    let binaries = Binaries {
        demo_app: config.binaries.0.clone(),
        sidecar: config.binaries.1.clone(),
    };
    let (endpoints_tx, endpoints_rx) = watch::channel(Vec::new());
    let (sync, poll) = (
        config.sync_interval.mul_f64(scale),
        config.poll_interval.mul_f64(scale),
    );
    let front = match config.ingress {
        IngressKind::Embedded => Front::Embedded(
            ingress::start(endpoints_rx, sync, poll, timeline.clone())
                .await
                .map_err(|e| format!("starting the ingress: {e}"))?,
        ),
        IngressKind::Nginx => Front::Nginx(Box::new(
            nginx::start(endpoints_rx, sync, poll, timeline.clone()).await?,
        )),
    };
    let front_addr = match &front {
        Front::Embedded(i) => i.addr,
        Front::Nginx(n) => n.addr,
    };
    // Each lab process gets its own block of loopback addresses (by its pid), so two
    // labs at once (concurrent tests, say) never bind the same pod address.
    let block = u8::try_from(std::process::id() % 250 + 2).unwrap_or(2);
    let subnet = u8::try_from(index % 200 + 10).unwrap_or(10);
    let mut next_pod = 0usize;
    let mut members: Vec<Member> = Vec::new();
    let mut create = |members: &mut Vec<Member>, new: bool| {
        next_pod += 1;
        let ip = Ipv4Addr::new(
            127,
            block,
            subnet,
            u8::try_from(next_pod % 250 + 1).unwrap_or(1),
        );
        let version = if new { "2" } else { "1" };
        let pod_name = format!("demo-app-v{version}-{next_pod}");
        let mut w = (*workload).clone();
        for c in &mut w.containers {
            for (k, v) in &mut c.env {
                if k == "VERSION" {
                    *v = version.to_owned();
                }
            }
        }
        members.push(Member {
            pod: Pod::start(PodSpec {
                id: next_pod,
                ip,
                name: pod_name,
                workload: Arc::new(w),
                binaries: binaries.clone(),
                timeline: timeline.clone(),
            }),
            new,
        });
    };
    for _ in 0..workload.replicas {
        create(&mut members, false);
    }
    // Scrape targets: every pod with a sidecar, until the pod is gone (its last
    // scrapes carry the drain's outcome).
    let targets = config
        .prometheus_targets
        .as_ref()
        .map(|path| prometheus::Targets::new(path.clone()));
    let admin = workload
        .containers
        .iter()
        .filter(|c| c.program == model::Program::Sidecar)
        .find_map(|c| {
            let port = c
                .ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(crate::inject::ADMIN_PORT_NAME))?;
            Some((port.1, c.name.clone()))
        });
    let sync_targets = |members: &[Member]| {
        if let (Some(targets), Some((port, container))) = (&targets, &admin) {
            let live = members
                .iter()
                .filter(|m| !m.pod.is_gone())
                .map(|m| prometheus::Target {
                    pod: m.pod.name.clone(),
                    admin: (m.pod.ip, *port).into(),
                    container: container.clone(),
                })
                .collect();
            targets.sync(name, live);
        }
    };
    let ready_deadline = Instant::now() + Duration::from_secs(30);
    // The old pods are long settled in a real cluster: ready and serving.
    let settled = |m: &Member| {
        m.pod.is_ready()
            && timeline
                .first(m.pod.id, |k| *k == EventKind::AppServing)
                .is_some()
    };
    while !members.iter().all(settled) {
        sync_targets(&members);
        if Instant::now() > ready_deadline {
            return Err("the initial pods did not become ready within 30 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let initial = endpoints(&members, workload.service_port);
    timeline.record(
        0,
        EventKind::Endpoints(initial.iter().map(|e| e.pod).collect()),
    );
    endpoints_tx.send_replace(initial);
    // Let the ingress see the initial endpoints before load starts.
    tokio::time::sleep(
        (config.sync_interval + config.poll_interval).mul_f64(scale) + Duration::from_millis(50),
    )
    .await;

    let long_wait = 10.0 * scale;
    let base = format!("http://{front_addr}/");
    let urls: Vec<Uri> = ["0", "0.05", "0.2", &format!("{long_wait:.3}")]
        .iter()
        .filter_map(|w| format!("{base}?wait={w}").parse().ok())
        .collect();
    let load = LoadConfig {
        urls,
        rate: config.rate,
        limit: Limit::Duration(Duration::from_secs(600)),
        method: http::Method::POST,
        body: bytes::Bytes::from_static(b"lab"),
        headers: http::HeaderMap::new(),
        // nginx stands in for ingress-nginx by reloading, and a reload closes idle client
        // keep-alive connections (seen: a request sent into one got EOF and nginx never
        // logged it). ingress-nginx changes endpoints without reloading, so in nginx mode
        // the load uses a connection per request to keep that artifact out of the verdicts.
        keepalive: config.ingress == IngressKind::Embedded,
        http2: false,
        timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        max_inflight: 10_000,
        connections: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Load records count from the load's start; the timeline from the scenario's.
    let load_offset = timeline.now();
    let load_task = tokio::spawn(async move {
        crate::load::run(
            &load,
            async {
                let _ = stop_rx.await;
            },
            Arc::new(Progress::default()),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs_f64(0.5)).await;

    // The Deployment controller: surge up, unavailable down, old pods deleted as new ones are ready.
    let rollout_started = timeline.now();
    let replicas = workload.replicas as usize;
    let min_available = replicas.saturating_sub(workload.max_unavailable as usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let live = |new: bool| {
            members
                .iter()
                .filter(|m| m.new == new && !m.pod.is_deleted())
                .count()
        };
        // Available = Ready for minReadySeconds (endpoints follow Ready alone).
        let now = timeline.now();
        let available_pod = |m: &Member| {
            m.pod.is_ready()
                && timeline
                    .last(m.pod.id, |k| *k == EventKind::Ready)
                    .is_some_and(|since| since + workload.min_ready <= now)
        };
        let ready = |new: bool| {
            members
                .iter()
                .filter(|m| m.new == new && !m.pod.is_deleted() && available_pod(m))
                .count()
        };
        let (old_live, new_live) = (live(false), live(true));
        if new_live < replicas && old_live + new_live < replicas + workload.max_surge as usize {
            create(&mut members, true);
            continue;
        }
        let available = ready(false) + ready(true);
        if old_live > 0 {
            let victim = members
                .iter()
                .filter(|m| !m.new && !m.pod.is_deleted())
                .min_by_key(|m| m.pod.is_ready());
            if let Some(victim) = victim {
                let counted = available_pod(victim);
                let keeps = available - usize::from(counted);
                if !counted || keeps >= min_available {
                    victim.pod.delete();
                }
            }
        }
        sync_targets(&members);
        let published = endpoints(&members, workload.service_port);
        endpoints_tx.send_if_modified(|current| {
            let changed = *current != published;
            if changed {
                timeline.record(
                    0,
                    EventKind::Endpoints(published.iter().map(|e| e.pod).collect()),
                );
            }
            *current = published;
            changed
        });
        let done = ready(true) == replicas
            && old_live == 0
            && members.iter().filter(|m| !m.new).all(|m| m.pod.is_gone());
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err("the rollout did not finish within 120 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rollout_seconds = (timeline.now() - rollout_started).as_secs_f64();
    // Keep the load on until the ingress has seen the new pods and they have started:
    // lag + app start-up + the longest request.
    let tail = (config.sync_interval + config.poll_interval + Duration::from_secs(5))
        .mul_f64(scale)
        + Duration::from_secs_f64(long_wait);
    tokio::time::sleep(tail).await;
    let _ = stop_tx.send(());
    let report = load_task
        .await
        .map_err(|e| format!("load task: {e}"))?
        .map_err(|e| e.to_string())?;
    let summary = crate::load::Summary::of(&report);
    let log = match &front {
        Front::Embedded(i) => i.log.lock().map(|l| l.clone()).unwrap_or_default(),
        Front::Nginx(n) => {
            let ips = members.iter().map(|m| (m.pod.ip, m.pod.id)).collect();
            n.entries(&timeline, &ips)
        }
    };
    let mut causes: BTreeMap<String, u64> = CAUSES.iter().map(|c| ((*c).to_owned(), 0)).collect();
    let mut requests = Vec::with_capacity(report.records.len());
    for (seq, record) in report.records.iter().enumerate() {
        let sent = load_offset.as_secs_f64() + record.scheduled_us as f64 / 1e6;
        if record.ok() {
            requests.push((sent, None));
            continue;
        }
        let entry = log.get(&(seq as u64));
        let cause = attribute(record, entry, &timeline, load_offset);
        if std::env::var_os("LAMEDUCK_LAB_DEBUG").is_some() {
            let pod_events = |pod: usize| {
                timeline
                    .events()
                    .into_iter()
                    .filter(|e| e.pod == pod)
                    .map(|e| format!("{:.3}:{:?}", e.at.as_secs_f64(), e.kind))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let last_pod = entry.and_then(|e| e.tries.last()).map(|t| match t {
                Try::ConnectFailed { pod }
                | Try::SentAndFailed { pod, .. }
                | Try::Answered { pod, .. } => *pod,
            });
            eprintln!(
                "{name} seq {seq} {cause}: sent {:.3} done {:.3} status {:?} error {:?} ingress {:?} pod events [{}]",
                load_offset.as_secs_f64() + record.sent_us as f64 / 1e6,
                load_offset.as_secs_f64() + record.done_us as f64 / 1e6,
                record.status(),
                record.error(),
                entry.map(|e| (e.at.as_secs_f64(), e.tries.clone())),
                last_pod.map(pod_events).unwrap_or_default()
            );
        }
        *causes.entry(cause.to_owned()).or_insert(0) += 1;
        requests.push((sent, Some(cause)));
    }
    drop(members);
    sync_targets(&[]);
    Ok(ScenarioResult {
        name: name.to_owned(),
        requests: summary.requests,
        failed: summary.failed,
        causes,
        rollout_seconds,
        p99_ms: summary.latency_from_scheduled.map_or(0.0, |l| l.p99_ms),
        trace: Some(Trace {
            requests,
            events: timeline.events(),
        }),
    })
}

use model::Workload;

/// The one cause of a failed request, from where the ingress sent it and that pod's timeline.
fn attribute(
    record: &Record,
    entry: Option<&ingress::Entry>,
    timeline: &Timeline,
    load_offset: Duration,
) -> &'static str {
    let Some(entry) = entry else { return "other" };
    // Two clocks meet here (the load's and the pods'): allow them 50 ms.
    let done = load_offset + Duration::from_micros(record.done_us) + Duration::from_millis(50);
    let deleted = |pod: usize| timeline.first(pod, |k| *k == EventKind::Deleted);
    match entry.tries.last() {
        Some(Try::Answered { pod, status }) if *status >= 500 => {
            let serving = timeline.first(*pod, |k| *k == EventKind::AppServing);
            if serving.is_none_or(|s| s > entry.at) {
                "premature-activation"
            } else {
                "other"
            }
        }
        Some(Try::SentAndFailed { pod, reused }) => {
            let killed = timeline.first(*pod, |k| matches!(k, EventKind::Sigkill(_)));
            let terminated = timeline.first(*pod, |k| matches!(k, EventKind::Sigterm(_)));
            if killed.is_some_and(|k| k <= done) {
                "grace-expired"
            } else if deleted(*pod).is_some_and(|d| d <= entry.at) {
                "stale-upstream"
            } else if terminated.is_some_and(|t| t <= done) {
                "inflight-cut"
            } else if *reused {
                "keepalive-race"
            } else {
                "other"
            }
        }
        Some(Try::ConnectFailed { .. }) => {
            let all_stale = entry.tries.iter().all(|t| match t {
                Try::ConnectFailed { pod } => deleted(*pod).is_some_and(|d| d <= entry.at),
                _ => false,
            });
            if all_stale { "stale-upstream" } else { "other" }
        }
        _ => "other",
    }
}
