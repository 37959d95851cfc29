//! The HTTPS server: `POST /mutate` for the API server, `/healthz`, `/readyz` and
//! `/metrics` for the kubelet and Prometheus. HTTP/1.1 and HTTP/2 (ALPN) over TLS
//! 1.2+. On shutdown it stops accepting, answers `/readyz` 503 and lets open
//! connections finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admit::{Answer, Injector, NamespaceFacts, Outcome, parse};
use crate::cluster::Cluster;
use crate::metrics::{Metrics, encode};
use crate::{PATH_HEALTHZ, PATH_METRICS, PATH_MUTATE, PATH_READYZ};

/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_REVIEW_BYTES: usize = 4 << 20;
/// How long a client has for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request needs.
#[derive(Debug)]
pub struct Webhook {
    /// The transform.
    pub injector: Injector,
    /// The API server, for namespace facts and Events.
    pub cluster: Cluster,
    /// The metrics.
    pub metrics: Metrics,
    /// Where the metrics are registered.
    pub registry: Registry,
    /// False once shutting down.
    pub ready: AtomicBool,
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Webhook {
    /// Answers one AdmissionReview body: looks the namespace up, runs the transform,
    /// records the Events in the background and counts the outcome.
    pub async fn mutate(self: &Arc<Self>, body: &[u8]) -> Answer {
        let started = Instant::now();
        let answer = match parse(body) {
            Err(message) => Answer::invalid(message),
            Ok(admission) => {
                let namespace = admission.request.namespace.clone().unwrap_or_default();
                let (facts, lookup_error) = match self.cluster.facts(&namespace).await {
                    Ok(facts) => (facts, None),
                    Err(error) => (NamespaceFacts::default(), Some(error)),
                };
                let mut answer = self.injector.admit(&admission, &facts);
                if let Some(error) = lookup_error {
                    tracing::warn!(%namespace, %error, "namespace lookup failed");
                    if answer.outcome == Outcome::Injected
                        && let Some(response) = answer.review.response.as_mut()
                    {
                        response.warnings.get_or_insert_with(Vec::new).push(format!(
                            "lameduck: namespace defaults and the Service check were not applied ({error})"
                        ));
                    }
                }
                answer
            }
        };
        let outcome = answer.outcome.label();
        self.metrics.admissions.with_label_values(&[outcome]).inc();
        self.metrics
            .admission_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        match &answer.outcome {
            Outcome::Refused(why) => {
                tracing::warn!(reason = %why, "pod admitted without the sidecar")
            }
            Outcome::Invalid(why) => tracing::debug!(reason = %why, "invalid admission review"),
            other => tracing::debug!(outcome = ?other, "admitted"),
        }
        if !answer.dry_run && !answer.notices.is_empty() {
            let this = self.clone();
            let notices = answer.notices.clone();
            tokio::spawn(async move { this.cluster.record_all(&notices, &this.metrics).await });
        }
        answer
    }

    async fn route(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::POST, PATH_MUTATE) => {
                let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
                    .collect()
                    .await
                {
                    Ok(body) => body.to_bytes(),
                    Err(error) => {
                        return text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "request body not read: {error} (limit {MAX_REVIEW_BYTES} bytes)\n"
                            ),
                        );
                    }
                };
                let answer = self.mutate(&body).await;
                match serde_json::to_vec(&answer.review) {
                    Ok(json) => {
                        let mut response = Response::new(Full::new(Bytes::from(json)));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        response
                    }
                    Err(error) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("writing the answer: {error}\n"),
                    ),
                }
            }
            (&Method::GET, PATH_HEALTHZ) => text(StatusCode::OK, "ok\n"),
            (&Method::GET, PATH_READYZ) => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                }
            }
            (&Method::GET, PATH_METRICS) => {
                let mut response = text(StatusCode::OK, encode(&self.registry));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            (_, PATH_MUTATE) => text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Serves until `stop`, then lets open connections finish (at most `grace`).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    webhook: Arc<Webhook>,
    stop: CancellationToken,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and the like: wait a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let webhook = webhook.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
            let service = service_fn(move |request| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(webhook.route(request).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    webhook.ready.store(false, Ordering::Relaxed);
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "connections still open at the end of the shutdown grace");
    }
}
