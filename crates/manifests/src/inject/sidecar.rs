//! The sidecar container as `inject` adds it: the sidecar's own env names and admin
//! paths (from the contract crate), probes on its admin port, and a security context
//! that passes the `restricted` Pod Security standard on its own (non-root, no
//! capabilities, read-only root filesystem, `RuntimeDefault` seccomp).

use std::time::Duration;

use lameduck_contract::{admin, env};
use serde_json::{Map, Value, json};

use super::{ADMIN_PORT_NAME, Mode, Options, SIDECAR_NAME};

/// One serving port of the sidecar and the app port behind it.
pub(super) struct Listener<'a> {
    pub(super) sidecar_port: u16,
    pub(super) app_port: u16,
    /// The name the app's port had; the sidecar's serving port takes it over.
    pub(super) port_name: Option<&'a str>,
    /// `http1`, `h2c` or `tcp`.
    pub(super) mode: &'static str,
}

/// How the sidecar is wired to this pod's app.
pub(super) struct Wiring<'a> {
    pub(super) token: &'a str,
    /// The app check's port first.
    pub(super) listeners: Vec<Listener<'a>>,
    pub(super) app_check: &'a str,
    pub(super) shutdown_delay: Duration,
    pub(super) drain_timeout: Duration,
    /// The pod's grace period once injected: the sidecar's final-scrape wait ends
    /// before it does.
    pub(super) grace_period: Duration,
}

fn seconds_text(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The sidecar container.
pub(super) fn container(options: &Options, wiring: &Wiring<'_>) -> Value {
    let var = |name: &str, value: String| json!({"name": name, "value": value});
    let mut ports = Vec::new();
    for listener in &wiring.listeners {
        let mut serving = Map::new();
        if let Some(name) = listener.port_name {
            serving.insert("name".to_owned(), json!(name));
        }
        serving.insert("containerPort".to_owned(), json!(listener.sidecar_port));
        ports.push(Value::Object(serving));
    }
    ports.push(json!({"name": ADMIN_PORT_NAME, "containerPort": options.admin_port}));
    let mut vars = Vec::new();
    if let Some(first) = wiring.listeners.first() {
        vars.push(var(env::LISTEN, format!("0.0.0.0:{}", first.sidecar_port)));
        vars.push(var(env::UPSTREAM, format!("127.0.0.1:{}", first.app_port)));
        // Only what differs from the sidecar's defaults (HTTP/1.1 to the app).
        match first.mode {
            "tcp" => vars.push(var(env::PROTOCOL, "tcp".to_owned())),
            "h2c" => vars.push(var(env::UPSTREAM_PROTOCOL, "h2c".to_owned())),
            _ => {}
        }
    }
    let more: Vec<String> = wiring
        .listeners
        .iter()
        .skip(1)
        .map(|l| {
            format!(
                "0.0.0.0:{}=127.0.0.1:{}/{}",
                l.sidecar_port, l.app_port, l.mode
            )
        })
        .collect();
    if !more.is_empty() {
        vars.push(var(env::LISTENERS, more.join(",")));
    }
    vars.extend([
        var(env::ADMIN, format!("0.0.0.0:{}", options.admin_port)),
        var(env::APP_CHECK, wiring.app_check.to_owned()),
        var(env::SHUTDOWN_DELAY, seconds_text(wiring.shutdown_delay)),
        var(env::DRAIN_TIMEOUT, seconds_text(wiring.drain_timeout)),
        var(env::GRACE_PERIOD, seconds_text(wiring.grace_period)),
        var(env::DRAIN_TOKEN, wiring.token.to_owned()),
    ]);
    let mut container = json!({
        "name": SIDECAR_NAME,
        "image": options.image,
        "env": vars,
        "ports": ports,
        "readinessProbe": {
            "httpGet": {"path": admin::READY, "port": ADMIN_PORT_NAME},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    });
    if let Some(map) = container.as_object_mut() {
        if options.mode == Mode::Native {
            // The app starts once the sidecar runs (not once the app is ready: that would deadlock).
            map.insert(
                "startupProbe".to_owned(),
                json!({"httpGet": {"path": admin::LIVE, "port": ADMIN_PORT_NAME}, "periodSeconds": 1, "failureThreshold": 30}),
            );
            map.insert("restartPolicy".to_owned(), json!("Always"));
        }
        map.insert("resources".to_owned(), options.resources.to_json());
        map.insert(
            "securityContext".to_owned(),
            json!({
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                // The restricted Pod Security standard needs it on every container.
                "seccompProfile": {"type": "RuntimeDefault"},
            }),
        );
    }
    container
}

/// `http:<path>` when the app's readiness probe is an httpGet on the serving port.
pub(super) fn app_check_from_probe(app: &Value, port: u16, port_name: Option<&str>) -> String {
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
