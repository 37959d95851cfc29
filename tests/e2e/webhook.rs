//! The Helm chart on the real node: the webhook installed, a Deployment of a labelled
//! namespace injected at pod creation and rolled under load without a loss, a
//! server-side dry run, pods created while no webhook answers (admitted, then named by
//! an Event), and `helm uninstall` leaving no webhook configuration behind.

use std::process::Command;
use std::time::{Duration, Instant};

use lameduck_test_support::system::find_program;
use serde_json::{Value, json};

use super::{
    assert_no_failed_hook_or_oom, assert_the_drain_holds_the_app_and_the_sidecar_stops_last,
    deploy_labelled, failed, json, kubeconfig, kubectl, manifests, retire, roll_under_load,
};
use crate::system::repo_root;

const RELEASE: &str = "lameduck";
const SYSTEM: &str = "lameduck-system";
const NAMESPACE: &str = "auto";

fn helm(args: &[&str]) -> String {
    let helm = find_program("helm").unwrap_or_else(|| {
        panic!(
            "LAMEDUCK_E2E=1 but `helm` is not on PATH: .ci/run builds it from the Go module proxy"
        )
    });
    let output = Command::new(helm)
        .env("KUBECONFIG", kubeconfig())
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("running helm");
    assert!(
        output.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The sidecar's name in every pod of `pods` (a pod list).
fn sidecars(pods: &Value) -> Vec<bool> {
    pods["items"]
        .as_array()
        .expect("pods")
        .iter()
        .map(has_sidecar)
        .collect()
}

fn has_sidecar(pod: &Value) -> bool {
    pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == "lameduck-sidecar"))
}

/// A bare pod named `name` with the demo Deployment's pod spec (restricted-compliant).
fn demo_pod(name: &str) -> String {
    serde_json::to_string(&demo_pod_object(name)).expect("JSON")
}

pub(super) fn demo_pod_object(name: &str) -> Value {
    let documents =
        lameduck_manifests::parse_stream("plain", &manifests("plain")).expect("plain YAML");
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let template = &deployment["spec"]["template"];
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "webhook-check"}},
        "spec": template["spec"],
    })
}

/// Waits (at most 60 s) for the webhook's Event with `reason` about `regarding`.
fn webhook_event(reason: &str, regarding: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = json(&["get", "events.events.k8s.io", "-n", NAMESPACE, "-o", "json"]);
        let found = events["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|e| e["reason"] == reason && e["regarding"]["name"] == regarding)
                .cloned()
        });
        if let Some(event) = found {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event about {regarding}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn webhook_pods() -> usize {
    let pods = json(&[
        "get",
        "pods",
        "-n",
        SYSTEM,
        "-l",
        "lameduck.dev/component=webhook",
        "-o",
        "json",
    ]);
    pods["items"].as_array().map_or(0, Vec::len)
}

pub(super) fn installed_by_helm_injects_rolls_and_uninstalls() {
    let started = Instant::now();
    kubectl(&["create", "namespace", SYSTEM], None);
    kubectl(
        &[
            "label",
            "namespace",
            SYSTEM,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    helm(&[
        "install",
        RELEASE,
        "charts/lameduck",
        "--namespace",
        SYSTEM,
        "--set",
        "image.pullPolicy=Never,missedPodCheckInterval=5s",
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert_eq!(webhook_pods(), 2, "two webhook replicas");
    eprintln!(
        "e2e: webhook installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // A namespace opted in by its label; the plain manifests, untouched.
    deploy_labelled(
        NAMESPACE,
        &["lameduck.dev/inject=enabled"],
        &manifests("plain"),
    );
    let pods = json(&["get", "pods", "-n", NAMESPACE, "-o", "json"]);
    assert!(
        sidecars(&pods).iter().all(|s| *s) && !sidecars(&pods).is_empty(),
        "every pod of the labelled namespace has the sidecar"
    );
    let (summary, rollout) = roll_under_load(NAMESPACE, "2");
    assert_eq!(
        failed(&summary),
        0,
        "injected by the webhook: {summary} [{}]",
        rollout.causes_line()
    );
    assert_the_drain_holds_the_app_and_the_sidecar_stops_last(&rollout.pods, 10);
    assert_no_failed_hook_or_oom(NAMESPACE);

    // A server-side dry run goes through the webhook (sideEffects NoneOnDryRun).
    let dry = kubectl(
        &[
            "apply",
            "--dry-run=server",
            "-n",
            NAMESPACE,
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&demo_pod("dry-run")),
    );
    let dry: Value = serde_json::from_str(&dry).expect("dry-run JSON");
    assert!(has_sidecar(&dry), "the dry run shows the injected pod");

    // A pod the transform refuses is created as it is, and its Event says why.
    let mut refused = demo_pod_object("refused");
    refused["spec"]["containers"][0]["lifecycle"] =
        json!({"preStop": {"exec": {"command": ["sleep", "1"]}}});
    let refused = serde_json::to_string(&refused).expect("JSON");
    kubectl(&["apply", "-n", NAMESPACE, "-f", "-"], Some(&refused));
    let event = webhook_event("NotInjected", "refused");
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.contains("preStop")),
        "{event}"
    );
    // A Service that targets the app's port by number is named with the fix.
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "by-number"},
        "spec": {"selector": {"app": "webhook-check"}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    kubectl(
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&service.to_string()),
    );
    // The webhook caches a namespace's Services for 5 s.
    std::thread::sleep(Duration::from_secs(6));
    kubectl(
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&demo_pod("bypassed")),
    );
    let event = webhook_event("ServiceBypassesSidecar", "bypassed");
    assert!(
        event["note"]
            .as_str()
            .is_some_and(|n| n.contains("8080 → 18080")),
        "{event}"
    );
    for (kind, name) in [
        ("pod", "refused"),
        ("pod", "bypassed"),
        ("service", "by-number"),
    ] {
        kubectl(
            &["delete", kind, "-n", NAMESPACE, name, "--wait=false"],
            None,
        );
    }

    // No webhook answering: pods are still created (failurePolicy Ignore), without
    // the sidecar, and named by an Event once a webhook is back.
    kubectl(
        &[
            "scale",
            "-n",
            SYSTEM,
            "deploy/lameduck-webhook",
            "--replicas=0",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while webhook_pods() > 0 {
        assert!(Instant::now() < deadline, "webhook pods still there");
        std::thread::sleep(Duration::from_millis(500));
    }
    kubectl(
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&demo_pod("missed")),
    );
    let missed = json(&["get", "pod", "-n", NAMESPACE, "missed", "-o", "json"]);
    assert!(!has_sidecar(&missed), "admitted without the sidecar");
    kubectl(
        &[
            "scale",
            "-n",
            SYSTEM,
            "deploy/lameduck-webhook",
            "--replicas=2",
        ],
        None,
    );
    kubectl(
        &[
            "rollout",
            "status",
            "-n",
            SYSTEM,
            "deploy/lameduck-webhook",
            "--timeout=120s",
        ],
        None,
    );
    let event = webhook_event("NotInjected", "missed");
    eprintln!("e2e: {}", event["note"]);
    kubectl(
        &["delete", "pod", "-n", NAMESPACE, "missed", "--wait=false"],
        None,
    );
    retire(NAMESPACE);

    helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        SYSTEM,
        "--wait",
        "--timeout",
        "120s",
    ]);
    let left = kubectl(
        &["get", "mutatingwebhookconfigurations", "-o", "name"],
        None,
    );
    assert!(
        !left.contains("lameduck"),
        "webhook configurations left: {left}"
    );
    kubectl(&["delete", "namespace", SYSTEM, "--wait=false"], None);
    eprintln!(
        "e2e: webhook scenario in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
