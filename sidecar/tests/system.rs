//! The opt-in system suite for the sidecar (`LAMEDUCK_SYSTEM_TESTS=1 cargo test -- --ignored`):
//! real clients and tools from Debian packages. A missing package fails loudly.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{Sidecar, app_config, get, request, start_app, wait_ready};

fn require(program: &str, package: &str) -> std::path::PathBuf {
    assert!(
        std::env::var("LAMEDUCK_SYSTEM_TESTS").is_ok_and(|v| v == "1"),
        "system tests need LAMEDUCK_SYSTEM_TESTS=1 (and their packages: see .ci/run)"
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("LAMEDUCK_SYSTEM_TESTS=1 but `{program}` is missing: install {package}")
        })
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
    assert!(
        frames.contains("recv GOAWAY frame"),
        "no GOAWAY seen:\n{frames}"
    );
    assert!(
        frames.contains(":status: 200"),
        "the stream did not complete:\n{frames}"
    );
    assert_eq!(drain.await.expect("drain").status, 200);
}
