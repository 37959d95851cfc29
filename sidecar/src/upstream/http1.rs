//! HTTP/1.1 to the app: a bounded keep-alive pool with exact retry rules.
//!
//! At most `max_connections` connections to the app are open or opening. A request
//! takes the most recently released idle connection; if there is none, it opens one
//! while the limit allows, and otherwise waits in line for the first connection
//! released or closed (counted in `lameduck_upstream_requests_waiting`). A burst of
//! thousands of requests thus never sends the app more connects than it can accept.
//!
//! A request is sent again on a fresh connection only when nothing of it was written
//! (hyper hands the request back), or when it is idempotent, has no body and failed on
//! a reused connection before any response byte. A POST that reached the app is never
//! replayed. The pool reuses the most recently used connection first and never one
//! idle longer than the idle timeout, which shrinks by itself below the idle lifetime
//! the app is seen to allow (an app that closes idle connections after 1 s gets its
//! connections retired after 750 ms): that closes the keep-alive race from our side.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::{Body, Settings, UpstreamError, connect, empty};
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
    shared: Arc<Shared>,
    /// One permit per connection open or opening.
    permits: Arc<Semaphore>,
    idle: Mutex<Lent>,
    metrics: Metrics,
}

/// The connections nobody uses and the requests waiting for one, under one lock so
/// that a released connection is never left idle while a request waits.
#[derive(Debug, Default)]
struct Lent {
    idle: Vec<Idle>,
    /// Requests waiting for a connection, oldest first.
    waiting: VecDeque<oneshot::Sender<Lease>>,
}

/// Where a request's connection comes from.
enum Source {
    /// An idle connection, or one handed over by a request that finished.
    Reused(Lease),
    /// A permit to open a new one.
    Open(OwnedSemaphorePermit),
    /// Neither: wait for one of the two.
    Wait(oneshot::Receiver<Lease>),
}

/// State the connection tasks report into.
#[derive(Debug)]
struct Shared {
    epoch: Instant,
    /// The configured idle timeout.
    idle_timeout: Duration,
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

impl Shared {
    fn effective_idle_timeout(&self) -> Duration {
        let learned = self.learned_idle_ms.load(Ordering::Relaxed);
        if learned == u64::MAX {
            return self.idle_timeout;
        }
        let margin = Duration::from_millis(learned / 4);
        Duration::from_millis(learned)
            .saturating_sub(margin)
            .clamp(MIN_IDLE_TIMEOUT, self.idle_timeout)
    }

    /// `at` as ms since the epoch, the unit of `ConnWatch::idle_since`.
    fn ms_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// How long a connection has been idle, from its `idle_since` mark; none while busy.
    fn idle_for(&self, idle_since: u64) -> Option<Duration> {
        let now = self.ms_since_epoch(Instant::now());
        (idle_since != 0).then(|| Duration::from_millis(now.saturating_sub(idle_since - 1)))
    }
}

impl Pool {
    /// A pool for the app at `addr`.
    pub(crate) fn new(addr: SocketAddr, settings: Settings, metrics: Metrics) -> Self {
        Self {
            addr,
            connect_timeout: settings.connect_timeout,
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                idle_timeout: settings.idle_timeout,
                learned_idle_ms: AtomicU64::new(u64::MAX),
            }),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            idle: Mutex::new(Lent::default()),
            metrics,
        }
    }

    /// The idle timeout in force: the configured one, or less if the app closes sooner.
    pub(crate) fn effective_idle_timeout(&self) -> Duration {
        self.shared.effective_idle_timeout()
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
            let (mut lease, reused) = self.lease(fresh_only, hold_until).await?;
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

    /// A connection for one request: reused, newly opened, or waited for. `fresh_only`
    /// (a retry) takes only a new one. Opening and waiting are boxed: they are rare
    /// next to reuse, and the future of every request would otherwise carry them.
    async fn lease(
        &self,
        fresh_only: bool,
        hold_until: Option<Instant>,
    ) -> Result<(Lease, bool), UpstreamError> {
        match self.source(fresh_only) {
            Source::Reused(lease) => Ok((lease, true)),
            source => Box::pin(self.open_or_wait(source, fresh_only, hold_until)).await,
        }
    }

    /// Opens a connection on a permit, or waits for a connection released or a
    /// permit, as `source` says (and again as long as a handed connection is closing).
    async fn open_or_wait(
        &self,
        mut source: Source,
        fresh_only: bool,
        hold_until: Option<Instant>,
    ) -> Result<(Lease, bool), UpstreamError> {
        loop {
            let receiver = match source {
                Source::Reused(lease) => return Ok((lease, true)),
                Source::Open(permit) => {
                    return Ok((self.connect(permit, hold_until).await?, false));
                }
                Source::Wait(receiver) => receiver,
            };
            let _waiting = Waiting::start(&self.metrics);
            let permits = self.permits.clone();
            // Never handed a connection (a retry waits for a permit only).
            let handed = async { receiver.await.ok() };
            tokio::select! {
                Some(mut lease) = handed => {
                    // Released a moment ago: wait for hyper to take the next request.
                    if lease.sender.ready().await.is_ok() {
                        return Ok((lease, true));
                    }
                }
                permit = permits.acquire_owned() => {
                    // The semaphore is never closed.
                    let permit = permit.map_err(|_| UpstreamError::NotSent { attempts: 0 })?;
                    return Ok((self.connect(permit, hold_until).await?, false));
                }
            }
            source = self.source(fresh_only);
        }
    }

    fn source(&self, fresh_only: bool) -> Source {
        let Ok(mut lent) = self.idle.lock() else {
            // Poisoned only by a panic elsewhere: open a connection when one is free.
            return Source::Wait(oneshot::channel().1);
        };
        if !fresh_only && let Some(lease) = self.checkout(&mut lent.idle) {
            return Source::Reused(lease);
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Source::Open(permit);
        }
        let (sender, receiver) = oneshot::channel();
        if !fresh_only {
            lent.waiting.push_back(sender);
        }
        Source::Wait(receiver)
    }

    /// Returns a connection whose response has been read completely: to the request
    /// that has waited longest, or to the idle list.
    pub(crate) fn release(&self, mut lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let Ok(mut lent) = self.idle.lock() else {
            return;
        };
        while let Some(waiter) = lent.waiting.pop_front() {
            match waiter.send(lease) {
                Ok(()) => return,
                // That request gave up or got a new connection meanwhile.
                Err(back) => lease = back,
            }
        }
        let now = Instant::now();
        lease
            .watch
            .idle_since
            .store(self.shared.ms_since_epoch(now) + 1, Ordering::Release);
        lent.idle.push(Idle {
            sender: lease.sender,
            watch: lease.watch,
            since: now,
        });
    }

    fn checkout(&self, idle: &mut Vec<Idle>) -> Option<Lease> {
        let max_idle = self.effective_idle_timeout();
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

    async fn connect(
        &self,
        permit: OwnedSemaphorePermit,
        hold_until: Option<Instant>,
    ) -> Result<Lease, UpstreamError> {
        let stream = connect(self.addr, self.connect_timeout, hold_until, &self.metrics).await?;
        self.handshake(stream, permit).await
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
    ) -> Result<Lease, UpstreamError> {
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
        let open = self.metrics.upstream_connections_open.clone();
        open.inc();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection.with_upgrades());
            // Closes the connection once it has been idle past the idle timeout,
            // checked every timeout: nobody else would (the app may keep it for
            // minutes) and each one holds hyper's buffers. A request that takes it
            // meanwhile finds it closed and goes again on a new one, unsent.
            let result = loop {
                let timeout = shared.effective_idle_timeout();
                tokio::select! {
                    biased;
                    result = connection.as_mut() => break result,
                    () = tokio::time::sleep(timeout) => {
                        let idle_since = task_watch.idle_since.load(Ordering::Acquire);
                        if shared.idle_for(idle_since).is_some_and(|idle| idle >= timeout) {
                            task_watch.retired.store(true, Ordering::Release);
                            break Ok(());
                        }
                    }
                }
            };
            open.dec();
            // The connection is gone (or became a tunnel): a waiting request may open one.
            drop(permit);
            let idle_since = task_watch.idle_since.load(Ordering::Acquire);
            let retired = task_watch.retired.load(Ordering::Acquire);
            if let Some(lifetime) = shared
                .idle_for(idle_since)
                .filter(|_| result.is_ok() && !retired)
            {
                // The app closed a connection that was idle: learn how long it allows.
                let lifetime = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
                shared
                    .learned_idle_ms
                    .fetch_min(lifetime, Ordering::Relaxed);
            }
        });
        Ok(Lease { sender, watch })
    }
}

/// A request waiting for a connection, counted while it waits.
struct Waiting(prometheus::IntGauge);

impl Waiting {
    fn start(metrics: &Metrics) -> Self {
        metrics.upstream_requests_waiting.inc();
        Self(metrics.upstream_requests_waiting.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
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

    fn settings(idle_timeout: Duration, max_connections: usize) -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout,
            max_connections,
        }
    }

    impl Pool {
        /// Takes every idle connection that would still be lent (expired ones are
        /// retired) and counts them.
        fn take_lendable(&self) -> usize {
            let mut lent = self.idle.lock().expect("lock");
            let mut count = 0;
            while let Some(lease) = self.checkout(&mut lent.idle) {
                count += 1;
                drop(lease);
            }
            count
        }
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
        let upstream = Pool::new(addr, settings(Duration::from_secs(4), 16), metrics);
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
            upstream.take_lendable() == 0,
            "an expired connection must not be lent"
        );
    }

    #[tokio::test]
    async fn connections_the_pool_retires_teach_it_nothing() {
        let addr = closing_server(Duration::from_secs(30)).await;
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let upstream = Pool::new(addr, settings(Duration::from_millis(200), 16), metrics);
        let (response, lease) = upstream.send(request(), None).await.expect("request");
        response.into_body().collect().await.expect("body");
        upstream.release(lease);
        // Retired just after it expired, as under load: 3/4 of that lifetime would be
        // below the configured timeout, so learning from it would start a spiral.
        tokio::time::sleep(Duration::from_millis(210)).await;
        assert!(upstream.take_lendable() == 0, "retired after 200 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            upstream.effective_idle_timeout(),
            Duration::from_millis(200)
        );
    }

    /// A server that answers each request after `delay` and counts its connections.
    async fn slow_server(delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                        tokio::time::sleep(delay).await;
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn requests_beyond_the_connection_limit_wait_for_a_released_connection() {
        let (addr, accepted) = slow_server(Duration::from_millis(300)).await;
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let upstream = Arc::new(Pool::new(
            addr,
            settings(Duration::from_secs(4), 2),
            metrics.clone(),
        ));
        let sends: Vec<_> = (0..5)
            .map(|_| {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let (response, lease) = upstream.send(request(), None).await?;
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(UpstreamError::Request)?;
                    upstream.release(lease);
                    Ok::<_, UpstreamError>(status)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            metrics.upstream_requests_waiting.get(),
            3,
            "two sent, three in line"
        );
        assert_eq!(metrics.upstream_connections_open.get(), 2);
        for send in sends {
            assert_eq!(send.await.expect("task").expect("answered"), 200);
        }
        assert_eq!(metrics.upstream_requests_waiting.get(), 0);
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            2,
            "the waiting requests reused the two connections"
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
        let upstream = Pool::new(addr, settings(Duration::from_secs(4), 16), metrics.clone());
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
