//! Fuzzes the webhook's admission path: arbitrary bodies, and arbitrary manifests
//! wrapped as a pod CREATE. No panic; every answer an AdmissionReview with a response
//! for the request's uid, and a patch that applies to the object it was made for.
#![no_main]

use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use lameduck_manifests::{Options, parse_stream};
use lameduck_webhook::{Injector, NamespaceFacts};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn wrap(object: &Value) -> Vec<u8> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz-uid",
            "kind": {"group": "", "version": "v1", "kind": object.get("kind").cloned().unwrap_or(json!("Pod"))},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "fuzz",
            "operation": "CREATE",
            "userInfo": {},
            "object": object,
        },
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let injector = Injector::new(Options::default());
    let mut bodies = vec![data.to_vec()];
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(documents) = parse_stream("fuzz", text)
    {
        bodies.extend(documents.iter().map(wrap));
    }
    for body in bodies {
        let asked: Option<Value> = serde_json::from_slice::<Value>(&body).ok();
        let answer = injector.review(&body, &NamespaceFacts::default());
        let json = serde_json::to_vec(&answer.review).expect("the answer serializes");
        let back: AdmissionReview<DynamicObject> =
            serde_json::from_slice(&json).expect("the answer is an AdmissionReview");
        let response = back.response.expect("the answer has a response");
        let request = asked.as_ref().and_then(|v| v.get("request"));
        if response.allowed
            && let Some(uid) = request.and_then(|r| r.get("uid")).and_then(Value::as_str)
        {
            assert_eq!(response.uid, uid, "the response is for the request");
        }
        if let Some(patch) = &response.patch {
            let patch: json_patch::Patch = serde_json::from_slice(patch).expect("a JSON patch");
            let mut object = request
                .and_then(|r| r.get("object"))
                .cloned()
                .expect("a patch comes with an object");
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.entry("namespace").or_insert(json!("fuzz"));
            }
            json_patch::patch(&mut object, &patch).expect("the patch applies");
        }
    }
});
