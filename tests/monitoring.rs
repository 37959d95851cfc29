//! `k8s/monitoring/`: the dashboard, the alerting rules and the PodMonitor, checked
//! as files (default suite), with promtool, and against a real Prometheus scraping a
//! `sidecar` lab rollout (system suite).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use lameduck_test_support::files::workspace_binary;

use crate::system::{repo_root, require_program, require_system_suite};

fn monitoring(file: &str) -> PathBuf {
    repo_root().join("k8s/monitoring").join(file)
}

fn yaml(file: &str) -> Value {
    let text = std::fs::read_to_string(monitoring(file)).expect(file);
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_slice(&std::fs::read(monitoring("dashboard.json")).expect("dashboard"))
        .expect("dashboard.json is JSON")
}

/// Every (panel title, expression) of the dashboard.
fn panel_expressions() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            all.push((
                panel["title"].as_str().expect("title").to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    all
}

/// Every alerting rule of rules.yml.
fn alert_rules() -> Vec<Value> {
    yaml("rules.yml")["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

/// The metric names `docs/metrics.md` documents.
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/metrics.md")).expect("metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `lameduck_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("lameduck_{name}"))
        .collect()
}

/// The `lameduck_*` names an expression reads (histogram suffixes stripped).
fn metrics_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lameduck_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[test]
fn the_dashboard_is_grafana_dashboard_json_over_documented_metrics() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
    assert_eq!(dashboard["uid"], "lameduck");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["query"], "prometheus");
    let source = format!("${{{}}}", datasource["name"].as_str().expect("name"));
    let panels = dashboard["panels"].as_array().expect("panels");
    let documented = documented_metrics();
    let mut ids = BTreeSet::new();
    let mut read = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "{title}: id");
        assert!(
            ["timeseries", "stat"].contains(&panel["type"].as_str().expect("type")),
            "{title}: type"
        );
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], source.as_str(), "{title}");
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(x + w <= 24 && grid["h"].as_u64().is_some() && grid["y"].as_u64().is_some());
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(refs.insert(target["refId"].as_str().expect("refId")));
            let expr = target["expr"].as_str().expect("expr");
            let names = metrics_in(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for name in names {
                assert!(
                    documented.contains(&name),
                    "{title}: {name} is not in docs/metrics.md"
                );
                read.insert(name);
            }
        }
    }
    // The panels the dashboard must have.
    for wanted in [
        "lameduck_requests_total",
        "lameduck_requests_in_flight",
        "lameduck_startup_held_requests_total",
        "lameduck_drain_duration_seconds",
        "lameduck_drains_total",
        "lameduck_requests_cut_total",
        "lameduck_upstream_connect_errors_total",
        "lameduck_app_ready",
    ] {
        assert!(read.contains(wanted), "no panel reads {wanted}");
    }
}

#[test]
fn the_prometheus_rule_carries_exactly_the_rule_file() {
    let rule = yaml("prometheusrule.yaml");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"],
        yaml("rules.yml")["groups"],
        "prometheusrule.yaml is stale: run `make render`"
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_section() {
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md")).expect("runbooks");
    let rules = alert_rules();
    assert!(rules.len() >= 4);
    for rule in &rules {
        let name = rule["alert"].as_str().expect("only alerting rules");
        assert_eq!(rule["labels"]["severity"], "warning", "{name}");
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][annotation].is_string(),
                "{name}: {annotation}"
            );
        }
        let anchor = format!("docs/runbooks.md#{}", name.to_lowercase());
        assert_eq!(rule["annotations"]["runbook"], anchor.as_str());
        assert!(
            runbooks.contains(&format!("\n## {name}\n")),
            "docs/runbooks.md has no section for {name}"
        );
        for metric in metrics_in(rule["expr"].as_str().expect("expr")) {
            assert!(documented_metrics().contains(&metric), "{name}: {metric}");
        }
    }
}

#[test]
fn the_pod_monitor_scrapes_the_admin_port_inject_names() {
    let monitor = yaml("podmonitor.yaml");
    assert_eq!(monitor["kind"], "PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], lameduck_contract::pod::ADMIN_PORT_NAME);
    assert_eq!(endpoint["path"], "/metrics");
    let kustomization = yaml("kustomization.yaml");
    let resources: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(resources, ["podmonitor.yaml", "prometheusrule.yaml"]);
}

#[test]
#[ignore = "system suite: needs promtool (Debian prometheus)"]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    require_system_suite();
    let promtool = require_program("promtool", "prometheus");
    for args in [
        ["check", "rules", "rules.yml"],
        ["test", "rules", "rules.test.yml"],
    ] {
        let output = Command::new(&promtool)
            .args(args)
            .current_dir(monitoring(""))
            .output()
            .expect("running promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
#[ignore = "system suite: needs kubectl or kustomize"]
fn the_monitoring_kustomization_builds_with_the_dashboard_as_a_config_map() {
    let built = crate::system::kustomize("k8s/monitoring");
    let documents: Vec<Value> =
        serde_saphyr::from_str_multiple(&built).expect("kustomize output is YAML");
    let kinds: BTreeSet<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "PodMonitor", "PrometheusRule"])
    );
    let config_map = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value = serde_json::from_str(
        config_map["data"]["lameduck.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("JSON");
    assert_eq!(embedded, dashboard());
}

/// A Prometheus server on loopback, stopped when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` on Prometheus' HTTP API; the JSON body (whatever the status).
fn api(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or("no body")?;
    serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))
}

fn query_range(addr: SocketAddr, expr: &str, (start, end): (u64, u64)) -> Value {
    let path = format!(
        "/api/v1/query_range?query={}&start={start}&end={end}&step=1",
        encode(expr)
    );
    api(addr, &path).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn query(addr: SocketAddr, expr: &str) -> Value {
    api(addr, &format!("/api/v1/query?query={}", encode(expr)))
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_prometheus(config: &Path, data: &Path) -> Prometheus {
    let prometheus = require_program("prometheus", "prometheus");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::fs::File::create(data.with_extension("log")).expect("log file");
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting prometheus");
    let server = Prometheus { child, addr };
    wait_for("prometheus to be ready", Duration::from_secs(30), || {
        api(addr, "/api/v1/status/buildinfo").is_ok()
    });
    server
}

#[test]
#[ignore = "system suite: needs prometheus (Debian prometheus)"]
fn a_real_prometheus_watching_a_sidecar_rollout_sees_every_panel_alert_and_drain() {
    require_system_suite();
    let dir = std::env::temp_dir().join(format!("lameduck-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("prometheus.yml");
    let json = dir.join("lab.json");
    let started = unix_now();
    // x0.3: every old pod lives several seconds after Prometheus is up.
    let lab = Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .args(["lab", "--scenario", "sidecar", "--time-scale", "0.3"])
        .arg("--prometheus-config")
        .arg(&config)
        .arg("--json")
        .arg(&json)
        .arg("--demo-app")
        .arg(workspace_binary("demo-app"))
        .arg("--sidecar")
        .arg(workspace_binary("lameduck-sidecar"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running lameduck lab");
    wait_for(
        "the lab's Prometheus config",
        Duration::from_secs(60),
        || config.is_file(),
    );
    let server = start_prometheus(&config, &dir.join("data"));
    let output = lab.wait_with_output().expect("lab output");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("lab JSON")).expect("JSON");
    assert_eq!(
        result["scenarios"][0]["failed"], 0,
        "the sidecar rollout lost nothing"
    );
    // One more evaluation round for the rules, then the whole run is in the TSDB.
    std::thread::sleep(Duration::from_secs(2));
    let window = (started, unix_now());
    let range = format!("{}s", window.1 - window.0 + 1);
    let addr = server.addr;

    assert_every_panel_has_data(addr, window, &range);
    assert_every_alert_is_valid_with_data_before_its_threshold(addr, window);
    assert_the_rules_are_loaded_and_healthy(addr);
    assert_each_replaced_pod_drained_once(addr, &range);
    assert_the_drain_stat_counts_five_drained(addr, &range);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

type Window = (u64, u64);

fn assert_every_panel_has_data(addr: SocketAddr, window: Window, range: &str) {
    // Every dashboard panel expression, with Grafana's variables filled in.
    for (title, expr) in panel_expressions() {
        let filled = expr
            .replace("$__rate_interval", "5s")
            .replace("$__range", range)
            .replace("$namespace", ".*")
            .replace("$pod", ".*");
        let answer = query_range(addr, &filled, window);
        assert_eq!(answer["status"], "success", "{title}: {filled}: {answer}");
        assert!(
            !answer["data"]["result"]
                .as_array()
                .expect("result")
                .is_empty(),
            "{title}: no data for {filled}"
        );
    }
}

fn assert_every_alert_is_valid_with_data_before_its_threshold(addr: SocketAddr, window: Window) {
    // Every alert expression is valid; the signal before its threshold has data.
    for rule in alert_rules() {
        let name = rule["alert"].as_str().expect("alert");
        let expr = rule["expr"].as_str().expect("expr").trim();
        let answer = query_range(addr, expr, window);
        assert_eq!(answer["status"], "success", "{name}: {answer}");
        let (signal, threshold) = expr.rsplit_once(" > ").expect("expr ends in `> threshold`");
        assert!(
            threshold.trim().parse::<f64>().is_ok(),
            "{name}: {threshold}"
        );
        let answer = query_range(addr, signal, window);
        assert!(
            !answer["data"]["result"]
                .as_array()
                .expect("result")
                .is_empty(),
            "{name}: no data for {signal}"
        );
    }
}

fn assert_the_rules_are_loaded_and_healthy(addr: SocketAddr) {
    // Prometheus loaded the rules the lab wrote and evaluates them without error.
    let rules = api(addr, "/api/v1/rules").expect("rules");
    let evaluated: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert_eq!(evaluated.len(), alert_rules().len());
    for rule in evaluated {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}

fn assert_each_replaced_pod_drained_once(addr: SocketAddr, range: &str) {
    // The drain outcome: each replaced (v1) pod drained once, no new pod drained.
    let drains = query(
        addr,
        &format!(
            "max by (pod, outcome) (max_over_time(lameduck_drains_total{{namespace=\"lameduck-lab\"}}[{range}]))"
        ),
    );
    let mut per_pod: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for series in drains["data"]["result"].as_array().expect("result") {
        let pod = series["metric"]["pod"].as_str().expect("pod").to_owned();
        let outcome = series["metric"]["outcome"]
            .as_str()
            .expect("outcome")
            .to_owned();
        let value = series["value"][1]
            .as_str()
            .expect("value")
            .parse()
            .expect("number");
        per_pod.entry(pod).or_default().insert(outcome, value);
    }
    let old: Vec<&String> = per_pod
        .keys()
        .filter(|p| p.starts_with("demo-app-v1-"))
        .collect();
    assert_eq!(old.len(), 5, "every replaced pod was scraped: {per_pod:?}");
    for (pod, outcomes) in &per_pod {
        let drained = if pod.starts_with("demo-app-v1-") {
            1.0
        } else {
            0.0
        };
        assert_eq!(
            outcomes.get("drained"),
            Some(&drained),
            "{pod}: {outcomes:?}"
        );
        assert_eq!(outcomes.get("timed_out"), Some(&0.0), "{pod}: {outcomes:?}");
    }
}

fn assert_the_drain_stat_counts_five_drained(addr: SocketAddr, range: &str) {
    // The dashboard's stat agrees: five drains in the range, all drained.
    let stat = query(
        addr,
        &format!(
            "sum by (outcome) (max_over_time(lameduck_drains_total[{range}]) - min_over_time(lameduck_drains_total[{range}]))"
        ),
    );
    let stat: BTreeMap<String, String> = stat["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|s| {
            (
                s["metric"]["outcome"].as_str().unwrap_or("").to_owned(),
                s["value"][1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stat,
        BTreeMap::from([
            ("drained".to_owned(), "5".to_owned()),
            ("timed_out".to_owned(), "0".to_owned())
        ])
    );
}
