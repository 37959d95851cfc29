//! The part of a Deployment the lab acts on, read from a manifest, with every
//! duration scaled by the lab's time scale.

use std::time::Duration;

use serde_json::Value;

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

/// One container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) program: Program,
    /// Environment as the manifest gives it (plain values only), durations scaled.
    pub(crate) env: Vec<(String, String)>,
    /// Named ports.
    pub(crate) ports: Vec<(Option<String>, u16)>,
    pub(crate) readiness: Option<Probe>,
    pub(crate) startup: Option<Probe>,
    pub(crate) pre_stop: Option<PreStop>,
    /// A native sidecar (init container with `restartPolicy: Always`).
    pub(crate) native_sidecar: bool,
}

/// The rollout-relevant parts of a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Workload {
    pub(crate) replicas: u32,
    pub(crate) max_surge: u32,
    pub(crate) max_unavailable: u32,
    pub(crate) grace: Duration,
    /// The kubelet's one-off extension for a preStop hook still running at the end
    /// of the grace period (2 s, scaled).
    pub(crate) hook_extension: Duration,
    /// A Ready pod counts as available after this long (`minReadySeconds`, scaled).
    pub(crate) min_ready: Duration,
    /// Native sidecars first (in order), then app containers.
    pub(crate) containers: Vec<Container>,
    /// The port the Service sends traffic to (resolved from `targetPort`).
    pub(crate) service_port: u16,
}

/// A manifest the lab cannot run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ModelError(pub(crate) String);

fn scale(seconds: f64, by: f64) -> Duration {
    Duration::from_secs_f64((seconds * by).max(0.0))
}

/// Scales a Go-style duration in an env value (`20s`, `1m`); other values pass through.
fn scale_env(name: &str, value: &str, by: f64) -> String {
    const DURATIONS: [&str; 6] = [
        "STARTUP_DELAY",
        "GRACEFUL_SHUTDOWN_TIMEOUT",
        "LAMEDUCK_SHUTDOWN_DELAY",
        "LAMEDUCK_DRAIN_TIMEOUT",
        "LAMEDUCK_STARTUP_HOLD",
        "LAMEDUCK_APP_CHECK_PERIOD",
    ];
    if !DURATIONS.contains(&name) {
        return value.to_owned();
    }
    match humantime::parse_duration(value) {
        Ok(d) => format!("{}ms", (d.as_secs_f64() * by * 1000.0).round() as u64),
        Err(_) => value.to_owned(),
    }
}

fn port_of(value: Option<&Value>, ports: &[(Option<String>, u16)]) -> Option<u16> {
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

fn probe(value: Option<&Value>, pod_ports: &[(Option<String>, u16)], by: f64) -> Option<Probe> {
    let value = value?;
    let seconds =
        |key: &str, default: f64| value.get(key).and_then(Value::as_f64).unwrap_or(default);
    let action = if let Some(get) = value.get("httpGet") {
        ProbeAction::Http {
            path: get
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned(),
            port: port_of(get.get("port"), pod_ports)?,
        }
    } else {
        ProbeAction::Tcp {
            port: port_of(value.pointer("/tcpSocket/port"), pod_ports)?,
        }
    };
    Some(Probe {
        action,
        initial_delay: scale(seconds("initialDelaySeconds", 0.0), by),
        period: scale(seconds("periodSeconds", 10.0), by),
        success_threshold: seconds("successThreshold", 1.0) as u32,
        failure_threshold: seconds("failureThreshold", 3.0) as u32,
    })
}

fn pre_stop(container: &Value, pod_ports: &[(Option<String>, u16)], by: f64) -> Option<PreStop> {
    let hook = container.pointer("/lifecycle/preStop")?;
    if let Some(seconds) = hook.pointer("/sleep/seconds").and_then(Value::as_f64) {
        return Some(PreStop::Sleep(scale(seconds, by)));
    }
    if let Some(command) = hook.pointer("/exec/command").and_then(Value::as_array) {
        let words: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
        let seconds = words
            .join(" ")
            .split("sleep")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
            .and_then(|n| n.parse::<f64>().ok())?;
        return Some(PreStop::Sleep(scale(seconds, by)));
    }
    let get = hook.get("httpGet")?;
    Some(PreStop::Http {
        path: get
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_owned(),
        port: port_of(get.get("port"), pod_ports)?,
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
fn named_ports(container: &Value) -> Vec<(Option<String>, u16)> {
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

fn scaled_count(value: Option<&Value>, replicas: u32, round_up: bool) -> u32 {
    let percent = |p: u32| {
        if round_up {
            (replicas * p).div_ceil(100)
        } else {
            replicas * p / 100
        }
    };
    match value {
        Some(Value::Number(n)) => n.as_u64().map_or(0, |v| v as u32),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().map(percent).unwrap_or(0),
        _ => percent(25),
    }
}

/// Reads the Deployment and the Service targeting it from a stream; `app_cmd`
/// replaces the program of every container that is not the sidecar.
pub(crate) fn workload(
    documents: &[Value],
    by: f64,
    app_cmd: Option<&str>,
) -> Result<Workload, ModelError> {
    let deployment = documents
        .iter()
        .find(|d| crate::manifest::kind(d) == "Deployment")
        .ok_or_else(|| ModelError("the manifest has no Deployment".to_owned()))?;
    let spec = deployment
        .pointer("/spec/template/spec")
        .ok_or_else(|| ModelError("the Deployment has no pod template".to_owned()))?;
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let max_surge = scaled_count(
        deployment.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        replicas,
        true,
    );
    let mut max_unavailable = scaled_count(
        deployment.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        replicas,
        false,
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let grace = scale(
        spec.get("terminationGracePeriodSeconds")
            .and_then(Value::as_f64)
            .unwrap_or(30.0),
        by,
    );

    let raw: Vec<(&Value, bool)> = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
        .map(|c| (c, true))
        .chain(
            spec.get("containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| (c, false)),
        )
        .collect();
    let pod_ports: Vec<(Option<String>, u16)> =
        raw.iter().flat_map(|(c, _)| named_ports(c)).collect();
    let mut containers = Vec::new();
    for (c, native_sidecar) in raw {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let program = if name == crate::inject::SIDECAR_NAME || image.contains("lameduck/sidecar") {
            Program::Sidecar
        } else if let Some(command) = app_cmd {
            Program::Command(command.to_owned())
        } else if image.contains("demo-app") {
            Program::DemoApp
        } else {
            return Err(ModelError(format!(
                "container {name:?} runs {image:?}: the lab runs demo-app and lameduck-sidecar images, or --app-cmd"
            )));
        };
        let mut env: Vec<(String, String)> = c
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
        if program == Program::DemoApp && !env.iter().any(|(k, _)| k == "STARTUP_DELAY") {
            // demo-app's own default start-up time, scaled like everything else.
            env.push((
                "STARTUP_DELAY".to_owned(),
                scale_env("STARTUP_DELAY", "5s", by),
            ));
        }
        let ports = named_ports(c);
        containers.push(Container {
            name,
            program,
            env,
            ports,
            readiness: probe(c.get("readinessProbe"), &pod_ports, by),
            startup: probe(c.get("startupProbe"), &pod_ports, by),
            pre_stop: pre_stop(c, &pod_ports, by),
            native_sidecar,
        });
    }
    let service_port = documents
        .iter()
        .filter(|d| crate::manifest::kind(d) == "Service")
        .find_map(|s| port_of(s.pointer("/spec/ports/0/targetPort"), &pod_ports))
        .or_else(|| pod_ports.first().map(|(_, p)| *p))
        .ok_or_else(|| ModelError("no Service port and no container port".to_owned()))?;
    let min_ready = scale(
        deployment
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        by,
    );
    Ok(Workload {
        hook_extension: scale(2.0, by),
        min_ready,
        replicas,
        max_surge,
        max_unavailable,
        grace,
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
        crate::manifest::parse_documents("t", &yaml).expect("valid YAML")
    }

    #[test]
    fn rollout_numbers_round_as_kubernetes_does_and_durations_scale() {
        let w = workload(&deployment("", "  minReadySeconds: 10\n"), 0.1, None).expect("workload");
        assert_eq!(
            (w.max_surge, w.max_unavailable),
            (2, 1),
            "25% of 5: surge up, unavailable down"
        );
        assert_eq!(w.min_ready, Duration::from_secs(1));
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
            (w.max_surge, w.max_unavailable),
            (0, 1),
            "both zero: unavailable 1"
        );
        let strategy =
            "  strategy:\n    rollingUpdate: {maxSurge: \"50%\", maxUnavailable: \"50%\"}\n";
        let w = workload(&deployment(strategy, ""), 1.0, None).expect("workload");
        assert_eq!((w.max_surge, w.max_unavailable), (3, 2));
    }

    #[test]
    fn other_images_need_app_cmd() {
        let docs = crate::manifest::parse_documents(
            "t",
            "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n        ports: [{containerPort: 80}]\n",
        )
        .expect("valid YAML");
        let error = workload(&docs, 1.0, None).expect_err("nginx image").0;
        assert!(error.contains("--app-cmd"), "{error}");
        let w = workload(&docs, 1.0, Some("python3 server.py {port}")).expect("with --app-cmd");
        assert_eq!(
            w.containers[0].program,
            Program::Command("python3 server.py {port}".to_owned())
        );
    }
}
