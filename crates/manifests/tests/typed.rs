//! The golden corpus's injected output read back as typed Kubernetes objects
//! (k8s-openapi): what `inject` writes is what the API server would accept.

use lameduck_manifests::{kind, parse_documents};

use crate::goldens;

#[test]
fn injected_output_deserializes_into_typed_kubernetes_objects() {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
    let mut typed = 0;
    for golden in goldens() {
        let text = std::fs::read_to_string(&golden).expect("golden");
        for object in parse_documents(&golden.display().to_string(), &text).expect("YAML") {
            let what = format!(
                "{}: {} {}",
                golden.display(),
                kind(&object),
                object["metadata"]["name"]
            );
            let result = match kind(&object) {
                "Deployment" => serde_json::from_value::<Deployment>(object).map(drop),
                "StatefulSet" => serde_json::from_value::<StatefulSet>(object).map(drop),
                "DaemonSet" => serde_json::from_value::<DaemonSet>(object).map(drop),
                "CronJob" => serde_json::from_value::<CronJob>(object).map(drop),
                "Pod" => serde_json::from_value::<Pod>(object).map(drop),
                "Service" => serde_json::from_value::<Service>(object).map(drop),
                "ConfigMap" => serde_json::from_value::<ConfigMap>(object).map(drop),
                _ => continue,
            };
            result.unwrap_or_else(|e| panic!("{what}: {e}"));
            typed += 1;
        }
    }
    assert!(typed >= 15, "only {typed} objects checked");
}
