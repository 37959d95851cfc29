//! The reliability suite: the sidecar never fails a request the app alone would have
//! served, and blames what fails on whoever caused it. Bursts past the app's accept
//! backlog (the app alone as the yardstick), requests it must refuse, running out of
//! file descriptors, every stall clock, the connection cap, a rapid-reset attack,
//! tunnels at the drain deadline, client cancels, readiness in the shutdown delay and
//! memory given back after 5 000 connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lameduck_test_support::process::require_open_files;

use crate::support::{
    Client, Sidecar, app_config, get, h2_client, read_head, request, start_app, wait_ready,
};

/// Concurrent requests in a burst: many times the app's accept backlog.
const BURST: usize = 2000;

/// Counts outcomes by name.
fn tally(outcomes: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for outcome in outcomes {
        *counts.entry(outcome).or_insert(0) += 1;
    }
    counts
}

/// Opens `BURST` connections, then sends `POST /?wait=2` on all of them at once, and
/// counts the outcomes (`"200"`, `"504"`, `"error"`).
async fn burst(addr: SocketAddr) -> BTreeMap<String, usize> {
    let connecting: Vec<_> = (0..BURST)
        .map(|_| tokio::spawn(Client::connect(addr)))
        .collect();
    let mut clients = Vec::with_capacity(BURST);
    for client in connecting {
        clients.push(client.await.expect("connect task").expect("connect"));
    }
    let sending: Vec<_> = clients
        .into_iter()
        .map(|mut client| tokio::spawn(async move { client.send("POST", "/?wait=2", b"x").await }))
        .collect();
    let mut outcomes = Vec::with_capacity(BURST);
    for sent in sending {
        outcomes.push(match sent.await.expect("client task") {
            Ok(reply) => reply.status.to_string(),
            Err(_) => "error".to_owned(),
        });
    }
    tally(outcomes)
}

/// Sends `BURST` `GET /?wait=2` as HTTP/2 streams at once, 256 on each of 8
/// connections (as `h2load -c 8 -m 256` does), and counts the outcomes.
async fn h2_burst(addr: SocketAddr) -> BTreeMap<String, usize> {
    let mut streams = Vec::with_capacity(BURST);
    for _ in 0..BURST.div_ceil(256) {
        let (sender, _connection) = h2_client(addr).await;
        for _ in 0..256 {
            let mut sender = sender.clone();
            streams.push(tokio::spawn(async move {
                let request = http::Request::builder()
                    .uri(format!("http://{addr}/?wait=2"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                sender.send_request(request).await.map(|r| r.status())
            }));
        }
    }
    let mut outcomes = Vec::with_capacity(BURST);
    for stream in streams.into_iter().take(BURST) {
        outcomes.push(match stream.await.expect("stream task") {
            Ok(status) => status.as_u16().to_string(),
            Err(_) => "error".to_owned(),
        });
    }
    tally(outcomes)
}

/// Sends the same burst to the app alone, which must answer all of it 200, then
/// through the sidecar, which must answer it the same.
async fn answered_as_the_app_alone<F, R>(send: F)
where
    F: Fn(SocketAddr) -> R,
    R: std::future::Future<Output = BTreeMap<String, usize>>,
{
    let app = start_app(app_config());
    let direct = send(app.addr).await;
    assert_eq!(
        direct,
        BTreeMap::from([("200".to_owned(), BURST)]),
        "the app alone answers every request of the burst"
    );
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let through = send(sidecar.listen).await;
    assert_eq!(
        through, direct,
        "through the sidecar the same burst gets the same answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_apps_backlog_is_answered_as_the_app_alone_answers_it() {
    // Clients, the app's sockets and the sidecar's (a child process) under one limit.
    require_open_files(4 * BURST as u64 + 1000);
    answered_as_the_app_alone(burst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_burst_is_answered_as_the_app_alone_answers_it() {
    require_open_files(2 * BURST as u64 + 1000);
    answered_as_the_app_alone(h2_burst).await;
}

/// Sends raw bytes on a fresh connection and returns the status line of the answer.
async fn raw_status(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read_line = async {
        while !line.ends_with(b"\r\n") && matches!(stream.read(&mut byte).await, Ok(1)) {
            line.push(byte[0]);
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read_line).await;
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

#[tokio::test]
async fn requests_the_app_must_not_see_are_refused_with_the_right_status_and_counted() {
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let cases: [(&[u8], &str); 5] = [
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 400"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "HTTP/1.1 405",
        ),
        // A chunk size that is not hexadecimal: the client's fault, not the app's.
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 400",
        ),
        // HTTP/1.0 needs no Host.
        (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 200"),
    ];
    for (request, status) in cases {
        let got = raw_status(sidecar.listen, request).await;
        assert!(
            got.starts_with(status),
            "{:?} got {got:?}, expected {status}",
            String::from_utf8_lossy(request)
        );
    }
    for (reason, count) in [
        ("host", 2.0),
        ("connect_method", 1.0),
        ("bad_request_body", 1.0),
    ] {
        let series = format!("lameduck_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(sidecar.metric(&series).await, count, "{series}");
    }
    assert_eq!(
        sidecar
            .metric("lameduck_upstream_connect_errors_total")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_sidecar_answers_503_as_its_own_fault_and_recovers() {
    const CONCURRENT: usize = 400;
    require_open_files(4 * CONCURRENT as u64 + 1000);
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr).open_files(256).start().await;
    wait_ready(sidecar.admin, 200).await;
    let listen = sidecar.listen;
    let clients: Vec<_> = (0..CONCURRENT)
        .map(|_| tokio::spawn(async move { request(listen, "POST", "/?wait=1").await }))
        .collect();
    let mut answers = Vec::with_capacity(CONCURRENT);
    for client in clients {
        answers.push(match client.await.expect("client task") {
            Ok(reply) => reply.status.to_string(),
            Err(error) => format!("error: {error}"),
        });
    }
    let outcomes = tally(answers);
    let refused = outcomes.get("503").copied().unwrap_or(0);
    assert_eq!(
        outcomes.get("200").copied().unwrap_or(0) + refused,
        CONCURRENT,
        "every request answered, 200 or the sidecar's own 503: {outcomes:?}"
    );
    assert!(
        refused > 0,
        "256 descriptors cannot hold 400 requests: {outcomes:?}"
    );
    assert_eq!(
        sidecar
            .metric("lameduck_refusals_total{reason=\"open_files\"}")
            .await,
        refused as f64,
        "each 503 counted as the sidecar's own"
    );
    assert_eq!(
        sidecar
            .metric("lameduck_upstream_connect_errors_total")
            .await,
        0.0,
        "none blamed on the app"
    );
    for _ in 0..20 {
        let reply = request(listen, "POST", "/")
            .await
            .expect("served afterwards");
        assert_eq!(reply.status, 200, "served normally afterwards");
    }
}

/// Opens HTTP/2 connections to `addr` and, on each, starts streams and resets them
/// at once (CVE-2023-44487) until `until`; returns how many streams were reset.
async fn rapid_reset(addr: SocketAddr, until: tokio::time::Instant) -> u64 {
    let mut reset = 0;
    while tokio::time::Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let Ok((client, connection)) = h2::client::handshake(stream).await else {
            continue;
        };
        tokio::spawn(connection);
        let mut client = client;
        while tokio::time::Instant::now() < until {
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            let request = http::Request::get(format!("http://{addr}/?wait=1"))
                .body(())
                .expect("request");
            let Ok((response, _)) = client.send_request(request, true) else {
                break;
            };
            drop(response); // RST_STREAM(CANCEL)
            reset += 1;
            tokio::task::yield_now().await;
        }
    }
    reset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_attack_neither_hurts_a_good_client_nor_floods_the_log() {
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    let lines_before = sidecar.log().lines().count();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let attack = tokio::spawn(rapid_reset(sidecar.listen, until));
    let mut good = Client::connect(sidecar.listen).await.expect("good client");
    let mut answered = 0;
    while tokio::time::Instant::now() < until {
        let reply = good.send("POST", "/", b"good").await.expect("good request");
        assert_eq!(
            reply.status, 200,
            "the good client is served during the attack"
        );
        answered += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reset = attack.await.expect("attack");
    let lines = sidecar.log().lines().count() - lines_before;
    assert!(reset > 1000, "the attack reset {reset} streams");
    assert!(answered > 50, "the good client got {answered} answers");
    assert!(
        lines <= 40,
        "{reset} reset streams wrote {lines} log lines:\n{}",
        sidecar.log()
    );
}

/// An app that accepts every request as a WebSocket upgrade, then echoes bytes.
async fn upgrading_app() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return; // the sidecar's TCP app check
                }
                let switching = b"HTTP/1.1 101 Switching Protocols\r\n\
                    Connection: upgrade\r\nUpgrade: websocket\r\n\r\n";
                if stream.write_all(switching).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_tunnel_open_at_the_drain_timeout_is_counted_and_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = upgrading_app().await;
    let mut sidecar = Sidecar::new(app)
        .arg("--shutdown-delay=0s")
        .arg("--drain-timeout=1s")
        .arg("--final-scrape-timeout=5s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let mut client = tokio::net::TcpStream::connect(sidecar.listen)
        .await
        .expect("connect");
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .expect("upgrade request");
    let head = read_head(&mut client).await.expect("the 101 head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    client.write_all(b"ping").await.expect("ping");
    let mut echoed = [0u8; 4];
    client.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping");
    assert_eq!(sidecar.metric("lameduck_tunnels_open").await, 1.0);

    sidecar.signal("TERM");
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_to_end(&mut rest),
    );
    assert!(cut.await.is_ok(), "the tunnel is cut at the drain timeout");
    // The sidecar waits for the one scrape that carries the drain's outcome.
    let metrics = get(sidecar.admin, "/metrics").await.text();
    for series in ["lameduck_tunnels_cut_total 1", "lameduck_tunnels_open 0"] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in:\n{metrics}"
        );
    }
    sidecar.wait().await;
    let log = sidecar.log();
    assert!(
        log.contains("requests_cut=1"),
        "the tunnel counted as cut:\n{log}"
    );
}

#[tokio::test]
async fn requests_the_client_gives_up_on_are_counted_as_cancelled() {
    use tokio::io::AsyncWriteExt;
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    // HTTP/1.1: the client closes its connection while the app works.
    let mut client = tokio::net::TcpStream::connect(sidecar.listen)
        .await
        .expect("connect");
    client
        .write_all(b"GET /?wait=2 HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(client);
    // HTTP/2: the client resets its stream.
    let (mut h2, _connection) = h2_client(sidecar.listen).await;
    let request = http::Request::get(format!("http://{}/?wait=2", sidecar.listen))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        h2.send_request(request),
    );
    assert!(waiting.await.is_err(), "given up before the answer");
    let series = "lameduck_requests_cancelled_total{phase=\"serving\",stage=\"before_response\"}";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while sidecar.metric(series).await < 2.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sidecar.metric(series).await, 2.0, "both cancels counted");
}

#[tokio::test]
async fn a_partial_head_pipelined_behind_a_request_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--header-read-timeout=1s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let mut client = tokio::net::TcpStream::connect(sidecar.listen)
        .await
        .expect("connect");
    // A whole request, then the start of a next head that never ends.
    client
        .write_all(b"GET /?wait=0.5 HTTP/1.1\r\nHost: app\r\n\r\nGET / HTTP/1.1\r\nHo")
        .await
        .expect("send");
    let started = tokio::time::Instant::now();
    let mut reply = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.read_to_end(&mut reply),
    )
    .await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "the connection is closed, not pinned");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "the whole request is answered first"
    );
    assert!(
        took >= std::time::Duration::from_millis(1400) && took < std::time::Duration::from_secs(4),
        "closed a header timeout after the first response, not at once or later: {took:?}"
    );
    assert_eq!(
        sidecar.metric("lameduck_header_read_timeouts_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_stalled_upload_gets_408_at_the_body_timeout_as_the_clients_fault() {
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--request-body-timeout=1s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let started = tokio::time::Instant::now();
    let status = raw_status(
        sidecar.listen,
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\nten bytes.",
    )
    .await;
    let took = started.elapsed();
    assert!(status.starts_with("HTTP/1.1 408"), "got {status:?}");
    assert!(
        took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(3),
        "answered at the body timeout: {took:?}"
    );
    let series = "lameduck_refusals_total{reason=\"request_body_timeout\"}";
    assert_eq!(sidecar.metric(series).await, 1.0);
    let series = "lameduck_requests_total{code_class=\"4xx\",phase=\"serving\"}";
    assert_eq!(
        sidecar.metric(series).await,
        1.0,
        "the client's error, not the app's"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_get_a_clear_503_and_the_rest_are_served() {
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--max-connections=2")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let mut first = Client::connect(sidecar.listen).await.expect("first");
    let mut second = Client::connect(sidecar.listen).await.expect("second");
    for client in [&mut first, &mut second] {
        let reply = client.send("GET", "/", b"").await.expect("served");
        assert_eq!(reply.status, 200);
    }
    let get = b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    let third = raw_status(sidecar.listen, get).await;
    assert_eq!(third, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(
        sidecar
            .metric("lameduck_refusals_total{reason=\"max_connections\"}")
            .await,
        1.0
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while raw_status(sidecar.listen, get).await != "HTTP/1.1 200 OK" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a freed slot is served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let reply = second.send("GET", "/", b"").await.expect("still served");
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn an_http2_connection_without_a_request_gets_goaway_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--header-read-timeout=1s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let mut client = tokio::net::TcpStream::connect(sidecar.listen)
        .await
        .expect("connect");
    // The preface and an empty SETTINGS frame, then nothing.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    client.write_all(&hello).await.expect("preface");
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_to_end(&mut received),
    );
    assert!(read.await.is_ok(), "closed after the header timeout");
    // Walk the frames (9-byte headers) the sidecar sent, looking for GOAWAY (type 7).
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = usize::from(received[at]) << 16
            | usize::from(received[at + 1]) << 8
            | usize::from(received[at + 2]);
        kinds.push(received[at + 3]);
        at += 9 + length;
    }
    assert!(
        kinds.contains(&7),
        "a GOAWAY before the close; frame types {kinds:?}"
    );
}

/// An app that answers every request with a 64 MiB body, written as fast as it goes.
async fn big_response_app() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let length = 64 << 20;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                for _ in 0..length / chunk.len() {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_at_the_send_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = big_response_app().await;
    let sidecar = Sidecar::new(app)
        .arg("--response-send-timeout=1s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let mut client = tokio::net::TcpStream::connect(sidecar.listen)
        .await
        .expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .expect("send");
    // The client reads nothing; the socket buffers fill, then the clock runs.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while sidecar
        .metric("lameduck_response_send_timeouts_total")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled reader is closed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while sidecar.metric("lameduck_requests_in_flight").await > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "its request ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_during_the_shutdown_delay_is_a_choice() {
    for (flag, during) in [
        ("--ready-during-shutdown-delay=true", 200),
        ("--ready-during-shutdown-delay=false", 503),
    ] {
        let app = start_app(app_config());
        let sidecar = Sidecar::new(app.addr)
            .arg("--shutdown-delay=3s")
            .arg(flag)
            .start()
            .await;
        wait_ready(sidecar.admin, 200).await;
        sidecar.signal("TERM");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(get(sidecar.admin, "/ready").await.status, during, "{flag}");
        // Requests are served during the delay either way.
        let reply = request(sidecar.listen, "GET", "/").await.expect("served");
        assert_eq!(reply.status, 200);
        assert!(reply.closes(), "while telling the client to go away");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_5000_connections_is_given_back_when_they_close() {
    const CONNECTIONS: usize = 5000;
    require_open_files(3 * CONNECTIONS as u64 + 1000);
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--workers=1")
        .arg("--upstream-idle-timeout=1s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    assert_eq!(
        request(sidecar.listen, "GET", "/")
            .await
            .expect("warm-up")
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let idle = sidecar.rss_kib();

    let listen = sidecar.listen;
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for batch in 0..CONNECTIONS / 500 {
        let opening: Vec<_> = (0..500)
            .map(|_| {
                tokio::spawn(async move {
                    let mut client = Client::connect(listen).await?;
                    let reply = client.send("POST", "/", b"hello").await?;
                    Ok::<_, String>((client, reply.status))
                })
            })
            .collect();
        for opened in opening {
            let (client, status) = opened.await.expect("task").expect("served");
            assert_eq!(status, 200, "batch {batch}");
            clients.push(client);
        }
    }
    let peak = sidecar.rss_kib();
    drop(clients);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while sidecar.metric("lameduck_connections_open").await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every connection closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // jemalloc hands freed pages back after its 1 s decay.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = sidecar.rss_kib();
    assert!(
        after <= 2 * idle,
        "RSS idle {idle} KiB, with {CONNECTIONS} connections {peak} KiB, after they closed {after} KiB"
    );
}

#[tokio::test]
async fn a_drain_request_racing_the_signal_gets_its_answer_before_the_exit() {
    // A classic sidecar: the kubelet sends SIGTERM to the sidecar while the app's
    // preStop waits on /drain. The answer must leave before the process does.
    for round in 0..10 {
        let app = start_app(app_config());
        let mut sidecar = Sidecar::new(app.addr)
            .arg("--shutdown-delay=0s")
            .start()
            .await;
        wait_ready(sidecar.admin, 200).await;
        let admin = sidecar.admin;
        let pre_stop = tokio::spawn(async move { request(admin, "GET", "/drain").await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        sidecar.signal("TERM");
        let answer = pre_stop.await.expect("task");
        assert!(
            answer.as_ref().is_ok_and(|reply| reply.status == 200),
            "round {round}: the preStop's /drain got {answer:?}"
        );
        assert!(sidecar.wait().await.success());
    }
}
