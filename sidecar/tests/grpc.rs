//! System suite: real gRPC (Python grpcio, its standard health service) behind
//! `--upstream-protocol h2c`, and Redis behind `--protocol tcp`, with their own
//! clients (grpcio, redis-benchmark).

use std::net::SocketAddr;
use std::time::Duration;

use lameduck_test_support::grpc::{python, scripts, start_app as start_grpc_app};
use lameduck_test_support::process::Process;
use lameduck_test_support::system::require_program;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::support::{Sidecar, exchange, get, wait_ready};

/// Runs the gRPC client script and returns its JSON report.
async fn client(args: &[&str]) -> serde_json::Value {
    let output = Command::new(python())
        .arg(scripts().join("client.py"))
        .args(args)
        .output()
        .await
        .expect("client ran");
    assert!(
        output.status.success(),
        "client {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

async fn grpc_sidecar(app: SocketAddr, extra: &[&str]) -> crate::support::Running {
    let mut sidecar = Sidecar::new(app)
        .arg("--upstream-protocol=h2c")
        .arg("--app-check=grpc:lameduck.test.Echo");
    for arg in extra {
        sidecar = sidecar.arg(arg);
    }
    sidecar.start().await
}

#[tokio::test]
#[ignore = "system suite: needs python3 with grpcio and grpcio-health-checking"]
async fn grpc_through_h2c_keeps_every_rpc_shape_status_and_trailer() {
    let (_app, addr) = start_grpc_app(&[]).await;
    let sidecar = grpc_sidecar(addr, &[]).await;
    wait_ready(sidecar.admin, 200).await;
    let target = sidecar.listen.to_string();

    let seen = client(&["calls", &target]).await;
    assert_eq!(seen["unary"]["reply"], "hello");
    assert_eq!(seen["unary"]["code"], "OK");
    assert_eq!(seen["unary"]["trailers"]["x-echo-len"], "5", "{seen}");
    assert_eq!(seen["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(seen["error"]["details"], "bad input: ünïcode, 100%");
    assert_eq!(
        seen["server_stream"]["messages"],
        serde_json::json!(["0", "1", "2", "3", "4"])
    );
    assert_eq!(seen["server_stream"]["code"], "OK");
    assert_eq!(seen["client_stream"], "abc");
    assert_eq!(seen["bidi"], serde_json::json!(["re:1", "re:2", "re:3"]));
    assert_eq!(seen["deadline"], "DEADLINE_EXCEEDED");

    let many = client(&["unary", &target, "10000", "16"]).await;
    assert_eq!(many["codes"], serde_json::json!({"OK": 10000}), "{many}");
}

#[tokio::test]
#[ignore = "system suite: needs python3 with grpcio and grpcio-health-checking"]
async fn the_grpc_health_check_gates_readiness() {
    let (_app, addr) = start_grpc_app(&["--serving-after=2"]).await;
    let sidecar = grpc_sidecar(addr, &[]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        get(sidecar.admin, "/ready").await.status,
        503,
        "the app accepts connections but says NOT_SERVING"
    );
    wait_ready(sidecar.admin, 200).await;
    assert_eq!(sidecar.metric("lameduck_app_ready").await, 1.0);
}

#[tokio::test]
#[ignore = "system suite: needs python3 with grpcio and grpcio-health-checking"]
async fn a_drain_under_grpc_load_fails_no_call_and_cuts_only_the_overlong_stream() {
    let (_app, addr) = start_grpc_app(&[]).await;
    let sidecar = grpc_sidecar(
        addr,
        &[
            "--shutdown-delay=3s",
            "--drain-timeout=1s",
            "--final-scrape-timeout=0s",
        ],
    )
    .await;
    wait_ready(sidecar.admin, 200).await;
    let target = sidecar.listen.to_string();
    let dir = lameduck_test_support::files::TempDir::new("grpc-drain");
    let stop = dir.path("stop");
    let stop_arg = stop.display().to_string();
    let looping = {
        let (target, stop_arg) = (target.clone(), stop_arg.clone());
        tokio::spawn(async move { client(&["loop", &target, &stop_arg]).await })
    };
    // A server stream of 100 messages 100 ms apart outlives the whole drain. It
    // must have started before the drain (python starts slowly on a busy machine).
    let started = dir.path("started");
    let streaming = {
        let (target, started) = (target.clone(), started.display().to_string());
        tokio::spawn(async move { client(&["stream", &target, "100", "100", &started]).await })
    };
    for _ in 0..300 {
        if started.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.exists(), "the stream did not start within 15 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let admin = sidecar.admin;
    let drain = tokio::spawn(async move { get(admin, "/drain").await });
    // The load stops before the delay ends, as an ingress that has moved on would.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    std::fs::write(&stop, b"").expect("stop file");

    let load = looping.await.expect("load task");
    let codes = load["codes"].as_object().expect("codes");
    assert_eq!(codes.len(), 1, "every call OK: {load}");
    assert!(codes["OK"].as_u64().unwrap_or(0) > 50, "{load}");
    // The client saw GOAWAY (its channel went idle) and reconnected (ready again).
    let states: Vec<&str> = load["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter_map(|s| s[1].as_str())
        .collect();
    let ready = states.iter().filter(|s| **s == "READY").count();
    assert!(states.contains(&"IDLE") && ready >= 2, "{states:?}");

    let stream = streaming.await.expect("stream task");
    assert_eq!(stream["code"], "UNAVAILABLE", "{stream}");
    let received = stream["received"].as_u64().unwrap_or(0);
    assert!((30..100).contains(&received), "{stream}");
    assert_eq!(
        drain.await.expect("drain").text(),
        "drain timed out: 1 requests cut\n"
    );
    assert_eq!(sidecar.metric("lameduck_requests_cut_total").await, 1.0);
    let failed = sidecar
        .metric("lameduck_requests_total{code_class=\"5xx\",phase=\"shutdown_delay\"}")
        .await;
    assert_eq!(failed, 0.0);
}

/// A port nothing listens on (bound, then released), for servers that need a number.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn redis_ping(stream: &mut TcpStream) -> bool {
    exchange(stream, b"PING\r\n", b"+PONG\r\n").await
}

#[tokio::test]
#[ignore = "system suite: needs redis-server and redis-benchmark (Debian redis-server, redis-tools)"]
async fn redis_behind_tcp_mode_passes_redis_benchmark_and_drains_by_connection() {
    let server = require_program("redis-server", "redis-server");
    let benchmark = require_program("redis-benchmark", "redis-tools");
    let port = free_port();
    let mut command = Command::new(server);
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--logfile",
        "",
    ]);
    // redis logs to stdout; the sidecar's app check tells when it accepts.
    let (_redis, _up) = Process::spawn(&mut command, "redis", |_| Some(()));
    let app = SocketAddr::from(([127, 0, 0, 1], port));
    let mut sidecar = Sidecar::new(app)
        .arg("--protocol=tcp")
        .arg("--shutdown-delay=2s")
        .arg("--drain-timeout=1s")
        .arg("--final-scrape-timeout=0s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;

    let output = Command::new(benchmark)
        .args(["-h", "127.0.0.1", "-p", &sidecar.listen.port().to_string()])
        .args([
            "-n",
            "20000",
            "-c",
            "20",
            "-t",
            "set,get,incr,lpush,lpop",
            "-q",
        ])
        .output()
        .await
        .expect("redis-benchmark ran");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "redis-benchmark failed:\n{report}");
    for test in ["SET", "GET", "INCR", "LPUSH", "LPOP"] {
        assert!(
            report.split(['\r', '\n']).any(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("{test}: ")) && l.contains("requests per second")
            }),
            "no {test} result:\n{report}"
        );
    }

    let mut idle = TcpStream::connect(sidecar.listen).await.expect("connect");
    assert!(redis_ping(&mut idle).await);
    sidecar.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut during = TcpStream::connect(sidecar.listen)
        .await
        .expect("a new connection during the shutdown delay");
    assert!(redis_ping(&mut during).await, "served during the delay");
    drop(during);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), idle.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the idle connection is closed at the drain deadline"
    );
    assert!(sidecar.wait().await.success());
    let log = sidecar.log();
    assert!(
        log.contains("requests_cut=1"),
        "the idle connection is counted as cut:\n{log}"
    );
}
