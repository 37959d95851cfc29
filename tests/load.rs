//! `lameduck load`: the real binary against real servers on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use lameduck_test_support::app::{AppHandle, app_config, start_app};
use lameduck_test_support::files::TempDir;
use lameduck_test_support::process::signal_pid;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The demo app, in this process, on a port-0 listener, as `pod-a` version 7.
fn demo_app() -> AppHandle {
    start_app(demo_app::Config {
        pod: "pod-a".to_owned(),
        version: "7".to_owned(),
        ..app_config()
    })
}

fn load(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lameduck"));
    command
        .arg("load")
        .arg("--quiet")
        .args(args)
        .kill_on_drop(true);
    command
}

async fn run(args: &[&str]) -> Output {
    load(args).output().await.expect("running lameduck load")
}

fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("records file");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect()
}

fn summary(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary file")).expect("summary JSON")
}

#[tokio::test]
async fn ten_seconds_at_500_per_second_gives_exactly_5000_records_all_200() {
    let app = demo_app();
    let addr = app.addr;
    let dir = TempDir::new("rate");
    let (out, sum) = (dir.path("r.jsonl"), dir.path("s.json"));
    let url = format!("http://{addr}/");
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "500",
        "--duration",
        "10s",
        "-o",
        out.to_str().expect("path"),
        "--json-summary",
        sum.to_str().expect("path"),
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let records = records(&out);
    assert_eq!(records.len(), 5000);
    for (seq, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], seq);
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["error"], Value::Null);
        assert_eq!(record["pod"], "pod-a");
        assert_eq!(record["version"], "7");
    }
    let summary = summary(&sum);
    let achieved = summary["achieved_rate"].as_f64().expect("rate");
    assert!((achieved - 500.0).abs() <= 5.0, "achieved {achieved}/s");
    assert_eq!(summary["ok"], 5000);
    assert_eq!(summary["versions"]["7"], 5000);
}

#[tokio::test]
async fn slow_responses_do_not_slow_the_schedule() {
    let app = demo_app();
    let addr = app.addr;
    let dir = TempDir::new("open");
    let out = dir.path("r.jsonl");
    let url = format!("http://{addr}/?wait=1");
    let started = Instant::now();
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "200",
        "--duration",
        "5s",
        "-o",
        out.to_str().expect("path"),
    ])
    .await;
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(took <= Duration::from_secs(7), "took {took:?}");
    let records = records(&out);
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r["status"] == 200));
    // Open model: request i was sent at about i / 200 s, not after request i - 1 finished.
    let last = &records[999];
    let sent = last["sent"].as_f64().expect("sent");
    assert!((4.99..5.2).contains(&sent), "last request sent at {sent}s");
}

#[tokio::test]
async fn a_closed_port_gives_refused_for_every_record_and_fails() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = TempDir::new("refused");
    let out = dir.path("r.jsonl");
    let url = format!("http://{closed}/");
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "100",
        "--requests",
        "50",
        "-o",
        out.to_str().expect("path"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let records = records(&out);
    assert_eq!(records.len(), 50);
    assert!(
        records
            .iter()
            .all(|r| r["error"] == "refused" && r["status"] == Value::Null)
    );
}

/// A server that reads each request and then closes (`linger`: abortively, with RST).
async fn hostile_server(reply: Option<&'static [u8]>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                match reply {
                    Some(reply) => {
                        let _ = stream.write_all(reply).await;
                        let _ = stream.shutdown().await;
                    }
                    None => {
                        let socket = socket2::SockRef::from(&stream);
                        let _ = socket.set_linger(Some(Duration::ZERO));
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_server_resetting_after_the_request_gives_reset_or_eof() {
    let addr = hostile_server(None).await;
    let dir = TempDir::new("reset");
    let out = dir.path("r.jsonl");
    let url = format!("http://{addr}/");
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--requests",
        "20",
        "-o",
        out.to_str().expect("path"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let records = records(&out);
    assert_eq!(records.len(), 20);
    for record in &records {
        assert!(
            record["error"] == "reset" || record["error"] == "eof",
            "{record}"
        );
        assert_eq!(record["status"], Value::Null);
    }
}

#[tokio::test]
async fn a_502_is_a_status_not_an_error_and_fails_the_run() {
    let addr = hostile_server(Some(
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad",
    ))
    .await;
    let dir = TempDir::new("502");
    let (out, sum) = (dir.path("r.csv"), dir.path("s.json"));
    let url = format!("http://{addr}/");
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--requests",
        "10",
        "-o",
        out.to_str().expect("path"),
        "--json-summary",
        sum.to_str().expect("path"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let csv = std::fs::read_to_string(&out).expect("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("seq,target,scheduled,sent,done,status,error,bytes,pod,version,grpc_status")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 10);
    assert!(
        rows.iter()
            .all(|r| r[5] == "502" && r[6].is_empty() && r[7] == "3"),
        "{rows:?}"
    );
    let summary = summary(&sum);
    assert_eq!(summary["statuses"]["502"], 10);
    assert_eq!(summary["failed"], 10);
    // --allow-failures relaxes the gate.
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--requests",
        "10",
        "--allow-failures",
        "10",
    ])
    .await;
    assert!(output.status.success());
}

#[tokio::test]
async fn sigint_mid_run_flushes_every_scheduled_record() {
    let app = demo_app();
    let addr = app.addr;
    let dir = TempDir::new("sigint");
    let (out, sum) = (dir.path("r.jsonl"), dir.path("s.json"));
    let url = format!("http://{addr}/?wait=0.5");
    let child = load(&[
        "--url",
        &url,
        "--rate",
        "200",
        "--duration",
        "20s",
        "-o",
        out.to_str().expect("path"),
        "--json-summary",
        sum.to_str().expect("path"),
    ])
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal_pid(child.id().expect("pid"), "INT");
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("load stops by itself after SIGINT")
        .expect("output");
    assert_eq!(output.status.code(), Some(130));
    let records = records(&out);
    let summary = summary(&sum);
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["requests"], records.len());
    assert!(
        (250..=350).contains(&records.len()),
        "{} records",
        records.len()
    );
    for (seq, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], seq);
        // Requests in flight at the SIGINT were waited for, not dropped.
        assert_eq!(record["status"], 200, "{record}");
    }
}

#[tokio::test]
async fn an_idempotency_key_is_refused_before_sending_anything() {
    let output = run(&["--url", "http://127.0.0.1:9/", "-H", "Idempotency-Key: 1"]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("never sends an Idempotency-Key"));
    let output = run(&["--url", "https://example.invalid/"]).await;
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("only http"));
}

#[tokio::test]
async fn a_connection_cap_makes_due_requests_wait_and_says_so() {
    let app = demo_app();
    let addr = app.addr;
    let dir = TempDir::new("connections");
    let (out, json) = (dir.path("r.jsonl"), dir.path("s.json"));
    let url = format!("http://{addr}/?wait=0.2");
    // 50/s asked, 2 connections of 5/s each: requests queue for a connection.
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--requests",
        "30",
        "--connections",
        "2",
        "-o",
        out.to_str().expect("path"),
        "--json-summary",
        json.to_str().expect("path"),
    ])
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let records = records(&out);
    assert_eq!(records.len(), 30);
    assert!(records.iter().all(|r| r["status"] == 200));
    assert!(summary(&json)["connection_waits"].as_u64().expect("waits") >= 20);
    // Never more than two at once: any three completions span at least one 0.2 s wait.
    let mut done: Vec<f64> = records
        .iter()
        .map(|r| r["done"].as_f64().expect("done"))
        .collect();
    done.sort_by(f64::total_cmp);
    for window in done.windows(3) {
        assert!(window[2] - window[0] >= 0.15, "three at once: {window:?}");
    }
    // The wait shows: the last request was sent long after it was due.
    let last = &records[29];
    let late = last["sent"].as_f64().expect("sent") - last["scheduled"].as_f64().expect("due");
    assert!(late > 1.5, "the last request waited {late}s");
}

#[tokio::test]
async fn a_request_past_its_timeout_is_recorded_as_timeout() {
    let app = demo_app();
    let addr = app.addr;
    let dir = TempDir::new("timeout");
    let out = dir.path("r.jsonl");
    let url = format!("http://{addr}/?wait=5");
    let started = Instant::now();
    let output = run(&[
        "--url",
        &url,
        "--rate",
        "20",
        "--requests",
        "5",
        "--timeout",
        "300ms",
        "-o",
        out.to_str().expect("path"),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(3));
    let records = records(&out);
    assert_eq!(records.len(), 5);
    for record in &records {
        assert_eq!(record["error"], "timeout", "{record}");
        let took = record["done"].as_f64().expect("done") - record["sent"].as_f64().expect("sent");
        assert!((0.29..0.6).contains(&took), "timed out after {took}s");
    }
}

/// `lameduck load --grpc` against a real gRPC server (Python grpcio): every call is
/// recorded with the `grpc-status` the server gave.
#[tokio::test]
#[ignore = "system suite: needs python3 with grpcio (LAMEDUCK_SYSTEM_TESTS=1)"]
async fn grpc_calls_are_recorded_with_their_grpc_status() {
    use lameduck_test_support::grpc::{SERVICE, start_app as start_grpc_app};

    let (_app, addr) = start_grpc_app(&[]).await;
    let url = format!("http://{addr}");
    let dir = TempDir::new("grpc");
    let echo = format!("/{SERVICE}/Echo");
    let calls = |message: &'static str, out: &Path, sum: &Path, method: &str| {
        let (out, sum) = (
            out.to_str().expect("path").to_owned(),
            sum.to_str().expect("path").to_owned(),
        );
        let args: Vec<String> = [
            "--url",
            &url,
            "--rate",
            "500",
            "--requests",
            "2000",
            "--grpc",
            method,
            "--grpc-message",
            message,
            "-o",
            &out,
            "--json-summary",
            &sum,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args).await
        }
    };

    let (out, sum) = (dir.path("ok.jsonl"), dir.path("ok.json"));
    let output = calls("68656c6c6f", &out, &sum, &echo).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let all = records(&out);
    assert_eq!(all.len(), 2000);
    assert!(
        all.iter()
            .all(|r| r["status"] == 200 && r["grpc_status"] == 0),
        "every call OK"
    );
    // The echo of "hello" in its 5-byte gRPC frame.
    assert!(all.iter().all(|r| r["bytes"] == 10), "{}", all[0]);
    assert_eq!(summary(&sum)["grpc_statuses"]["0"], 2000);

    // "fail:why" makes the app answer INVALID_ARGUMENT: HTTP 200, a failed call.
    let (out, sum) = (dir.path("fail.jsonl"), dir.path("fail.json"));
    let output = calls("6661696c3a776879", &out, &sum, &echo).await;
    assert_eq!(output.status.code(), Some(1), "failed calls fail the run");
    let all = records(&out);
    assert!(
        all.iter()
            .all(|r| r["status"] == 200 && r["grpc_status"] == 3)
    );
    assert_eq!(summary(&sum)["failed"], 2000);

    let (out, sum) = (dir.path("none.jsonl"), dir.path("none.json"));
    let missing = format!("/{SERVICE}/NoSuchMethod");
    let output = calls("", &out, &sum, &missing).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        records(&out).iter().all(|r| r["grpc_status"] == 12),
        "UNIMPLEMENTED"
    );
}

#[test]
fn bad_grpc_flags_are_named() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .args(["load", "--url", "http://127.0.0.1:1", "--grpc", "Echo"])
        .output()
        .expect("lameduck load");
    assert_eq!(
        output.status.code(),
        Some(i32::from(lameduck_contract::exit::USAGE))
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--grpc=Echo is not valid: expected /package.Service/Method"),
        "{stderr}"
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lameduck"))
        .args(["load", "--url", "http://127.0.0.1:1", "--grpc", "/a.B/C"])
        .args(["--grpc-message", "abc"])
        .output()
        .expect("lameduck load");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not valid hex"), "{stderr}");
}
