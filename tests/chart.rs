//! The Helm chart in charts/lameduck, rendered by a real `helm` (.ci/run builds it from
//! the Go module proxy): `helm lint`, `helm template` against golden files, every
//! rendered object read back as a typed Kubernetes object, and the values schema.
//! `LAMEDUCK_BLESS=1` rewrites the golden files.

use std::path::PathBuf;
use std::process::Command;

use lameduck_manifests::{kind, parse_documents};
use lameduck_test_support::system::require_program;
use serde_json::Value;

use crate::system::repo_root;

const CHART: &str = "charts/lameduck";
/// The Kubernetes version templates are rendered for (helm built from source
/// defaults to an old one).
const KUBE_VERSION: &str = "1.34.0";

fn helm(args: &[&str]) -> std::process::Output {
    let helm = require_program(
        "helm",
        "helm (go install helm.sh/helm/v3/cmd/helm; .ci/run does)",
    );
    Command::new(helm)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("running helm")
}

fn template(extra: &[&str]) -> String {
    let mut args = vec![
        "template",
        "lameduck",
        CHART,
        "--namespace",
        "lameduck-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    let output = helm(&args);
    assert!(
        output.status.success(),
        "helm template {extra:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The generated certificate and key differ on every render: masked for the golden file.
fn masked(rendered: &str) -> String {
    rendered
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            for key in ["ca.crt: ", "tls.crt: ", "tls.key: ", "caBundle: "] {
                if trimmed.starts_with(key) {
                    let indent = &line[..line.len() - trimmed.len()];
                    return format!("{indent}{key}GENERATED");
                }
            }
            line.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn golden(name: &str) -> PathBuf {
    repo_root().join(format!("tests/data/chart/{name}.golden.yaml"))
}

fn assert_golden(name: &str, rendered: &str) {
    let path = golden(name);
    if std::env::var("LAMEDUCK_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, rendered).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LAMEDUCK_BLESS=1 writes it)", path.display()));
    assert_eq!(
        rendered,
        expected,
        "{} is stale (LAMEDUCK_BLESS=1 rewrites it)",
        path.display()
    );
}

fn objects(rendered: &str) -> Vec<Value> {
    parse_documents("helm template", rendered).expect("helm renders YAML")
}

#[test]
#[ignore = "system suite: needs helm (LAMEDUCK_SYSTEM_TESTS=1)"]
fn the_chart_lints_and_renders_as_committed() {
    let lint = helm(&["lint", "--strict", "--kube-version", KUBE_VERSION, CHART]);
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert_golden("default", &masked(&template(&[])));
    assert_golden(
        "cert-manager",
        &template(&["--set", "certManager.enabled=true"]),
    );
}

#[test]
#[ignore = "system suite: needs helm (LAMEDUCK_SYSTEM_TESTS=1)"]
fn rendered_objects_deserialize_into_typed_kubernetes_objects() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let mut kinds = Vec::new();
    for object in objects(&template(&[])) {
        let what = format!("{} {}", kind(&object), object["metadata"]["name"]);
        let result = match kind(&object) {
            "Deployment" => serde_json::from_value::<Deployment>(object.clone()).map(drop),
            "Service" => serde_json::from_value::<Service>(object.clone()).map(drop),
            "ServiceAccount" => serde_json::from_value::<ServiceAccount>(object.clone()).map(drop),
            "Secret" => serde_json::from_value::<Secret>(object.clone()).map(drop),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(object.clone()).map(drop),
            "ClusterRoleBinding" => {
                serde_json::from_value::<ClusterRoleBinding>(object.clone()).map(drop)
            }
            "PodDisruptionBudget" => {
                serde_json::from_value::<PodDisruptionBudget>(object.clone()).map(drop)
            }
            "MutatingWebhookConfiguration" => {
                let config: MutatingWebhookConfiguration = serde_json::from_value(object.clone())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_webhooks(&config);
                Ok(())
            }
            other => panic!("unexpected kind {other}"),
        };
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
        kinds.push(kind(&object).to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount"
        ]
    );
}

fn assert_webhooks(
    config: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
) {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    assert_eq!(webhooks.len(), 2);
    for webhook in webhooks {
        assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(webhook.side_effects, "NoneOnDryRun");
        assert_eq!(webhook.timeout_seconds, Some(5));
        assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let ca = webhook.client_config.ca_bundle.as_ref().expect("caBundle");
        assert!(String::from_utf8_lossy(&ca.0).contains("BEGIN CERTIFICATE"));
        let service = webhook.client_config.service.as_ref().expect("service");
        assert_eq!(service.path.as_deref(), Some("/mutate"));
    }
}

#[test]
#[ignore = "system suite: needs helm (LAMEDUCK_SYSTEM_TESTS=1)"]
fn the_generated_certificate_serves_the_webhook_service_under_the_bundled_ca() {
    let rendered = objects(&template(&[]));
    let secret = rendered
        .iter()
        .find(|o| kind(o) == "Secret")
        .expect("secret");
    let config = rendered
        .iter()
        .find(|o| kind(o) == "MutatingWebhookConfiguration")
        .expect("webhook configuration");
    assert_eq!(
        secret["data"]["ca.crt"],
        config["webhooks"][0]["clientConfig"]["caBundle"]
    );
    let dir = lameduck_test_support::files::TempDir::new("chart-cert");
    for (file, key) in [("ca.crt", "ca.crt"), ("tls.crt", "tls.crt")] {
        let text = secret["data"][key].as_str().expect("base64");
        let decoded = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(text.as_bytes())?;
                child.wait_with_output()
            })
            .expect("base64 -d");
        std::fs::write(dir.path(file), decoded.stdout).expect("write");
    }
    let openssl = require_program("openssl", "openssl");
    let verify = Command::new(&openssl)
        .args(["verify", "-CAfile"])
        .arg(dir.path("ca.crt"))
        .arg(dir.path("tls.crt"))
        .output()
        .expect("openssl verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let names = Command::new(&openssl)
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.path("tls.crt"))
        .output()
        .expect("openssl x509");
    let names = String::from_utf8_lossy(&names.stdout);
    assert!(
        names.contains("DNS:lameduck-webhook.lameduck-system.svc"),
        "the API server calls the Service by this name: {names}"
    );
}

#[test]
#[ignore = "system suite: needs helm (LAMEDUCK_SYSTEM_TESTS=1)"]
fn the_values_schema_refuses_bad_values_naming_them() {
    for (set, named) in [
        ("sidecar.mode=sideways", "mode"),
        ("sidecar.shutdownDelay=soon", "shutdownDelay"),
        ("failurePolicy=Maybe", "failurePolicy"),
        ("sidecar.resources.limits.memory=lots", "memory"),
        ("replicas=3", "replicas"),
    ] {
        let output = helm(&[
            "template",
            "x",
            CHART,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            set,
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{set} was accepted");
        assert!(stderr.contains(named), "{set}: {stderr}");
    }
}

#[test]
#[ignore = "system suite: needs helm (LAMEDUCK_SYSTEM_TESTS=1)"]
fn sidecar_values_reach_the_webhook_as_its_settings() {
    let rendered = objects(&template(&[
        "--set",
        "sidecar.shutdownDelay=20s,sidecar.resources.limits.memory=96Mi,failurePolicy=Fail",
    ]));
    let deployment = rendered
        .iter()
        .find(|o| kind(o) == "Deployment")
        .expect("deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    let var = |name: &str| {
        env.iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        var("LAMEDUCK_SIDECAR_SHUTDOWN_DELAY").as_deref(),
        Some("20s")
    );
    assert_eq!(
        var("LAMEDUCK_SIDECAR_MEMORY_LIMIT").as_deref(),
        Some("96Mi")
    );
    assert_eq!(
        var("LAMEDUCK_SIDECAR_IMAGE").as_deref(),
        Some("lameduck/sidecar:0.1.0")
    );
    let config = rendered
        .iter()
        .find(|o| kind(o) == "MutatingWebhookConfiguration")
        .expect("webhook configuration");
    assert_eq!(config["webhooks"][1]["failurePolicy"], "Fail");
}

#[test]
fn the_charts_app_version_is_the_workspaces() {
    let text =
        std::fs::read_to_string(repo_root().join(CHART).join("Chart.yaml")).expect("Chart.yaml");
    let chart = parse_documents("Chart.yaml", &text)
        .expect("YAML")
        .remove(0);
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
}
