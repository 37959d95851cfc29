//! `lameduck lab --kubeconfig` and `lameduck check --kubeconfig` on the real node:
//! the lab run as a ServiceAccount bound to nothing but the shipped Role (the plain
//! demo loses requests with attributed causes, the injected one loses none in three
//! rollouts in a row), a Role missing one verb named before anything is created, an
//! image that cannot be pulled, a SIGINT mid-rollout (exit 130, its namespace and
//! objects gone), and `check` finding a planted bypassing Service, an uninjected pod
//! of an opted-in namespace and a blocking PodDisruptionBudget, and nothing in a
//! clean namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lameduck_test_support::process::{output_with_stdin, signal_pid};
use serde_json::{Value, json};

use super::{INGRESS, json, kubeconfig, kubectl, lameduck, manifests};

/// The namespace the ServiceAccount's lab runs in.
const LAB: &str = "lab";
/// The namespace an interrupted lab creates (and must delete).
const INTERRUPTED: &str = "lab-interrupted";
/// The lab's label key.
const LABEL: &str = "lameduck.dev/lab-run";

fn state(file: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lameduck-e2e-live-{file}"))
}

/// `lameduck lab` with `args`, as whoever `config` names.
fn lab(config: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lameduck"));
    command
        .arg("lab")
        .arg("--kubeconfig")
        .arg(config)
        .args(args);
    output_with_stdin(&mut command, None)
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The Role `lab --print-role` prints for `namespace`, without the verbs in `drop`
/// (`resource/verb`).
fn role(namespace: &str, drop: &[&str]) -> String {
    let printed = lameduck(&["lab", "--print-role", "--namespace", namespace], None);
    let documents = lameduck_manifests::parse_stream("role", &printed).expect("role YAML");
    let mut role = documents
        .into_iter()
        .find(|d| d["kind"] == "Role")
        .expect("a Role");
    for rule in role["rules"].as_array_mut().expect("rules") {
        let resources: Vec<String> = rule["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|r| r.as_str().expect("resource").to_owned())
            .collect();
        if let Some(verbs) = rule["verbs"].as_array_mut() {
            verbs.retain(|v| {
                !resources.iter().any(|r| {
                    drop.contains(&format!("{r}/{}", v.as_str().unwrap_or_default()).as_str())
                })
            });
        }
    }
    serde_json::to_string(&role).expect("JSON")
}

/// A kubeconfig for ServiceAccount `runner` of `namespace`, bound to the lab's Role.
fn service_account_kubeconfig(namespace: &str, runner: &str) -> PathBuf {
    kubectl(&["create", "serviceaccount", runner, "-n", namespace], None);
    kubectl(
        &[
            "create",
            "rolebinding",
            runner,
            "-n",
            namespace,
            "--role",
            "lameduck-lab",
            &format!("--serviceaccount={namespace}:{runner}"),
        ],
        None,
    );
    let token = kubectl(
        &[
            "create",
            "token",
            runner,
            "-n",
            namespace,
            "--duration",
            "2h",
        ],
        None,
    );
    let admin = json(&["config", "view", "--raw", "--minify", "-o", "json"]);
    let cluster = &admin["clusters"][0]["cluster"];
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": runner, "user": {"token": token.trim()}}],
        "contexts": [{"name": runner, "context": {"cluster": "e2e", "user": runner, "namespace": namespace}}],
        "current-context": runner,
    });
    let path = state(&format!("{runner}.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec(&config).expect("JSON")).expect("kubeconfig");
    path
}

/// The plain scenario in the lab's namespace through `url` with `extra` flags, as
/// `config`'s user: it must exit 1; its output.
fn failing_plain(config: &Path, url: &str, extra: &[&str]) -> String {
    let mut args = vec!["--namespace", LAB, "--url", url, "--scenario", "plain"];
    args.extend_from_slice(extra);
    let output = text(&lab(config, &args));
    assert!(output.starts_with("exit Some(1)"), "{output}");
    output
}

/// Every object with the lab's label, anywhere (kind/name lines).
fn labelled() -> String {
    kubectl(
        &[
            "get",
            "deployments,replicasets,pods,services,configmaps,ingresses,endpointslices,namespaces",
            "-A",
            "-l",
            LABEL,
            "-o",
            "name",
        ],
        None,
    )
}

fn results(path: &Path) -> Vec<Value> {
    let json: Value =
        serde_json::from_slice(&std::fs::read(path).expect("lab JSON")).expect("lab JSON");
    json["scenarios"].as_array().expect("scenarios").clone()
}

pub(super) fn the_cluster_lab_and_the_live_check() {
    let started = Instant::now();
    kubectl(&["create", "namespace", LAB], None);
    kubectl(
        &[
            "label",
            "namespace",
            LAB,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    // A Role missing one verb: named, and nothing created.
    kubectl(
        &["apply", "-n", LAB, "-f", "-"],
        Some(&role(LAB, &["endpointslices/watch"])),
    );
    let runner = service_account_kubeconfig(LAB, "runner");
    let url = format!("http://{INGRESS}/");
    let missing = lab(
        &runner,
        &["--namespace", LAB, "--url", &url, "--scenario", "plain"],
    );
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing)
            .contains("missing permission: watch endpointslices.discovery.k8s.io in namespace lab"),
        "{}",
        text(&missing)
    );
    assert_eq!(
        labelled().trim(),
        "",
        "nothing created without the permission"
    );

    // The whole Role: the lab runs as the ServiceAccount.
    kubectl(&["apply", "-n", LAB, "-f", "-"], Some(&role(LAB, &[])));
    let unpullable = failing_plain(&runner, &url, &["--image", "lameduck/no-such-image:0"]);
    assert!(
        unpullable.contains("image lameduck/no-such-image:0 cannot be pulled"),
        "{unpullable}"
    );
    assert_eq!(labelled().trim(), "", "cleaned up after the pull error");
    let never_ready = state("never-ready.yaml");
    std::fs::write(&never_ready, never_ready_manifest()).expect("manifest");
    let stuck = failing_plain(
        &runner,
        &url,
        &["--manifest", &never_ready.display().to_string()],
    );
    assert!(
        stuck.contains(
            "the rollout of deployment demo-app is stuck past its progressDeadlineSeconds (10 s)"
        ),
        "{stuck}"
    );
    assert_eq!(labelled().trim(), "", "cleaned up after the stuck rollout");

    let report = state("lab.json");
    let html = state("lab.html");
    let mut args = vec!["--namespace", LAB, "--url", &url, "--scenario", "plain"];
    for _ in 0..3 {
        args.extend(["--scenario", "sidecar"]);
    }
    let report_arg = report.display().to_string();
    let html_arg = html.display().to_string();
    args.extend(["--json", &report_arg, "--html", &html_arg]);
    let run = lab(&runner, &args);
    eprintln!("e2e: cluster lab as a ServiceAccount:\n{}", text(&run));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let scenarios = results(&report);
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["plain", "sidecar", "sidecar", "sidecar"]);
    let plain = &scenarios[0];
    let failed = plain["failed"].as_u64().expect("failed");
    assert!(failed > 0, "the plain demo loses requests: {plain}");
    let other = plain["causes"]["other"].as_u64().unwrap_or(0);
    assert!(
        other * 10 <= failed,
        "{other} of {failed} plain failures without a cause: {plain}"
    );
    for sidecar in &scenarios[1..] {
        assert!(
            sidecar["requests"].as_u64().expect("requests") > 1000,
            "{sidecar}"
        );
        assert_eq!(sidecar["failed"], 0, "injected: {sidecar}");
    }
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(
        page.contains("sidecar") && page.contains("<svg"),
        "an HTML timeline"
    );
    assert_eq!(labelled().trim(), "", "the run's objects are gone");

    // SIGINT mid-rollout, as the cluster's admin: the namespace it created goes too.
    let mut interrupted = Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .args(["lab", "--kubeconfig"])
        .arg(kubeconfig())
        .args(["--namespace", INTERRUPTED, "--scenario", "sidecar"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lameduck lab");
    until_pods_ready(INTERRUPTED);
    std::thread::sleep(Duration::from_secs(8));
    signal_pid(interrupted.id(), "INT");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = interrupted.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the interrupted lab did not exit"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status.code(), Some(130));
    let output = interrupted.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("interrupted; everything it created was deleted"),
        "{stderr}"
    );
    assert_eq!(labelled().trim(), "", "nothing left after SIGINT");
    let namespaces = kubectl(&["get", "namespaces", "-o", "name"], None);
    assert!(!namespaces.contains(INTERRUPTED), "{namespaces}");

    the_live_check_finds_what_was_planted();
    kubectl(&["delete", "namespace", LAB, "--wait=false"], None);
    eprintln!(
        "e2e: cluster lab and live check in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// Waits (at most 3 minutes) until `namespace` exists and has ready pods of a lab run.
fn until_pods_ready(namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pods = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig())
            .args(["get", "pods", "-n", namespace, "-l", LABEL, "-o", "json"])
            .output()
            .expect("kubectl");
        let pods: Value = serde_json::from_slice(&pods.stdout).unwrap_or_default();
        let ready = pods["items"].as_array().is_some_and(|items| {
            !items.is_empty()
                && items.iter().all(|p| {
                    p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "{namespace}: no ready lab pods");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `check --kubeconfig` in `namespace`: its exit code and JSON findings.
fn check(namespace: &str, format: &str) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .args(["check", "--kubeconfig"])
        .arg(kubeconfig())
        .args(["--namespace", namespace, "--format", format])
        .output()
        .expect("lameduck check");
    let findings = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("check JSON ({e}): {}", text(&output)));
    (output.status.code(), findings)
}

fn the_live_check_finds_what_was_planted() {
    let injected = lameduck(&["inject", "-"], Some(&manifests("plain")));
    // A clean namespace: the injected demo alone.
    kubectl(&["create", "namespace", "clean"], None);
    kubectl(
        &["apply", "-n", "clean", "-f", "-"],
        Some(&without_ingress(&injected)),
    );
    let (code, findings) = check("clean", "json");
    assert_eq!((code, findings.clone()), (Some(0), json!([])), "{findings}");

    // An opted-in namespace (no webhook runs now): the injected demo, a Service that
    // targets its app port by number, a PDB that allows no eviction, a bare pod.
    kubectl(&["create", "namespace", "planted"], None);
    kubectl(
        &[
            "label",
            "namespace",
            "planted",
            "lameduck.dev/inject=enabled",
        ],
        None,
    );
    kubectl(
        &["apply", "-n", "planted", "-f", "-"],
        Some(&without_ingress(&injected)),
    );
    let planted = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo-app-direct"},
         "spec": {"selector": {"app.kubernetes.io/name": "demo-app"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "demo-app"},
         "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app.kubernetes.io/name": "demo-app"}}}},
        super::webhook::demo_pod_object("bare"),
    ]});
    kubectl(
        &["apply", "-n", "planted", "-f", "-"],
        Some(&planted.to_string()),
    );
    // The pods must exist for the Service rule to see them injected.
    kubectl(
        &[
            "rollout",
            "status",
            "-n",
            "planted",
            "deploy/demo-app",
            "--timeout",
            "240s",
        ],
        None,
    );
    let (code, findings) = check("planted", "json");
    assert_eq!(code, Some(1), "{findings}");
    let mut found: Vec<(String, String, String)> = findings
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().expect("field").to_owned();
            (field("rule"), field("kind"), field("name"))
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("not-injected".into(), "Pod".into(), "bare".into()),
            (
                "pdb-blocks-eviction".into(),
                "PodDisruptionBudget".into(),
                "demo-app".into()
            ),
            (
                "service-bypasses-sidecar".into(),
                "Service".into(),
                "demo-app-direct".into()
            ),
        ]
    );
    let (code, sarif) = check("planted", "sarif");
    assert_eq!(code, Some(1));
    let results = sarif["runs"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), 3, "{sarif}");
    assert_eq!(sarif["version"], "2.1.0");
    for namespace in ["clean", "planted"] {
        kubectl(&["delete", "namespace", namespace, "--wait=false"], None);
    }
}

/// The plain demo with a 10 s progress deadline and a readiness probe nothing answers.
fn never_ready_manifest() -> String {
    let mut documents =
        lameduck_manifests::parse_stream("plain", &manifests("plain")).expect("plain YAML");
    documents.retain(|d| d["kind"] != "Ingress");
    for document in &mut documents {
        if document["kind"] == "Deployment" {
            document["spec"]["progressDeadlineSeconds"] = json!(10);
            document["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
                json!({"tcpSocket": {"port": 9}, "periodSeconds": 1});
        }
    }
    lameduck_manifests::to_yaml(&documents).expect("YAML")
}

/// The stream without its Ingress (only one namespace at a time owns the ingress).
fn without_ingress(stream: &str) -> String {
    let documents = lameduck_manifests::parse_stream("stream", stream).expect("YAML");
    let kept: Vec<Value> = documents
        .into_iter()
        .filter(|d| d["kind"] != "Ingress")
        .collect();
    lameduck_manifests::to_yaml(&kept).expect("YAML")
}
