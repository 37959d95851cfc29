//! Adding the lameduck sidecar to Kubernetes manifests, and taking it out again.
//!
//! Works on generic, order-preserving trees (`serde_json::Value`), never on typed
//! structs, so fields this code does not know (newer API fields, CRDs, `status`)
//! survive untouched. Every change to a pod template is recorded in the annotation
//! `lameduck.dev/injected`, which is what makes [`uninject`] exact and [`inject`]
//! idempotent (re-injecting first takes the old injection out, keeping its token).

use std::time::Duration;

use serde_json::{Map, Value, json};

/// Pod template annotation: `disabled` opts a workload out.
pub const ANNOTATION_INJECT: &str = "lameduck.dev/inject";
/// Pod template annotation: the serving port (name or number) when ambiguous.
pub const ANNOTATION_APP_PORT: &str = "lameduck.dev/app-port";
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

/// The sidecar container's name.
pub const SIDECAR_NAME: &str = "lameduck-sidecar";
/// The app's serving port's name once the sidecar has taken over its old one.
pub const APP_PORT_NAME: &str = "lameduck-app";
/// The sidecar's admin port name.
pub const ADMIN_PORT_NAME: &str = "lameduck-admin";
/// Added to the grace period on top of shutdown delay, drain timeout and app stop time.
pub const GRACE_MARGIN_SECONDS: u64 = 5;
/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// Default sidecar image.
pub const DEFAULT_IMAGE: &str = concat!("lameduck/sidecar:", env!("CARGO_PKG_VERSION"));
/// Default shutdown delay.
pub const DEFAULT_SHUTDOWN_DELAY: &str = "15s";
/// Default drain timeout.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
/// Default time the app needs to exit once drained.
pub const DEFAULT_APP_STOP_TIME: &str = "5s";
/// Default sidecar serving port.
pub const DEFAULT_SIDECAR_PORT: u16 = 18080;
/// Default sidecar admin port.
pub const DEFAULT_ADMIN_PORT: u16 = 19901;

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

/// A pod template found in a document.
struct PodRef {
    document: usize,
    kind: String,
    name: String,
    /// JSON pointer to the template's metadata and spec.
    metadata: String,
    spec: String,
}

/// A pod that was injected, for fixing the Services that reach it.
struct Injected {
    labels: Map<String, Value>,
    app_port: u16,
    sidecar_port: u16,
}

fn object_name(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn template_paths(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Pod" => ("/metadata", "/spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => ("/spec/template/metadata", "/spec/template/spec"),
        "CronJob" => (
            "/spec/jobTemplate/spec/template/metadata",
            "/spec/jobTemplate/spec/template/spec",
        ),
        _ => return None,
    })
}

/// Calls `f` on every object of the stream, descending into `kind: List` items.
fn for_each_object(documents: &mut [Value], mut f: impl FnMut(usize, &mut Value)) {
    let mut index = 0;
    for document in documents {
        if crate::manifest::kind(document) == "List" {
            if let Some(Value::Array(items)) = document.get_mut("items") {
                for item in items {
                    f(index, item);
                    index += 1;
                }
            }
        } else {
            f(index, document);
            index += 1;
        }
    }
}

fn error(pod: &PodRef, path: &str, message: impl Into<String>) -> InjectError {
    InjectError {
        document: pod.document,
        kind: pod.kind.clone(),
        name: pod.name.clone(),
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Injects the sidecar into every pod template of the stream that serves a port, and
/// points the stream's Services at it. Returns the workloads left alone.
pub fn inject(documents: &mut [Value], options: &Options) -> Result<Vec<Skipped>, InjectError> {
    // Services fixed by an earlier injection are fixed again from scratch below.
    let mut failure = None;
    for_each_object(documents, |document, object| {
        if failure.is_none() && crate::manifest::kind(object) == "Service" {
            let pod = PodRef {
                document,
                name: object_name(object),
                kind: "Service".to_owned(),
                metadata: String::new(),
                spec: String::new(),
            };
            if let Err(e) = uninject_service(object, &pod) {
                failure = Some(e);
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let mut skipped = Vec::new();
    let mut injected = Vec::new();
    let mut serving_pods = Vec::new();
    let mut failure = None;
    for_each_object(documents, |document, object| {
        if failure.is_some() {
            return;
        }
        let kind = crate::manifest::kind(object).to_owned();
        let Some((metadata, spec)) = template_paths(&kind) else {
            return;
        };
        let pod = PodRef {
            document,
            name: object_name(object),
            kind,
            metadata: metadata.to_owned(),
            spec: spec.to_owned(),
        };
        match inject_pod(object, &pod, options) {
            Ok(PodOutcome::Injected(info)) => injected.push(info),
            Ok(PodOutcome::Skipped(reason, labels)) => {
                if let Some(labels) = labels {
                    serving_pods.push(labels);
                }
                skipped.push(Skipped {
                    document,
                    object: format!("{}/{}", pod.kind, pod.name),
                    reason,
                });
            }
            Ok(PodOutcome::NotServing) => {}
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    fix_services(documents, &injected, &serving_pods)?;
    Ok(skipped)
}

enum PodOutcome {
    Injected(Injected),
    /// Left alone; the labels of a pod that still serves, for the Service check.
    Skipped(String, Option<(Map<String, Value>, Vec<u16>)>),
    NotServing,
}

fn annotations(object: &Value, metadata: &str) -> Map<String, Value> {
    object
        .pointer(&format!("{metadata}/annotations"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn labels(object: &Value, metadata: &str) -> Map<String, Value> {
    object
        .pointer(&format!("{metadata}/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The container ports declared in the pod spec's `lists` (e.g. `containers`).
fn container_ports(spec: &Value, lists: &[&str]) -> Vec<u16> {
    lists
        .iter()
        .filter_map(|key| spec.get(*key).and_then(Value::as_array))
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

fn duration_annotation(
    pod: &PodRef,
    annotations: &Map<String, Value>,
    key: &str,
    default: Duration,
) -> Result<Duration, InjectError> {
    match annotations.get(key).and_then(Value::as_str) {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            error(
                pod,
                &format!("{}/annotations/{key}", pod.metadata),
                format!("{key}={text:?} is not a duration ({e})"),
            )
        }),
    }
}

fn seconds_text(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn inject_pod(
    object: &mut Value,
    pod: &PodRef,
    options: &Options,
) -> Result<PodOutcome, InjectError> {
    let notes = annotations(object, &pod.metadata);
    let Some(spec) = object.pointer(&pod.spec) else {
        return Ok(PodOutcome::NotServing);
    };
    let ports = container_ports(spec, &["containers"]);
    if ports.is_empty() {
        return Ok(PodOutcome::NotServing);
    }
    let pod_labels = labels(object, &pod.metadata);
    if notes.get(ANNOTATION_INJECT).and_then(Value::as_str) == Some("disabled") {
        return Ok(PodOutcome::Skipped(
            format!("{ANNOTATION_INJECT}: disabled"),
            Some((pod_labels, ports)),
        ));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(PodOutcome::Skipped(
            "hostNetwork: true (a sidecar cannot take over a port on the node's network)"
                .to_owned(),
            Some((pod_labels, ports)),
        ));
    }
    // Re-injection: take the old injection out first, keeping its token.
    let mut token = options.drain_token.clone();
    if notes.contains_key(ANNOTATION_INJECTED) {
        if token.is_none() {
            token = existing_token(object, pod);
        }
        uninject_pod(object, pod)?;
    }
    let token = match token {
        Some(token) => token,
        None => {
            random_token().map_err(|e| error(pod, "", format!("generating a drain token: {e}")))?
        }
    };
    let notes = annotations(object, &pod.metadata);
    let shutdown_delay = duration_annotation(
        pod,
        &notes,
        ANNOTATION_SHUTDOWN_DELAY,
        options.shutdown_delay,
    )?;
    let drain_timeout =
        duration_annotation(pod, &notes, ANNOTATION_DRAIN_TIMEOUT, options.drain_timeout)?;
    let app_stop =
        duration_annotation(pod, &notes, ANNOTATION_APP_STOP_TIME, options.app_stop_time)?;

    let spec_path = pod.spec.clone();
    let Some(spec) = object.pointer_mut(&spec_path) else {
        return Ok(PodOutcome::NotServing);
    };
    let (container_index, port_index) = choose_app_port(spec, pod, &notes)?;
    let containers_path = format!("{spec_path}/containers");
    let app = &spec["containers"][container_index];
    let app_name = app
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let app_path = format!("{containers_path}/{container_index}");
    if app.pointer("/lifecycle/preStop").is_some() {
        return Err(error(
            pod,
            &format!("{app_path}/lifecycle/preStop"),
            format!(
                "container {app_name:?} already has a preStop hook; lameduck needs its own (the drain) there. \
                 Remove it (the sidecar's shutdown delay replaces a preStop sleep) or opt out with {ANNOTATION_INJECT}: disabled"
            ),
        ));
    }
    let port = &app["ports"][port_index];
    let app_port = port
        .get("containerPort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            error(
                pod,
                &format!("{app_path}/ports/{port_index}"),
                "containerPort is not a port number",
            )
        })?;
    let old_port_name = port.get("name").and_then(Value::as_str).map(str::to_owned);
    for taken in container_ports(spec, &["containers", "initContainers"]) {
        if taken == options.sidecar_port || taken == options.admin_port {
            return Err(error(
                pod,
                &format!("{spec_path}/containers"),
                format!(
                    "port {taken} is already used in the pod; choose other --sidecar-port/--admin-port"
                ),
            ));
        }
    }
    let app_check = match notes.get(ANNOTATION_APP_CHECK).and_then(Value::as_str) {
        Some(check) => check.to_owned(),
        None => app_check_from_probe(app, app_port, old_port_name.as_deref()),
    };

    // The app: its port gives up its name, probes follow, preStop drains the sidecar.
    let app = &mut spec["containers"][container_index];
    let lifecycle_existed = app.get("lifecycle").is_some();
    if let Some(name) = &old_port_name {
        app["ports"][port_index]["name"] = json!(APP_PORT_NAME);
        rename_probe_ports(app, name, APP_PORT_NAME);
    }
    let hook = json!({
        "httpGet": {
            "path": "/drain",
            "port": options.admin_port,
            "httpHeaders": [{"name": "Authorization", "value": format!("Bearer {token}")}],
        }
    });
    match app.get_mut("lifecycle").and_then(Value::as_object_mut) {
        Some(lifecycle) => {
            lifecycle.insert("preStop".to_owned(), hook);
        }
        None => {
            if let Some(map) = app.as_object_mut() {
                map.insert("lifecycle".to_owned(), json!({ "preStop": hook }));
            }
        }
    }

    // The grace period covers the delay, the drain and the app's own stop.
    let needed = shutdown_delay.as_secs()
        + drain_timeout.as_secs()
        + app_stop.as_secs()
        + GRACE_MARGIN_SECONDS;
    let grace_before = spec.get("terminationGracePeriodSeconds").cloned();
    let current = grace_before
        .as_ref()
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    if current < needed
        && let Some(map) = spec.as_object_mut()
    {
        map.insert("terminationGracePeriodSeconds".to_owned(), json!(needed));
    }

    let sidecar = sidecar_container(
        options,
        &token,
        app_port,
        old_port_name.as_deref(),
        &app_check,
        shutdown_delay,
        drain_timeout,
    );
    let init_existed = spec.get("initContainers").is_some();
    let Some(map) = spec.as_object_mut() else {
        return Ok(PodOutcome::NotServing);
    };
    match options.mode {
        Mode::Native => {
            let init = map.entry("initContainers").or_insert_with(|| json!([]));
            if let Some(list) = init.as_array_mut() {
                list.push(sidecar);
            }
        }
        Mode::Classic => {
            if let Some(list) = map.get_mut("containers").and_then(Value::as_array_mut) {
                list.insert(0, sidecar);
            }
        }
    }

    // What to undo, on the template itself.
    let record = json!({
        "container": app_name,
        "portName": old_port_name,
        "grace": grace_before,
        "lifecycle": lifecycle_existed,
        "initContainers": init_existed,
        "annotations": object.pointer(&format!("{}/annotations", pod.metadata)).is_some(),
        "metadata": object.pointer(&pod.metadata).is_some(),
    });
    set_annotation(
        object,
        &pod.metadata,
        ANNOTATION_INJECTED,
        record.to_string(),
    );
    Ok(PodOutcome::Injected(Injected {
        labels: pod_labels,
        app_port,
        sidecar_port: options.sidecar_port,
    }))
}

/// Picks the serving (container, port): the annotation, else the only TCP port, else
/// the only one named `http`.
fn choose_app_port(
    spec: &Value,
    pod: &PodRef,
    notes: &Map<String, Value>,
) -> Result<(usize, usize), InjectError> {
    let mut candidates = Vec::new();
    for (ci, container) in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (pi, port) in container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let protocol = port
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP");
            if protocol == "TCP" {
                candidates.push((ci, pi, port));
            }
        }
    }
    let annotation_path = format!("{}/annotations/{ANNOTATION_APP_PORT}", pod.metadata);
    if let Some(wanted) = notes.get(ANNOTATION_APP_PORT) {
        let wanted_text = match wanted {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let found: Vec<_> = candidates
            .iter()
            .filter(|(_, _, port)| {
                port.get("name").and_then(Value::as_str) == Some(wanted_text.as_str())
                    || port.get("containerPort").map(|p| p.to_string()) == Some(wanted_text.clone())
            })
            .collect();
        return match found.as_slice() {
            [(ci, pi, _)] => Ok((*ci, *pi)),
            [] => Err(error(
                pod,
                &annotation_path,
                format!("{ANNOTATION_APP_PORT}={wanted_text:?} matches no TCP container port"),
            )),
            _ => Err(error(
                pod,
                &annotation_path,
                format!("{ANNOTATION_APP_PORT}={wanted_text:?} matches several ports"),
            )),
        };
    }
    if let [(ci, pi, _)] = candidates.as_slice() {
        return Ok((*ci, *pi));
    }
    let http: Vec<_> = candidates
        .iter()
        .filter(|(_, _, port)| port.get("name").and_then(Value::as_str) == Some("http"))
        .collect();
    if let [(ci, pi, _)] = http.as_slice() {
        return Ok((*ci, *pi));
    }
    let listed: Vec<String> = candidates
        .iter()
        .map(|(ci, _, port)| {
            let container = spec["containers"][*ci]
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let name = port.get("name").and_then(Value::as_str).unwrap_or("");
            format!(
                "{container}:{}{}",
                port.get("containerPort").unwrap_or(&Value::Null),
                if name.is_empty() {
                    String::new()
                } else {
                    format!(" ({name})")
                }
            )
        })
        .collect();
    Err(error(
        pod,
        &format!("{}/containers", pod.spec),
        format!(
            "the serving port is ambiguous ({}): set the pod template annotation {ANNOTATION_APP_PORT} to its name or number",
            listed.join(", ")
        ),
    ))
}

/// `http:<path>` when the app's readiness probe is an httpGet on the serving port.
fn app_check_from_probe(app: &Value, port: u16, port_name: Option<&str>) -> String {
    let Some(get) = app.pointer("/readinessProbe/httpGet") else {
        return "tcp".to_owned();
    };
    let on_port = match get.get("port") {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(port)),
        Some(Value::String(s)) => {
            Some(s.as_str()) == port_name || s.parse::<u16>().ok() == Some(port)
        }
        _ => false,
    };
    match get.get("path").and_then(Value::as_str) {
        Some(path) if on_port && path.starts_with('/') => format!("http:{path}"),
        _ => "tcp".to_owned(),
    }
}

fn rename_probe_ports(container: &mut Value, from: &str, to: &str) {
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        for handler in ["httpGet", "tcpSocket", "grpc"] {
            if let Some(port) = container.pointer_mut(&format!("/{probe}/{handler}/port"))
                && port.as_str() == Some(from)
            {
                *port = json!(to);
            }
        }
    }
}

fn sidecar_container(
    options: &Options,
    token: &str,
    app_port: u16,
    port_name: Option<&str>,
    app_check: &str,
    shutdown_delay: Duration,
    drain_timeout: Duration,
) -> Value {
    let env = |name: &str, value: String| json!({"name": name, "value": value});
    let mut serving = Map::new();
    if let Some(name) = port_name {
        serving.insert("name".to_owned(), json!(name));
    }
    serving.insert("containerPort".to_owned(), json!(options.sidecar_port));
    let mut container = json!({
        "name": SIDECAR_NAME,
        "image": options.image,
        "env": [
            env("LAMEDUCK_LISTEN", format!("0.0.0.0:{}", options.sidecar_port)),
            env("LAMEDUCK_UPSTREAM", format!("127.0.0.1:{app_port}")),
            env("LAMEDUCK_ADMIN", format!("0.0.0.0:{}", options.admin_port)),
            env("LAMEDUCK_APP_CHECK", app_check.to_owned()),
            env("LAMEDUCK_SHUTDOWN_DELAY", seconds_text(shutdown_delay)),
            env("LAMEDUCK_DRAIN_TIMEOUT", seconds_text(drain_timeout)),
            env("LAMEDUCK_DRAIN_TOKEN", token.to_owned()),
        ],
        "ports": [Value::Object(serving), {"name": ADMIN_PORT_NAME, "containerPort": options.admin_port}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": ADMIN_PORT_NAME},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    });
    if let Some(map) = container.as_object_mut() {
        if options.mode == Mode::Native {
            // The app starts once the sidecar runs (not once the app is ready: that would deadlock).
            map.insert(
                "startupProbe".to_owned(),
                json!({"httpGet": {"path": "/live", "port": ADMIN_PORT_NAME}, "periodSeconds": 1, "failureThreshold": 30}),
            );
            map.insert("restartPolicy".to_owned(), json!("Always"));
        }
        map.insert(
            "resources".to_owned(),
            json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}),
        );
        map.insert(
            "securityContext".to_owned(),
            json!({
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
            }),
        );
    }
    container
}

fn set_annotation(object: &mut Value, metadata: &str, key: &str, value: String) {
    let mut path = String::new();
    for segment in metadata
        .trim_start_matches('/')
        .split('/')
        .chain(["annotations"])
    {
        let Some(parent) = object.pointer_mut(&path).and_then(Value::as_object_mut) else {
            return;
        };
        parent
            .entry(segment.to_owned())
            .or_insert_with(|| json!({}));
        path.push('/');
        path.push_str(segment);
    }
    if let Some(annotations) = object.pointer_mut(&path).and_then(Value::as_object_mut) {
        annotations.insert(key.to_owned(), json!(value));
    }
}

fn existing_token(object: &Value, pod: &PodRef) -> Option<String> {
    let spec = object.pointer(&pod.spec)?;
    ["initContainers", "containers"]
        .iter()
        .filter_map(|key| spec.get(*key).and_then(Value::as_array))
        .flatten()
        .filter(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME))
        .flat_map(|c| c.get("env").and_then(Value::as_array).into_iter().flatten())
        .find(|e| e.get("name").and_then(Value::as_str) == Some("LAMEDUCK_DRAIN_TOKEN"))
        .and_then(|e| e.get("value").and_then(Value::as_str))
        .map(str::to_owned)
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Points Services that reach an injected pod by the app's port number at the sidecar.
fn fix_services(
    documents: &mut [Value],
    injected: &[Injected],
    not_injected: &[(Map<String, Value>, Vec<u16>)],
) -> Result<(), InjectError> {
    let selects = |selector: &Map<String, Value>, labels: &Map<String, Value>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let mut failure = None;
    for_each_object(documents, |document, service| {
        if failure.is_some() || crate::manifest::kind(service) != "Service" {
            return;
        }
        let selector = service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let Some(pod) = injected.iter().find(|p| selects(&selector, &p.labels)) else {
            return;
        };
        let name = object_name(service);
        let mut undo = Map::new();
        let ports = service
            .pointer_mut("/spec/ports")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .unwrap_or_default();
        let mut fixed = Vec::with_capacity(ports.len());
        for (index, mut port) in ports.into_iter().enumerate() {
            let target = port.get("targetPort").cloned();
            let number = match &target {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => s.parse::<u64>().ok(),
                None => port.get("port").and_then(Value::as_u64),
                _ => None,
            };
            if number == Some(u64::from(pod.app_port)) {
                let shared = not_injected.iter().any(|(labels, ports)| {
                    selects(&selector, labels) && ports.contains(&pod.app_port)
                });
                if shared {
                    failure = Some(InjectError {
                        document,
                        kind: "Service".to_owned(),
                        name: name.clone(),
                        path: format!("/spec/ports/{index}/targetPort"),
                        message: format!(
                            "targets port {} by number on pods of which only some get the sidecar; target the port by name instead",
                            pod.app_port
                        ),
                    });
                }
                undo.insert(index.to_string(), target.unwrap_or(Value::Null));
                if let Some(map) = port.as_object_mut() {
                    map.insert("targetPort".to_owned(), json!(pod.sidecar_port));
                }
            }
            fixed.push(port);
        }
        if let Some(slot) = service.pointer_mut("/spec/ports") {
            *slot = Value::Array(fixed);
        }
        if !undo.is_empty() {
            let record = json!({
                "targetPorts": undo,
                "annotations": service.pointer("/metadata/annotations").is_some(),
            });
            set_annotation(
                service,
                "/metadata",
                ANNOTATION_INJECTED,
                record.to_string(),
            );
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Takes out everything [`inject`] added, exactly.
pub fn uninject(documents: &mut [Value]) -> Result<(), InjectError> {
    let mut failure = None;
    for_each_object(documents, |document, object| {
        if failure.is_some() {
            return;
        }
        let kind = crate::manifest::kind(object).to_owned();
        let pod = PodRef {
            document,
            name: object_name(object),
            kind: kind.clone(),
            metadata: String::new(),
            spec: String::new(),
        };
        let result = if kind == "Service" {
            uninject_service(object, &pod)
        } else if let Some((metadata, spec)) = template_paths(&kind) {
            let pod = PodRef {
                metadata: metadata.to_owned(),
                spec: spec.to_owned(),
                ..pod
            };
            if annotations(object, &pod.metadata).contains_key(ANNOTATION_INJECTED) {
                uninject_pod(object, &pod)
            } else {
                Ok(())
            }
        } else {
            Ok(())
        };
        if let Err(e) = result {
            failure = Some(e);
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn undo_record(object: &Value, metadata: &str, pod: &PodRef) -> Result<Value, InjectError> {
    // The key holds a '/', so it cannot be part of a JSON pointer.
    let notes = annotations(object, metadata);
    let text = notes
        .get(ANNOTATION_INJECTED)
        .and_then(Value::as_str)
        .unwrap_or("");
    serde_json::from_str(text).map_err(|e| {
        error(
            pod,
            &format!("{metadata}/annotations/{ANNOTATION_INJECTED}"),
            format!("the injection record is not valid JSON ({e})"),
        )
    })
}

fn remove_annotation(
    object: &mut Value,
    metadata: &str,
    annotations_existed: bool,
    metadata_existed: bool,
) {
    if let Some(annotations) = object
        .pointer_mut(&format!("{metadata}/annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(ANNOTATION_INJECTED);
    }
    if !annotations_existed
        && let Some(meta) = object.pointer_mut(metadata).and_then(Value::as_object_mut)
    {
        meta.shift_remove("annotations");
    }
    if !metadata_existed
        && let Some((parent, key)) = metadata.rsplit_once('/')
        && let Some(map) = object.pointer_mut(parent).and_then(Value::as_object_mut)
        && map
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        map.shift_remove(key);
    }
}

fn uninject_pod(object: &mut Value, pod: &PodRef) -> Result<(), InjectError> {
    let record = undo_record(object, &pod.metadata, pod)?;
    let flag = |key: &str| record.get(key).and_then(Value::as_bool).unwrap_or(true);
    let app_name = record
        .get("container")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(spec) = object.pointer_mut(&pod.spec).and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for key in ["initContainers", "containers"] {
        if let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) {
            list.retain(|c| c.get("name").and_then(Value::as_str) != Some(SIDECAR_NAME));
        }
    }
    if !flag("initContainers")
        && spec
            .get("initContainers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        spec.shift_remove("initContainers");
    }
    match record.get("grace") {
        Some(Value::Null) | None => {
            spec.shift_remove("terminationGracePeriodSeconds");
        }
        Some(value) => {
            spec.insert("terminationGracePeriodSeconds".to_owned(), value.clone());
        }
    }
    let app = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .and_then(|list| {
            list.iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(app_name.as_str()))
        });
    if let Some(app) = app {
        if let Some(lifecycle) = app.get_mut("lifecycle").and_then(Value::as_object_mut) {
            lifecycle.shift_remove("preStop");
        }
        if !flag("lifecycle")
            && let Some(map) = app.as_object_mut()
        {
            map.shift_remove("lifecycle");
        }
        if let Some(name) = record.get("portName").and_then(Value::as_str) {
            if let Some(port) =
                app.get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .and_then(|ports| {
                        ports
                            .iter_mut()
                            .find(|p| p.get("name").and_then(Value::as_str) == Some(APP_PORT_NAME))
                    })
            {
                port["name"] = json!(name);
            }
            rename_probe_ports(app, APP_PORT_NAME, name);
        }
    }
    remove_annotation(object, &pod.metadata, flag("annotations"), flag("metadata"));
    Ok(())
}

fn uninject_service(service: &mut Value, pod: &PodRef) -> Result<(), InjectError> {
    if !annotations(service, "/metadata").contains_key(ANNOTATION_INJECTED) {
        return Ok(());
    }
    let record = undo_record(service, "/metadata", pod)?;
    if let (Some(undo), Some(ports)) = (
        record.get("targetPorts").and_then(Value::as_object),
        service
            .pointer_mut("/spec/ports")
            .and_then(Value::as_array_mut),
    ) {
        for (index, original) in undo {
            let Some(port) = index
                .parse::<usize>()
                .ok()
                .and_then(|i| ports.get_mut(i))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if original.is_null() {
                port.shift_remove("targetPort");
            } else {
                port.insert("targetPort".to_owned(), original.clone());
            }
        }
    }
    let existed = record
        .get("annotations")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    remove_annotation(service, "/metadata", existed, true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_defaults_parse() {
        let options = Options::default();
        assert_eq!(options.shutdown_delay, Duration::from_secs(15));
        assert_eq!(options.drain_timeout, Duration::from_secs(30));
        assert_eq!(options.app_stop_time, Duration::from_secs(5));
        assert_eq!(options.image, DEFAULT_IMAGE);
    }
}
