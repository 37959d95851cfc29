//! HTTP/1.1 to the app: a keep-alive pool with exact retry rules.
//!
//! A request is sent again on a fresh connection only when nothing of it was written
//! (hyper hands the request back), or when it is idempotent, has no body and failed on
//! a reused connection before any response byte. A POST that reached the app is never
//! replayed. The pool reuses the most recently used connection first and never one
//! idle longer than the idle timeout, which shrinks by itself below the idle lifetime
//! the app is seen to allow (an app that closes idle connections after 1 s gets its
//! connections retired after 750 ms): that closes the keep-alive race from our side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::{Body, UpstreamError, connect, empty};
use crate::metrics::Metrics;

/// The most attempts one request gets.
const MAX_ATTEMPTS: usize = 3;
/// Never retire pooled connections faster than this, whatever the app does.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);

/// The app and the pool of idle connections to it.
#[derive(Debug)]
pub(crate) struct Pool {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    shared: Arc<Shared>,
    idle: Mutex<Vec<Idle>>,
    metrics: Metrics,
}

/// State the connection tasks report into.
#[derive(Debug)]
struct Shared {
    epoch: Instant,
    /// Shortest idle lifetime the app was seen to allow, in ms (`u64::MAX`: none seen).
    learned_idle_ms: AtomicU64,
}

/// Per-connection bookkeeping shared with its task.
#[derive(Debug)]
struct ConnWatch {
    /// When the connection went idle, in ms since the epoch, plus one; 0 while busy.
    idle_since: AtomicU64,
    /// The pool dropped it (so its close teaches nothing about the app).
    retired: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Body>,
    watch: Arc<ConnWatch>,
    since: Instant,
}

/// A connection lent to one request; give it back with [`Pool::release`].
#[derive(Debug)]
pub struct Lease {
    sender: SendRequest<Body>,
    watch: Arc<ConnWatch>,
}

impl Pool {
    /// A pool for the app at `addr`.
    pub(crate) fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            addr,
            connect_timeout,
            idle_timeout,
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                learned_idle_ms: AtomicU64::new(u64::MAX),
            }),
            idle: Mutex::new(Vec::new()),
            metrics,
        }
    }

    /// The idle timeout in force: the configured one, or less if the app closes sooner.
    pub(crate) fn effective_idle_timeout(&self) -> Duration {
        let learned = self.shared.learned_idle_ms.load(Ordering::Relaxed);
        if learned == u64::MAX {
            return self.idle_timeout;
        }
        let margin = Duration::from_millis(learned / 4);
        Duration::from_millis(learned)
            .saturating_sub(margin)
            .clamp(MIN_IDLE_TIMEOUT, self.idle_timeout)
    }

    /// Sends `request`, connecting as needed. While `hold_until` has not passed, refused
    /// connects are retried (nothing was sent, so this is safe for any method).
    pub(crate) async fn send(
        &self,
        mut request: Request<Body>,
        hold_until: Option<Instant>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let replay = replayable(&request);
        let mut fresh_only = false;
        for attempt in 1..=MAX_ATTEMPTS {
            let (mut lease, reused) = match self.checkout(fresh_only) {
                Some(lease) => (lease, true),
                None => (self.connect(hold_until).await?, false),
            };
            lease.watch.idle_since.store(0, Ordering::Release);
            match lease.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, lease)),
                Err(mut error) => {
                    fresh_only = true;
                    if let Some(unsent) = error.take_message() {
                        debug!(attempt, "request not sent, retrying on a fresh connection");
                        self.metrics
                            .upstream_retries
                            .with_label_values(&[crate::metrics::RETRY_NOT_SENT])
                            .inc();
                        request = unsent;
                        continue;
                    }
                    let error = error.into_error();
                    let before_response =
                        error.is_incomplete_message() || error.is_canceled() || error.is_closed();
                    match &replay {
                        Some(template) if reused && before_response && attempt < MAX_ATTEMPTS => {
                            debug!(attempt, %error, "idempotent request failed on a reused connection, retrying");
                            self.metrics
                                .upstream_retries
                                .with_label_values(&[crate::metrics::RETRY_IDEMPOTENT])
                                .inc();
                            request = template.rebuild();
                        }
                        _ => return Err(UpstreamError::Request(error)),
                    }
                }
            }
        }
        // The loop returns or continues with a request; reaching here means every
        // attempt handed the request back unsent: nothing reached the app, and no
        // connect timed out either.
        Err(UpstreamError::NotSent {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Returns a connection whose response has been read completely.
    pub(crate) fn release(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        lease
            .watch
            .idle_since
            .store(self.ms_since_epoch(now) + 1, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                sender: lease.sender,
                watch: lease.watch,
                since: now,
            });
        }
    }

    fn ms_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.shared.epoch).as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn checkout(&self, fresh_only: bool) -> Option<Lease> {
        if fresh_only {
            return None;
        }
        let max_idle = self.effective_idle_timeout();
        let mut idle = self.idle.lock().ok()?;
        while let Some(candidate) = idle.pop() {
            if candidate.since.elapsed() >= max_idle {
                // Everything below is older still: retire it all.
                candidate.watch.retired.store(true, Ordering::Release);
                for older in idle.drain(..) {
                    older.watch.retired.store(true, Ordering::Release);
                }
                return None;
            }
            if !candidate.sender.is_ready() {
                candidate.watch.retired.store(true, Ordering::Release);
            } else {
                return Some(Lease {
                    sender: candidate.sender,
                    watch: candidate.watch,
                });
            }
        }
        None
    }

    async fn connect(&self, hold_until: Option<Instant>) -> Result<Lease, UpstreamError> {
        let stream = connect(self.addr, self.connect_timeout, hold_until, &self.metrics).await?;
        self.handshake(stream).await
    }

    async fn handshake(&self, stream: TcpStream) -> Result<Lease, UpstreamError> {
        let (sender, connection) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        let watch = Arc::new(ConnWatch {
            idle_since: AtomicU64::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
        });
        let task_watch = watch.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let result = connection.with_upgrades().await;
            let idle_since = task_watch.idle_since.load(Ordering::Acquire);
            let retired = task_watch.retired.load(Ordering::Acquire);
            if result.is_ok() && idle_since != 0 && !retired {
                // The app closed a connection that was idle: learn how long it allows.
                let now = u64::try_from(shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                let lifetime = now.saturating_sub(idle_since - 1);
                shared
                    .learned_idle_ms
                    .fetch_min(lifetime, Ordering::Relaxed);
            }
        });
        Ok(Lease { sender, watch })
    }
}

/// What is needed to send an idempotent, bodiless request again.
struct Replay {
    method: Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Replay {
    fn rebuild(&self) -> Request<Body> {
        let mut request = Request::new(empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

fn replayable(request: &Request<Body>) -> Option<Replay> {
    use http_body::Body as _;
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    (idempotent && request.body().is_end_stream()).then(|| Replay {
        method: request.method().clone(),
        uri: request.uri().clone(),
        version: request.version(),
        headers: request.headers().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each request and closes a connection idle for `idle`.
    async fn closing_server(idle: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => {
                                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if stream.write_all(reply).await.is_err() {
                                    return;
                                }
                            }
                            _ => return,
                        }
                    }
                });
            }
        });
        addr
    }

    fn request() -> Request<Body> {
        let mut request = Request::new(empty());
        *request.method_mut() = Method::POST;
        request
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("app"));
        request
    }

    #[tokio::test]
    async fn the_pool_learns_the_apps_idle_timeout_and_retires_connections_before_it() {
        let addr = closing_server(Duration::from_millis(400)).await;
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let upstream = Pool::new(
            addr,
            Duration::from_secs(1),
            Duration::from_secs(4),
            metrics,
        );
        assert_eq!(upstream.effective_idle_timeout(), Duration::from_secs(4));

        let (response, lease) = upstream.send(request(), None).await.expect("first request");
        response.into_body().collect().await.expect("body");
        upstream.release(lease);
        tokio::time::sleep(Duration::from_millis(600)).await;

        let learned = upstream.effective_idle_timeout();
        assert!(
            learned >= Duration::from_millis(250) && learned <= Duration::from_millis(320),
            "expected about 3/4 of the app's 400 ms, got {learned:?}"
        );
        // A connection kept idle past the learned timeout is not reused.
        let (response, lease) = upstream
            .send(request(), None)
            .await
            .expect("second request");
        response.into_body().collect().await.expect("body");
        upstream.release(lease);
        tokio::time::sleep(learned + Duration::from_millis(20)).await;
        assert!(
            upstream.checkout(false).is_none(),
            "an expired connection must not be lent"
        );
    }

    #[tokio::test]
    async fn connections_the_pool_retires_teach_it_nothing() {
        let addr = closing_server(Duration::from_secs(30)).await;
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let upstream = Pool::new(
            addr,
            Duration::from_secs(1),
            Duration::from_millis(200),
            metrics,
        );
        let (response, lease) = upstream.send(request(), None).await.expect("request");
        response.into_body().collect().await.expect("body");
        upstream.release(lease);
        // Retired just after it expired, as under load: 3/4 of that lifetime would be
        // below the configured timeout, so learning from it would start a spiral.
        tokio::time::sleep(Duration::from_millis(210)).await;
        assert!(upstream.checkout(false).is_none(), "retired after 200 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            upstream.effective_idle_timeout(),
            Duration::from_millis(200)
        );
    }

    #[tokio::test]
    async fn a_refused_connect_is_retried_while_holding() {
        let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
        reserved
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = reserved.local_addr().expect("addr");
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let upstream = Pool::new(
            addr,
            Duration::from_secs(1),
            Duration::from_secs(4),
            metrics.clone(),
        );
        let refused = upstream
            .send(request(), None)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(refused, UpstreamError::Connect { .. }),
            "{refused:?}"
        );

        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = reserved.listen(16).expect("listen");
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let hold = Instant::now() + Duration::from_secs(5);
        let (response, _lease) = upstream
            .send(request(), Some(hold))
            .await
            .expect("held, then sent");
        assert_eq!(response.status(), 200);
        assert!(metrics.upstream_connect_errors.get() >= 2);
    }
}
