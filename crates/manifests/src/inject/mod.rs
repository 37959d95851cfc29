//! Adding the lameduck sidecar to Kubernetes manifests, and taking it out again.
//!
//! Every change to a pod template or a Service is recorded in the annotation
//! `lameduck.dev/injected` (a typed [`record`]), which is what makes [`uninject`]
//! exact and [`inject`] idempotent: re-injecting first takes the old injection out,
//! keeping its drain token.
//!
//! - [`pod`]: one pod template in and out (the app's ports, preStop, grace period);
//! - [`port`]: which container ports the sidecar fronts;
//! - [`protocol`]: which protocol each of them speaks, and the evidence;
//! - [`sidecar`]: the sidecar container itself;
//! - [`service`]: Services that reach an injected pod by the app's port number;
//! - [`record`]: what was changed, so it can be undone.

mod pod;
mod port;
pub(crate) mod protocol;
mod record;
mod service;
mod sidecar;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::workload::{self, TemplatePaths};

/// Pod template annotation: `disabled` opts a workload out.
pub const ANNOTATION_INJECT: &str = "lameduck.dev/inject";
/// Pod template annotation: the serving ports (names or numbers, comma-separated) when
/// no Service of the stream says, or to front fewer.
pub const ANNOTATION_APP_PORT: &str = "lameduck.dev/app-port";
/// Pod template annotation: how the serving ports are fronted (`http`, `h2c`, `grpc`,
/// `tcp` or `skip`), for all of them or as `PORT=PROTOCOL,...`.
pub const ANNOTATION_PROTOCOL: &str = "lameduck.dev/protocol";
/// Pod template annotation: shutdown delay for this workload (e.g. `20s`).
pub const ANNOTATION_SHUTDOWN_DELAY: &str = "lameduck.dev/shutdown-delay";
/// Pod template annotation: drain timeout for this workload.
pub const ANNOTATION_DRAIN_TIMEOUT: &str = "lameduck.dev/drain-timeout";
/// Pod template annotation: the app check (`tcp` or `http:/path`).
pub const ANNOTATION_APP_CHECK: &str = "lameduck.dev/app-check";
/// Pod template annotation: how long the app needs to exit after SIGTERM.
pub const ANNOTATION_APP_STOP_TIME: &str = "lameduck.dev/app-stop-time";
/// Annotation holding what injection changed (pod templates and Services).
pub const ANNOTATION_INJECTED: &str = "lameduck.dev/injected";

pub use protocol::{Evidence, PortProtocol};

pub use lameduck_contract::pod::{
    ADMIN_PORT_NAME, APP_PORT_NAME, SIDECAR_CONTAINER as SIDECAR_NAME,
};
/// Added to the grace period on top of shutdown delay, drain timeout and app stop time.
pub const GRACE_MARGIN_SECONDS: u64 = 5;

/// Default sidecar image.
pub const DEFAULT_IMAGE: &str = concat!("lameduck/sidecar:", env!("CARGO_PKG_VERSION"));
/// Default shutdown delay: the sidecar's own.
pub const DEFAULT_SHUTDOWN_DELAY: &str = lameduck_contract::defaults::SHUTDOWN_DELAY;
/// Default drain timeout: the sidecar's own.
pub const DEFAULT_DRAIN_TIMEOUT: &str = lameduck_contract::defaults::DRAIN_TIMEOUT;
/// Default time the app needs to exit once drained.
pub const DEFAULT_APP_STOP_TIME: &str = "5s";
/// Default sidecar serving port in an injected pod.
pub const DEFAULT_SIDECAR_PORT: u16 = 18080;
/// Default sidecar admin port in an injected pod.
pub const DEFAULT_ADMIN_PORT: u16 = 19901;

/// Default CPU request of the sidecar container.
pub const DEFAULT_CPU_REQUEST: &str = "10m";
/// Default memory request of the sidecar container: an idle sidecar (about 8 MiB,
/// `crate::memory`) with a few hundred connections.
pub const DEFAULT_MEMORY_REQUEST: &str = "16Mi";
/// Default memory limit of the sidecar container: twice the estimate for 10 000 idle
/// connections and 2 000 requests in flight (`crate::memory`, about 123 MiB).
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

/// The sidecar container's resources (Kubernetes quantities; `None`: not set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: Option<String>,
    /// `requests.memory`.
    pub memory_request: Option<String>,
    /// `limits.cpu` (none by default: a CPU limit throttles the proxy of every request).
    pub cpu_limit: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_request: Some(DEFAULT_CPU_REQUEST.to_owned()),
            memory_request: Some(DEFAULT_MEMORY_REQUEST.to_owned()),
            cpu_limit: None,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT.to_owned()),
        }
    }
}

impl Resources {
    /// The container's `resources` object.
    pub fn to_json(&self) -> Value {
        let group = |pairs: [(&str, &Option<String>); 2]| -> Map<String, Value> {
            pairs
                .into_iter()
                .filter_map(|(key, value)| Some((key.to_owned(), Value::String(value.clone()?))))
                .collect()
        };
        let requests = group([("cpu", &self.cpu_request), ("memory", &self.memory_request)]);
        let limits = group([("cpu", &self.cpu_limit), ("memory", &self.memory_limit)]);
        let mut resources = Map::new();
        if !requests.is_empty() {
            resources.insert("requests".to_owned(), Value::Object(requests));
        }
        if !limits.is_empty() {
            resources.insert("limits".to_owned(), Value::Object(limits));
        }
        Value::Object(resources)
    }
}

/// Kinds whose pods run to completion: only a native sidecar lets them finish.
const RUN_TO_COMPLETION: [&str; 2] = ["Job", "CronJob"];

/// Where the sidecar runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A native sidecar: an init container with `restartPolicy: Always` (Kubernetes ≥ 1.29).
    Native,
    /// A regular container, listed first.
    Classic,
}

/// Injection settings (flags give them; pod annotations override some).
#[derive(Debug, Clone)]
pub struct Options {
    /// The sidecar image.
    pub image: String,
    /// Native or classic sidecar.
    pub mode: Mode,
    /// Default shutdown delay.
    pub shutdown_delay: Duration,
    /// Default drain timeout.
    pub drain_timeout: Duration,
    /// Default time the app needs to exit once drained.
    pub app_stop_time: Duration,
    /// The sidecar's serving port.
    pub sidecar_port: u16,
    /// The sidecar's admin port.
    pub admin_port: u16,
    /// One drain token for every workload; `None`: a random one per pod template
    /// (kept when re-injecting).
    pub drain_token: Option<String>,
    /// The sidecar container's resources.
    pub resources: Resources,
}

impl Default for Options {
    /// The CLI's defaults: native sidecar, 15 s delay, 30 s drain, 5 s app stop,
    /// ports 18080 and 19901, a random token per workload.
    fn default() -> Self {
        let duration = |text| humantime::parse_duration(text).unwrap_or_default();
        Self {
            image: DEFAULT_IMAGE.to_owned(),
            mode: Mode::Native,
            shutdown_delay: duration(DEFAULT_SHUTDOWN_DELAY),
            drain_timeout: duration(DEFAULT_DRAIN_TIMEOUT),
            app_stop_time: duration(DEFAULT_APP_STOP_TIME),
            sidecar_port: DEFAULT_SIDECAR_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            drain_token: None,
            resources: Resources::default(),
        }
    }
}

/// Why a stream cannot be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("document {document} ({kind} {name}): {path}: {message}")]
pub struct InjectError {
    /// The document's index in the stream, from 0 (items of a List count as documents).
    pub document: usize,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Where in the document.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// A workload left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The document's index.
    pub document: usize,
    /// `Kind/name`.
    pub object: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "skipped {} (document {}): {}",
            self.object, self.document, self.reason
        )
    }
}

/// How one port of an injected workload is fronted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// `name/number`, or the number.
    pub port: String,
    /// The protocol it is fronted with (`skip`: not fronted).
    pub protocol: PortProtocol,
    /// Why.
    pub evidence: String,
    /// The sidecar's serving port in front of it.
    pub sidecar_port: Option<u16>,
}

/// The choices made for one injected workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The document's index.
    pub document: usize,
    /// `Kind/name`.
    pub object: String,
    /// One per serving port considered.
    pub ports: Vec<Choice>,
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (document {}):", self.object, self.document)?;
        for (i, choice) in self.ports.iter().enumerate() {
            let separator = if i == 0 { " " } else { "; " };
            match choice.sidecar_port {
                Some(sidecar) => write!(
                    f,
                    "{separator}port {} as {} behind {sidecar} ({})",
                    choice.port,
                    choice.protocol.as_str(),
                    choice.evidence
                )?,
                None => write!(
                    f,
                    "{separator}port {} left alone ({})",
                    choice.port, choice.evidence
                )?,
            }
        }
        Ok(())
    }
}

/// What `inject` did: how each injected workload's ports are fronted, and the
/// workloads left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Injected workloads, in stream order.
    pub chosen: Vec<Chosen>,
    /// Workloads left alone.
    pub skipped: Vec<Skipped>,
}

/// One object of the stream being worked on: where it is, and where its pod
/// template is (none for a Service).
#[derive(Debug)]
struct Located {
    document: usize,
    kind: String,
    name: String,
    paths: TemplatePaths,
}

impl Located {
    fn new(document: usize, object: &Value) -> Self {
        let kind = workload::kind(object).to_owned();
        let paths = workload::pod_template_paths(&kind).unwrap_or(TemplatePaths {
            metadata: "/metadata",
            spec: "/spec",
        });
        Self {
            document,
            name: workload::name(object).to_owned(),
            kind,
            paths,
        }
    }

    fn error(&self, path: &str, message: impl Into<String>) -> InjectError {
        InjectError {
            document: self.document,
            kind: self.kind.clone(),
            name: self.name.clone(),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// A JSON pointer below the template's metadata.
    fn metadata(&self, below: &str) -> String {
        format!("{}{below}", self.paths.metadata)
    }
}

/// Calls `f` on every object of the stream with its index, stopping at the first error.
fn try_for_each_object<E>(
    documents: &mut [Value],
    mut f: impl FnMut(usize, &mut Value) -> Result<(), E>,
) -> Result<(), E> {
    workload::objects_mut(documents)
        .enumerate()
        .try_for_each(|(index, object)| f(index, object))
}

/// Injects the sidecar into every pod template of the stream that serves a port, and
/// points the stream's Services at it. Returns what was chosen and what left alone.
pub fn inject(documents: &mut [Value], options: &Options) -> Result<Report, InjectError> {
    // Services fixed by an earlier injection are fixed again from scratch below.
    let mut services = Vec::new();
    try_for_each_object(documents, |document, object| {
        if workload::kind(object) == "Service" {
            service::uninject(object, &Located::new(document, object))?;
            services.push(service::ServiceFacts::of(object));
        }
        Ok(())
    })?;
    let mut skipped = Vec::new();
    let mut chosen = Vec::new();
    let mut pods = service::Pods::default();
    try_for_each_object(documents, |document, object| {
        if workload::pod_template_paths(workload::kind(object)).is_none() {
            return Ok(());
        }
        let at = Located::new(document, object);
        match pod::inject(object, &at, options, &services)? {
            pod::Outcome::Injected(..)
                if options.mode == Mode::Classic
                    && RUN_TO_COMPLETION.contains(&at.kind.as_str()) =>
            {
                return Err(at.error(
                    at.paths.spec,
                    "--mode classic cannot be used here: a regular sidecar container never \
                     exits, so the Job would never complete; use the native sidecar \
                     (--mode native, Kubernetes 1.29 or later)",
                ));
            }
            pod::Outcome::Injected(injected, ports) => {
                pods.injected.push(injected);
                chosen.push(Chosen {
                    document,
                    object: format!("{}/{}", at.kind, at.name),
                    ports,
                });
            }
            pod::Outcome::Skipped { reason, serving } => {
                pods.not_injected.push(serving);
                skipped.push(Skipped {
                    document,
                    object: format!("{}/{}", at.kind, at.name),
                    reason,
                });
            }
            pod::Outcome::NotServing => {}
        }
        Ok(())
    })?;
    try_for_each_object(documents, |document, object| {
        if workload::kind(object) == "Service" {
            service::inject(object, &Located::new(document, object), &pods)?;
        }
        Ok(())
    })?;
    Ok(Report { chosen, skipped })
}

/// Takes out everything [`inject`] added, exactly.
pub fn uninject(documents: &mut [Value]) -> Result<(), InjectError> {
    try_for_each_object(documents, |document, object| {
        let kind = workload::kind(object);
        if kind == "Service" {
            service::uninject(object, &Located::new(document, object))
        } else if workload::pod_template_paths(kind).is_some() {
            let at = Located::new(document, object);
            if annotations(object, &at).contains_key(ANNOTATION_INJECTED) {
                pod::uninject(object, &at)
            } else {
                Ok(())
            }
        } else {
            Ok(())
        }
    })
}

/// The annotations of the template's metadata (a copy; empty when there are none).
fn annotations(object: &Value, at: &Located) -> Map<String, Value> {
    map_at(object, &at.metadata("/annotations"))
}

/// The labels of the template's metadata.
fn labels(object: &Value, at: &Located) -> Map<String, Value> {
    map_at(object, &at.metadata("/labels"))
}

fn map_at(object: &Value, pointer: &str) -> Map<String, Value> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_gets_a_native_sidecar_and_classic_mode_refuses_it() {
        for kind in RUN_TO_COMPLETION {
            let spec = serde_json::json!({
                "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}],
                "restartPolicy": "Never",
            });
            let object = if kind == "Job" {
                serde_json::json!({"kind": kind, "metadata": {"name": "j"},
                    "spec": {"template": {"spec": spec}}})
            } else {
                serde_json::json!({"kind": kind, "metadata": {"name": "j"},
                    "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}})
            };
            let mut native = vec![object.clone()];
            let report = inject(&mut native, &Options::default()).expect("native");
            assert_eq!(report.chosen.len(), 1, "{kind} injected");
            let classic = Options {
                mode: Mode::Classic,
                ..Options::default()
            };
            let error = inject(&mut [object], &classic).expect_err("classic refused");
            assert!(error.message.contains("never complete"), "{error}");
            assert_eq!(error.kind, kind);
        }
    }

    #[test]
    fn the_shared_defaults_parse() {
        let options = Options::default();
        assert_eq!(options.shutdown_delay, Duration::from_secs(15));
        assert_eq!(options.drain_timeout, Duration::from_secs(30));
        assert_eq!(options.app_stop_time, Duration::from_secs(5));
        assert_eq!(options.image, DEFAULT_IMAGE);
    }
}
