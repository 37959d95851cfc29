//! Which container ports the sidecar fronts: those the annotation lists; else those
//! the stream's Services target on the pod (ports no Service targets, such as metrics
//! or debug ports, are left alone); else the only TCP port, or the only one named
//! `http`. Anything else is ambiguous, and so are fronted ports in several containers
//! (one app container gets the drain hook).

use serde_json::{Map, Value};

use super::service::ServiceFacts;
use super::{ANNOTATION_APP_PORT, InjectError, Located};
use crate::workload;

/// A TCP port declared by a container: (container index, port index, the port).
type Candidate<'a> = (usize, usize, &'a Value);

/// One port the sidecar fronts.
#[derive(Debug, Clone)]
pub(super) struct Fronted {
    /// The container declaring it.
    pub(super) container: usize,
    /// Its index in the container's ports.
    pub(super) index: usize,
    /// Its number.
    pub(super) number: u16,
    /// Its name, if it has one.
    pub(super) name: Option<String>,
    /// The Service ports that target it: (Service name, Service port).
    pub(super) services: Vec<(String, Value)>,
}

/// Picks the fronted ports, in the containers' declaration order.
pub(super) fn choose(
    spec: &Value,
    at: &Located,
    notes: &Map<String, Value>,
    services: &[&ServiceFacts],
) -> Result<Vec<Fronted>, InjectError> {
    let candidates = tcp_ports(spec);
    let chosen: Vec<Candidate<'_>> = if let Some(wanted) = notes.get(ANNOTATION_APP_PORT) {
        by_annotation(&candidates, wanted, at)?
    } else {
        let targeted: Vec<Candidate<'_>> = candidates
            .iter()
            .copied()
            .filter(|(_, _, port)| !targeting(services, port).is_empty())
            .collect();
        if targeted.is_empty() {
            vec![only(spec, &candidates, at)?]
        } else {
            targeted
        }
    };
    if let [(first, _, _), rest @ ..] = chosen.as_slice()
        && rest.iter().any(|(ci, _, _)| ci != first)
    {
        let listed: Vec<String> = chosen
            .iter()
            .map(|(ci, _, port)| describe(spec, *ci, port))
            .collect();
        return Err(at.error(
            &format!("{}/containers", at.paths.spec),
            format!(
                "the serving ports are in several containers ({}); one app container gets the drain: \
                 list the ports of one in the pod template annotation {ANNOTATION_APP_PORT}",
                listed.join(", ")
            ),
        ));
    }
    chosen
        .into_iter()
        .map(|(container, index, port)| {
            let number = port
                .get("containerPort")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    at.error(
                        &format!("{}/containers/{container}/ports/{index}", at.paths.spec),
                        "containerPort is not a port number",
                    )
                })?;
            Ok(Fronted {
                container,
                index,
                number,
                name: port.get("name").and_then(Value::as_str).map(str::to_owned),
                services: targeting(services, port),
            })
        })
        .collect()
}

/// The Service ports that send to the container port `port` (by name or number).
fn targeting(services: &[&ServiceFacts], port: &Value) -> Vec<(String, Value)> {
    let name = port.get("name").and_then(Value::as_str);
    let number = port.get("containerPort").and_then(Value::as_u64);
    services
        .iter()
        .flat_map(|service| {
            service
                .ports
                .iter()
                .filter(move |p| match p.get("targetPort") {
                    Some(Value::String(s)) => match s.parse::<u64>() {
                        Ok(n) => Some(n) == number,
                        Err(_) => Some(s.as_str()) == name,
                    },
                    Some(Value::Number(n)) => n.as_u64() == number,
                    None => p.get("port").and_then(Value::as_u64) == number,
                    _ => false,
                })
                .map(|p| (service.name.clone(), p.clone()))
        })
        .collect()
}

/// Without annotation or Service: the only TCP port, or the only one named `http`.
fn only<'a>(
    spec: &Value,
    candidates: &[Candidate<'a>],
    at: &Located,
) -> Result<Candidate<'a>, InjectError> {
    if let [only] = candidates {
        return Ok(*only);
    }
    let http: Vec<_> = candidates
        .iter()
        .filter(|(_, _, port)| port.get("name").and_then(Value::as_str) == Some("http"))
        .collect();
    if let [only] = http.as_slice() {
        return Ok(**only);
    }
    let listed: Vec<String> = candidates
        .iter()
        .map(|(ci, _, port)| describe(spec, *ci, port))
        .collect();
    Err(at.error(
        &format!("{}/containers", at.paths.spec),
        format!(
            "the serving port is ambiguous ({}): set the pod template annotation {ANNOTATION_APP_PORT} to its name or number",
            listed.join(", ")
        ),
    ))
}

fn tcp_ports(spec: &Value) -> Vec<Candidate<'_>> {
    let mut candidates = Vec::new();
    for (ci, container) in workload::containers(spec, "containers").enumerate() {
        let ports = container.get("ports").and_then(Value::as_array);
        for (pi, port) in ports.into_iter().flatten().enumerate() {
            let protocol = port
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP");
            if protocol == "TCP" {
                candidates.push((ci, pi, port));
            }
        }
    }
    candidates
}

/// The ports the annotation lists (names or numbers, comma-separated), each exactly one.
fn by_annotation<'a>(
    candidates: &[Candidate<'a>],
    wanted: &Value,
    at: &Located,
) -> Result<Vec<Candidate<'a>>, InjectError> {
    let wanted = match wanted {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let path = at.metadata(&format!("/annotations/{ANNOTATION_APP_PORT}"));
    wanted
        .split(',')
        .map(str::trim)
        .map(|one| {
            let found: Vec<_> = candidates
                .iter()
                .filter(|(_, _, port)| {
                    port.get("name").and_then(Value::as_str) == Some(one)
                        || port.get("containerPort").map(|p| p.to_string()).as_deref() == Some(one)
                })
                .collect();
            match found.as_slice() {
                [only] => Ok(**only),
                [] => Err(at.error(
                    &path,
                    format!("{ANNOTATION_APP_PORT}={one:?} matches no TCP container port"),
                )),
                _ => Err(at.error(
                    &path,
                    format!("{ANNOTATION_APP_PORT}={one:?} matches several ports"),
                )),
            }
        })
        .collect()
}

/// `container:port (name)`, for the ambiguity message.
fn describe(spec: &Value, container: usize, port: &Value) -> String {
    let container = spec["containers"][container]
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let name = port.get("name").and_then(Value::as_str).unwrap_or("");
    let number = port.get("containerPort").unwrap_or(&Value::Null);
    if name.is_empty() {
        format!("{container}:{number}")
    } else {
        format!("{container}:{number} ({name})")
    }
}
