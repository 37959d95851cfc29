//! The protocols beside plain HTTP/1.1: HTTP/2 to the app (h2c and auto) with its
//! trailers, the app's GOAWAY relayed, HTTP/1.1 header case, trailers and
//! `Expect: 100-continue`, TCP mode's drain, and several serving ports of different
//! protocols drained as one.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    Sidecar, app_config, exchange, get, h2_client, read_head, request, start_app, start_h2_app,
    wait_ready,
};

fn post(addr: std::net::SocketAddr, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("http://{addr}/echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request")
}

#[tokio::test]
async fn h2c_to_the_app_carries_bodies_and_trailers_for_both_kinds_of_client() {
    let app = start_h2_app(true).await;
    let sidecar = Sidecar::new(app.addr)
        .arg("--upstream-protocol=h2c")
        .arg("--app-check=http:/")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;

    let (mut sender, _connection) = h2_client(sidecar.listen).await;
    for i in 0..20 {
        let body = if i % 2 == 0 { "hello, stream" } else { "" };
        let response = sender
            .send_request(post(sidecar.listen, body))
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-version"], "HTTP/2.0");
        let collected = response.into_body().collect().await.expect("body");
        let trailers = collected
            .trailers()
            .cloned()
            .expect("trailers reach the client");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["x-trailer"], "yes");
        assert_eq!(collected.to_bytes(), body.as_bytes());
    }

    // An HTTP/1.1 client reaches the h2c-only app too.
    let reply = crate::support::request(sidecar.listen, "GET", "/")
        .await
        .expect("HTTP/1.1 through h2c");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-version"], "HTTP/2.0");
}

#[tokio::test]
async fn auto_speaks_to_the_app_as_the_client_spoke() {
    let app = start_h2_app(false).await;
    let sidecar = Sidecar::new(app.addr)
        .arg("--upstream-protocol=auto")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let reply = crate::support::request(sidecar.listen, "GET", "/")
        .await
        .expect("HTTP/1.1");
    assert_eq!(reply.headers["x-version"], "HTTP/1.1");
    let (mut sender, _connection) = h2_client(sidecar.listen).await;
    let response = sender
        .send_request(post(sidecar.listen, "x"))
        .await
        .expect("HTTP/2");
    assert_eq!(response.headers()["x-version"], "HTTP/2.0");
}

#[tokio::test]
async fn a_goaway_from_the_app_is_relayed_to_http2_clients() {
    let app = start_h2_app(true).await;
    let sidecar = Sidecar::new(app.addr)
        .arg("--upstream-protocol=h2c")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let (mut sender, connection) = h2_client(sidecar.listen).await;
    let response = sender
        .send_request(post(sidecar.listen, "before"))
        .await
        .expect("response");
    response.into_body().collect().await.expect("body");

    app.goaway.notify_waiters();
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the sidecar closed the client's connection after the app's GOAWAY")
        .expect("connection task")
        .expect("a graceful close");
    assert!(sender.is_closed());
    assert_eq!(sidecar.metric("lameduck_app_goaways_total").await, 1.0);
    assert_eq!(sidecar.metric("lameduck_goaways_relayed_total").await, 1.0);
    assert_eq!(
        sidecar.metric("lameduck_phase{phase=\"serving\"}").await,
        1.0,
        "relaying is not draining"
    );
    // The client reconnects and the sidecar opens new connections to the app.
    let (mut sender, _connection) = h2_client(sidecar.listen).await;
    let response = sender
        .send_request(post(sidecar.listen, "after"))
        .await
        .expect("a new connection is served");
    assert_eq!(response.status(), 200);
}

/// Accepts on `app` until a connection sends a request head (the sidecar's TCP app
/// check connects and closes first).
async fn accept_request(app: &TcpListener) -> (TcpStream, String) {
    loop {
        let (mut stream, _) = app.accept().await.expect("accept");
        if let Some(head) = read_head(&mut stream).await {
            return (stream, head);
        }
    }
}

#[tokio::test]
async fn http1_header_names_keep_their_case_both_ways() {
    let app = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_addr = app.local_addr().expect("addr");
    let sidecar = Sidecar::new(app_addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let seen = tokio::spawn(async move {
        let (mut stream, head) = accept_request(&app).await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nX-Custom-ReplyHeader: 1\r\ncontent-length: 2\r\n\r\nok")
            .await
            .expect("reply");
        head
    });
    let mut client = TcpStream::connect(sidecar.listen).await.expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nX-MiXeD-Case: 1\r\nconnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut reply = String::new();
    client.read_to_string(&mut reply).await.expect("reply");
    let head = seen.await.expect("app");
    assert!(
        head.contains("\r\nX-MiXeD-Case: 1\r\n"),
        "the app saw:\n{head}"
    );
    assert!(head.contains("\r\nHost: app\r\n"), "the app saw:\n{head}");
    assert!(
        reply.contains("\r\nX-Custom-ReplyHeader: 1\r\n"),
        "the client saw:\n{reply}"
    );
}

/// A TCP echo server.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn echo(stream: &mut TcpStream, message: &[u8]) -> bool {
    exchange(stream, message, message).await
}

#[tokio::test]
async fn tcp_mode_serves_through_the_delay_then_cuts_idle_connections_and_counts_them() {
    let app = echo_server().await;
    let mut sidecar = Sidecar::new(app)
        .arg("--protocol=tcp")
        .arg("--shutdown-delay=1s")
        .arg("--drain-timeout=1s")
        .arg("--final-scrape-timeout=0s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let mut idle = TcpStream::connect(sidecar.listen).await.expect("connect");
    assert!(echo(&mut idle, b"ping").await);
    let mut closes = TcpStream::connect(sidecar.listen).await.expect("connect");
    assert!(echo(&mut closes, b"bye").await);
    drop(closes);

    sidecar.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still ready through the delay (the default; see the next test).
    assert_eq!(get(sidecar.admin, "/ready").await.status, 200);
    let mut during = TcpStream::connect(sidecar.listen)
        .await
        .expect("accepted during the shutdown delay");
    assert!(echo(&mut during, b"still served").await);
    drop(during);
    assert!(echo(&mut idle, b"still open").await);

    // After the delay the listener is closed; the idle connection is cut at the timeout.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        TcpStream::connect(sidecar.listen).await.is_err(),
        "listener closed"
    );
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut rest)).await;
    assert!(
        cut.is_ok(),
        "the idle connection was cut at the drain timeout"
    );
    let status = sidecar.wait().await;
    assert!(status.success(), "{status:?}");
    let log = sidecar.log();
    assert!(log.contains("requests_cut=1"), "one connection cut:\n{log}");
}

#[tokio::test]
async fn tcp_mode_counts_connections_by_phase_and_outcome() {
    let app = echo_server().await;
    let sidecar = Sidecar::new(app)
        .arg("--protocol=tcp")
        .arg("--shutdown-delay=0s")
        .arg("--drain-timeout=500ms")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    for _ in 0..3 {
        let mut stream = TcpStream::connect(sidecar.listen).await.expect("connect");
        assert!(echo(&mut stream, b"x").await);
    }
    let _idle = TcpStream::connect(sidecar.listen).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = get(sidecar.admin, "/drain").await;
    assert_eq!(drained.text(), "drain timed out: 1 requests cut\n");
    let series = |outcome: &str| {
        format!("lameduck_tcp_connections_total{{outcome=\"{outcome}\",phase=\"serving\"}}")
    };
    assert_eq!(sidecar.metric(&series("closed")).await, 3.0);
    assert_eq!(sidecar.metric(&series("cut")).await, 1.0);
    assert_eq!(sidecar.metric("lameduck_requests_cut_total").await, 1.0);
}

#[tokio::test]
async fn several_ports_of_different_protocols_are_served_and_drained_as_one() {
    let http_app = start_app(app_config());
    let h2_app = start_h2_app(true).await;
    let tcp_app = echo_server().await;
    let sidecar = Sidecar::new(http_app.addr)
        .arg(&format!("--listener=127.0.0.1:0={}/h2c", h2_app.addr))
        .arg(&format!("--listener=127.0.0.1:0={tcp_app}/tcp"))
        .arg("--app-check=http:/")
        .arg("--shutdown-delay=300ms")
        .arg("--drain-timeout=1s")
        .start()
        .await;
    let [h2_listen, tcp_listen] = sidecar.listeners()[..] else {
        panic!("two more listeners expected:\n{}", sidecar.log());
    };
    wait_ready(sidecar.admin, 200).await;

    let reply = request(sidecar.listen, "GET", "/").await.expect("http");
    assert_eq!(reply.status, 200);
    let (mut h2, _connection) = h2_client(h2_listen).await;
    let response = h2.send_request(post(h2_listen, "grpc")).await.expect("h2c");
    assert_eq!(response.headers()["x-version"], "HTTP/2.0");
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(body.trailers().expect("trailers")["grpc-status"], "0");
    let mut idle = TcpStream::connect(tcp_listen).await.expect("connect");
    assert!(echo(&mut idle, b"ping").await);

    // One drain for all: the slow request finishes, the idle tunnel is cut and counted.
    let slow = tokio::spawn(request(sidecar.listen, "POST", "/?wait=0.6"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = get(sidecar.admin, "/drain").await;
    assert_eq!(drained.text(), "drain timed out: 1 requests cut\n");
    assert_eq!(slow.await.expect("task").expect("slow").status, 200);
    for listen in [sidecar.listen, h2_listen, tcp_listen] {
        assert!(
            TcpStream::connect(listen).await.is_err(),
            "{listen} closed after the drain"
        );
    }
    let cut = "lameduck_tcp_connections_total{outcome=\"cut\",phase=\"serving\"}";
    assert_eq!(sidecar.metric(cut).await, 1.0);
}

/// Reads from `stream` until what was read ends with `end` (or the peer closes).
async fn read_until_end(stream: &mut TcpStream, end: &[u8]) -> String {
    let mut read = Vec::new();
    let mut byte = [0u8; 1];
    while !read.ends_with(end) {
        match stream.read(&mut byte).await {
            Ok(1) => read.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

#[tokio::test]
async fn http1_trailers_pass_both_ways() {
    let app = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_addr = app.local_addr().expect("addr");
    let sidecar = Sidecar::new(app_addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let seen = tokio::spawn(async move {
        let (mut stream, head) = accept_request(&app).await;
        let body = read_until_end(&mut stream, b"\r\n\r\n").await;
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-response-sum\r\n\r\n\
                  2\r\nok\r\n0\r\nx-response-sum: 42\r\n\r\n",
            )
            .await
            .expect("reply");
        (head, body)
    });
    let mut client = TcpStream::connect(sidecar.listen).await.expect("connect");
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: app\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\
              Trailer: x-request-sum\r\nconnection: close\r\n\r\n\
              5\r\nhello\r\n0\r\nx-request-sum: 7\r\n\r\n",
        )
        .await
        .expect("send");
    let mut reply = String::new();
    client.read_to_string(&mut reply).await.expect("reply");
    let (head, body) = seen.await.expect("app");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ntrailer: x-request-sum\r\n"),
        "the app is told of the trailer:\n{head}"
    );
    assert!(
        body.ends_with("0\r\nx-request-sum: 7\r\n\r\n"),
        "the request trailer reaches the app:\n{body:?}"
    );
    assert!(
        reply.ends_with("0\r\nx-response-sum: 42\r\n\r\n"),
        "the response trailer reaches a client that sent TE: trailers:\n{reply:?}"
    );
}

/// Sends a 2 MiB POST's head with `Expect: 100-continue` and no body; returns the
/// first response head and how long it took.
async fn expect_continue(addr: std::net::SocketAddr, length: usize) -> (String, Duration) {
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let started = tokio::time::Instant::now();
    client
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: {length}\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send head");
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client))
        .await
        .expect("an answer to the head")
        .expect("a head");
    (head, started.elapsed())
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_app_not_the_sidecar() {
    // The demo app refuses bodies over 1 MiB from the Content-Length alone.
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    for addr in [app.addr, sidecar.listen] {
        let (head, _) = expect_continue(addr, 2 << 20).await;
        assert!(
            head.starts_with("HTTP/1.1 413"),
            "refused before the body is sent ({addr}):\n{head}"
        );
        let (head, took) = expect_continue(addr, 16).await;
        assert!(
            head.starts_with("HTTP/1.1 100 Continue"),
            "a body the app accepts is asked for ({addr}):\n{head}"
        );
        assert!(
            took < Duration::from_millis(800),
            "by the app at once, not by the sidecar's fallback after 1 s: {took:?}"
        );
    }
}
