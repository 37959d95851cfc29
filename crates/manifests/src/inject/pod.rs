//! One pod template: the app's serving port handed to the sidecar, the app's preStop
//! hook pointed at the drain, the grace period stretched to cover it, and the sidecar
//! added; and the exact reverse.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::port::Fronted;
use super::protocol::{self, Annotated, Evidence, PortProtocol};
use super::record::{self, PodRecord};
use super::service::{Injected, ServiceFacts, Serving};
use super::{
    ANNOTATION_APP_CHECK, ANNOTATION_APP_STOP_TIME, ANNOTATION_DRAIN_TIMEOUT, ANNOTATION_INJECT,
    ANNOTATION_INJECTED, ANNOTATION_PROTOCOL, ANNOTATION_SHUTDOWN_DELAY, APP_PORT_NAME, Choice,
    GRACE_MARGIN_SECONDS, InjectError, Located, Mode, Options, SIDECAR_NAME, annotations, labels,
    port, sidecar,
};
use crate::workload::{self, DEFAULT_GRACE_SECONDS};

/// What became of one pod template.
pub(super) enum Outcome {
    /// The sidecar was added; how each port is fronted.
    Injected(Injected, Vec<Choice>),
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
    services: &[ServiceFacts],
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
    let pod_labels = labels(object, at);
    let selecting: Vec<&ServiceFacts> =
        services.iter().filter(|s| s.selects(&pod_labels)).collect();
    let Some(spec) = object.pointer(at.paths.spec) else {
        return Ok(Outcome::NotServing);
    };
    let app = App::choose(spec, at, &notes, &selecting, options)?;
    if app.ports.is_empty() {
        // Every serving port is `skip`: nothing to front; the earlier injection is out.
        let serving = Serving {
            labels: pod_labels,
            ports: workload::container_ports(spec, &["containers"]),
        };
        let reason = format!("every serving port is skip ({ANNOTATION_PROTOCOL})");
        return Ok(Outcome::Skipped { reason, serving });
    }
    let Some(spec) = object.pointer_mut(at.paths.spec) else {
        return Ok(Outcome::NotServing);
    };
    let record = rewrite_spec(spec, &app, &settings, options);
    let record = PodRecord {
        annotations: object.pointer(&at.metadata("/annotations")).is_some(),
        metadata: object.pointer(at.paths.metadata).is_some(),
        ..record
    };
    record::write(object, at.paths.metadata, &record);
    let injected = Injected {
        labels: labels(object, at),
        ports: app
            .ports
            .iter()
            .map(|p| (p.fronted.number, p.sidecar_port))
            .collect(),
    };
    Ok(Outcome::Injected(injected, app.choices()))
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

/// One port the sidecar fronts, and how.
struct Port {
    fronted: Fronted,
    protocol: PortProtocol,
    evidence: Evidence,
    /// The sidecar's listener in front of it.
    sidecar_port: u16,
}

/// The app container and the ports the sidecar fronts (the app check's first),
/// checked for what injection needs.
struct App {
    container: usize,
    name: String,
    ports: Vec<Port>,
    /// Ports left to clients (`skip`), with why.
    skipped: Vec<(Fronted, Evidence)>,
    check: String,
}

impl App {
    fn choose(
        spec: &Value,
        at: &Located,
        notes: &Map<String, Value>,
        services: &[&ServiceFacts],
        options: &Options,
    ) -> Result<Self, InjectError> {
        let fronted = port::choose(spec, at, notes, services)?;
        let annotated = match notes.get(ANNOTATION_PROTOCOL).and_then(Value::as_str) {
            Some(text) => Some(Annotated::parse(text).map_err(|message| {
                at.error(
                    &at.metadata(&format!("/annotations/{ANNOTATION_PROTOCOL}")),
                    message,
                )
            })?),
            None => None,
        };
        let container = fronted.first().map_or(0, |f| f.container);
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
        let mut ports = Vec::new();
        let mut skipped = Vec::new();
        for fronted in fronted {
            let facts = protocol::Facts {
                container: app,
                declared: &app["ports"][fronted.index],
                number: fronted.number,
                services: fronted.services.clone(),
            };
            let said = annotated
                .as_ref()
                .and_then(|a| a.for_port(fronted.name.as_deref(), fronted.number));
            let (protocol, evidence) = protocol::classify(&facts, said).map_err(|message| {
                at.error(
                    &format!("{app_path}/ports/{}", fronted.index),
                    format!("port {}: {message}", describe(&fronted)),
                )
            })?;
            if protocol == PortProtocol::Skip {
                skipped.push((fronted, evidence));
            } else {
                ports.push(Port {
                    fronted,
                    protocol,
                    evidence,
                    sidecar_port: 0,
                });
            }
        }
        // The port the app's readiness probe asks goes first: the app check asks it too.
        if let Some(probed) = ports
            .iter()
            .position(|p| readiness_probe_port(app, &p.fronted))
        {
            let first = ports.remove(probed);
            ports.insert(0, first);
        }
        let needed = u16::try_from(ports.len()).unwrap_or(u16::MAX);
        let taken = workload::container_ports(spec, &["containers", "initContainers"]);
        let wanted: Vec<u16> = (0..needed)
            .filter_map(|i| options.sidecar_port.checked_add(i))
            .chain([options.admin_port])
            .collect();
        if let Some(taken) = taken.into_iter().find(|p| wanted.contains(p)) {
            return Err(at.error(
                &format!("{}/containers", at.paths.spec),
                format!(
                    "port {taken} is already used in the pod; give the sidecar other serving and admin ports"
                ),
            ));
        }
        if wanted.len() <= ports.len() {
            return Err(at.error(
                &format!("{}/containers", at.paths.spec),
                "the sidecar's serving ports would run past 65535; give it a lower --sidecar-port",
            ));
        }
        for (port, number) in ports.iter_mut().zip(&wanted) {
            port.sidecar_port = *number;
        }
        let check = match (
            notes.get(ANNOTATION_APP_CHECK).and_then(Value::as_str),
            ports.first(),
        ) {
            (Some(check), _) => check.to_owned(),
            (None, Some(first)) => app_check(app, first),
            (None, None) => "tcp".to_owned(),
        };
        if let Some(first) = ports.first()
            && first.protocol == PortProtocol::Tcp
            && check != "tcp"
        {
            return Err(at.error(
                &at.metadata(&format!("/annotations/{ANNOTATION_APP_CHECK}")),
                format!(
                    "{ANNOTATION_APP_CHECK}={check:?} cannot work on port {}, which is fronted as tcp: use tcp",
                    describe(&first.fronted)
                ),
            ));
        }
        Ok(Self {
            container,
            name,
            ports,
            skipped,
            check,
        })
    }

    /// What was chosen for each port, for the report.
    fn choices(&self) -> Vec<Choice> {
        let fronted = self.ports.iter().map(|p| Choice {
            port: describe(&p.fronted),
            protocol: p.protocol,
            evidence: p.evidence.to_string(),
            sidecar_port: Some(p.sidecar_port),
        });
        let skipped = self.skipped.iter().map(|(f, evidence)| Choice {
            port: describe(f),
            protocol: PortProtocol::Skip,
            evidence: evidence.to_string(),
            sidecar_port: None,
        });
        fronted.chain(skipped).collect()
    }
}

/// `name/number`, or the number of an unnamed port.
fn describe(port: &Fronted) -> String {
    match &port.name {
        Some(name) => format!("{name}/{}", port.number),
        None => port.number.to_string(),
    }
}

/// Whether the app's readiness probe asks this port.
fn readiness_probe_port(app: &Value, port: &Fronted) -> bool {
    let Some(probe) = app.get("readinessProbe") else {
        return false;
    };
    let on_port = |value: Option<&Value>| match value {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(port.number)),
        Some(Value::String(s)) => {
            Some(s.as_str()) == port.name.as_deref() || s.parse::<u16>().ok() == Some(port.number)
        }
        _ => false,
    };
    on_port(probe.pointer("/httpGet/port"))
        || on_port(probe.pointer("/tcpSocket/port"))
        || protocol::grpc_probe(app, port.number).is_some_and(|p| p.readiness)
}

/// The sidecar's app check for the port it asks: the app's own readiness probe where
/// it can be read (an HTTP path, or the gRPC health service when the app has a gRPC
/// probe, so it is known to serve it), else a TCP connect.
fn app_check(app: &Value, port: &Port) -> String {
    match port.protocol {
        PortProtocol::Tcp | PortProtocol::Skip => "tcp".to_owned(),
        PortProtocol::Grpc => match protocol::grpc_probe(app, port.fronted.number) {
            Some(probe) if probe.service.is_empty() => "grpc".to_owned(),
            Some(probe) => format!("grpc:{}", probe.service),
            None => "tcp".to_owned(),
        },
        PortProtocol::Http | PortProtocol::H2c => {
            sidecar::app_check_from_probe(app, port.fronted.number, port.fronted.name.as_deref())
        }
    }
}

/// The name an app port is renamed to when its sidecar port takes over its name.
fn app_port_name(position: usize) -> String {
    if position == 0 {
        APP_PORT_NAME.to_owned()
    } else {
        format!("{APP_PORT_NAME}-{}", position + 1)
    }
}

/// Rewrites the pod spec; returns what to undo there (metadata flags still unset).
fn rewrite_spec(spec: &mut Value, app: &App, settings: &Settings, options: &Options) -> PodRecord {
    let container = &mut spec["containers"][app.container];
    let lifecycle_existed = container.get("lifecycle").is_some();
    for (position, port) in app.ports.iter().enumerate() {
        if let Some(name) = &port.fronted.name {
            let renamed = app_port_name(position);
            container["ports"][port.fronted.index]["name"] = json!(renamed);
            rename_probe_ports(container, name, &renamed);
        }
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
        let listeners: Vec<sidecar::Listener<'_>> = app
            .ports
            .iter()
            .map(|port| sidecar::Listener {
                sidecar_port: port.sidecar_port,
                app_port: port.fronted.number,
                port_name: port.fronted.name.as_deref(),
                mode: port.protocol.listener_mode(),
            })
            .collect();
        let sidecar = sidecar::container(
            options,
            &sidecar::Wiring {
                token: &settings.token,
                listeners,
                app_check: &app.check,
                shutdown_delay: settings.shutdown_delay,
                drain_timeout: settings.drain_timeout,
                grace_period: Duration::from_secs(current.max(needed)),
            },
        );
        add_sidecar(map, sidecar, options.mode);
    }
    let mut names = app.ports.iter().map(|p| p.fronted.name.clone());
    PodRecord {
        container: app.name.clone(),
        port_name: names.next().flatten(),
        more_port_names: names.collect(),
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
    let names = std::iter::once(&record.port_name).chain(&record.more_port_names);
    for (position, name) in names.enumerate() {
        let Some(name) = name else { continue };
        let renamed_to = app_port_name(position);
        let renamed = app
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .and_then(|ports| {
                ports
                    .iter_mut()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(renamed_to.as_str()))
            });
        if let Some(port) = renamed {
            port["name"] = json!(name);
        }
        rename_probe_ports(app, &renamed_to, name);
    }
}
