//! An embedded ingress with ingress-nginx's semantics, for the lab.
//!
//! - Endpoints reach it late, through [`super::lag::Lag`].
//! - Round-robin over its own copy; no passive ejection (ingress-nginx's Lua balancer has none).
//! - Upstream keep-alive pool per endpoint, 60 s idle (`upstream-keepalive-timeout`).
//! - `proxy_next_upstream error timeout`, 3 tries: a failed connect moves to the next
//!   endpoint even for POST; a request that was sent is never retried (non-idempotent off).
//! - 502 when the upstream fails, 503 with no endpoints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

use super::{Entry, Try};
use crate::endpoints::Endpoint;
use crate::timeline::{EventKind, Timeline};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Tries per request (`proxy-next-upstream-tries`).
const TRIES: usize = 3;
/// Upstream keep-alive idle timeout.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// The ingress: its address and its log.
#[derive(Debug)]
pub(crate) struct Ingress {
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<HashMap<u64, Entry>>>,
}

impl Ingress {
    /// Each request's tries so far.
    pub(crate) fn entries(&self) -> HashMap<u64, Entry> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Idle keep-alive connections per endpoint, with when they went idle.
type Pool = HashMap<SocketAddr, Vec<(SendRequest<Body>, Instant)>>;

struct Shared {
    view: watch::Receiver<Vec<Endpoint>>,
    next: AtomicUsize,
    pool: Mutex<Pool>,
    log: Arc<Mutex<HashMap<u64, Entry>>>,
    timeline: Arc<Timeline>,
}

/// Starts the ingress; `view` is the endpoint set its workers see.
pub(crate) async fn start(
    view: watch::Receiver<Vec<Endpoint>>,
    timeline: Arc<Timeline>,
) -> std::io::Result<Ingress> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(record_views(view.clone(), timeline.clone()));
    let shared = Arc::new(Shared {
        view,
        next: AtomicUsize::new(0),
        pool: Mutex::new(HashMap::new()),
        log: log.clone(),
        timeline,
    });
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

/// Puts each change of the workers' view on the timeline.
async fn record_views(mut view: watch::Receiver<Vec<Endpoint>>, timeline: Arc<Timeline>) {
    while view.changed().await.is_ok() {
        let pods = view.borrow_and_update().iter().map(|e| e.pod).collect();
        timeline.record(0, EventKind::IngressView(pods));
    }
}

fn status_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(
        status.canonical_reason().unwrap_or("error"),
    )));
    *response.status_mut() = status;
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
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

/// Proxies one request and logs its tries under its sequence number.
async fn proxy(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let seq = request
        .headers()
        .get(lameduck_load::SEQ_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let at = shared.timeline.now();
    let view = shared.view.borrow().clone();
    let mut tries = Vec::new();
    let response = if view.is_empty() {
        status_response(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
        forward(shared, request, &view, &mut tries).await
    };
    if let Some(seq) = seq
        && let Ok(mut log) = shared.log.lock()
    {
        log.insert(seq, Entry { at, tries });
    }
    response
}

/// Up to [`TRIES`] endpoints in round-robin order; the next one only when nothing was sent.
async fn forward(
    shared: &Arc<Shared>,
    request: Request<Body>,
    view: &[Endpoint],
    tries: &mut Vec<Try>,
) -> Response<Body> {
    let mut request = Some(request);
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
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
                return answered(shared, upstream, sender, endpoint.addr).await;
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
    status_response(StatusCode::BAD_GATEWAY)
}

/// Buffers the (small) body so the connection returns to the pool.
async fn answered(
    shared: &Shared,
    upstream: Response<Incoming>,
    sender: SendRequest<Body>,
    addr: SocketAddr,
) -> Response<Body> {
    let (parts, body) = upstream.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Ok(mut pool) = shared.pool.lock() {
        pool.entry(addr).or_default().push((sender, Instant::now()));
    }
    Response::from_parts(parts, full(bytes))
}
