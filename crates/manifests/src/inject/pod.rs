//! One pod template: the app's serving port handed to the sidecar, the app's preStop
//! hook pointed at the drain, the grace period stretched to cover it, and the sidecar
//! added; and the exact reverse.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::record::{self, PodRecord};
use super::service::{Injected, Serving};
use super::{
    ANNOTATION_APP_CHECK, ANNOTATION_APP_STOP_TIME, ANNOTATION_DRAIN_TIMEOUT, ANNOTATION_INJECT,
    ANNOTATION_INJECTED, ANNOTATION_SHUTDOWN_DELAY, APP_PORT_NAME, GRACE_MARGIN_SECONDS,
    InjectError, Located, Mode, Options, SIDECAR_NAME, annotations, labels, port, sidecar,
};
use crate::workload::{self, DEFAULT_GRACE_SECONDS};

/// What became of one pod template.
pub(super) enum Outcome {
    /// The sidecar was added.
    Injected(Injected),
    /// Left alone, though it serves (the Service check needs to know).
    Skipped { reason: String, serving: Serving },
    /// No container port: nothing to front.
    NotServing,
}

/// The per-workload settings, from the annotations or the options.
struct Settings {
    token: String,
    shutdown_delay: Duration,
    drain_timeout: Duration,
    app_stop: Duration,
}

/// Injects the sidecar into the pod template of `object`.
pub(super) fn inject(
    object: &mut Value,
    at: &Located,
    options: &Options,
) -> Result<Outcome, InjectError> {
    let Some(spec) = object.pointer(at.paths.spec) else {
        return Ok(Outcome::NotServing);
    };
    let ports = workload::container_ports(spec, &["containers"]);
    if ports.is_empty() {
        return Ok(Outcome::NotServing);
    }
    if let Some(reason) = skip_reason(object, spec, at) {
        let serving = Serving {
            labels: labels(object, at),
            ports,
        };
        return Ok(Outcome::Skipped { reason, serving });
    }
    let settings = settings(object, at, options)?;
    let notes = annotations(object, at);
    let Some(spec) = object.pointer_mut(at.paths.spec) else {
        return Ok(Outcome::NotServing);
    };
    let app = App::choose(spec, at, &notes, options)?;
    let record = rewrite_spec(spec, &app, &settings, options);
    let record = PodRecord {
        annotations: object.pointer(&at.metadata("/annotations")).is_some(),
        metadata: object.pointer(at.paths.metadata).is_some(),
        ..record
    };
    record::write(object, at.paths.metadata, &record);
    Ok(Outcome::Injected(Injected {
        labels: labels(object, at),
        app_port: app.port,
        sidecar_port: options.sidecar_port,
    }))
}

/// Why a serving template is left alone, if it is.
fn skip_reason(object: &Value, spec: &Value, at: &Located) -> Option<String> {
    let notes = annotations(object, at);
    if notes.get(ANNOTATION_INJECT).and_then(Value::as_str) == Some("disabled") {
        return Some(format!("{ANNOTATION_INJECT}: disabled"));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Some(
            "hostNetwork: true (a sidecar cannot take over a port on the node's network)"
                .to_owned(),
        );
    }
    None
}

/// Takes out an earlier injection (keeping its token), then reads the durations.
fn settings(object: &mut Value, at: &Located, options: &Options) -> Result<Settings, InjectError> {
    let mut token = options.drain_token.clone();
    if annotations(object, at).contains_key(ANNOTATION_INJECTED) {
        if token.is_none() {
            token = existing_token(object, at);
        }
        uninject(object, at)?;
    }
    let token = match token {
        Some(token) => token,
        None => {
            random_token().map_err(|e| at.error("", format!("generating a drain token: {e}")))?
        }
    };
    let notes = annotations(object, at);
    let duration = |key: &str, default: Duration| match notes.get(key).and_then(Value::as_str) {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            at.error(
                &at.metadata(&format!("/annotations/{key}")),
                format!("{key}={text:?} is not a duration ({e})"),
            )
        }),
    };
    Ok(Settings {
        shutdown_delay: duration(ANNOTATION_SHUTDOWN_DELAY, options.shutdown_delay)?,
        drain_timeout: duration(ANNOTATION_DRAIN_TIMEOUT, options.drain_timeout)?,
        app_stop: duration(ANNOTATION_APP_STOP_TIME, options.app_stop_time)?,
        token,
    })
}

/// The app container and its serving port, checked for what injection needs.
struct App {
    container: usize,
    port_index: usize,
    name: String,
    port: u16,
    port_name: Option<String>,
    check: String,
}

impl App {
    fn choose(
        spec: &Value,
        at: &Located,
        notes: &Map<String, Value>,
        options: &Options,
    ) -> Result<Self, InjectError> {
        let (container, port_index) = port::choose(spec, at, notes)?;
        let app = &spec["containers"][container];
        let name = workload::container_name(app).to_owned();
        let app_path = format!("{}/containers/{container}", at.paths.spec);
        if app.pointer("/lifecycle/preStop").is_some() {
            return Err(at.error(
                &format!("{app_path}/lifecycle/preStop"),
                format!(
                    "container {name:?} already has a preStop hook; lameduck needs its own (the drain) there. \
                     Remove it (the sidecar's shutdown delay replaces a preStop sleep) or opt out with {ANNOTATION_INJECT}: disabled"
                ),
            ));
        }
        let declared = &app["ports"][port_index];
        let port = declared
            .get("containerPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                at.error(
                    &format!("{app_path}/ports/{port_index}"),
                    "containerPort is not a port number",
                )
            })?;
        let port_name = declared
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let taken = workload::container_ports(spec, &["containers", "initContainers"]);
        if let Some(taken) = taken
            .into_iter()
            .find(|p| *p == options.sidecar_port || *p == options.admin_port)
        {
            return Err(at.error(
                &format!("{}/containers", at.paths.spec),
                format!(
                    "port {taken} is already used in the pod; give the sidecar other serving and admin ports"
                ),
            ));
        }
        let check = match notes.get(ANNOTATION_APP_CHECK).and_then(Value::as_str) {
            Some(check) => check.to_owned(),
            None => sidecar::app_check_from_probe(app, port, port_name.as_deref()),
        };
        Ok(Self {
            container,
            port_index,
            name,
            port,
            port_name,
            check,
        })
    }
}

/// Rewrites the pod spec; returns what to undo there (metadata flags still unset).
fn rewrite_spec(spec: &mut Value, app: &App, settings: &Settings, options: &Options) -> PodRecord {
    let container = &mut spec["containers"][app.container];
    let lifecycle_existed = container.get("lifecycle").is_some();
    if let Some(name) = &app.port_name {
        container["ports"][app.port_index]["name"] = json!(APP_PORT_NAME);
        rename_probe_ports(container, name, APP_PORT_NAME);
    }
    set_pre_stop(container, drain_hook(options.admin_port, &settings.token));

    // The grace period covers the delay, the drain and the app's own stop.
    let needed = settings.shutdown_delay.as_secs()
        + settings.drain_timeout.as_secs()
        + settings.app_stop.as_secs()
        + GRACE_MARGIN_SECONDS;
    let grace_before = spec.get("terminationGracePeriodSeconds").cloned();
    let current = grace_before
        .as_ref()
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let init_existed = spec.get("initContainers").is_some();
    if let Some(map) = spec.as_object_mut() {
        if current < needed {
            map.insert("terminationGracePeriodSeconds".to_owned(), json!(needed));
        }
        let sidecar = sidecar::container(
            options,
            &sidecar::Wiring {
                token: &settings.token,
                app_port: app.port,
                port_name: app.port_name.as_deref(),
                app_check: &app.check,
                shutdown_delay: settings.shutdown_delay,
                drain_timeout: settings.drain_timeout,
            },
        );
        add_sidecar(map, sidecar, options.mode);
    }
    PodRecord {
        container: app.name.clone(),
        port_name: app.port_name.clone(),
        grace: grace_before,
        lifecycle: lifecycle_existed,
        init_containers: init_existed,
        annotations: false,
        metadata: false,
    }
}

/// The app's preStop hook: GET the sidecar's `/drain`, which answers once drained.
fn drain_hook(admin_port: u16, token: &str) -> Value {
    json!({
        "httpGet": {
            "path": lameduck_contract::admin::DRAIN,
            "port": admin_port,
            "httpHeaders": [{"name": "Authorization", "value": format!("Bearer {token}")}],
        }
    })
}

fn set_pre_stop(container: &mut Value, hook: Value) {
    match container
        .get_mut("lifecycle")
        .and_then(Value::as_object_mut)
    {
        Some(lifecycle) => {
            lifecycle.insert("preStop".to_owned(), hook);
        }
        None => {
            if let Some(map) = container.as_object_mut() {
                map.insert("lifecycle".to_owned(), json!({ "preStop": hook }));
            }
        }
    }
}

fn add_sidecar(spec: &mut Map<String, Value>, sidecar: Value, mode: Mode) {
    match mode {
        Mode::Native => {
            let init = spec.entry("initContainers").or_insert_with(|| json!([]));
            if let Some(list) = init.as_array_mut() {
                list.push(sidecar);
            }
        }
        Mode::Classic => {
            if let Some(list) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                list.insert(0, sidecar);
            }
        }
    }
}

pub(super) fn rename_probe_ports(container: &mut Value, from: &str, to: &str) {
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

fn existing_token(object: &Value, at: &Located) -> Option<String> {
    let spec = object.pointer(at.paths.spec)?;
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| workload::containers(spec, list))
        .filter(|c| workload::container_name(c) == SIDECAR_NAME)
        .find_map(|c| workload::env_value(c, lameduck_contract::env::DRAIN_TOKEN))
        .map(str::to_owned)
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Takes the sidecar out of a template `inject` changed, as its record says.
pub(super) fn uninject(object: &mut Value, at: &Located) -> Result<(), InjectError> {
    let record: PodRecord = record::read(object, at.paths.metadata, at)?;
    let Some(spec) = object
        .pointer_mut(at.paths.spec)
        .and_then(Value::as_object_mut)
    else {
        return Ok(());
    };
    for key in ["initContainers", "containers"] {
        if let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) {
            list.retain(|c| workload::container_name(c) != SIDECAR_NAME);
        }
    }
    if !record.init_containers
        && spec
            .get("initContainers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        spec.shift_remove("initContainers");
    }
    match &record.grace {
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
                .find(|c| workload::container_name(c) == record.container)
        });
    if let Some(app) = app {
        restore_app(app, &record);
    }
    record::remove(
        object,
        at.paths.metadata,
        record.annotations,
        record.metadata,
    );
    Ok(())
}

fn restore_app(app: &mut Value, record: &PodRecord) {
    if let Some(lifecycle) = app.get_mut("lifecycle").and_then(Value::as_object_mut) {
        lifecycle.shift_remove("preStop");
    }
    if !record.lifecycle
        && let Some(map) = app.as_object_mut()
    {
        map.shift_remove("lifecycle");
    }
    if let Some(name) = &record.port_name {
        let renamed = app
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .and_then(|ports| {
                ports
                    .iter_mut()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(APP_PORT_NAME))
            });
        if let Some(port) = renamed {
            port["name"] = json!(name);
        }
        rename_probe_ports(app, APP_PORT_NAME, name);
    }
}
