//! Which container port is the app's serving port: the annotation's, else the only
//! TCP port, else the only one named `http`; anything else is ambiguous.

use serde_json::{Map, Value};

use super::{ANNOTATION_APP_PORT, InjectError, Located};
use crate::workload;

/// A TCP port declared by a container: (container index, port index, the port).
type Candidate<'a> = (usize, usize, &'a Value);

/// Picks the serving (container index, port index).
pub(super) fn choose(
    spec: &Value,
    at: &Located,
    notes: &Map<String, Value>,
) -> Result<(usize, usize), InjectError> {
    let candidates = tcp_ports(spec);
    if let Some(wanted) = notes.get(ANNOTATION_APP_PORT) {
        return by_annotation(&candidates, wanted, at);
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

fn by_annotation(
    candidates: &[Candidate<'_>],
    wanted: &Value,
    at: &Located,
) -> Result<(usize, usize), InjectError> {
    let wanted = match wanted {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let found: Vec<_> = candidates
        .iter()
        .filter(|(_, _, port)| {
            port.get("name").and_then(Value::as_str) == Some(wanted.as_str())
                || port.get("containerPort").map(|p| p.to_string()) == Some(wanted.clone())
        })
        .collect();
    let path = at.metadata(&format!("/annotations/{ANNOTATION_APP_PORT}"));
    match found.as_slice() {
        [(ci, pi, _)] => Ok((*ci, *pi)),
        [] => Err(at.error(
            &path,
            format!("{ANNOTATION_APP_PORT}={wanted:?} matches no TCP container port"),
        )),
        _ => Err(at.error(
            &path,
            format!("{ANNOTATION_APP_PORT}={wanted:?} matches several ports"),
        )),
    }
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
