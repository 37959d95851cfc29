//! Pods that should have the sidecar and do not: created while no webhook answered
//! (`failurePolicy: Ignore` admits them as they are), or before their namespace opted
//! in. A reconcile over the opted-in namespaces and their pods, run every interval,
//! names each with a `NotInjected` Event on the pod, once (the Event's name is the
//! pod's, so replicas and later passes do not repeat it).

use lameduck_manifests::inject::{ANNOTATION_INJECT, Options};
use serde_json::{Value, json};

use crate::admit::{Notice, has_sidecar};
use crate::{COMPONENT_LABEL, COMPONENT_WEBHOOK, EXCLUDED_NAMESPACES, INJECT_LABEL};

/// The Event reason for a pod left without the sidecar.
pub const REASON: &str = "NotInjected";

/// Whether the webhook's selectors send a pod of this namespace to it.
pub fn opted_in(namespace_labels: &Value, pod: &Value) -> bool {
    let label = |labels: &Value| {
        labels
            .get(INJECT_LABEL)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let namespace = label(namespace_labels);
    let pod_label = label(&pod["metadata"]["labels"]);
    if pod["metadata"]["labels"][COMPONENT_LABEL] == COMPONENT_WEBHOOK {
        return false;
    }
    match namespace.as_deref() {
        Some("enabled") => pod_label.as_deref() != Some("disabled"),
        Some("disabled") => false,
        _ => pod_label.as_deref() == Some("enabled"),
    }
}

/// The pods of `namespace` (its object) that the webhook would inject but that run
/// without the sidecar, each as a notice on the pod.
pub fn notices(options: &Options, namespace: &Value, pods: &[Value]) -> Vec<Notice> {
    let name = namespace["metadata"]["name"].as_str().unwrap_or_default();
    if EXCLUDED_NAMESPACES.contains(&name) {
        return Vec::new();
    }
    let options = Options {
        drain_token: Some("missed-pod-check-token".to_owned()),
        ..options.clone()
    };
    pods.iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .filter(|pod| opted_in(&namespace["metadata"]["labels"], pod))
        .filter(|pod| !has_sidecar(pod))
        .filter(|pod| pod["metadata"]["annotations"][ANNOTATION_INJECT] != "disabled")
        .filter(|pod| would_inject(pod, &options))
        .map(|pod| {
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
            Notice {
                namespace: name.to_owned(),
                regarding: json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod_name,
                    "namespace": name,
                    "uid": pod["metadata"]["uid"],
                }),
                reason: REASON,
                event_name: Some(format!("{pod_name}.lameduck-not-injected")),
                note: format!(
                    "lameduck: pod {pod_name} runs without the lameduck sidecar although its namespace or labels opt it in \
                     (no webhook answered when it was created, or it predates the opt-in); restart its workload to inject it"
                ),
            }
        })
        .collect()
}

/// The transform would add the sidecar (a pod it refuses got its Event at admission).
fn would_inject(pod: &Value, options: &Options) -> bool {
    let mut documents = vec![pod.clone()];
    lameduck_manifests::inject(&mut documents, options)
        .is_ok_and(|report| !report.chosen.is_empty())
}
