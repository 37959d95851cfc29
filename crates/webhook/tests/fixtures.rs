//! Builders for the pods and AdmissionReviews the tests send, and what they read back.

use json_patch::Patch;
use lameduck_contract::env;
use lameduck_manifests::Options;
use serde_json::{Value, json};

/// The app container every fixture pod starts from: one named port, an HTTP readiness probe.
pub(crate) fn app_container() -> Value {
    json!({
        "name": "app",
        "image": "lameduck/demo-app:0.1.0",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
    })
}

/// A pod as a Deployment's ReplicaSet creates it: no name, a `generateName`, an owner.
pub(crate) fn deployment_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8b6c5d-",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5d",
                "uid": "5f0c6f0e-1111-2222-3333-444455556666", "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {"containers": [app_container()], "restartPolicy": "Always"},
    })
}

/// A pod created on its own, with a name.
pub(crate) fn bare_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [app_container()]},
    })
}

/// `pod` changed by `f`.
pub(crate) fn with(mut pod: Value, f: impl FnOnce(&mut Value)) -> Value {
    f(&mut pod);
    pod
}

/// An AdmissionReview (admission.k8s.io/v1) asking about `object`.
pub(crate) fn review(operation: &str, namespace: &str, object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "9b7a1c55-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": object["kind"]},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("")),
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
}

/// A pod CREATE in namespace `shop`, as bytes.
pub(crate) fn create(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&review("CREATE", "shop", pod)).expect("serializable")
}

/// The answer's `response`, as JSON.
pub(crate) fn response(review: &impl serde::Serialize) -> Value {
    let value = serde_json::to_value(review).expect("serializable");
    assert_eq!(value["apiVersion"], "admission.k8s.io/v1", "{value}");
    assert_eq!(value["kind"], "AdmissionReview", "{value}");
    value["response"].clone()
}

/// `pod` with the response's JSON patch applied (unchanged when there is none).
pub(crate) fn patched(pod: &Value, response: &Value) -> Value {
    let mut pod = pod.clone();
    if let Some(encoded) = response.get("patch") {
        assert_eq!(response["patchType"], "JSONPatch");
        // Kubernetes reads `[]byte` from base64 or from an array of byte values.
        let bytes: Vec<u8> = match encoded {
            Value::String(text) => base64_decode(text),
            other => serde_json::from_value(other.clone()).expect("bytes"),
        };
        let patch: Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod it was made for");
    }
    pod
}

/// The sidecar's drain token in an injected pod.
pub(crate) fn drain_token(pod: &Value) -> String {
    pod.pointer("/spec/initContainers/0/env")
        .and_then(Value::as_array)
        .and_then(|vars| vars.iter().find(|v| v["name"] == env::DRAIN_TOKEN))
        .and_then(|v| v["value"].as_str())
        .expect("an injected pod has a drain token")
        .to_owned()
}

/// `pod` as `lameduck inject` writes it with `token` (the CLI's defaults).
pub(crate) fn injected_by_the_cli(pod: &Value, token: &str) -> Value {
    let mut documents = vec![pod.clone()];
    let options = Options {
        drain_token: Some(token.to_owned()),
        ..Options::default()
    };
    lameduck_manifests::inject(&mut documents, &options).expect("inject accepts the pod");
    documents.remove(0)
}

/// Standard base64, as Kubernetes encodes `[]byte` fields.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}
