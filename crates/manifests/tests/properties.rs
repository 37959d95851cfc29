//! Properties of `inject` and `uninject` over generated workloads: uninject inverts
//! inject, and inject is idempotent.

use lameduck_manifests::{Options, inject, uninject};
use serde_json::Value;

const TOKEN: &str = "golden-token-0123456789";

use proptest::prelude::*;
use serde_json::json;

fn options() -> Options {
    Options {
        drain_token: Some(TOKEN.to_owned()),
        ..Options::default()
    }
}

fn port() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![80u64, 3000, 8080, 9090]),
        prop::option::of(prop::sample::select(vec!["http", "web", "metrics"])),
    )
        .prop_map(|(number, name)| match name {
            Some(name) => json!({"name": name, "containerPort": number}),
            None => json!({"containerPort": number}),
        })
}

fn container(index: usize) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(port(), 0..3),
        prop::option::of(prop::sample::select(vec![
            json!("http"),
            json!(8080),
            json!("web"),
        ])),
        any::<bool>(),
    )
        .prop_map(move |(ports, probe_port, post_start)| {
            let mut c = json!({"name": format!("c{index}"), "image": "example/x:1"});
            if !ports.is_empty() {
                c["ports"] = Value::Array(ports);
            }
            if let Some(port) = probe_port {
                c["readinessProbe"] = json!({"httpGet": {"path": "/ready", "port": port}});
            }
            if post_start {
                c["lifecycle"] = json!({"postStart": {"exec": {"command": ["true"]}}});
            }
            c
        })
}

fn workload() -> impl Strategy<Value = Vec<Value>> {
    (
        container(0),
        prop::option::of(container(1)),
        prop::option::of(0u64..200),
        prop::option::of(prop::sample::select(vec![
            json!({"lameduck.dev/app-port": "http"}),
            json!({"lameduck.dev/inject": "disabled"}),
            json!({"other": "kept"}),
        ])),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            json!(8080),
            json!("http"),
            json!(3000),
        ])),
    )
        .prop_map(|(first, second, grace, notes, init, target)| {
            let mut containers = vec![first];
            containers.extend(second);
            let mut template =
                json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": containers}});
            if let Some(notes) = notes {
                template["metadata"]["annotations"] = notes;
            }
            if let Some(grace) = grace {
                template["spec"]["terminationGracePeriodSeconds"] = json!(grace);
            }
            if init {
                template["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
            }
            let deployment = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "x"},
                "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template},
            });
            let mut port = json!({"port": 80});
            if let Some(target) = target {
                port["targetPort"] = target;
            }
            let service = json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                "spec": {"selector": {"app": "x"}, "ports": [port]},
            });
            vec![service, deployment]
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn uninject_inverts_inject_and_inject_is_idempotent(original in workload()) {
        let mut once = original.clone();
        if inject(&mut once, &options()).is_ok() {
            let mut twice = once.clone();
            prop_assert!(inject(&mut twice, &options()).is_ok());
            prop_assert_eq!(&twice, &once);
            let mut restored = once.clone();
            prop_assert!(uninject(&mut restored).is_ok());
            prop_assert_eq!(&restored, &original);
        }
    }
}
