//! Integration tests: the real `demo-app` binary, real sockets on port 0, real signals.

mod support;

use std::time::{Duration, Instant};

use support::{DemoApp, get, request, reserve_port};

#[tokio::test]
async fn answers_500_while_starting_then_200() {
    let (_app, addr) = DemoApp::new().arg("--startup-delay=1500ms").start().await;
    let started = Instant::now();

    let reply = get(addr, "/").await;
    assert_eq!(reply.status, 500);
    assert_eq!(&reply.body[..], b"starting up\n");
    assert_eq!(get(addr, "/readyz").await.status, 503);
    assert_eq!(get(addr, "/healthz").await.status, 200);

    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed())).await;
    assert_eq!(get(addr, "/").await.status, 200);
    assert_eq!(get(addr, "/readyz").await.status, 200);
}

#[tokio::test]
async fn listen_after_startup_refuses_connections_meanwhile() {
    let addr = reserve_port();
    let started = Instant::now();
    let mut app = DemoApp::new()
        .listen(addr)
        .arg("--startup-delay=1500ms")
        .arg("--listen-after-startup")
        .spawn();

    let mut refused = 0;
    while started.elapsed() < Duration::from_millis(1000) {
        let error = tokio::net::TcpStream::connect(addr)
            .await
            .expect_err("connection must be refused during startup");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused >= 5, "only {refused} connection attempts made");

    assert_eq!(app.listening().await, addr);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(get(addr, "/").await.status, 200);
}

#[tokio::test]
async fn wait_parameter_delays_the_response() {
    let (_app, addr) = DemoApp::new().arg("--startup-delay=0s").start().await;
    let sent = Instant::now();
    let reply = request(addr, "POST", "/anything?wait=0.5", b"x".to_vec())
        .await
        .expect("POST ?wait=0.5");
    assert_eq!(reply.status, 200);
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "took {:?}",
        sent.elapsed()
    );

    assert_eq!(get(addr, "/?wait=bogus").await.status, 400);
}

#[tokio::test]
async fn every_response_names_pod_and_version() {
    let (_app, addr) = DemoApp::new()
        .arg("--startup-delay=1s")
        .env("POD_NAME", "demo-app-7d4b9-x2x9q")
        .env("VERSION", "42")
        .start()
        .await;
    for path in ["/", "/healthz", "/readyz", "/x?wait=0"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.headers["x-pod"], "demo-app-7d4b9-x2x9q", "{path}");
        assert_eq!(reply.headers["x-version"], "42", "{path}");
    }
}

#[tokio::test]
async fn naive_sigterm_cuts_an_in_flight_request() {
    let (mut app, addr) = DemoApp::new().arg("--startup-delay=0s").start().await;
    let in_flight = tokio::spawn(request(addr, "POST", "/?wait=2", Vec::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.signal("TERM");

    let outcome = in_flight.await.expect("client task");
    assert!(
        outcome.is_err(),
        "in-flight request must fail, got {outcome:?}"
    );
    assert!(app.wait().await.success());
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new_connections() {
    let (mut app, addr) = DemoApp::new()
        .arg("--startup-delay=0s")
        .arg("--graceful-shutdown-timeout=5s")
        .start()
        .await;
    let sent = Instant::now();
    let in_flight = tokio::spawn(request(addr, "POST", "/?wait=2", Vec::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let error = tokio::net::TcpStream::connect(addr)
        .await
        .expect_err("new connections must be refused while draining");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);

    let reply = in_flight
        .await
        .expect("client task")
        .expect("in-flight request must complete");
    assert_eq!(reply.status, 200);
    assert!(sent.elapsed() >= Duration::from_secs(2));
    let status = app.wait().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn bodies_above_the_cap_get_413() {
    let (_app, addr) = DemoApp::new()
        .arg("--startup-delay=0s")
        .arg("--max-body=1024")
        .start()
        .await;
    let small = request(addr, "POST", "/", vec![b'a'; 1024])
        .await
        .expect("POST 1 KiB");
    assert_eq!(small.status, 200);
    let large = request(addr, "POST", "/", vec![b'a'; 4096])
        .await
        .expect("POST 4 KiB");
    assert_eq!(large.status, 413);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_app, addr) = DemoApp::new()
        .arg("--startup-delay=0s")
        .arg("--idle-timeout=500ms")
        .start()
        .await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the app must close the idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}
