//! The app check: is the app able to serve? Drives `/ready` and ends `Starting`.
//!
//! `tcp` connects; `http:/path` asks `GET path` over the protocol requests go with
//! (HTTP/1.1, or HTTP/2 prior knowledge for an `h2c` app); `grpc[:SERVICE]` asks the
//! standard gRPC health service (`grpc.health.v1.Health/Check`) over HTTP/2 and
//! passes only on `SERVING`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

use crate::config::{AppCheck, Config, UpstreamProtocol};
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
            check(
                &config.app_check,
                config.listener.upstream,
                config.listener.upstream_protocol == UpstreamProtocol::H2c,
            ),
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

async fn check(check: &AppCheck, upstream: SocketAddr, over_h2c: bool) -> bool {
    let Ok(mut stream) = TcpStream::connect(upstream).await else {
        return false;
    };
    let path = match check {
        AppCheck::Tcp => return true,
        AppCheck::Grpc { service } => return h2c::grpc_health(stream, upstream, service).await,
        AppCheck::Http { path } if over_h2c => return h2c::get(stream, upstream, path).await,
        AppCheck::Http { path } => path,
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

/// The checks that speak HTTP/2 prior knowledge: gRPC health and `GET` for h2c apps.
mod h2c {
    use std::net::SocketAddr;

    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use http::{HeaderMap, Request, Response, StatusCode, header};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpStream;

    /// The health service's method (grpc/health/v1/health.proto).
    const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    /// `HealthCheckResponse.ServingStatus.SERVING`.
    const SERVING: u64 = 1;

    /// Sends one request on a new HTTP/2 connection and returns the response.
    async fn send(stream: TcpStream, request: Request<Full<Bytes>>) -> Option<Response<Incoming>> {
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(connection);
        sender.send_request(request).await.ok()
    }

    /// `GET path` over HTTP/2: 2xx or 3xx passes.
    pub(super) async fn get(stream: TcpStream, upstream: SocketAddr, path: &str) -> bool {
        let Ok(request) = Request::get(format!("http://{upstream}{path}"))
            .header(header::USER_AGENT, "lameduck-app-check")
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        send(stream, request).await.is_some_and(|response| {
            response.status().is_success() || response.status().is_redirection()
        })
    }

    /// `grpc.health.v1.Health/Check` for `service` answers `SERVING` with status OK.
    pub(super) async fn grpc_health(
        stream: TcpStream,
        upstream: SocketAddr,
        service: &str,
    ) -> bool {
        let Ok(request) = Request::post(format!("http://{upstream}{HEALTH_CHECK}"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .header(header::USER_AGENT, "lameduck-app-check")
            .body(Full::new(health_request(service)))
        else {
            return false;
        };
        let Some(response) = send(stream, request).await else {
            return false;
        };
        if response.status() != StatusCode::OK {
            return false;
        }
        let (parts, body) = response.into_parts();
        let Ok(collected) = body.collect().await else {
            return false;
        };
        // A trailers-only answer carries grpc-status in the headers.
        let ok = collected
            .trailers()
            .map_or_else(|| status_ok(&parts.headers), status_ok);
        ok && serving(collected.to_bytes())
    }

    fn status_ok(headers: &HeaderMap) -> bool {
        headers.get("grpc-status").is_some_and(|s| s == "0")
    }

    /// A length-prefixed `HealthCheckRequest { service }`.
    pub(super) fn health_request(service: &str) -> Bytes {
        let mut message = BytesMut::new();
        if !service.is_empty() {
            message.put_u8(0x0a); // field 1, length-delimited
            put_varint(&mut message, service.len() as u64);
            message.put_slice(service.as_bytes());
        }
        let mut framed = BytesMut::with_capacity(5 + message.len());
        framed.put_u8(0); // not compressed
        framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        framed.put_slice(&message);
        framed.freeze()
    }

    fn put_varint(buf: &mut BytesMut, mut value: u64) {
        while value >= 0x80 {
            buf.put_u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        buf.put_u8(value as u8);
    }

    fn varint(buf: &mut Bytes) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            if !buf.has_remaining() {
                return None;
            }
            let byte = buf.get_u8();
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// Whether a length-prefixed `HealthCheckResponse` says `SERVING`.
    pub(super) fn serving(mut framed: Bytes) -> bool {
        if framed.len() < 5 || framed[0] != 0 {
            return false;
        }
        framed.advance(1);
        let len = framed.get_u32() as usize;
        if framed.len() < len {
            return false;
        }
        let mut message = framed.split_to(len);
        let mut status = 0; // UNKNOWN when absent (proto3 default)
        while message.has_remaining() {
            let Some(key) = varint(&mut message) else {
                return false;
            };
            match (key >> 3, key & 7) {
                (1, 0) => match varint(&mut message) {
                    Some(value) => status = value,
                    None => return false,
                },
                (_, 0) => {
                    if varint(&mut message).is_none() {
                        return false;
                    }
                }
                (_, 2) => match varint(&mut message).and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n <= message.len() => message.advance(n),
                    _ => return false,
                },
                (_, 1) if message.len() >= 8 => message.advance(8),
                (_, 5) if message.len() >= 4 => message.advance(4),
                _ => return false,
            }
        }
        status == SERVING
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_health_request_is_a_framed_protobuf_message() {
            assert_eq!(&health_request("")[..], &[0, 0, 0, 0, 0]);
            assert_eq!(
                &health_request("a.B")[..],
                &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
            );
            let long = "s".repeat(200);
            let framed = health_request(&long);
            assert_eq!(&framed[5..8], &[0x0a, 0xc8, 0x01]);
        }

        #[test]
        fn only_serving_passes() {
            let framed = |message: &[u8]| {
                let mut out = vec![0, 0, 0, 0, u8::try_from(message.len()).expect("small")];
                out.extend_from_slice(message);
                Bytes::from(out)
            };
            assert!(serving(framed(&[0x08, 0x01])));
            assert!(!serving(framed(&[0x08, 0x02])), "NOT_SERVING");
            assert!(!serving(framed(&[])), "UNKNOWN");
            assert!(!serving(framed(&[0x08, 0x03])), "SERVICE_UNKNOWN");
            // Unknown fields before the status are skipped.
            assert!(serving(framed(&[0x12, 0x02, b'h', b'i', 0x08, 0x01])));
            assert!(
                !serving(Bytes::from_static(&[1, 0, 0, 0, 2, 0x08, 0x01])),
                "compressed"
            );
            assert!(
                !serving(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])),
                "truncated"
            );
        }
    }
}
