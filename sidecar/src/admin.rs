//! The admin port: `/ready`, `/live`, `/metrics` and the drain trigger `/drain`.
//!
//! Threat model for `/drain` (the only state-changing endpoint): the admin port is
//! reachable from the cluster network (the kubelet probes it on the pod IP), so
//! anyone who can reach the pod could otherwise take it out of service. `/drain` is
//! therefore accepted only from loopback (another container of the same pod) or with
//! `Authorization: Bearer <token>` matching `--drain-token`. The injector generates
//! the token per workload and writes it both into the sidecar's env and into the app
//! container's preStop `httpGet.httpHeaders`, because the kubelet calls the hook from
//! the node, not from loopback. Whoever can read the pod spec can read the token;
//! that is the same trust boundary as being able to delete the pod. Without a token,
//! non-loopback `/drain` is always refused. `/drain` answers GET too, because a
//! preStop `httpGet` hook can only send GET.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use lameduck_contract::admin::{DRAIN, LIVE, METRICS, READY};
use prometheus::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::lifecycle::{DrainOutcome, Lifecycle};
use crate::log_limit::Limit;

/// What the admin endpoints read.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) registry: Registry,
    pub(crate) drain_token: Option<String>,
    /// `/ready` stays 200 during the shutdown delay.
    pub(crate) ready_during_shutdown_delay: bool,
}

/// Serves the admin port until the process exits.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                static ACCEPT_FAILED: Limit = Limit::new();
                if let Some(suppressed) = ACCEPT_FAILED.allow() {
                    warn!(%error, suppressed, "admin accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            // Set when this connection served a scrape that carries the drain's outcome.
            let final_scrape = Arc::new(AtomicBool::new(false));
            // Set when this connection owes a `/drain` answer (at most one: it closes
            // the connection).
            let drain_answer = Arc::new(AtomicBool::new(false));
            let service = {
                let (admin, final_scrape, answer) =
                    (admin.clone(), final_scrape.clone(), drain_answer.clone());
                service_fn(move |request| {
                    let (admin, final_scrape, answer) =
                        (admin.clone(), final_scrape.clone(), answer.clone());
                    async move {
                        let connection = Connection {
                            peer,
                            final_scrape: &final_scrape,
                            drain_answer: &answer,
                        };
                        Ok::<_, Infallible>(admin.handle(request, &connection).await)
                    }
                })
            };
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = result {
                debug!(%error, "admin connection ended with an error");
            }
            // Only now are those responses written out: the process may exit.
            if final_scrape.load(Ordering::Acquire) {
                admin.lifecycle.record_scrape(true);
            }
            if drain_answer.load(Ordering::Acquire) {
                admin.lifecycle.drain_answer_written();
            }
        });
    }
}

/// One admin connection: its peer, and what the end of the connection must report.
struct Connection<'a> {
    peer: SocketAddr,
    /// This connection served a scrape that carries the drain's outcome.
    final_scrape: &'a AtomicBool,
    /// This connection owes (or has sent) a `/drain` answer.
    drain_answer: &'a AtomicBool,
}

impl Admin {
    async fn handle(
        &self,
        request: Request<Incoming>,
        connection: &Connection<'_>,
    ) -> Response<Full<Bytes>> {
        let (peer, final_scrape) = (connection.peer, connection.final_scrape);
        let method = request.method().clone();
        match (request.uri().path(), method) {
            (READY, Method::GET | Method::HEAD) => {
                if self.lifecycle.ready(self.ready_during_shutdown_delay) {
                    text(StatusCode::OK, "ready\n".to_owned())
                } else {
                    let phase = self.lifecycle.phase().as_str();
                    let app = if self.lifecycle.app_ready() {
                        "ready"
                    } else {
                        "not ready"
                    };
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: phase {phase}, app {app}\n"),
                    )
                }
            }
            (LIVE, Method::GET | Method::HEAD) => text(StatusCode::OK, "live\n".to_owned()),
            (METRICS, Method::GET) => {
                // Looked at before encoding: the drain's outcome is recorded before the
                // phase becomes `Drained`, so this scrape carries it.
                let saw_outcome = self.lifecycle.phase().metrics_carry_outcome();
                let (content_type, body) = crate::metrics::encode(&self.registry);
                self.lifecycle.record_scrape(false);
                let mut response = Response::new(Full::new(Bytes::from(body)));
                if let Ok(value) = HeaderValue::from_str(&content_type) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                if saw_outcome {
                    // Close after this response, so that the end of the connection says
                    // the scrape was delivered (see `serve`).
                    final_scrape.store(true, Ordering::Release);
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
            (DRAIN, Method::GET | Method::POST) => {
                // Owed until the connection ends: the process must not exit before
                // the answer has left (see `drain::exit`).
                if !connection.drain_answer.swap(true, Ordering::AcqRel) {
                    self.lifecycle.drain_answer_owed();
                }
                let mut response = self.drain(&request, peer).await;
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            (READY | LIVE | METRICS | DRAIN, _) => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_owned(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
        }
    }

    async fn drain(&self, request: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if let Err(refusal) = self.authorize(request.headers(), peer) {
            static REFUSED: Limit = Limit::new();
            if let Some(suppressed) = REFUSED.allow() {
                warn!(%peer, ?refusal, suppressed, "refused an unauthorized drain request");
            }
            return refusal.response();
        }
        if self.lifecycle.trigger_drain(DRAIN) {
            info!(%peer, "drain requested on the admin port");
        }
        match self.lifecycle.drained().await {
            DrainOutcome::Drained => text(StatusCode::OK, "drained\n".to_owned()),
            DrainOutcome::TimedOut { cut } => text(
                StatusCode::OK,
                format!("drain timed out: {cut} requests cut\n"),
            ),
            DrainOutcome::Failed => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "drain failed: the serving task stopped unexpectedly\n".to_owned(),
            ),
        }
    }

    fn authorize(&self, headers: &http::HeaderMap, peer: SocketAddr) -> Result<(), Refusal> {
        if peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        let Some(expected) = &self.drain_token else {
            return Err(Refusal::NoToken);
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::BadToken)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive and may be followed by more than one space (RFC 9110, 11.1 and
/// 11.4).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Why a `/drain` request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not from loopback, and no token is configured.
    NoToken,
    /// Not from loopback, and the bearer token is missing or wrong.
    BadToken,
}

impl Refusal {
    fn response(self) -> Response<Full<Bytes>> {
        match self {
            Refusal::NoToken => text(
                StatusCode::FORBIDDEN,
                "drain is only accepted from loopback: no drain token is configured\n".to_owned(),
            ),
            Refusal::BadToken => {
                let mut response = text(
                    StatusCode::UNAUTHORIZED,
                    "drain needs a valid bearer token\n".to_owned(),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"lameduck\""),
                );
                response
            }
        }
    }
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: Option<&str>) -> Admin {
        Admin {
            lifecycle: Lifecycle::new(),
            ready_during_shutdown_delay: true,
            registry: Registry::new(),
            drain_token: token.map(str::to_owned),
        }
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn drain_from_the_cluster_network_needs_the_token() {
        let pod_peer: SocketAddr = "10.244.1.7:51234".parse().expect("addr");
        let loopback: SocketAddr = "127.0.0.1:51234".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:51234".parse().expect("addr");
        let none = http::HeaderMap::new();

        let open = admin(None);
        assert!(open.authorize(&none, loopback).is_ok());
        assert!(open.authorize(&none, mapped).is_ok());
        let refused = open
            .authorize(&bearer("anything-long-enough"), pod_peer)
            .expect_err("no token set");
        assert_eq!(refused, Refusal::NoToken);
        assert_eq!(refused.response().status(), StatusCode::FORBIDDEN);

        let guarded = admin(Some("s3cret-token-0123456789"));
        assert!(
            guarded
                .authorize(&bearer("s3cret-token-0123456789"), pod_peer)
                .is_ok()
        );
        let wrong = guarded
            .authorize(&bearer("s3cret-token-0123456780"), pod_peer)
            .expect_err("wrong");
        assert_eq!(wrong, Refusal::BadToken);
        assert_eq!(wrong.response().status(), StatusCode::UNAUTHORIZED);
        let missing = guarded.authorize(&none, pod_peer).expect_err("missing");
        assert_eq!(missing, Refusal::BadToken);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        let guarded = admin(Some("s3cret-token-0123456789"));
        let mut lower = http::HeaderMap::new();
        lower.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret-token-0123456789"),
        );
        let pod_peer: SocketAddr = "10.244.1.7:51234".parse().expect("addr");
        assert!(guarded.authorize(&lower, pod_peer).is_ok());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnop"));
        assert!(!constant_time_eq(b"abcdefghijklmnop", b"abcdefghijklmnoq"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
