//! The part of a Deployment the lab acts on, read from a manifest (through the
//! manifests crate's workload rules), with every duration scaled by the lab's time scale.

use std::time::Duration;

use lameduck_contract::{env, pod::SIDECAR_CONTAINER};
use lameduck_manifests::workload::{self as rules, RollingUpdate};
use serde_json::Value;

use crate::deployment::Rollout;

/// How a readiness or startup probe checks a container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ProbeAction {
    /// `GET path` on a port of the pod.
    Http { path: String, port: u16 },
    /// A TCP connect.
    Tcp { port: u16 },
}

/// A probe with its (scaled) timing fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    pub(crate) action: ProbeAction,
    pub(crate) initial_delay: Duration,
    pub(crate) period: Duration,
    pub(crate) success_threshold: u32,
    pub(crate) failure_threshold: u32,
}

/// A preStop hook.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PreStop {
    /// The kubelet's sleep action, or an exec of `sleep N`.
    Sleep(Duration),
    /// GET on a port of the pod (blocks until answered).
    Http {
        path: String,
        port: u16,
        headers: Vec<(String, String)>,
    },
}

/// What a container runs as in the lab.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Program {
    /// The demo app.
    DemoApp,
    /// The lameduck sidecar.
    Sidecar,
    /// Any server, run with `sh -c`; `{host}`, `{port}` and `{addr}` are replaced.
    Command(String),
}

/// A container port and its name, if it has one.
pub(crate) type NamedPort = (Option<String>, u16);

/// One container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) program: Program,
    /// Environment as the manifest gives it (plain values only), durations scaled.
    pub(crate) env: Vec<(String, String)>,
    /// Named ports.
    pub(crate) ports: Vec<NamedPort>,
    pub(crate) readiness: Option<Probe>,
    pub(crate) startup: Option<Probe>,
    pub(crate) pre_stop: Option<PreStop>,
    /// A native sidecar (init container with `restartPolicy: Always`).
    pub(crate) native_sidecar: bool,
}

/// The rollout-relevant parts of a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Workload {
    /// Replicas, surge and unavailability limits, `minReadySeconds` (scaled).
    pub(crate) rollout: Rollout,
    pub(crate) grace: Duration,
    /// The kubelet's one-off extension for a preStop hook still running at the end
    /// of the grace period (2 s, scaled).
    pub(crate) hook_extension: Duration,
    /// Native sidecars first (in order), then app containers.
    pub(crate) containers: Vec<Container>,
    /// The port the Service sends traffic to (resolved from `targetPort`).
    pub(crate) service_port: u16,
}

/// A manifest the lab cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The stream has no Deployment.
    #[error("the manifest has no Deployment")]
    NoDeployment,
    /// The Deployment has no pod template.
    #[error("the Deployment has no pod template")]
    NoPodTemplate,
    /// A container runs an image the lab has no program for.
    #[error(
        "container {container:?} runs {image:?}: the lab runs demo-app and lameduck-sidecar images, or a command given for the app"
    )]
    UnknownImage {
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Nowhere to send traffic.
    #[error("no Service port and no container port")]
    NoServicePort,
}

/// The kubelet's one-off extension of the grace period for a running preStop hook.
const HOOK_EXTENSION: Duration = Duration::from_secs(2);
/// demo-app's own default start-up time.
const DEMO_APP_STARTUP_DELAY: &str = "5s";

/// Scales a Go-style duration in an env value (`20s`, `1m`); other values pass through.
fn scale_env(name: &str, value: &str, by: f64) -> String {
    let scaled = name == "STARTUP_DELAY"
        || name == "GRACEFUL_SHUTDOWN_TIMEOUT"
        || env::DURATIONS.contains(&name);
    if !scaled {
        return value.to_owned();
    }
    match humantime::parse_duration(value) {
        Ok(d) => format!("{}ms", (d.as_secs_f64() * by * 1000.0).round() as u64),
        Err(_) => value.to_owned(),
    }
}

fn port_of(value: Option<&Value>, ports: &[NamedPort]) -> Option<u16> {
    match value? {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.parse().ok().or_else(|| {
            ports
                .iter()
                .find(|(name, _)| name.as_deref() == Some(s.as_str()))
                .map(|(_, port)| *port)
        }),
        _ => None,
    }
}

fn probe(value: Option<&Value>, pod_ports: &[NamedPort], by: f64) -> Option<Probe> {
    let value = value?;
    let number =
        |key: &str, default: f64| value.get(key).and_then(Value::as_f64).unwrap_or(default);
    let seconds =
        |key: &str, default: f64| Duration::from_secs_f64((number(key, default) * by).max(0.0));
    let action = if let Some(get) = value.get("httpGet") {
        let (path, port) = http_get(get, pod_ports)?;
        ProbeAction::Http { path, port }
    } else {
        ProbeAction::Tcp {
            port: port_of(value.pointer("/tcpSocket/port"), pod_ports)?,
        }
    };
    Some(Probe {
        action,
        initial_delay: seconds("initialDelaySeconds", 0.0),
        period: seconds("periodSeconds", 10.0),
        success_threshold: number("successThreshold", 1.0) as u32,
        failure_threshold: number("failureThreshold", 3.0) as u32,
    })
}

/// The path (default `/`) and port of an `httpGet` probe or hook.
fn http_get(get: &Value, pod_ports: &[NamedPort]) -> Option<(String, u16)> {
    let path = get.get("path").and_then(Value::as_str).unwrap_or("/");
    Some((path.to_owned(), port_of(get.get("port"), pod_ports)?))
}

fn pre_stop(container: &Value, pod_ports: &[NamedPort], by: f64) -> Option<PreStop> {
    if let Some(sleep) = rules::pre_stop_sleep(container) {
        return Some(PreStop::Sleep(sleep.mul_f64(by)));
    }
    let get = container.pointer("/lifecycle/preStop/httpGet")?;
    let (path, port) = http_get(get, pod_ports)?;
    Some(PreStop::Http {
        path,
        port,
        headers: get
            .get("httpHeaders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some((
                    h.get("name")?.as_str()?.to_owned(),
                    h.get("value")?.as_str()?.to_owned(),
                ))
            })
            .collect(),
    })
}

/// A container's ports with their names.
fn named_ports(container: &Value) -> Vec<NamedPort> {
    container
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
            Some((
                p.get("name").and_then(Value::as_str).map(str::to_owned),
                port,
            ))
        })
        .collect()
}

/// What runs for a container: the sidecar, the command given for the app, demo-app.
fn program(container: &Value, app_cmd: Option<&str>) -> Result<Program, WorkloadError> {
    let name = rules::container_name(container);
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    if name == SIDECAR_CONTAINER || image.contains("lameduck/sidecar") {
        Ok(Program::Sidecar)
    } else if let Some(command) = app_cmd {
        Ok(Program::Command(command.to_owned()))
    } else if image.contains("demo-app") {
        Ok(Program::DemoApp)
    } else {
        Err(WorkloadError::UnknownImage {
            container: name.to_owned(),
            image: image.to_owned(),
        })
    }
}

/// A container's plain env values, durations scaled.
fn environment(container: &Value, program: &Program, by: f64) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.get("name")?.as_str()?;
            let value = e.get("value")?.as_str()?;
            Some((name.to_owned(), scale_env(name, value, by)))
        })
        .collect();
    if *program == Program::DemoApp && !env.iter().any(|(k, _)| k == "STARTUP_DELAY") {
        // demo-app's own default start-up time, scaled like everything else.
        let delay = scale_env("STARTUP_DELAY", DEMO_APP_STARTUP_DELAY, by);
        env.push(("STARTUP_DELAY".to_owned(), delay));
    }
    env
}

/// Native sidecars first (in order), then app containers, as the kubelet starts them.
fn containers(
    spec: &Value,
    by: f64,
    app_cmd: Option<&str>,
) -> Result<(Vec<Container>, Vec<NamedPort>), WorkloadError> {
    let native = rules::containers(spec, "initContainers")
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
        .map(|c| (c, true));
    let raw: Vec<(&Value, bool)> = native
        .chain(rules::containers(spec, "containers").map(|c| (c, false)))
        .collect();
    let pod_ports: Vec<NamedPort> = raw.iter().flat_map(|(c, _)| named_ports(c)).collect();
    let mut containers = Vec::with_capacity(raw.len());
    for (c, native_sidecar) in raw {
        let program = program(c, app_cmd)?;
        containers.push(Container {
            name: rules::container_name(c).to_owned(),
            env: environment(c, &program, by),
            program,
            ports: named_ports(c),
            readiness: probe(c.get("readinessProbe"), &pod_ports, by),
            startup: probe(c.get("startupProbe"), &pod_ports, by),
            pre_stop: pre_stop(c, &pod_ports, by),
            native_sidecar,
        });
    }
    Ok((containers, pod_ports))
}

/// Reads the Deployment and the Service targeting it from a stream; `app_cmd`
/// replaces the program of every container that is not the sidecar.
pub(crate) fn workload(
    documents: &[Value],
    by: f64,
    app_cmd: Option<&str>,
) -> Result<Workload, WorkloadError> {
    let deployment = documents
        .iter()
        .find(|d| rules::kind(d) == "Deployment")
        .ok_or(WorkloadError::NoDeployment)?;
    let spec = deployment
        .pointer("/spec/template/spec")
        .ok_or(WorkloadError::NoPodTemplate)?;
    let (containers, pod_ports) = containers(spec, by, app_cmd)?;
    let service_port = documents
        .iter()
        .filter(|d| rules::kind(d) == "Service")
        .find_map(|s| port_of(s.pointer("/spec/ports/0/targetPort"), &pod_ports))
        .or_else(|| pod_ports.first().map(|(_, p)| *p))
        .ok_or(WorkloadError::NoServicePort)?;
    Ok(Workload {
        rollout: Rollout::new(
            RollingUpdate::of(deployment),
            rules::min_ready(deployment).mul_f64(by),
        ),
        grace: rules::grace_period(spec).mul_f64(by),
        hook_extension: HOOK_EXTENSION.mul_f64(by),
        containers,
        service_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(strategy: &str, extra: &str) -> Vec<Value> {
        let yaml = format!(
            "kind: Service\nspec:\n  ports:\n  - port: 80\n    targetPort: http\n---\nkind: Deployment\nspec:\n  replicas: 5\n{strategy}{extra}  template:\n    spec:\n      terminationGracePeriodSeconds: 40\n      containers:\n      - name: app\n        image: lameduck/demo-app:1\n        ports: [{{name: http, containerPort: 8080}}]\n        lifecycle: {{preStop: {{exec: {{command: [/bin/sleep, \"15\"]}}}}}}\n        readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 2, failureThreshold: 1}}\n"
        );
        lameduck_manifests::parse_documents("t", &yaml).expect("valid YAML")
    }

    #[test]
    fn rollout_numbers_round_as_kubernetes_does_and_durations_scale() {
        let w = workload(&deployment("", "  minReadySeconds: 10\n"), 0.1, None).expect("workload");
        assert_eq!(
            (w.rollout.max_surge, w.rollout.max_unavailable),
            (2, 1),
            "25% of 5: surge up, unavailable down"
        );
        assert_eq!(w.rollout.min_ready, Duration::from_secs(1));
        assert_eq!(w.grace, Duration::from_secs(4));
        assert_eq!(w.hook_extension, Duration::from_millis(200));
        assert_eq!(w.service_port, 8080);
        let app = &w.containers[0];
        assert_eq!(
            app.pre_stop,
            Some(PreStop::Sleep(Duration::from_millis(1500)))
        );
        let probe = app.readiness.as_ref().expect("probe");
        assert_eq!(
            probe.action,
            ProbeAction::Http {
                path: "/readyz".to_owned(),
                port: 8080
            }
        );
        assert_eq!(probe.period, Duration::from_millis(200));
        assert!(
            app.env
                .iter()
                .any(|(k, v)| k == "STARTUP_DELAY" && v == "500ms"),
            "{:?}",
            app.env
        );

        let strategy = "  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 0}\n";
        let w = workload(&deployment(strategy, ""), 1.0, None).expect("workload");
        assert_eq!(
            (w.rollout.max_surge, w.rollout.max_unavailable),
            (0, 1),
            "both zero: unavailable 1"
        );
        let strategy =
            "  strategy:\n    rollingUpdate: {maxSurge: \"50%\", maxUnavailable: \"50%\"}\n";
        let w = workload(&deployment(strategy, ""), 1.0, None).expect("workload");
        assert_eq!((w.rollout.max_surge, w.rollout.max_unavailable), (3, 2));
    }

    #[test]
    fn other_images_need_app_cmd() {
        let docs = lameduck_manifests::parse_documents(
            "t",
            "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n        ports: [{containerPort: 80}]\n",
        )
        .expect("valid YAML");
        let error = workload(&docs, 1.0, None).expect_err("nginx image");
        assert_eq!(
            error,
            WorkloadError::UnknownImage {
                container: "web".to_owned(),
                image: "nginx:1".to_owned()
            }
        );
        let w = workload(&docs, 1.0, Some("python3 server.py {port}")).expect("with --app-cmd");
        assert_eq!(
            w.containers[0].program,
            Program::Command("python3 server.py {port}".to_owned())
        );
    }
}
