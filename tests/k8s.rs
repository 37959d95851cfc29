//! The shipped kustomize overlays: what each one fixes, checked on typed objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use lameduck_manifests::{kind, parse_documents};

use crate::system::{kustomize, repo_root};

/// The longest `?wait=` the demo load sends (`make load`), in seconds.
const LONGEST_DEMO_WAIT_SECONDS: i64 = 10;
/// Time the app needs to exit once its last request is done.
const DRAIN_MARGIN_SECONDS: i64 = 5;

const OVERLAYS: [&str; 4] = ["plain", "readiness", "graceful-shutdown", "fixed"];

fn deployment(name: &str, yaml: &str) -> Deployment {
    let objects = parse_documents(name, yaml).expect("overlay renders valid YAML");
    let kinds: Vec<&str> = objects.iter().map(kind).collect();
    assert_eq!(kinds, ["Service", "Deployment", "Ingress"], "{name}");
    let object = objects
        .into_iter()
        .find(|o| kind(o) == "Deployment")
        .expect("a Deployment");
    serde_json::from_value(object).expect("the Deployment matches the typed k8s-openapi struct")
}

fn app_container(deployment: &Deployment) -> &Container {
    let spec = &deployment.spec;
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(spec.replicas, Some(5));
    pod.containers
        .iter()
        .find(|c| c.name == "demo-app")
        .expect("a demo-app container")
}

fn pre_stop_seconds(container: &Container) -> Option<i64> {
    let hook = container.lifecycle.as_ref()?.pre_stop.as_ref()?;
    if let Some(sleep) = &hook.sleep {
        return Some(sleep.seconds);
    }
    let command = hook.exec.as_ref()?.command.as_ref()?;
    command.last()?.parse().ok()
}

fn rendered(overlay: &str) -> String {
    let path = repo_root().join(format!("k8s/rendered/{overlay}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_plain(d: &Deployment) {
    let app = app_container(d);
    assert!(
        app.readiness_probe.is_none(),
        "plain has no readiness probe"
    );
    assert!(pre_stop_seconds(app).is_none(), "plain has no preStop");
    let env = app.env.as_deref().unwrap_or_default();
    assert!(
        env.iter().any(|e| e.name == "VERSION"),
        "VERSION is in the pod template"
    );
    assert!(!env.iter().any(|e| e.name == "GRACEFUL_SHUTDOWN_TIMEOUT"));
}

fn assert_fixed(d: &Deployment) {
    let app = app_container(d);
    let probe = app
        .readiness_probe
        .as_ref()
        .expect("fixed has a readiness probe");
    let get = probe.http_get.as_ref().expect("an httpGet probe");
    assert_eq!(get.path.as_deref(), Some("/readyz"));
    let pre_stop = pre_stop_seconds(app).expect("fixed has a preStop hook");
    let grace = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.termination_grace_period_seconds)
        .expect("fixed sets terminationGracePeriodSeconds");
    assert!(
        grace >= pre_stop + LONGEST_DEMO_WAIT_SECONDS + DRAIN_MARGIN_SECONDS,
        "grace {grace} < preStop {pre_stop} + longest request {LONGEST_DEMO_WAIT_SECONDS} + margin {DRAIN_MARGIN_SECONDS}"
    );
    let env = app.env.as_deref().unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "GRACEFUL_SHUTDOWN_TIMEOUT"));
}

#[test]
fn rendered_plain_overlay_has_no_fix() {
    assert_plain(&deployment("plain", &rendered("plain")));
}

#[test]
fn rendered_fixed_overlay_has_every_classic_fix() {
    assert_fixed(&deployment("fixed", &rendered("fixed")));
}

#[test]
fn intermediate_overlays_add_fixes_one_by_one() {
    let readiness = deployment("readiness", &rendered("readiness"));
    let app = app_container(&readiness);
    assert!(app.readiness_probe.is_some());
    assert!(pre_stop_seconds(app).is_none());

    let graceful = deployment("graceful-shutdown", &rendered("graceful-shutdown"));
    let app = app_container(&graceful);
    assert!(app.readiness_probe.is_some());
    assert!(pre_stop_seconds(app).is_none());
    let env = app.env.as_deref().unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "GRACEFUL_SHUTDOWN_TIMEOUT"));
}

#[test]
#[ignore = "system suite: needs kubectl or kustomize (LAMEDUCK_SYSTEM_TESTS=1)"]
fn kustomize_renders_the_overlays_as_committed() {
    for overlay in OVERLAYS {
        let fresh = kustomize(&format!("k8s/overlays/{overlay}"));
        assert_eq!(
            fresh,
            rendered(overlay),
            "k8s/rendered/{overlay}.yaml is stale: run `make render`"
        );
    }
    assert_plain(&deployment("plain", &kustomize("k8s/overlays/plain")));
    assert_fixed(&deployment("fixed", &kustomize("k8s/overlays/fixed")));
}

#[test]
#[ignore = "system suite: needs kubectl or kustomize (LAMEDUCK_SYSTEM_TESTS=1)"]
fn gateway_api_component_swaps_the_ingress_for_an_httproute() {
    let objects =
        parse_documents("gateway-api", &kustomize("k8s/examples/gateway-api")).expect("valid YAML");
    let kinds: Vec<&str> = objects.iter().map(kind).collect();
    assert_eq!(kinds, ["Service", "Deployment", "HTTPRoute"]);
}

#[test]
#[ignore = "system suite: needs kubectl or kustomize (LAMEDUCK_SYSTEM_TESTS=1)"]
fn the_lameduck_component_equals_lameduck_inject_on_the_base() {
    use lameduck_manifests::{Options, inject};
    let token = "example-token-do-not-use-0123456789";
    let example =
        std::fs::read_to_string(repo_root().join("k8s/examples/lameduck/drain-token.yaml"))
            .expect("example token file");
    assert!(
        example.contains(token),
        "the example's token changed: update this test"
    );

    let component =
        lameduck_manifests::parse_stream("component", &kustomize("k8s/examples/lameduck"))
            .expect("valid YAML");
    let mut injected =
        lameduck_manifests::parse_stream("plain", &rendered("plain")).expect("valid YAML");
    let options = Options {
        drain_token: Some(token.to_owned()),
        ..Options::default()
    };
    inject(&mut injected, &options).expect("inject");
    assert_eq!(component, injected);
}

#[test]
#[ignore = "system suite: needs kubectl or kustomize (LAMEDUCK_SYSTEM_TESTS=1)"]
fn the_lameduck_component_has_no_default_token() {
    crate::system::require_system_suite();
    let dir = repo_root().join("target/kustomize-no-token");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [../../k8s/base]\ncomponents: [../../k8s/components/lameduck]\n",
    )
    .expect("kustomization");
    let kubectl = crate::system::find_program("kubectl");
    let output = match kubectl {
        Some(kubectl) => std::process::Command::new(kubectl)
            .arg("kustomize")
            .arg(&dir)
            .output(),
        None => std::process::Command::new("kustomize")
            .arg("build")
            .arg(&dir)
            .output(),
    }
    .expect("running kustomize");
    assert!(
        !output.status.success(),
        "the component must not build without a drain token"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("lameduck-drain-token"));
}
