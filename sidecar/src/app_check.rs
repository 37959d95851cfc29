//! The app check: is the app able to serve? Drives `/ready` and ends `Starting`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use crate::config::{AppCheck, Config};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

/// Check period until the app has been ready once, so held requests wait little.
const STARTUP_PERIOD: Duration = Duration::from_millis(100);
/// The most of an HTTP check's response that is read (the status line is enough).
const MAX_STATUS_LINE: usize = 1024;

/// Runs the check forever, applying the failure and success thresholds.
pub(crate) async fn run(config: Config, lifecycle: Lifecycle, metrics: Metrics) {
    let (mut passes, mut failures) = (0u32, 0u32);
    let mut ready = false;
    loop {
        let ok = tokio::time::timeout(
            config.app_check_timeout,
            check(&config.app_check, config.upstream),
        )
        .await
        .unwrap_or(false);
        if ok {
            passes = passes.saturating_add(1);
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            passes = 0;
        }
        if !ready && passes >= config.app_check_success_threshold {
            ready = true;
            info!(check = %config.app_check, "app is ready");
        } else if ready && failures >= config.app_check_failure_threshold {
            ready = false;
            info!(check = %config.app_check, failures, "app is not ready");
        }
        lifecycle.set_app_ready(ready);
        metrics.app_ready.set(i64::from(ready));
        let period = if lifecycle.phase().fast_app_check() {
            STARTUP_PERIOD
        } else {
            config.app_check_period
        };
        tokio::time::sleep(period).await;
    }
}

async fn check(check: &AppCheck, upstream: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(upstream).await else {
        return false;
    };
    let AppCheck::Http { path } = check else {
        return true;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {upstream}\r\nuser-agent: lameduck-app-check\r\nconnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    // "HTTP/1.1 200 OK": 2xx and 3xx pass, as for a Kubernetes httpGet probe.
    let status = head
        .split(|b| *b == b' ')
        .nth(1)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.trim().parse::<u16>().ok());
    matches!(status, Some(200..=399))
}
