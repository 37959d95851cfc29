//! Services in front of injected pods: one that reaches the app's port by number
//! would bypass the sidecar, so its `targetPort` is pointed at the sidecar (and
//! restored by `uninject`). A Service shared with pods that keep no sidecar cannot be
//! fixed that way and is an error naming the better fix (target the port by name).

use serde_json::{Map, Value, json};

use super::record::{self, ServiceRecord};
use super::{ANNOTATION_INJECTED, InjectError, Located};

/// A pod template that got the sidecar, as the Services see it.
pub(super) struct Injected {
    pub(super) labels: Map<String, Value>,
    /// Each fronted app port and the sidecar port in front of it.
    pub(super) ports: Vec<(u16, u16)>,
}

/// A Service of the stream as injection found it (before any change).
#[derive(Debug, Clone)]
pub(super) struct ServiceFacts {
    pub(super) name: String,
    selector: Map<String, Value>,
    /// Its TCP ports.
    pub(super) ports: Vec<Value>,
}

impl ServiceFacts {
    pub(super) fn of(service: &Value) -> Self {
        let ports = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "TCP")
            .cloned()
            .collect();
        Self {
            name: crate::workload::name(service).to_owned(),
            selector: service
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            ports,
        }
    }

    /// Whether it selects pods labelled `labels`.
    pub(super) fn selects(&self, labels: &Map<String, Value>) -> bool {
        selects(&self.selector, labels)
    }
}

/// A pod template that serves but was left alone.
pub(super) struct Serving {
    pub(super) labels: Map<String, Value>,
    pub(super) ports: Vec<u16>,
}

/// The stream's pod templates, injected or not.
#[derive(Default)]
pub(super) struct Pods {
    pub(super) injected: Vec<Injected>,
    pub(super) not_injected: Vec<Serving>,
}

fn selects(selector: &Map<String, Value>, labels: &Map<String, Value>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The port number a Service port sends to (`targetPort`, else `port`).
fn target_number(port: &Value) -> Option<u64> {
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        None => port.get("port").and_then(Value::as_u64),
        _ => None,
    }
}

/// Points `service`'s ports that reach an injected pod's app port at its sidecar.
pub(super) fn inject(service: &mut Value, at: &Located, pods: &Pods) -> Result<(), InjectError> {
    let selector = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let Some(pod) = pods.injected.iter().find(|p| selects(&selector, &p.labels)) else {
        return Ok(());
    };
    let shared = |app_port: u16| {
        pods.not_injected
            .iter()
            .any(|s| selects(&selector, &s.labels) && s.ports.contains(&app_port))
    };
    let mut target_ports = Map::new();
    let mut failure = None;
    let ports = service
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for (index, port) in ports.enumerate() {
        let Some(&(app_port, sidecar_port)) = pod
            .ports
            .iter()
            .find(|(app, _)| target_number(port) == Some(u64::from(*app)))
        else {
            continue;
        };
        if shared(app_port) && failure.is_none() {
            failure = Some(at.error(
                &format!("/spec/ports/{index}/targetPort"),
                format!(
                    "targets port {app_port} by number on pods of which only some get the sidecar; target the port by name instead"
                ),
            ));
        }
        let before = port.get("targetPort").cloned().unwrap_or(Value::Null);
        target_ports.insert(index.to_string(), before);
        if let Some(map) = port.as_object_mut() {
            map.insert("targetPort".to_owned(), json!(sidecar_port));
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    if !target_ports.is_empty() {
        let record = ServiceRecord {
            target_ports,
            annotations: service.pointer("/metadata/annotations").is_some(),
        };
        record::write(service, "/metadata", &record);
    }
    Ok(())
}

/// Restores the `targetPort`s an earlier injection changed.
pub(super) fn uninject(service: &mut Value, at: &Located) -> Result<(), InjectError> {
    let injected = service
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_INJECTED))
        .is_some();
    if !injected {
        return Ok(());
    }
    let record: ServiceRecord = record::read(service, "/metadata", at)?;
    if let Some(ports) = service
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
    {
        for (index, before) in &record.target_ports {
            let Some(port) = index
                .parse::<usize>()
                .ok()
                .and_then(|i| ports.get_mut(i))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if before.is_null() {
                port.shift_remove("targetPort");
            } else {
                port.insert("targetPort".to_owned(), before.clone());
            }
        }
    }
    record::remove(service, "/metadata", record.annotations, true);
    Ok(())
}
