//! Integration tests: the real `lameduck-sidecar` binary in front of the demo app,
//! real sockets on port 0, real signals.

mod grpc;
mod protocols;
mod reliability;
mod support;
mod system;

use std::time::Duration;

use support::{Client, Reserved, Sidecar, app_config, get, request, start_app, wait_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[tokio::test]
async fn a_post_sent_before_the_app_exists_is_held_and_answered() {
    let app_port = Reserved::new();
    let sidecar = Sidecar::new(app_port.addr)
        .arg("--startup-hold=10s")
        .start()
        .await;
    assert_eq!(get(sidecar.admin, "/ready").await.status, 503);

    let started = Instant::now();
    let held = tokio::spawn(request(sidecar.listen, "POST", "/?wait=0"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        get(sidecar.admin, "/ready").await.status,
        503,
        "the app is not up yet"
    );
    assert!(!held.is_finished(), "the request must wait for the app");

    let _app = app_port.start_app(app_config());
    let reply = held
        .await
        .expect("client task")
        .expect("the held POST is answered");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-pod"], "test-pod");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    wait_ready(sidecar.admin, 200).await;
    assert!(sidecar.metric("lameduck_startup_held_requests_total").await >= 1.0);
}

#[tokio::test]
async fn a_request_held_past_the_startup_hold_gets_503() {
    let app_port = Reserved::new();
    let sidecar = Sidecar::new(app_port.addr)
        .arg("--startup-hold=300ms")
        .start()
        .await;
    let reply = request(sidecar.listen, "POST", "/")
        .await
        .expect("answered");
    assert_eq!(reply.status, 503);
    assert_eq!(
        sidecar.metric("lameduck_startup_hold_expired_total").await,
        1.0
    );
}

/// What one load client saw for one request.
#[derive(Debug)]
struct Sent {
    at: Instant,
    new_connection: bool,
    result: Result<(u16, bool), String>,
}

/// One client POSTing `?wait=0.3` until `stop_at`, on a keep-alive connection it
/// replaces whenever a response says `Connection: close` or the connection fails.
async fn keep_posting(addr: std::net::SocketAddr, stop_at: Instant) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut client: Option<Client> = None;
    while Instant::now() < stop_at {
        let new_connection = !client.as_ref().is_some_and(Client::is_usable);
        if new_connection {
            client = Some(
                Client::connect(addr)
                    .await
                    .expect("connect during the delay"),
            );
        }
        let at = Instant::now();
        let Some(c) = client.as_mut() else { break };
        let result = c
            .send("POST", "/?wait=0.3", b"payload")
            .await
            .map(|reply| (reply.status, reply.closes()));
        if matches!(result, Ok((_, true)) | Err(_)) {
            client = None;
        }
        sent.push(Sent {
            at,
            new_connection,
            result,
        });
    }
    sent
}

#[tokio::test]
async fn drain_under_load_keeps_serving_through_the_delay_then_refuses() {
    const DELAY: Duration = Duration::from_secs(2);
    let app = start_app(app_config());
    let mut sidecar = Sidecar::new(app.addr)
        .arg(&format!("--shutdown-delay={}ms", DELAY.as_millis()))
        .arg("--drain-timeout=5s")
        .arg("--ready-during-shutdown-delay=false")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;

    let begin = Instant::now();
    let sigterm_at = begin + Duration::from_millis(700);
    // Clients stop sending a little before the delay ends, so that every request
    // they send is unambiguously "sent before the delay ended".
    let stop_at = sigterm_at + DELAY - Duration::from_millis(150);
    let clients: Vec<_> = (0..8)
        .map(|_| tokio::spawn(keep_posting(sidecar.listen, stop_at)))
        .collect();

    tokio::time::sleep_until(sigterm_at).await;
    sidecar.signal("TERM");
    let signalled = Instant::now();
    wait_ready(sidecar.admin, 503).await;
    assert!(
        signalled.elapsed() <= Duration::from_millis(100),
        "/ready turned 503 after {:?}",
        signalled.elapsed()
    );

    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.expect("client task"));
    }
    let failures: Vec<&Sent> = all
        .iter()
        .filter(|s| !matches!(s.result, Ok((200, _))))
        .collect();
    assert!(
        failures.is_empty(),
        "requests sent before the delay ended failed: {failures:?}"
    );
    let in_delay: Vec<&Sent> = all
        .iter()
        .filter(|s| s.at > signalled + Duration::from_millis(50))
        .collect();
    assert!(
        in_delay.iter().any(|s| s.new_connection),
        "new connections must be accepted and served during the delay"
    );
    assert!(
        in_delay.iter().all(|s| matches!(s.result, Ok((200, true)))),
        "every HTTP/1 response in the delay carries Connection: close"
    );
    let before: Vec<&Sent> = all
        .iter()
        .filter(|s| s.at < sigterm_at - Duration::from_millis(400))
        .collect();
    assert!(
        before.iter().all(|s| matches!(s.result, Ok((200, false)))),
        "no Connection: close before the drain"
    );
    assert!(all.len() >= 8 * 6, "only {} requests sent", all.len());

    tokio::time::sleep_until(sigterm_at + DELAY + Duration::from_millis(200)).await;
    let error = TcpStream::connect(sidecar.listen)
        .await
        .expect_err("connections after the delay must be refused");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    let status = sidecar.wait().await;
    assert_eq!(status.code(), Some(0));
    assert!(
        sidecar
            .log()
            .contains("drain finished: every request completed")
    );
}

#[tokio::test]
async fn drain_timeout_cuts_what_is_left_and_counts_it() {
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--shutdown-delay=0s")
        .arg("--drain-timeout=2s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let long = tokio::spawn(request(sidecar.listen, "POST", "/?wait=30"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let drained = get(sidecar.admin, "/drain").await;
    assert_eq!(drained.status, 200);
    assert_eq!(drained.text(), "drain timed out: 1 requests cut\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "drain took {took:?}"
    );

    let outcome = long.await.expect("client task");
    assert!(
        outcome.is_err(),
        "the cut request must fail at the client, got {outcome:?}"
    );
    assert_eq!(sidecar.metric("lameduck_requests_cut_total").await, 1.0);
    assert_eq!(
        sidecar
            .metric("lameduck_drains_total{outcome=\"timed_out\"}")
            .await,
        1.0
    );
    assert_eq!(
        sidecar.metric("lameduck_phase{phase=\"drained\"}").await,
        1.0
    );
    assert!(
        sidecar.log().contains("requests_cut=1"),
        "the cut is logged"
    );
}

#[tokio::test]
async fn http2_clients_get_goaway_at_drain_start_and_their_streams_complete() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--shutdown-delay=2s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let stream = TcpStream::connect(sidecar.listen).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c prior-knowledge handshake");
    let connection = tokio::spawn(connection);
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let mut sender = sender.clone();
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/?wait=1", sidecar.listen))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        in_flight.push(tokio::spawn(async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drain_started = Instant::now();
    let admin = sidecar.admin;
    let drain = tokio::spawn(async move { get(admin, "/drain").await });

    for stream in in_flight {
        let status = stream
            .await
            .expect("stream task")
            .expect("in-flight stream completes");
        assert_eq!(status, 200);
    }
    // GOAWAY closes the connection once its streams are done, long before the 2 s delay ends.
    tokio::time::timeout(Duration::from_millis(1500), connection)
        .await
        .expect("the server closed the HTTP/2 connection after GOAWAY")
        .expect("connection task")
        .expect("graceful close");
    assert!(drain_started.elapsed() < Duration::from_secs(2));
    assert!(sender.is_closed(), "no new streams after GOAWAY");
    assert_eq!(drain.await.expect("drain task").status, 200);
}

#[tokio::test]
async fn keep_alive_race_with_a_short_app_idle_timeout_loses_nothing() {
    let app = start_app(demo_app::Config {
        idle_timeout: Duration::from_secs(1),
        ..app_config()
    });
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let mut client = Client::connect(sidecar.listen).await.expect("connect");
    let mut errors = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut spacing_ms = 900;
    while Instant::now() < deadline {
        match client.send("POST", "/", b"sparse").await {
            Ok(reply) if reply.status == 200 => {}
            other => errors.push(other.map(|r| r.status)),
        }
        sent += 1;
        // One request every 0.9-1.1 s, straddling the app's 1 s idle timeout.
        spacing_ms = 900 + (spacing_ms * 7 + 13) % 201;
        tokio::time::sleep(Duration::from_millis(spacing_ms)).await;
    }
    assert!(sent >= 25, "only {sent} requests sent");
    assert!(
        errors.is_empty(),
        "{} of {sent} requests failed: {errors:?}",
        errors.len()
    );
}

#[tokio::test]
async fn bad_input_is_refused_without_hurting_good_requests() {
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--header-read-timeout=1s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let listen = sidecar.listen;
    let good = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(
                request(listen, "POST", "/?wait=0.05")
                    .await
                    .map(|r| r.status),
            );
        }
        statuses
    });

    // Slowloris: a header byte every 300 ms never completes the head.
    let mut slow = TcpStream::connect(listen).await.expect("connect");
    let opened = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let cut = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.write_all(b"X").await.is_err() {
            break opened.elapsed();
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            break opened.elapsed();
        }
        assert!(
            opened.elapsed() < Duration::from_secs(5),
            "slowloris client not cut"
        );
    };
    assert!(cut >= Duration::from_millis(900), "cut too early: {cut:?}");

    // Oversized header: 64 KiB.
    let huge = "a".repeat(64 * 1024);
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    assert!(
        read_status_line(&mut stream)
            .await
            .starts_with("HTTP/1.1 431")
    );

    // Garbage request line.
    let mut stream = TcpStream::connect(listen).await.expect("connect");
    stream
        .write_all(b"\x01\x02 garbage \xff\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_status_line(&mut stream)
            .await
            .starts_with("HTTP/1.1 400")
    );

    let statuses = good.await.expect("good client");
    assert!(
        statuses.iter().all(|s| *s == Ok(200)),
        "good requests: {statuses:?}"
    );
    assert!(sidecar.metric("lameduck_header_read_timeouts_total").await >= 1.0);
}

async fn read_status_line(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn headers_are_forwarded_as_a_proxy_should() {
    use http_body_util::BodyExt;
    // An app that echoes the request head it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let mut echo = String::new();
                        for (name, value) in request.headers() {
                            echo.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
                        }
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().len())
                            .unwrap_or(0);
                        echo.push_str(&format!("body-bytes: {body}\n"));
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(echo)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let sidecar = Sidecar::new(addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let mut stream = TcpStream::connect(sidecar.listen).await.expect("connect");
    stream
        .write_all(
            b"POST /x?y=1 HTTP/1.1\r\nHost: demo\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.1.2.3\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    let echo = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(echo.contains("host: demo\n"), "{echo}");
    assert!(
        echo.contains("x-forwarded-for: 10.1.2.3, 127.0.0.1\n"),
        "{echo}"
    );
    assert!(echo.contains("x-forwarded-proto: http\n"), "{echo}");
    assert!(echo.contains("body-bytes: 5\n"), "{echo}");
    assert!(
        !echo.contains("x-secret"),
        "headers named in Connection are hop-by-hop: {echo}"
    );
    assert!(!echo.contains("keep-alive: timeout"), "{echo}");
}

#[tokio::test]
async fn bad_configuration_exits_64_naming_the_value() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lameduck-sidecar"))
        .args(["--listen=127.0.0.1:0", "--drain-timeout=0s"])
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--drain-timeout=0ns is not valid"),
        "{stderr}"
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lameduck-sidecar"))
        .args(["--app-check=grpc:"])
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("\"grpc:\""));

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lameduck-sidecar"))
        .args(["--check", "--shutdown-delay=5s"])
        .env("LAMEDUCK_DRAIN_TIMEOUT", "7s")
        .output()
        .await
        .expect("run");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("drain_timeout: 7s"));
}

#[tokio::test]
async fn drain_from_loopback_is_accepted_and_blocks_until_drained() {
    let app = start_app(app_config());
    let mut sidecar = Sidecar::new(app.addr)
        .arg("--shutdown-delay=500ms")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let started = Instant::now();
    let reply = get(sidecar.admin, "/drain").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "drained\n");
    assert!(started.elapsed() >= Duration::from_millis(500));
    // Idempotent: a second call answers at once with the same outcome.
    assert_eq!(get(sidecar.admin, "/drain").await.text(), "drained\n");
    assert_eq!(get(sidecar.admin, "/ready").await.status, 503);
    assert_eq!(get(sidecar.admin, "/live").await.status, 200);
    // After a /drain the process stays up until a signal, then exits 0.
    sidecar.signal("TERM");
    assert_eq!(sidecar.wait().await.code(), Some(0));
}

#[tokio::test]
async fn a_scraped_sidecar_waits_for_one_scrape_that_carries_the_drain_outcome() {
    let app = start_app(app_config());
    let mut sidecar = Sidecar::new(app.addr)
        .arg("--shutdown-delay=200ms")
        .arg("--final-scrape-timeout=60s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    assert_eq!(
        sidecar
            .metric("lameduck_drains_total{outcome=\"drained\"}")
            .await,
        0.0
    );
    sidecar.signal("TERM");
    // The drain is over after ~200 ms; the process waits for Prometheus.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !sidecar.has_exited(),
        "a scraped sidecar must wait for the final scrape"
    );
    // Scrape until a scrape carries the outcome; the process exits right after it.
    let mut seen = 0.0;
    while seen == 0.0 && !sidecar.has_exited() {
        seen = sidecar
            .metric("lameduck_drains_total{outcome=\"drained\"}")
            .await;
    }
    assert_eq!(seen, 1.0, "the final scrape carries the drain");
    let waited = Instant::now();
    assert_eq!(sidecar.wait().await.code(), Some(0));
    assert!(waited.elapsed() < Duration::from_secs(5));
    assert!(sidecar.log().contains("final scrape done"));
}

#[tokio::test]
async fn a_sidecar_nobody_scrapes_exits_right_after_the_drain() {
    let app = start_app(app_config());
    let mut sidecar = Sidecar::new(app.addr)
        .arg("--shutdown-delay=200ms")
        .arg("--final-scrape-timeout=60s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let signalled = Instant::now();
    sidecar.signal("TERM");
    assert_eq!(sidecar.wait().await.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited after {:?}",
        signalled.elapsed()
    );
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from a raw stream;
/// empty if the connection closed first.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let rest = buf.split_off(end + 4 + length);
                assert!(rest.is_empty(), "more than one response arrived");
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Polls a metric until it has `value`, for up to 3 s.
async fn wait_for_metric(sidecar: &support::Running, series: &str, value: f64) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let now = sidecar.metric(series).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < until,
            "{series} is {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_parked_and_answer_their_next_request() {
    const POST: &[u8] = b"POST /?wait=0 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    let app = start_app(app_config());
    let mut sidecar = Sidecar::new(app.addr)
        .arg("--header-read-timeout=1s")
        .arg("--shutdown-delay=0s")
        .arg("--final-scrape-timeout=0s")
        .start()
        .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(sidecar.listen).await.expect("connect");
        stream.write_all(POST).await.expect("write");
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        clients.push(stream);
    }
    wait_for_metric(&sidecar, "lameduck_connections_parked", 20.0).await;

    // Each parked connection answers again; one sends two requests in one write.
    for stream in &mut clients {
        stream.write_all(POST).await.expect("write");
        let response = read_response(stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let pipelined = [POST, POST].concat();
    clients[0].write_all(&pipelined).await.expect("write");
    let mut both = [0u8; 8192];
    let mut seen = String::new();
    while seen.matches("HTTP/1.1 200").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), clients[0].read(&mut both))
            .await
            .expect("both answers in time")
            .expect("read");
        assert!(n > 0, "closed after {seen}");
        seen.push_str(&String::from_utf8_lossy(&both[..n]));
    }
    wait_for_metric(&sidecar, "lameduck_connections_parked", 20.0).await;
    assert_eq!(sidecar.metric("lameduck_connections_open").await, 20.0);

    // A parked connection that starts a head and stalls is cut at the header timeout.
    let started = Instant::now();
    clients[1]
        .write_all(b"GET / HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let mut probe = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), clients[1].read(&mut probe))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut after {:?}",
        started.elapsed()
    );
    assert_eq!(
        sidecar.metric("lameduck_header_read_timeouts_total").await,
        1.0
    );

    // The drain closes parked connections at once: nothing is in flight on them.
    sidecar.signal("TERM");
    for stream in clients.iter_mut().skip(2) {
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut probe))
            .await
            .expect("closed at the drain");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(sidecar.wait().await.success());
}
