//! `lameduck lab`: the real binaries (lameduck, demo-app, lameduck-sidecar), every
//! scenario, and the verdicts the project exists for.

use std::process::Command;

use lameduck_test_support::files::workspace_binary as binary;
use lameduck_test_support::process::signal_pid;

use serde_json::Value;

/// One lab at a time: each is timing-sensitive by design (scaled probes, ingress lag),
/// and labs side by side on two cores made verdicts flip.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `lameduck lab ARGS --json FILE` on the workspace's binaries; returns the
/// JSON and the printed table.
fn run_lab(args: &[std::ffi::OsString]) -> (Value, String) {
    let _turn = ONE_LAB_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("lameduck-lab-{}-{run}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .arg("lab")
        .args(args)
        .arg("--json")
        .arg(&out)
        .arg("--demo-app")
        .arg(binary("demo-app"))
        .arg("--sidecar")
        .arg(binary("lameduck-sidecar"))
        .output()
        .expect("running lameduck lab");
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(&out).expect("lab JSON")).expect("JSON");
    let _ = std::fs::remove_file(&out);
    (json, table)
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

fn causes(scenario: &Value) -> Vec<(&str, u64)> {
    scenario["causes"]
        .as_object()
        .expect("causes")
        .iter()
        .filter_map(|(cause, n)| Some((cause.as_str(), n.as_u64()?)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn the_classic_fixes_remove_the_causes_one_by_one_and_the_sidecar_loses_nothing() {
    assert_verdicts("embedded");
}

#[test]
#[ignore = "system suite: needs nginx (Debian nginx)"]
fn the_real_nginx_gives_the_same_verdicts() {
    crate::system::require_system_suite();
    assert!(
        std::path::Path::new("/usr/sbin/nginx").is_file()
            || crate::system::find_program("nginx").is_some(),
        "LAMEDUCK_SYSTEM_TESTS=1 but nginx is missing: install nginx (.ci/run does)"
    );
    assert_verdicts("nginx");
}

/// Runs every scenario behind `ingress` and checks the verdicts.
fn assert_verdicts(ingress: &str) {
    // nginx learns endpoints through a reload, which takes longer on a busy machine
    // (the system suite runs beside Chromium and Prometheus): at x0.12 the margin
    // between the ingress lag and the app's start-up is too thin to show premature
    // activation reliably, so nginx runs at x0.2.
    let scale = if ingress == "nginx" { "0.2" } else { "0.12" };
    let (json, table) = run_lab(&os(&["--ingress", ingress, "--time-scale", scale]));
    let scenarios: Vec<&Value> = json["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .collect();
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "plain",
            "+readiness",
            "+graceful-shutdown",
            "+prestop",
            "sidecar",
            "sidecar-classic"
        ]
    );
    for scenario in &scenarios {
        assert!(scenario["requests"].as_u64().unwrap_or(0) > 300, "{table}");
    }
    let lost = |i: usize| {
        causes(scenarios[i])
            .into_iter()
            .map(|(c, _)| c)
            .collect::<Vec<_>>()
    };
    let plain = lost(0);
    assert!(
        plain.len() >= 2,
        "plain must lose requests to at least two causes:\n{table}"
    );
    assert!(plain.contains(&"premature-activation"), "{table}");
    assert!(
        !lost(1).contains(&"premature-activation"),
        "the readiness probe removes premature activation:\n{table}"
    );
    assert!(!lost(1).is_empty(), "{table}");
    assert!(
        !lost(2).contains(&"inflight-cut"),
        "graceful shutdown removes in-flight cuts:\n{table}"
    );
    for i in 3..6 {
        assert_eq!(
            scenarios[i]["failed"], 0,
            "{} must lose nothing:\n{table}",
            names[i]
        );
    }
}

#[test]
#[ignore = "system suite: needs python3 (Debian python3)"]
fn a_server_that_is_not_ours_loses_nothing_behind_the_sidecar() {
    crate::system::require_system_suite();
    let python = crate::system::require_program("python3", "python3");
    let server = crate::system::repo_root().join("examples/app-cmd/post_server.py");
    let mut args = os(&["--scenario", "plain", "--scenario", "sidecar", "--app-cmd"]);
    args.push(
        format!(
            "{} {} {{host}} {{port}}",
            python.display(),
            server.display()
        )
        .into(),
    );
    let (json, table) = run_lab(&args);
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    assert!(
        scenarios[0]["failed"].as_u64().unwrap_or(0) > 0,
        "the plain python server loses requests:\n{table}"
    );
    assert_eq!(
        scenarios[1]["failed"], 0,
        "behind the sidecar it loses none:\n{table}"
    );
}

/// Runs headless Chromium on the report with `extra` flags.
fn headless_chromium(
    chromium: &std::path::Path,
    dir: &std::path::Path,
    html: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(extra)
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("running chromium")
}

#[test]
#[ignore = "system suite: needs chromium (Debian chromium)"]
fn the_html_report_renders_in_headless_chromium_with_its_timelines() {
    crate::system::require_system_suite();
    let chromium = crate::system::require_program("chromium", "chromium");
    let dir = std::env::temp_dir().join(format!("lameduck-lab-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let html = dir.join("report.html");
    let mut args = os(&["--scenario", "plain", "--scenario", "sidecar", "--html"]);
    args.push(html.clone().into());
    run_lab(&args);
    let page = std::fs::read_to_string(&html).expect("report");
    for loads in ["src=", "href=", "url(", "<script", "@import"] {
        assert!(
            !page.contains(loads),
            "the report must be self-contained, found {loads:?}"
        );
    }

    let chrome = |extra: &[&str]| headless_chromium(&chromium, &dir, &html, extra);
    let dom = chrome(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom_text.matches("class=\"timeline\"").count(),
        2,
        "one timeline per scenario"
    );
    assert!(
        dom_text.matches("class=\"requests\"").count() > 20,
        "request bars are drawn"
    );
    assert!(
        dom_text.matches("class=\"pod\"").count() >= 20,
        "pod lifecycle bars are drawn"
    );
    let log = String::from_utf8_lossy(&dom.stderr);
    for bad in [
        "CONSOLE",
        "Uncaught",
        "Failed to load resource",
        "net::ERR_",
    ] {
        assert!(!log.contains(bad), "chromium reported {bad:?}:\n{log}");
    }
    let png = dir.join("report.png");
    let shot = chrome(&[
        "--window-size=1100,1600",
        &format!("--screenshot={}", png.display()),
    ]);
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 30_000,
        "a screenshot of drawn timelines, got {size} bytes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Processes whose environment carries `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let needle = marker.as_bytes();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

#[test]
fn sigint_mid_run_stops_every_pod_process() {
    let marker = format!("LAMEDUCK_LAB_LEAK_MARKER={}", std::process::id());
    let (key, value) = marker.split_once('=').expect("marker");
    let mut lab = Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .arg("lab")
        .arg("--demo-app")
        .arg(binary("demo-app"))
        .arg("--sidecar")
        .arg(binary("lameduck-sidecar"))
        .env(key, value)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running lameduck lab");
    // Interrupt it while pods run: the lab itself plus at least three pod processes.
    let started = std::time::Instant::now();
    while processes_with(&marker).len() < 4 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the lab started no pods within 30 s: {:?}",
            processes_with(&marker)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    signal_pid(lab.id(), "INT");
    let exit = lab.wait().expect("lab exit");
    assert_eq!(exit.code(), Some(130));
    // Children are killed as the runtime drops them; give the kernel a moment to reap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left behind: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
#[ignore = "system suite: needs python3 with grpcio (LAMEDUCK_SYSTEM_TESTS=1)"]
fn a_grpc_app_loses_calls_plain_and_none_behind_the_sidecar() {
    let python = lameduck_test_support::grpc::python();
    let root = crate::system::repo_root();
    // The system suite runs labs, nginx and Chromium side by side: at x0.12 a probe
    // times out after 120 ms, and seven grpcio servers starting on two busy cores
    // miss that (every endpoint went unready at once: 503s with no pod tried). x0.3
    // keeps the verdicts and the margins.
    let mut args = os(&["--time-scale", "0.3", "--scenario", "plain", "--scenario"]);
    args.extend(os(&["sidecar", "--manifest"]));
    args.push(root.join("examples/grpc/deployment.yaml").into());
    args.push("--app-cmd".into());
    args.push(
        format!(
            "{} {} --host {{host}} --port {{port}} --stop-grace 0",
            python.display(),
            root.join("examples/grpc/app.py").display()
        )
        .into(),
    );
    // Calls of 100 ms: some are always in flight when a pod stops.
    args.extend(os(&[
        "--grpc",
        "/lameduck.test.Echo/Slow",
        "--grpc-message",
        "313030",
    ]));
    let (json, table) = run_lab(&args);
    let scenarios = json["scenarios"].as_array().expect("scenarios");
    assert!(
        scenarios[0]["requests"].as_u64().unwrap_or(0) > 300,
        "calls were made:\n{table}"
    );
    assert!(
        scenarios[0]["failed"].as_u64().unwrap_or(0) > 0,
        "the plain gRPC app loses calls:\n{table}"
    );
    assert!(
        scenarios[1]["requests"].as_u64().unwrap_or(0) > 1000,
        "calls were made:\n{table}"
    );
    assert_eq!(
        scenarios[1]["failed"], 0,
        "behind the sidecar it loses none:\n{table}"
    );
    assert!(table.contains("gRPC calls/s"), "{table}");
}
