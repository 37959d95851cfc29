//! The opt-in system suite for the sidecar (`LAMEDUCK_SYSTEM_TESTS=1 cargo test -- --ignored`):
//! real clients and tools from Debian packages. A missing package fails loudly.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{Sidecar, app_config, get, request, start_app, wait_ready};

fn require(program: &str, package: &str) -> std::path::PathBuf {
    lameduck_test_support::system::require_program(program, package)
}

#[tokio::test]
#[ignore = "system suite: needs promtool (Debian prometheus)"]
async fn metrics_pass_promtool_check_metrics() {
    let promtool = require("promtool", "prometheus");
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr).start().await;
    wait_ready(sidecar.admin, 200).await;
    for _ in 0..5 {
        assert_eq!(
            request(sidecar.listen, "POST", "/")
                .await
                .expect("POST")
                .status,
            200
        );
    }
    let metrics = get(sidecar.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&metrics.body).await.expect("write metrics");
    }
    let output = child.wait_with_output().await.expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        metrics
            .text()
            .contains("lameduck_requests_total{code_class=\"2xx\",phase=\"serving\"} 5")
    );
}

#[tokio::test]
#[ignore = "system suite: needs nghttp (Debian nghttp2-client)"]
async fn nghttp_sees_goaway_and_its_stream_completes() {
    let nghttp = require("nghttp", "nghttp2-client");
    let app = start_app(app_config());
    let sidecar = Sidecar::new(app.addr)
        .arg("--shutdown-delay=3s")
        .start()
        .await;
    wait_ready(sidecar.admin, 200).await;
    let url = format!("http://{}/?wait=1.5", sidecar.listen);
    // nghttp speaks h2c with prior knowledge for http:// URLs; -v prints every frame.
    let client = tokio::process::Command::new(nghttp)
        .args(["-v", "-d", "/dev/null", "-H", ":method: POST", &url])
        .output();
    let admin = sidecar.admin;
    let drain = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        get(admin, "/drain").await
    });
    let output = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("nghttp finished")
        .expect("nghttp ran");
    let frames = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "nghttp failed:\n{frames}");
    // The two-step GOAWAY: the highest stream id first, then the last one accepted.
    assert_eq!(
        frames.matches("recv GOAWAY frame").count(),
        2,
        "two GOAWAY frames:\n{frames}"
    );
    let first = frames
        .find("last_stream_id=2147483647")
        .unwrap_or_else(|| panic!("no GOAWAY(2^31-1):\n{frames}"));
    let last = frames
        .find("last_stream_id=13")
        .unwrap_or_else(|| panic!("no GOAWAY naming the one stream:\n{frames}"));
    assert!(first < last, "GOAWAY(2^31-1) comes first:\n{frames}");
    assert!(
        frames.contains(":status: 200"),
        "the stream did not complete:\n{frames}"
    );
    assert_eq!(drain.await.expect("drain").status, 200);
}

/// A network namespace joined to this one by a veth pair: the host side is
/// 198.18.<n>.1, the namespace side 198.18.<n>.2 (198.18.0.0/15 is reserved for
/// network tests). Deleted, with its veth pair, when dropped.
struct NetNs {
    name: String,
    host_ip: std::net::Ipv4Addr,
}

impl NetNs {
    fn create(ip: &std::path::Path, subnet: u8) -> Self {
        let id = std::process::id() % 100_000;
        let name = format!("lameduck-{id}-{subnet}");
        let (host_if, ns_if) = (format!("ldh{id}x{subnet}"), format!("ldn{id}x{subnet}"));
        let host_ip = std::net::Ipv4Addr::new(198, 18, subnet, 1);
        let run = |args: &[&str]| {
            let status = std::process::Command::new(ip)
                .args(args)
                .status()
                .expect("running ip");
            assert!(
                status.success(),
                "ip {args:?} failed (the system suite runs as root)"
            );
        };
        run(&["netns", "add", &name]);
        let ns = Self { name, host_ip };
        run(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        run(&["link", "set", &ns_if, "netns", &ns.name]);
        run(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        run(&["link", "set", &host_if, "up"]);
        let ns_ip = format!("198.18.{subnet}.2/30");
        run(&["-n", &ns.name, "addr", "add", &ns_ip, "dev", &ns_if]);
        run(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        run(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs curl inside the namespace and returns the HTTP status it got.
    fn curl_status(&self, curl: &std::path::Path, url: &str, extra: &[&str]) -> String {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(curl)
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("running curl in the namespace");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
#[ignore = "system suite: needs root, iproute2 and curl (a network namespace)"]
async fn drain_from_a_non_loopback_address_needs_the_token() {
    let ip = require("ip", "iproute2");
    let curl = require("curl", "curl");
    let netns = NetNs::create(&ip, 77);
    let app = start_app(app_config());
    let token = "drain-token-for-the-system-suite";

    let open = Sidecar::new(app.addr)
        .admin(netns.host_ip.into())
        .arg("--shutdown-delay=0s")
        .start()
        .await;
    let url = format!("http://{}/drain", open.admin);
    assert_eq!(
        netns.curl_status(&curl, &url, &[]),
        "403",
        "no token configured"
    );
    assert_eq!(
        netns.curl_status(
            &curl,
            &url,
            &["-H", &format!("Authorization: Bearer {token}")]
        ),
        "403",
        "a token is useless when none is configured"
    );
    let ready = format!("http://{}/ready", open.admin);
    assert_eq!(
        netns.curl_status(&curl, &ready, &[]),
        "200",
        "probes stay open; the drain did not start"
    );

    let guarded = Sidecar::new(app.addr)
        .admin(netns.host_ip.into())
        .arg("--shutdown-delay=0s")
        .arg(&format!("--drain-token={token}"))
        .start()
        .await;
    let url = format!("http://{}/drain", guarded.admin);
    assert_eq!(netns.curl_status(&curl, &url, &[]), "401");
    assert_eq!(
        netns.curl_status(
            &curl,
            &url,
            &["-H", "Authorization: Bearer wrong-token-wrong-token"]
        ),
        "401"
    );
    let ready = format!("http://{}/ready", guarded.admin);
    assert_eq!(
        netns.curl_status(&curl, &ready, &[]),
        "200",
        "refused drains change nothing"
    );
    assert_eq!(
        netns.curl_status(
            &curl,
            &url,
            &["-H", &format!("Authorization: Bearer {token}")]
        ),
        "200"
    );
    assert_eq!(netns.curl_status(&curl, &ready, &[]), "503");
}
