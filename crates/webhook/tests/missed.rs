//! Pods left without the sidecar, found from the namespace and its pods as listed.

use lameduck_manifests::Options;
use lameduck_webhook::missed::{notices, opted_in};
use serde_json::{Value, json};

use crate::fixtures::{bare_pod, with};

fn namespace(label: Option<&str>) -> Value {
    let labels = match label {
        Some(value) => json!({"lameduck.dev/inject": value}),
        None => json!({}),
    };
    json!({"metadata": {"name": "shop", "labels": labels}})
}

fn running(pod: Value, name: &str) -> Value {
    with(pod, |p| {
        p["metadata"]["name"] = json!(name);
        p["metadata"]["uid"] = json!(format!("uid-{name}"));
    })
}

#[test]
fn an_uninjected_pod_of_an_opted_in_namespace_is_named_once_by_a_fixed_event() {
    let missed = running(bare_pod(), "web-1");
    let found = notices(&Options::default(), &namespace(Some("enabled")), &[missed]);
    let [notice] = found.as_slice() else {
        panic!("one notice: {found:?}");
    };
    assert_eq!(notice.reason, "NotInjected");
    assert_eq!(notice.regarding["kind"], "Pod");
    assert_eq!(notice.regarding["name"], "web-1");
    assert_eq!(notice.regarding["uid"], "uid-web-1");
    assert_eq!(
        notice.event_name.as_deref(),
        Some("web-1.lameduck-not-injected")
    );
    assert!(
        notice.note.contains("restart its workload"),
        "{}",
        notice.note
    );
}

#[test]
fn injected_opted_out_refused_deleted_and_other_namespaces_pods_are_not_named() {
    let injected = running(
        with(bare_pod(), |p| {
            p["spec"]["initContainers"] = json!([{"name": "lameduck-sidecar", "image": "x"}]);
        }),
        "injected",
    );
    let opted_out = running(
        with(bare_pod(), |p| {
            p["metadata"]["labels"]["lameduck.dev/inject"] = json!("disabled")
        }),
        "opted-out",
    );
    let annotated_out = running(
        with(bare_pod(), |p| {
            p["metadata"]["annotations"] = json!({"lameduck.dev/inject": "disabled"});
        }),
        "annotated-out",
    );
    let refused = running(
        with(bare_pod(), |p| {
            p["spec"]["containers"][0]["lifecycle"] =
                json!({"preStop": {"exec": {"command": ["sleep", "1"]}}});
        }),
        "refused",
    );
    let deleting = running(
        with(bare_pod(), |p| {
            p["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:00:00Z")
        }),
        "deleting",
    );
    let host = running(
        with(bare_pod(), |p| p["spec"]["hostNetwork"] = json!(true)),
        "host",
    );
    let webhook = running(
        with(bare_pod(), |p| {
            p["metadata"]["labels"]["lameduck.dev/component"] = json!("webhook")
        }),
        "webhook",
    );
    let pods = [
        injected,
        opted_out,
        annotated_out,
        refused,
        deleting,
        host,
        webhook,
    ];
    let found = notices(&Options::default(), &namespace(Some("enabled")), &pods);
    assert!(found.is_empty(), "{found:?}");
    let plain = [running(bare_pod(), "plain")];
    assert!(notices(&Options::default(), &namespace(None), &plain).is_empty());
    let system =
        json!({"metadata": {"name": "kube-system", "labels": {"lameduck.dev/inject": "enabled"}}});
    assert!(notices(&Options::default(), &system, &plain).is_empty());
}

#[test]
fn the_selectors_follow_the_webhook_configuration() {
    let labelled = with(bare_pod(), |p| {
        p["metadata"]["labels"]["lameduck.dev/inject"] = json!("enabled")
    });
    let ns = |label: Option<&str>| namespace(label)["metadata"]["labels"].clone();
    assert!(opted_in(&ns(Some("enabled")), &bare_pod()));
    assert!(opted_in(&ns(None), &labelled));
    assert!(!opted_in(&ns(None), &bare_pod()));
    assert!(
        !opted_in(&ns(Some("disabled")), &labelled),
        "a disabled namespace wins"
    );
}
