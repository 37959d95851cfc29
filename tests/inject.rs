//! `lameduck inject`, `uninject` and `check` as the binary runs them: golden files over
//! the manifests crate's corpus (`crates/manifests/tests/data/inject/`), round trips,
//! errors and exit codes.
//!
//! `LAMEDUCK_BLESS=1 cargo test --test integration inject` rewrites the golden files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lameduck_test_support::process::output_with_stdin;

use lameduck_manifests::parse_stream;
use serde_json::Value;

const TOKEN: &str = "golden-token-0123456789";

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/manifests/tests/data/inject")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.to_string_lossy().ends_with(".golden.yaml"))
        .collect();
    cases.sort();
    cases
}

fn lameduck(args: &[&str], stdin: Option<&[u8]>) -> Output {
    output_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_lameduck")).args(args),
        stdin,
    )
}

fn extra_args(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.with_extension("args"))
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn golden_path(case: &Path, success: bool) -> PathBuf {
    if success {
        case.with_extension("golden.yaml")
    } else {
        case.with_extension("err")
    }
}

/// What `inject` made of a case: its output, or its error and exit status.
fn injected(case: &Path) -> (bool, String) {
    let mut args = vec![
        "inject".to_owned(),
        "--drain-token".to_owned(),
        TOKEN.to_owned(),
    ];
    args.extend(extra_args(case));
    args.push(case.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = lameduck(&args, None);
    let root = corpus().to_string_lossy().into_owned();
    if output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        let notes = String::from_utf8_lossy(&output.stderr).replace(&root, "<corpus>");
        if !notes.is_empty() {
            text = format!(
                "{}{text}",
                notes
                    .lines()
                    .map(|l| format!("# {l}\n"))
                    .collect::<String>()
            );
        }
        (true, text)
    } else {
        assert!(
            output.stdout.is_empty(),
            "a failed inject must write nothing to stdout"
        );
        let stderr = String::from_utf8_lossy(&output.stderr).replace(&root, "<corpus>");
        (false, format!("exit {:?}\n{stderr}", output.status.code()))
    }
}

#[test]
fn golden_corpus() {
    let bless = std::env::var("LAMEDUCK_BLESS").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for case in cases() {
        let (success, text) = injected(&case);
        let golden = golden_path(&case, success);
        if bless {
            std::fs::write(&golden, &text).expect("writing golden file");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == text => {}
            Ok(expected) => mismatches.push(format!(
                "{}:\n--- expected\n{expected}\n--- got\n{text}",
                golden.display()
            )),
            Err(_) => mismatches.push(format!(
                "{} is missing (success: {success}); got:\n{text}",
                golden.display()
            )),
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatches (LAMEDUCK_BLESS=1 to rewrite):\n{}",
        mismatches.join("\n")
    );
}

fn goldens() -> Vec<(PathBuf, PathBuf)> {
    cases()
        .into_iter()
        .map(|case| (case.with_extension("golden.yaml"), case))
        .filter(|(golden, _)| golden.exists())
        .collect()
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn injecting_again_changes_nothing_and_uninject_restores_the_input() {
    assert!(goldens().len() >= 10, "the corpus lost its cases");
    for (golden, case) in goldens() {
        let text = strip_comments(&std::fs::read_to_string(&golden).expect("golden"));
        let mut args = vec!["inject".to_owned()];
        args.extend(extra_args(&case));
        args.push("-".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // No --drain-token: an injected workload keeps the token it has.
        let again = lameduck(&args, Some(text.as_bytes()));
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&again.stdout),
            text,
            "{}: not idempotent",
            case.display()
        );

        let restored = lameduck(&["uninject", "-"], Some(text.as_bytes()));
        assert!(
            restored.status.success(),
            "{}",
            String::from_utf8_lossy(&restored.stderr)
        );
        let restored =
            parse_stream("restored", &String::from_utf8_lossy(&restored.stdout)).expect("YAML");
        let original =
            parse_stream("input", &std::fs::read_to_string(&case).expect("case")).expect("YAML");
        assert_eq!(
            restored,
            original,
            "{}: uninject(inject(x)) != x",
            case.display()
        );
    }
}

#[test]
fn malformed_yaml_is_an_error_with_document_and_line_and_writes_nothing() {
    let case = corpus().join("malformed.yaml");
    let output = lameduck(&["inject", case.to_str().expect("path")], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("malformed YAML: document 1 (line 11)"),
        "{stderr}"
    );
}

#[test]
fn check_flags_the_plain_demo_and_passes_the_fixed_and_injected_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let plain = root.join("k8s/rendered/plain.yaml");
    let output = lameduck(
        &["check", "--format", "json", plain.to_str().expect("path")],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let findings: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let rules: Vec<&str> = findings
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert_eq!(rules, ["readiness-probe", "pre-stop"]);

    let fixed = root.join("k8s/rendered/fixed.yaml");
    assert!(
        lameduck(&["check", fixed.to_str().expect("path")], None)
            .status
            .success()
    );
    for case in [
        "named-service-port",
        "grpc-deployment",
        "redis",
        "http-and-grpc",
        "service-app-protocol",
    ] {
        let injected = corpus().join(format!("{case}.golden.yaml"));
        let output = lameduck(&["check", injected.to_str().expect("path")], None);
        assert!(
            output.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// Every `lameduck-sidecar` container in `value`, as its environment.
fn sidecar_envs(value: &Value, found: &mut Vec<Vec<(String, String)>>) {
    match value {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some("lameduck-sidecar")
                && let Some(env) = map.get("env").and_then(Value::as_array)
            {
                found.push(
                    env.iter()
                        .filter_map(|var| {
                            Some((
                                var.get("name")?.as_str()?.to_owned(),
                                var.get("value")?.as_str()?.to_owned(),
                            ))
                        })
                        .collect(),
                );
            }
            map.values().for_each(|v| sidecar_envs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| sidecar_envs(v, found)),
        _ => {}
    }
}

#[test]
fn the_sidecar_accepts_every_configuration_inject_writes() {
    let sidecar = lameduck_test_support::files::workspace_binary("lameduck-sidecar");
    let mut checked = Vec::new();
    for (golden, _) in goldens() {
        let text = std::fs::read_to_string(&golden).expect("golden");
        let documents = parse_stream("golden", &text).expect("YAML");
        let mut envs = Vec::new();
        documents.iter().for_each(|d| sidecar_envs(d, &mut envs));
        for env in envs {
            let output = Command::new(&sidecar)
                .arg("--check")
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .expect("running the sidecar");
            assert!(
                output.status.success(),
                "{}: the sidecar refused {env:?}:\n{}",
                golden.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked.extend(env.into_iter().map(|(_, v)| v));
        }
    }
    for wanted in ["grpc", "tcp", "0.0.0.0:18081=127.0.0.1:9090/h2c"] {
        assert!(
            checked.iter().any(|v| v == wanted),
            "no injected sidecar uses {wanted}"
        );
    }
}
