//! An embedded ingress with ingress-nginx's semantics, for the lab.
//!
//! - Endpoints reach it late: the controller syncs at most once per `sync_interval`
//!   (ingress-nginx: rate 0.3/s, burst 1), and workers pick the synced set up every
//!   `poll_interval` (ingress-nginx: `BACKENDS_SYNC_INTERVAL` 1 s).
//! - Round-robin over its own copy; no passive ejection (ingress-nginx's Lua balancer has none).
//! - Upstream keep-alive pool per endpoint, 60 s idle (`upstream-keepalive-timeout`).
//! - `proxy_next_upstream error timeout`, 3 tries: a failed connect moves to the next
//!   endpoint even for POST; a request that was sent is never retried (non-idempotent off).
//! - 502 when the upstream fails, 503 with no endpoints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::pod::{EventKind, Timeline};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Tries per request (`proxy-next-upstream-tries`).
const TRIES: usize = 3;
/// Upstream keep-alive idle timeout.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// A pod address the Service routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) pod: usize,
    pub(crate) addr: SocketAddr,
}

/// How one try went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Try {
    /// The connect failed: nothing was sent.
    ConnectFailed { pod: usize },
    /// The request was sent and failed before a response.
    SentAndFailed { pod: usize, reused: bool },
    /// A response came back.
    Answered { pod: usize, status: u16 },
}

/// What the ingress did with one request.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) at: Duration,
    pub(crate) tries: Vec<Try>,
}

/// The ingress: its address and its log.
#[derive(Debug)]
pub(crate) struct Ingress {
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<HashMap<u64, Entry>>>,
}

/// Idle keep-alive connections per endpoint, with when they went idle.
type Pool = HashMap<SocketAddr, Vec<(SendRequest<Body>, Instant)>>;

struct Shared {
    view: RwLock<Vec<Endpoint>>,
    next: AtomicUsize,
    pool: Mutex<Pool>,
    log: Arc<Mutex<HashMap<u64, Entry>>>,
    timeline: Arc<Timeline>,
}

/// Starts the ingress; `endpoints` is the EndpointSlice truth it follows, late.
pub(crate) async fn start(
    endpoints: watch::Receiver<Vec<Endpoint>>,
    sync_interval: Duration,
    poll_interval: Duration,
    timeline: Arc<Timeline>,
) -> std::io::Result<Ingress> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(Mutex::new(HashMap::new()));
    let shared = Arc::new(Shared {
        view: RwLock::new(endpoints.borrow().clone()),
        next: AtomicUsize::new(0),
        pool: Mutex::new(HashMap::new()),
        log: log.clone(),
        timeline: timeline.clone(),
    });
    let synced = Arc::new(RwLock::new(endpoints.borrow().clone()));
    tokio::spawn(controller(endpoints, synced.clone(), sync_interval));
    tokio::spawn(workers(shared.clone(), synced, poll_interval));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(proxy(&shared, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Ingress { addr, log })
}

/// The controller: applies endpoint changes at most once per `interval` (token bucket, burst 1).
pub(super) async fn controller(
    mut endpoints: watch::Receiver<Vec<Endpoint>>,
    synced: Arc<RwLock<Vec<Endpoint>>>,
    interval: Duration,
) {
    let mut last_sync: Option<Instant> = None;
    while endpoints.changed().await.is_ok() {
        if let Some(last) = last_sync {
            tokio::time::sleep_until(last + interval).await;
        }
        let latest = endpoints.borrow_and_update().clone();
        if let Ok(mut s) = synced.write() {
            *s = latest;
        }
        last_sync = Some(Instant::now());
    }
}

/// The workers: pick up the synced endpoints every `interval`.
async fn workers(shared: Arc<Shared>, synced: Arc<RwLock<Vec<Endpoint>>>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let latest = synced.read().map(|s| s.clone()).unwrap_or_default();
        if let Ok(mut view) = shared.view.write()
            && *view != latest
        {
            shared.timeline.record(
                0,
                EventKind::IngressView(latest.iter().map(|e| e.pod).collect()),
            );
            *view = latest;
        }
    }
}

fn status_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(status.canonical_reason().unwrap_or("error")))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

fn checkout(shared: &Shared, addr: SocketAddr) -> Option<SendRequest<Body>> {
    let mut pool = shared.pool.lock().ok()?;
    let idle = pool.get_mut(&addr)?;
    while let Some((sender, since)) = idle.pop() {
        if since.elapsed() < KEEPALIVE_IDLE && sender.is_ready() {
            return Some(sender);
        }
    }
    None
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Body>> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

async fn proxy(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let seq = request
        .headers()
        .get(crate::load::SEQ_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let at = shared.timeline.now();
    let view = shared.view.read().map(|v| v.clone()).unwrap_or_default();
    let mut tries = Vec::new();
    let response = if view.is_empty() {
        status_response(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        let (parts, body) = request.into_parts();
        let mut request = Some(Request::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ));
        let first = shared.next.fetch_add(1, Ordering::Relaxed);
        let mut response = status_response(StatusCode::BAD_GATEWAY);
        for attempt in 0..TRIES.min(view.len().max(1)) {
            let endpoint = view[(first + attempt) % view.len()];
            let (mut sender, reused) = match checkout(shared, endpoint.addr) {
                Some(sender) => (sender, true),
                None => match connect(endpoint.addr).await {
                    Some(sender) => (sender, false),
                    None => {
                        tries.push(Try::ConnectFailed { pod: endpoint.pod });
                        continue;
                    }
                },
            };
            let Some(outgoing) = request.take() else {
                break;
            };
            match sender.try_send_request(outgoing).await {
                Ok(upstream) => {
                    tries.push(Try::Answered {
                        pod: endpoint.pod,
                        status: upstream.status().as_u16(),
                    });
                    let (parts, body) = upstream.into_parts();
                    let shared = shared.clone();
                    let addr = endpoint.addr;
                    // Buffer the (small) body so the connection returns to the pool.
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if let Ok(mut pool) = shared.pool.lock() {
                        pool.entry(addr).or_default().push((sender, Instant::now()));
                    }
                    response = Response::from_parts(
                        parts,
                        Full::new(bytes)
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    );
                    break;
                }
                Err(mut error) => match error.take_message() {
                    // Not written: like a failed connect, the next endpoint may take it.
                    Some(unsent) => {
                        request = Some(unsent);
                        tries.push(Try::ConnectFailed { pod: endpoint.pod });
                    }
                    None => {
                        tries.push(Try::SentAndFailed {
                            pod: endpoint.pod,
                            reused,
                        });
                        break;
                    }
                },
            }
        }
        response
    };
    if let Some(seq) = seq
        && let Ok(mut log) = shared.log.lock()
    {
        log.insert(seq, Entry { at, tries });
    }
    response
}
