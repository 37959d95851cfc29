//! The `service-protocol` rule: a Service port that names a protocol (by
//! `appProtocol`, or by the `<protocol>[-<suffix>]` port-name convention) must reach a
//! pod port that serves it. Behind an injected pod that is the sidecar's listener
//! mode; on a pod without the sidecar, what the pod's own port says (its
//! `appProtocol`, its name, a gRPC probe on it).

use lameduck_contract::env;
use serde_json::{Map, Value};

use crate::inject::SIDECAR_NAME;
use crate::inject::protocol::{PortProtocol, by_app_protocol, by_name, grpc_probe};
use crate::workload;

/// One finding of the rule: (the Service's document index, message).
pub(super) type Found = (usize, String);

/// Checks every Service of the stream against the pod templates it selects.
pub(super) fn check(documents: &[Value]) -> Vec<Found> {
    let templates: Vec<(Map<String, Value>, &Value)> = workload::objects(documents)
        .filter_map(|object| {
            let paths = workload::pod_template_paths(workload::kind(object))?;
            let labels = object
                .pointer(&format!("{}/labels", paths.metadata))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            Some((labels, object.pointer(paths.spec)?))
        })
        .collect();
    let mut found = Vec::new();
    for (document, service) in workload::objects(documents).enumerate() {
        if workload::kind(service) != "Service" {
            continue;
        }
        let selector = service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if selector.is_empty() {
            continue;
        }
        let selected = templates
            .iter()
            .filter(|(labels, _)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        for (_, spec) in selected {
            for port in service
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(message) = mismatch(port, spec) {
                    found.push((document, message));
                }
            }
        }
    }
    found
}

/// What the Service port names, and why.
fn named(port: &Value) -> Option<(PortProtocol, String)> {
    if let Some(value) = port.get("appProtocol").and_then(Value::as_str) {
        return by_app_protocol(value)
            .ok()
            .map(|p| (p, format!("appProtocol {value}")));
    }
    let name = port.get("name").and_then(Value::as_str)?;
    by_name(name).map(|p| (p, format!("name {name:?}")))
}

/// The message when the Service port names one protocol and the pod serves another.
fn mismatch(port: &Value, spec: &Value) -> Option<String> {
    let (wanted, why) = named(port)?;
    let target = port.get("targetPort").or_else(|| port.get("port"))?;
    let label = port
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| target.to_string(), |n| format!("{n:?}"));
    let containers: Vec<&Value> = workload::containers(spec, "containers")
        .chain(workload::containers(spec, "initContainers"))
        .collect();
    for container in containers {
        let declared = container.get("ports").and_then(Value::as_array);
        for declared in declared.into_iter().flatten() {
            if !targets(target, declared) {
                continue;
            }
            let number = declared
                .get("containerPort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())?;
            let (served, how) = if workload::container_name(container) == SIDECAR_NAME {
                (sidecar_mode(container, number)?, "the sidecar fronts it as")
            } else {
                (
                    served_by_app(container, declared, number)?,
                    "the pod says it serves",
                )
            };
            if served.agrees_with(wanted) {
                return None;
            }
            return Some(format!(
                "port {label} ({why}) says {} but {how} {} on port {number}: \
                 clients and the pod disagree; fix the Service, or set lameduck.dev/protocol and inject again",
                wanted.as_str(),
                served.as_str()
            ));
        }
    }
    None
}

/// Whether a Service `targetPort` (name or number) designates the declared port.
fn targets(target: &Value, declared: &Value) -> bool {
    let number = declared.get("containerPort").and_then(Value::as_u64);
    match target {
        Value::Number(n) => n.as_u64() == number,
        Value::String(s) => match s.parse::<u64>() {
            Ok(n) => Some(n) == number,
            Err(_) => declared.get("name").and_then(Value::as_str) == Some(s.as_str()),
        },
        _ => false,
    }
}

/// How the sidecar fronts its serving port `number` (none for `auto`: either agrees).
fn sidecar_mode(sidecar: &Value, number: u16) -> Option<PortProtocol> {
    let port_of = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let first = workload::env_value(sidecar, env::LISTEN).and_then(port_of);
    if first == Some(number) {
        let protocol = workload::env_value(sidecar, env::PROTOCOL).unwrap_or("http");
        let upstream = workload::env_value(sidecar, env::UPSTREAM_PROTOCOL).unwrap_or("http1");
        return match (protocol, upstream) {
            ("tcp", _) => Some(PortProtocol::Tcp),
            (_, "h2c") => Some(PortProtocol::H2c),
            (_, "http1") => Some(PortProtocol::Http),
            _ => None,
        };
    }
    let listeners = workload::env_value(sidecar, env::LISTENERS).unwrap_or("");
    listeners.split(',').find_map(|listener| {
        let (listen, rest) = listener.split_once('=')?;
        if port_of(listen) != Some(number) {
            return None;
        }
        match rest.split_once('/').map_or("http1", |(_, mode)| mode) {
            "tcp" => Some(PortProtocol::Tcp),
            "h2c" => Some(PortProtocol::H2c),
            "http1" => Some(PortProtocol::Http),
            _ => None,
        }
    })
}

/// What an app container's own declaration says its port serves, if anything.
fn served_by_app(container: &Value, declared: &Value, number: u16) -> Option<PortProtocol> {
    if let Some(value) = declared.get("appProtocol").and_then(Value::as_str) {
        return by_app_protocol(value).ok();
    }
    if let Some(protocol) = declared
        .get("name")
        .and_then(Value::as_str)
        .and_then(by_name)
    {
        return Some(protocol);
    }
    grpc_probe(container, number).map(|_| PortProtocol::Grpc)
}
