//! Each kind of pod through the admission logic: the patched pod is what `lameduck
//! inject` makes of the same pod, or the answer says why it is left alone.

use lameduck_manifests::Options;
use lameduck_manifests::inject::SIDECAR_NAME;
use lameduck_webhook::{Injector, NamespaceFacts, Outcome, SkipReason};
use serde_json::{Value, json};

use crate::fixtures::{
    bare_pod, create, deployment_pod, drain_token, injected_by_the_cli, patched, response, review,
    with,
};

fn injector() -> Injector {
    Injector::new(Options::default())
}

fn admit(pod: &Value) -> (Outcome, Value) {
    let answer = injector().review(&create(pod), &NamespaceFacts::default());
    let response = response(&answer.review);
    (answer.outcome, response)
}

#[test]
fn a_deployments_pod_without_a_name_is_injected_as_inject_would() {
    let pod = deployment_pod();
    let (outcome, response) = admit(&pod);
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["uid"], "9b7a1c55-0000-4000-8000-000000000001");
    let after = patched(&pod, &response);
    assert_eq!(after, injected_by_the_cli(&pod, &drain_token(&after)));
    assert_eq!(
        after.pointer("/metadata/name"),
        None,
        "the API server names it later"
    );
}

#[test]
fn a_bare_pod_is_injected_as_inject_would() {
    let pod = bare_pod();
    let (outcome, response) = admit(&pod);
    assert_eq!(outcome, Outcome::Injected);
    let after = patched(&pod, &response);
    assert_eq!(after, injected_by_the_cli(&pod, &drain_token(&after)));
    assert_eq!(after["spec"]["initContainers"][0]["name"], SIDECAR_NAME);
}

#[test]
fn every_pod_gets_its_own_drain_token() {
    let pod = deployment_pod();
    let tokens: std::collections::HashSet<String> = (0..5)
        .map(|_| drain_token(&patched(&pod, &admit(&pod).1)))
        .collect();
    assert_eq!(tokens.len(), 5, "{tokens:?}");
    assert!(tokens.iter().all(|t| t.len() >= 16));
}

#[test]
fn an_injected_pod_is_left_as_it_is() {
    let pod = bare_pod();
    let once = patched(&pod, &admit(&pod).1);
    let (outcome, response) = admit(&once);
    assert_eq!(outcome, Outcome::Skipped(SkipReason::AlreadyInjected));
    assert_eq!(response["allowed"], true);
    assert_eq!(response.get("patch"), None);
}

#[test]
fn a_host_network_pod_is_left_alone_with_the_reason() {
    let pod = with(bare_pod(), |p| p["spec"]["hostNetwork"] = json!(true));
    let (outcome, response) = admit(&pod);
    assert_eq!(outcome, Outcome::Skipped(SkipReason::HostNetwork));
    assert!(SkipReason::HostNetwork.describe().contains("hostNetwork"));
    assert_eq!(response["allowed"], true);
    assert_eq!(response.get("patch"), None);
}

#[test]
fn a_refused_pod_is_admitted_unchanged_with_a_warning_and_an_event_on_its_owner() {
    let pod = with(deployment_pod(), |p| {
        p["spec"]["containers"][0]["lifecycle"] =
            json!({"preStop": {"exec": {"command": ["sleep", "5"]}}});
    });
    let answer = injector().review(&create(&pod), &NamespaceFacts::default());
    let Outcome::Refused(why) = &answer.outcome else {
        panic!("refused: {:?}", answer.outcome);
    };
    assert!(why.contains("preStop"), "{why}");
    let response = response(&answer.review);
    assert_eq!(response["allowed"], true, "never a broken pod: {response}");
    assert_eq!(response.get("patch"), None);
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("already has a preStop hook")),
        "{warnings:?}"
    );
    let [notice] = answer.notices.as_slice() else {
        panic!("one notice: {:?}", answer.notices);
    };
    assert_eq!(notice.reason, "NotInjected");
    assert_eq!(notice.namespace, "shop");
    assert_eq!(notice.regarding["kind"], "ReplicaSet");
    assert_eq!(notice.regarding["name"], "web-7d9f8b6c5d");
    assert_eq!(
        notice.regarding["uid"],
        "5f0c6f0e-1111-2222-3333-444455556666"
    );
}

#[test]
fn an_ambiguous_port_is_refused_naming_the_annotation() {
    let pod = with(bare_pod(), |p| {
        p["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 8080}, {"containerPort": 9090}]);
    });
    let (outcome, response) = admit(&pod);
    let Outcome::Refused(why) = outcome else {
        panic!("refused: {outcome:?}");
    };
    assert!(why.contains("lameduck.dev/app-port"), "{why}");
    assert_eq!(response["allowed"], true);
}

#[test]
fn opted_out_webhook_and_system_pods_are_skipped_each_with_its_reason() {
    let disabled = with(bare_pod(), |p| {
        p["metadata"]["annotations"] = json!({"lameduck.dev/inject": "disabled"});
    });
    assert_eq!(admit(&disabled).0, Outcome::Skipped(SkipReason::Disabled));
    let own = with(bare_pod(), |p| {
        p["metadata"]["labels"]["lameduck.dev/component"] = json!("webhook");
    });
    assert_eq!(admit(&own).0, Outcome::Skipped(SkipReason::Webhook));
    let system = serde_json::to_vec(&review("CREATE", "kube-system", &bare_pod())).expect("json");
    let answer = injector().review(&system, &NamespaceFacts::default());
    assert_eq!(
        answer.outcome,
        Outcome::Skipped(SkipReason::ExcludedNamespace("kube-system".to_owned()))
    );
    let update = serde_json::to_vec(&review("UPDATE", "shop", &bare_pod())).expect("json");
    let answer = injector().review(&update, &NamespaceFacts::default());
    assert_eq!(answer.outcome, Outcome::Skipped(SkipReason::NotPodCreate));
    let no_ports = with(bare_pod(), |p| {
        p["spec"]["containers"][0]["ports"] = json!([])
    });
    assert!(matches!(
        admit(&no_ports).0,
        Outcome::Skipped(SkipReason::NothingToFront(_))
    ));
}

#[test]
fn namespace_annotations_are_defaults_the_pod_overrides() {
    let facts = NamespaceFacts {
        annotations: serde_json::from_value(json!({
            "lameduck.dev/shutdown-delay": "25s",
            "lameduck.dev/drain-timeout": "40s",
            "unrelated.example/annotation": "x",
        }))
        .expect("map"),
        services: Vec::new(),
    };
    let pod = with(bare_pod(), |p| {
        p["metadata"]["annotations"] = json!({"lameduck.dev/drain-timeout": "50s"});
    });
    let answer = injector().review(&create(&pod), &facts);
    assert_eq!(answer.outcome, Outcome::Injected);
    let after = patched(&pod, &response(&answer.review));
    let vars = after["spec"]["initContainers"][0]["env"]
        .as_array()
        .expect("env")
        .clone();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .map(|v| v["value"].clone())
    };
    assert_eq!(
        var("LAMEDUCK_SHUTDOWN_DELAY"),
        Some(json!("25s")),
        "from the namespace"
    );
    assert_eq!(
        var("LAMEDUCK_DRAIN_TIMEOUT"),
        Some(json!("50s")),
        "the pod's own wins"
    );
    assert_eq!(
        after["metadata"]["annotations"].get("unrelated.example/annotation"),
        None
    );
    // 25 s delay + 50 s drain + 5 s app stop + 5 s margin.
    assert_eq!(after["spec"]["terminationGracePeriodSeconds"], 85);
}

#[test]
fn a_service_targeting_the_app_port_by_number_is_named_with_the_fix() {
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    let by_name = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web-named", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    });
    let other = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432, "targetPort": 8080}]},
    });
    let facts = NamespaceFacts {
        annotations: Default::default(),
        services: vec![service, by_name, other],
    };
    let pod = deployment_pod();
    let answer = injector().review(&create(&pod), &facts);
    assert_eq!(answer.outcome, Outcome::Injected);
    let response = response(&answer.review);
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("Service web "), "{}", warnings[0]);
    assert!(
        warnings[0].contains("targetPort 8080 → 18080"),
        "{}",
        warnings[0]
    );
    assert_eq!(answer.notices.len(), 1);
    assert_eq!(answer.notices[0].reason, "ServiceBypassesSidecar");
}

#[test]
fn a_body_that_is_not_an_admission_review_gets_an_invalid_answer() {
    for body in [
        &b"{"[..],
        b"null",
        b"{\"kind\":\"AdmissionReview\"}",
        b"\xff\xfe",
    ] {
        let answer = injector().review(body, &NamespaceFacts::default());
        assert!(
            matches!(answer.outcome, Outcome::Invalid(_)),
            "{:?}",
            answer.outcome
        );
        let response = response(&answer.review);
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["reason"], "InvalidRequest", "{response}");
    }
}

#[test]
fn the_patch_applies_to_the_object_as_sent_even_without_metadata() {
    let pod = with(bare_pod(), |p| {
        if let Some(map) = p.as_object_mut() {
            map.remove("metadata");
        }
    });
    let (outcome, response) = admit(&pod);
    assert_eq!(outcome, Outcome::Injected);
    let after = patched(&pod, &response);
    assert!(
        after
            .pointer("/metadata/annotations/lameduck.dev~1injected")
            .is_some()
    );
}
