//! The opt-in e2e suite (`LAMEDUCK_E2E=1`, as root): a real single-node cluster built
//! from source (`e2e/up`), the demo rolled under POST load through its Service (the
//! real kube-proxy), the verdicts, and `e2e/down` leaving nothing behind. `.ci/run`
//! runs it; selected on its own with
//! `LAMEDUCK_E2E=1 cargo test --test integration e2e:: -- --ignored`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lameduck_test_support::process::{output_with_stdin, signal_pid};
use serde_json::Value;

use crate::system::repo_root;

/// The env var that opts into this suite.
const E2E_ENV: &str = "LAMEDUCK_E2E";
/// POST load through the Service during a rollout.
const RATE: &str = "200";
/// How long a rollout may take.
const ROLLOUT_TIMEOUT: &str = "240s";

fn require_e2e() {
    assert!(
        std::env::var(E2E_ENV).is_ok_and(|v| v == "1"),
        "the e2e suite needs {E2E_ENV}=1 (and root: it runs a node)"
    );
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(
        root,
        "{E2E_ENV}=1 but not root: the node's processes need it"
    );
}

fn kubeconfig() -> PathBuf {
    repo_root().join("e2e/.state/kubeconfig")
}

fn script(name: &str) -> Output {
    let output = Command::new("bash")
        .arg(repo_root().join("e2e").join(name))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running e2e/{name}: {e}"));
    assert!(
        output.status.success(),
        "e2e/{name} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new("kubectl");
    command.env("KUBECONFIG", kubeconfig()).args(args);
    let output = output_with_stdin(&mut command, stdin.map(str::as_bytes));
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&kubectl(args, None)).expect("kubectl JSON")
}

fn lameduck(args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lameduck"));
    command.args(args);
    let output = output_with_stdin(&mut command, stdin.map(str::as_bytes));
    assert!(output.status.success(), "lameduck {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A namespace that enforces the restricted Pod Security standard, with `manifests`
/// applied server-side with strict field validation and rolled out.
fn deploy(namespace: &str, manifests: &str) {
    kubectl(&["create", "namespace", namespace], None);
    kubectl(
        &[
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
        None,
    );
    kubectl(
        &[
            "apply",
            "-n",
            namespace,
            "--server-side",
            "--validate=strict",
            "-f",
            "-",
        ],
        Some(manifests),
    );
    rollout_status(namespace);
}

fn rollout_status(namespace: &str) {
    kubectl(
        &[
            "rollout",
            "status",
            "-n",
            namespace,
            "deploy/demo-app",
            "--timeout",
            ROLLOUT_TIMEOUT,
        ],
        None,
    );
}

/// Rolls the demo to `version` under POST load through its Service; returns the load's
/// summary (JSON), taken until every old pod is gone, and what a watch of the pods saw
/// meanwhile.
fn roll_under_load(namespace: &str, version: &str) -> (Value, String) {
    let watched = std::env::temp_dir().join(format!("lameduck-e2e-{namespace}-{version}.pods"));
    let mut watch = watch_pods(namespace, &watched);
    let ip = kubectl(
        &[
            "get",
            "service",
            "-n",
            namespace,
            "demo-app",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    let summary = std::env::temp_dir().join(format!("lameduck-e2e-{namespace}-{version}.json"));
    let urls: Vec<String> = ["0", "0.2", "2"]
        .iter()
        .map(|wait| format!("http://{ip}/?wait={wait}"))
        .collect();
    let mut load = Command::new(env!("CARGO_BIN_EXE_lameduck"));
    load.args(["load", "--quiet", "--rate", RATE, "--duration", "600s"])
        .args(["--allow-failures", "1000000", "--json-summary"])
        .arg(&summary)
        .stdout(Stdio::null());
    for url in &urls {
        load.args(["--url", url]);
    }
    let mut load = load.spawn().expect("running lameduck load");
    std::thread::sleep(Duration::from_secs(5));
    let env = format!("VERSION={version}");
    kubectl(
        &[
            "set",
            "env",
            "-n",
            namespace,
            "deploy/demo-app",
            "-c",
            "demo-app",
            &env,
        ],
        None,
    );
    rollout_status(namespace);
    until_old_pods_are_gone(namespace);
    std::thread::sleep(Duration::from_secs(5));
    signal_pid(load.id(), "INT");
    let exited = load.wait().expect("load exit");
    assert_eq!(exited.code(), Some(130), "load stopped by SIGINT");
    let _ = watch.kill();
    let _ = watch.wait();
    let summary = serde_json::from_slice(&std::fs::read(&summary).expect("load summary"))
        .expect("summary JSON");
    (
        summary,
        std::fs::read_to_string(&watched).unwrap_or_default(),
    )
}

/// Waits until no pod of `namespace` is terminating (at most 3 minutes).
fn until_old_pods_are_gone(namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pods = json(&["get", "pods", "-n", namespace, "-o", "json"]);
        let terminating = pods["items"]
            .as_array()
            .expect("pods")
            .iter()
            .any(|p| !p["metadata"]["deletionTimestamp"].is_null());
        if !terminating {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{namespace}: pods still terminating"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// No hook failed and no container was OOM-killed in `namespace`.
fn assert_no_failed_hook_or_oom(namespace: &str) {
    let events = json(&["get", "events", "-n", namespace, "-o", "json"]);
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        !reasons.contains(&"FailedPreStopHook"),
        "{namespace}: {reasons:?}"
    );
    let pods = kubectl(&["get", "pods", "-n", namespace, "-o", "json"], None);
    assert!(
        !pods.contains("OOMKilled"),
        "{namespace}: a container was OOM-killed"
    );
}

/// Watches the pods of `namespace` (every change, as JSON) until the returned child is killed.
fn watch_pods(namespace: &str, into: &std::path::Path) -> std::process::Child {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig())
        .args(["get", "pods", "-n", namespace, "--watch", "-o", "json"])
        .stdout(std::fs::File::create(into).expect("watch file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl --watch")
}

/// When a container of a pod status terminated (its last terminated state seen).
fn terminated_at(pod: &Value, list: &str, container: &str) -> Option<i64> {
    pod["status"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)?["state"]["terminated"]["finishedAt"]
        .as_str()
        .and_then(seconds_of)
}

/// For every pod the rollout replaced, from the watched statuses: the app exited at
/// least `shutdown_delay` after the pod's deletion (the preStop drain held SIGTERM
/// back), and the native sidecar exited only after the app.
fn assert_the_drain_holds_the_app_and_the_sidecar_stops_last(watched: &str, shutdown_delay: i64) {
    // The deletion request's time: the first deletionTimestamp seen (a deadline)
    // minus its grace period; the kubelet's final delete later resets both.
    let mut deleted: std::collections::BTreeMap<String, i64> = Default::default();
    let mut last: std::collections::BTreeMap<String, Value> = Default::default();
    for pod in serde_json::Deserializer::from_str(watched).into_iter::<Value>() {
        let pod = pod.expect("watched pod JSON");
        let Some(name) = pod["metadata"]["name"].as_str().map(str::to_owned) else {
            continue;
        };
        let deadline = pod["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(seconds_of);
        let grace = pod["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if let (Some(deadline), Some(grace)) = (deadline, grace)
            && grace > 0
        {
            deleted.entry(name.clone()).or_insert(deadline - grace);
        }
        last.insert(name, pod);
    }
    let mut replaced = 0;
    for (name, deleted) in &deleted {
        let pod = &last[name];
        let app = terminated_at(pod, "containerStatuses", "demo-app");
        let sidecar = terminated_at(pod, "initContainerStatuses", "lameduck-sidecar");
        let (Some(app), Some(sidecar)) = (app, sidecar) else {
            continue;
        };
        replaced += 1;
        assert!(
            app >= deleted + shutdown_delay,
            "{name}: the app exited {}s after its deletion",
            app - deleted
        );
        assert!(
            sidecar >= app,
            "{name}: sidecar exited at {sidecar}, app at {app}"
        );
    }
    assert!(
        replaced >= 5,
        "only {replaced} replaced pods seen terminated"
    );
}

/// Seconds of a `YYYY-MM-DDTHH:MM:SSZ` timestamp within its day (runs stay within one).
fn seconds_of(timestamp: &str) -> Option<i64> {
    let time = timestamp.split('T').nth(1)?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    let s: f64 = s.parse().ok()?;
    Some(h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60 + s as i64)
}

fn failed(summary: &Value) -> u64 {
    summary["failed"].as_u64().expect("failed")
}

fn manifests(overlay: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("k8s/rendered/{overlay}.yaml")))
        .expect("rendered overlay")
}

#[test]
#[ignore = "e2e suite: needs root and LAMEDUCK_E2E=1 (a real node built from source)"]
fn real_rollouts_plain_loses_and_fixed_and_injected_lose_nothing() {
    require_e2e();
    let started = Instant::now();
    script("up");
    let nodes = json(&["get", "nodes", "-o", "json"]);
    let ready = nodes["items"][0]["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "the node is Ready");

    let plain = manifests("plain");
    deploy("plain", &plain);
    let lost = failed(&roll_under_load("plain", "2").0);
    eprintln!("plain: {lost} failed");
    assert!(lost > 0, "the plain app loses requests on a real rollout");

    deploy("fixed", &manifests("fixed"));
    assert_eq!(
        failed(&roll_under_load("fixed", "2").0),
        0,
        "the classic fixes"
    );
    assert_no_failed_hook_or_oom("fixed");

    let native = lameduck(&["inject", "-"], Some(&plain));
    deploy("sidecar", &native);
    for version in ["2", "3", "4"] {
        let (summary, watched) = roll_under_load("sidecar", version);
        assert_eq!(
            failed(&summary),
            0,
            "injected, rollout to {version}: {summary}"
        );
        assert_the_drain_holds_the_app_and_the_sidecar_stops_last(&watched, 10);
    }
    assert_no_failed_hook_or_oom("sidecar");

    let classic = lameduck(&["inject", "--mode", "classic", "-"], Some(&plain));
    deploy("classic", &classic);
    assert_eq!(
        failed(&roll_under_load("classic", "2").0),
        0,
        "classic sidecar"
    );
    assert_no_failed_hook_or_oom("classic");

    script("down");
    assert_nothing_left();
    eprintln!("e2e: {:.0} s", started.elapsed().as_secs_f64());
}

/// No process, device, network namespace, iptables chain or mount of the node is left.
fn assert_nothing_left() {
    let processes = Command::new("pgrep")
        .args(["-f", "lameduck/kube/|e2e/\\.state|containerd-shim"])
        .output()
        .expect("pgrep");
    assert!(
        processes.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&processes.stdout)
    );
    let links = Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("ldnode0") && !links.contains("ldcni0") && !links.contains("veth"),
        "{links}"
    );
    let rules = Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains("KUBE-") && !rules.contains("CNI-"),
        "{rules}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(!mounts.contains("e2e/.state"), "{mounts}");
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !namespaces.contains("cni-"),
        "pod network namespaces left: {namespaces}"
    );
}
