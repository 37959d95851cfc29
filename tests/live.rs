//! `lab --kubeconfig` and `check --kubeconfig` where no cluster answers, the flags that
//! only the local lab takes, `--print-role`, and `check --format sarif` on manifests.
//! The cluster runs themselves are in the e2e suite.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn lameduck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .args(args)
        .output()
        .expect("running lameduck")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A kubeconfig whose API server is a loopback port nothing listens on.
fn unreachable_kubeconfig() -> (PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = format!("https://127.0.0.1:{port}");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{server}', insecure-skip-tls-verify: true}}\n\
         users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    );
    let path = std::env::temp_dir().join(format!("lameduck-unreachable-{port}.kubeconfig"));
    std::fs::write(&path, config).expect("kubeconfig");
    (path, server)
}

#[test]
fn an_unreachable_cluster_is_named_and_nothing_runs() {
    let (config, server) = unreachable_kubeconfig();
    let config = config.display().to_string();
    for args in [
        vec!["lab", "--kubeconfig", &config, "--scenario", "plain"],
        vec!["check", "--kubeconfig", &config, "-n", "default"],
    ] {
        let output = lameduck(&args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("the cluster at {server}/ is unreachable")),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let missing = lameduck(&["lab", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("reading the kubeconfig /nonexistent/kubeconfig"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn local_only_flags_are_refused_with_a_kubeconfig() {
    for flag in [
        ["--time-scale", "0.5"],
        ["--ingress", "nginx"],
        ["--app-cmd", "true"],
    ] {
        let output = lameduck(&["lab", "--kubeconfig", "k", flag[0], flag[1]]);
        assert_eq!(output.status.code(), Some(2), "{flag:?}");
        assert!(
            stderr(&output).contains("cannot be used with"),
            "{}",
            stderr(&output)
        );
    }
    let output = lameduck(&["lab", "--url", "http://x/"]);
    assert_eq!(output.status.code(), Some(2), "--url needs --kubeconfig");
}

#[test]
fn print_role_prints_the_role_for_the_namespace() {
    let output = lameduck(&["lab", "--print-role", "--namespace", "shop"]);
    assert!(output.status.success());
    let documents =
        lameduck_manifests::parse_stream("role", &String::from_utf8_lossy(&output.stdout))
            .expect("YAML");
    assert_eq!(documents[0]["kind"], "Role");
    assert_eq!(documents[0]["metadata"]["namespace"], "shop");
}

#[test]
fn check_writes_sarif_for_code_scanning() {
    let plain = crate::system::repo_root().join("k8s/rendered/plain.yaml");
    let output = lameduck(&["check", "--format", "sarif", &plain.display().to_string()]);
    assert_eq!(output.status.code(), Some(1), "the plain demo has findings");
    let sarif: Value = serde_json::from_slice(&output.stdout).expect("SARIF JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let results = run["results"].as_array().expect("results");
    let ids: Vec<&str> = results
        .iter()
        .filter_map(|r| r["ruleId"].as_str())
        .collect();
    assert_eq!(ids, ["readiness-probe", "pre-stop"]);
    for id in &ids {
        assert!(rules.contains(id), "{id} is described");
    }
    assert!(rules.contains(&"service-bypasses-sidecar"));
    let location = &results[0]["locations"][0];
    assert_eq!(
        location["physicalLocation"]["artifactLocation"]["uri"],
        plain.display().to_string()
    );
    assert_eq!(
        location["logicalLocations"][0]["fullyQualifiedName"],
        "Deployment/demo-app"
    );
}
