//! One request through the sidecar: hold while the app starts, clean the headers,
//! forward over the protocol the configuration picks for it (`config::Wire`), and
//! account for the request until the last byte of its response. What holding and
//! `Connection: close` depend on is the phase's (`lifecycle`).
//!
//! gRPC requests (`content-type: application/grpc…`) keep `TE: trailers`, are timed
//! by their own `grpc-timeout` instead of `--upstream-timeout` (a stream may rightly
//! wait long for its first message), and failures the sidecar answers itself are
//! gRPC statuses (`UNAVAILABLE`, `DEADLINE_EXCEEDED`) that gRPC clients understand.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::Wire;
use crate::context::Context;
use crate::expect;
use crate::lifecycle::Phase;
use crate::log_limit::Limit;
use crate::request_body::{self, RequestBody};
use crate::upstream::{Body, BoxError, Lease, UpstreamError, full};
use crate::watchdog::ConnState;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
/// `Trailer` is not one of them: it announces end-to-end trailer fields, and hyper
/// sends on only the trailers it announces.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC status `DEADLINE_EXCEEDED`.
const GRPC_DEADLINE_EXCEEDED: u8 = 4;
/// gRPC status `UNAVAILABLE`: the client may retry elsewhere.
const GRPC_UNAVAILABLE: u8 = 14;

/// The client at the other end of a connection: its IP as the `X-Forwarded-For`
/// element the app is told, written once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    ip: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip }
    }
}

/// What one pass over a request's header names found: what the rest of the request's
/// handling would otherwise look up one by one.
#[derive(Debug, Default, Clone, Copy)]
struct HeadScan {
    /// `Host` fields.
    hosts: usize,
    /// A hop-by-hop field (`Connection` and the fixed ones) is present.
    hop_by_hop: bool,
    /// `Expect` is present.
    expect: bool,
}

impl HeadScan {
    fn of(headers: &HeaderMap) -> Self {
        let mut scan = Self::default();
        for name in headers.keys() {
            if name == header::HOST {
                scan.hosts = headers.get_all(header::HOST).iter().count();
            } else if name == header::EXPECT {
                scan.expect = true;
            } else if is_hop_by_hop(name) {
                scan.hop_by_hop = true;
            }
        }
        scan
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop == name)
}

// === impl Context: one request ===

impl Context {
    /// Proxies one request from `peer`.
    pub(crate) async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        peer: Peer,
        conn: Arc<ConnState>,
    ) -> Response<Body> {
        let guard = RequestGuard::start(self.clone(), conn);
        let downstream_version = request.version();
        let wire = self.listener.upstream_protocol.wire(downstream_version);
        let head = HeadScan::of(request.headers());
        let upgrade =
            (downstream_version == Version::HTTP_11 && wire == Wire::Http1 && head.hop_by_hop)
                .then(|| upgrade_protocol(request.headers()))
                .flatten();
        let on_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let grpc = is_grpc(request.headers());
        let expect_continue = downstream_version == Version::HTTP_11
            && wire == Wire::Http1
            && head.expect
            && expect::expects_continue(request.headers())
            && !request.body().is_end_stream();
        let mut request =
            track_request_body(request, &guard.conn, self.config.request_body_timeout);
        let gate = expect_continue.then(|| expect::gate(&mut request));

        let mut response = match self
            .forward(request, head, &peer, upgrade, wire, grpc)
            .await
        {
            Ok((response, lease)) => self.relay(response, lease, on_upgrade, gate, guard),
            Err(failure) => {
                if let Failure::Refused(refusal) = &failure {
                    self.metrics
                        .refusals
                        .with_label_values(&[refusal.as_str()])
                        .inc();
                }
                let (parts, body) = failure.response(grpc).into_parts();
                let status = parts.status.as_u16();
                let body = OnEnd::new(body, move |end| guard.end(status, end));
                Response::from_parts(parts, body.boxed_unsync())
            }
        };
        *response.version_mut() = downstream_version;
        // Read once the app has answered: a response given in the shutdown delay closes.
        if downstream_version < Version::HTTP_2 && self.lifecycle.phase().h1_connection_close() {
            // Tell HTTP/1 clients to take their next request elsewhere.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Waits for the app if needed and sends the request; a ready-made error response otherwise.
    async fn forward(
        &self,
        request: Request<Body>,
        head: HeadScan,
        peer: &Peer,
        upgrade: Option<HeaderValue>,
        wire: Wire,
        grpc: bool,
    ) -> Result<(Response<Incoming>, Option<Lease>), Failure> {
        if let Some(refusal) = Refusal::of_head(&request, head.hosts) {
            return Err(Failure::Refused(refusal));
        }
        let hold_until = self
            .hold_for_app()
            .await
            .map_err(|_| Failure::StartupHoldExpired)?;
        let timeout = if grpc {
            grpc_timeout(request.headers())
        } else {
            Some(self.config.upstream_timeout)
        };
        let request = upstream_request(
            request,
            head.hop_by_hop,
            peer,
            upgrade,
            wire,
            self.listener.upstream,
        );
        // One path for both (no timeout: tokio's far future), so the future every
        // request carries holds one send, not two.
        let send = self.upstream.send(request, hold_until, wire);
        let sent = tokio::time::timeout(timeout.unwrap_or(std::time::Duration::MAX), send).await;
        match sent {
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(error)) => {
                debug!(error = %error_chain(&error), "upstream request failed");
                Err(Failure::from_upstream(error))
            }
            Err(_) => Err(Failure::NoAnswerInTime),
        }
    }

    /// Turns the app's response into the client's, tunnelling an accepted upgrade,
    /// with `guard` told of its end. With `gate` (the client expects `100 Continue`),
    /// a response that ends before the app asked for the body leaves the app
    /// connection unreusable.
    fn relay(
        &self,
        response: Response<Incoming>,
        lease: Option<Lease>,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
        gate: Option<Arc<expect::Gate>>,
        guard: RequestGuard,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = switching
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten();
        strip_hop_by_hop(&mut parts.headers);
        match (upgrade, on_upgrade) {
            (Some(protocol), Some(downstream)) => {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, protocol);
                let mut upstream_response = Response::from_parts(parts.clone(), body);
                let upstream = hyper::upgrade::on(&mut upstream_response);
                self.tunnel(downstream, upstream);
                // The lease's connection now belongs to the tunnel.
                drop(lease);
                let status = parts.status.as_u16();
                let body = OnEnd::new(crate::upstream::empty(), move |end| guard.end(status, end));
                Response::from_parts(parts, body.boxed_unsync())
            }
            _ => {
                let upstream = self.upstream.clone();
                let status = parts.status.as_u16();
                // One wrapper for both ends: the app connection's and the request's.
                let body = OnEnd::new(body, move |end| {
                    // Only a connection whose response was read to the end can be reused.
                    if let (End::Complete, Some(lease)) = (end, lease) {
                        // A request whose body was never sent ends its connection.
                        if !gate.is_some_and(|gate| gate.abort_if_waiting()) {
                            upstream.release(lease);
                        }
                    }
                    guard.end(status, end);
                });
                Response::from_parts(parts, body.boxed_unsync())
            }
        }
    }

    fn tunnel(&self, downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
        let cut = self.cut.clone();
        let tunnels = self.tunnels.clone();
        let metrics = self.metrics.clone();
        self.tasks.spawn(async move {
            let (down, up) = match tokio::try_join!(downstream, upstream) {
                Ok(pair) => pair,
                Err(error) => {
                    debug!(%error, "upgrade failed");
                    return;
                }
            };
            // Counted with the drain's cut work, as TCP-mode connections are.
            tunnels.fetch_add(1, Ordering::Relaxed);
            metrics.tunnels_open.inc();
            let mut down = TokioIo::new(down);
            let mut up = TokioIo::new(up);
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut down, &mut up) => {
                    if let Err(error) = result {
                        debug!(%error, "tunnel closed with an error");
                    }
                }
                _ = cut.cancelled() => {
                    debug!("tunnel cut at the drain timeout");
                    metrics.tunnels_cut.inc();
                }
            }
            metrics.tunnels_open.dec();
            tunnels.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `Upgrade` protocol a client asks for (WebSocket and the like; never h2c).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let h2c = protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (asks && !h2c).then(|| protocol.clone())
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The request as the app should see it: hop-by-hop headers removed (but `TE:
/// trailers` kept), `x-forwarded-for` and `x-forwarded-proto` added; for HTTP/1.1 an
/// origin-form URI and a Host header, for HTTP/2 an absolute URI carrying the
/// authority (`:scheme`, `:authority`) and no Host header.
fn upstream_request(
    request: Request<Body>,
    hop_by_hop: bool,
    peer: &Peer,
    upgrade: Option<HeaderValue>,
    wire: Wire,
    app: SocketAddr,
) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    let trailers = hop_by_hop && accepts_trailers(&parts.headers);
    if hop_by_hop {
        strip_hop_by_hop(&mut parts.headers);
    }
    if trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let forwarded_for = match parts.headers.get(&X_FORWARDED_FOR).map(|v| v.to_str()) {
        Some(Ok(existing)) if !existing.trim().is_empty() => {
            let ip = peer.ip.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{existing}, {ip}")).ok()
        }
        _ => Some(peer.ip.clone()),
    };
    if let Some(value) = forwarded_for {
        parts.headers.insert(X_FORWARDED_FOR, value);
    }
    parts
        .headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    match wire {
        Wire::Http1 => {
            // An origin-form target (the usual case) is sent as it came.
            if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
                parts.uri = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
            }
            parts.version = Version::HTTP_11;
        }
        Wire::H2c => {
            // The client's Host becomes :authority; the app's address if it has none.
            let authority = parts
                .headers
                .remove(header::HOST)
                .and_then(|host| Authority::try_from(host.as_bytes()).ok())
                .unwrap_or_else(|| app_authority(app));
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            parts.version = Version::HTTP_2;
        }
    }
    Request::from_parts(parts, body)
}

/// The request with its body boxed; a body that is not empty is timed and reports
/// its end to the connection (`crate::request_body`).
fn track_request_body(
    request: Request<Incoming>,
    conn: &Arc<ConnState>,
    timeout: std::time::Duration,
) -> Request<Body> {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return Request::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
    }
    let body = RequestBody::new(body, conn.clone(), timeout);
    Request::from_parts(parts, body.boxed_unsync())
}

/// The app's address as a URI authority.
fn app_authority(app: SocketAddr) -> Authority {
    Authority::try_from(app.to_string().as_str())
        .unwrap_or_else(|_| Authority::from_static("localhost"))
}

/// Whether the client said it accepts trailers (`TE: trailers`, as gRPC requires).
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| {
            token
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

/// A gRPC request's deadline from its `grpc-timeout` header (`<digits><unit>`, units
/// H M S m u n); none when absent or malformed: the client's deadline governs.
fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Why the sidecar answers a request itself.
#[derive(Debug)]
enum Failure {
    /// The app did not pass its check within the startup hold.
    StartupHoldExpired,
    /// The app did not send response headers within the timeout.
    NoAnswerInTime,
    /// The request could not be sent or answered.
    Upstream(UpstreamError),
    /// The sidecar refuses the request itself.
    Refused(Refusal),
}

/// Why the sidecar refuses a request without asking the app; the `reason` label of
/// `lameduck_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An HTTP/1.1 request without a Host header, or with more than one (RFC 9112 §3.2).
    Host,
    /// `CONNECT`: the sidecar is a reverse proxy, never a tunnel to anywhere else.
    Connect,
    /// The sidecar is out of file descriptors for the app connection.
    OpenFiles,
    /// The client's request body was malformed or cut short.
    BadBody,
    /// The client paused its request body longer than the request body timeout.
    BodyTimeout,
    /// A connection beyond `--max-connections` (refused as a whole).
    MaxConnections,
}

impl Refusal {
    /// Every reason, for the metric's label values.
    pub(crate) const ALL: [Self; 6] = [
        Self::Host,
        Self::Connect,
        Self::OpenFiles,
        Self::BadBody,
        Self::BodyTimeout,
        Self::MaxConnections,
    ];

    /// The `reason` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Connect => "connect_method",
            Self::OpenFiles => "open_files",
            Self::BadBody => "bad_request_body",
            Self::BodyTimeout => "request_body_timeout",
            Self::MaxConnections => "max_connections",
        }
    }

    /// The refusal a request head with `hosts` Host fields earns, if any.
    fn of_head<B>(request: &Request<B>, hosts: usize) -> Option<Self> {
        if request.method() == http::Method::CONNECT {
            return Some(Self::Connect);
        }
        (request.version() == Version::HTTP_11 && hosts != 1).then_some(Self::Host)
    }
}

impl Failure {
    /// The failure to send a request, blamed where it belongs: the sidecar's own
    /// exhaustion and the client's broken body are refusals, not the app's fault.
    fn from_upstream(error: UpstreamError) -> Self {
        match error {
            UpstreamError::OutOfFiles { .. } => Self::Refused(Refusal::OpenFiles),
            // hyper's "user" errors here are the request body's, i.e. the client's.
            UpstreamError::Request(error) if error.is_user() => {
                if request_body::timed_out(&error) {
                    Self::Refused(Refusal::BodyTimeout)
                } else {
                    Self::Refused(Refusal::BadBody)
                }
            }
            other => Self::Upstream(other),
        }
    }

    /// The HTTP status and the message of the answer.
    fn status_and_message(&self) -> (StatusCode, &'static str) {
        match self {
            Self::StartupHoldExpired => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the app did not become ready within the startup hold",
            ),
            Self::NoAnswerInTime => (
                StatusCode::GATEWAY_TIMEOUT,
                "the app did not answer in time",
            ),
            Self::Upstream(UpstreamError::ConnectTimeout { .. }) => (
                StatusCode::GATEWAY_TIMEOUT,
                "connecting to the app timed out",
            ),
            Self::Upstream(UpstreamError::Connect { .. }) => {
                (StatusCode::BAD_GATEWAY, "the app refused the connection")
            }
            Self::Refused(Refusal::Host) => (
                StatusCode::BAD_REQUEST,
                "an HTTP/1.1 request needs exactly one Host header",
            ),
            Self::Refused(Refusal::Connect) => {
                (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served here")
            }
            Self::Refused(Refusal::OpenFiles | Refusal::MaxConnections)
            | Self::Upstream(UpstreamError::OutOfFiles { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the sidecar is out of file descriptors",
            ),
            Self::Refused(Refusal::BadBody) => (
                StatusCode::BAD_REQUEST,
                "the request body was malformed or cut short",
            ),
            Self::Refused(Refusal::BodyTimeout) => {
                (StatusCode::REQUEST_TIMEOUT, "the request body stalled")
            }
            Self::Upstream(UpstreamError::Handshake(_) | UpstreamError::Request(_)) => (
                StatusCode::BAD_GATEWAY,
                "the app closed the connection without answering",
            ),
            Self::Upstream(UpstreamError::NotSent { .. }) => (
                StatusCode::BAD_GATEWAY,
                "the app closed every connection before the request could be sent",
            ),
        }
    }

    /// The answer: plain text, or for gRPC a trailers-only response with the gRPC
    /// status a client expects (`DEADLINE_EXCEEDED` for a timeout, else `UNAVAILABLE`).
    fn response(&self, grpc: bool) -> Response<Body> {
        let (status, message) = self.status_and_message();
        if !grpc {
            let mut response = Response::new(full(format!("{message}\n")));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return response;
        }
        let code = if matches!(self, Self::NoAnswerInTime) {
            GRPC_DEADLINE_EXCEEDED
        } else {
            GRPC_UNAVAILABLE
        };
        let mut response = Response::new(crate::upstream::empty());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code)));
        // grpc-message is percent-encoded; these messages are plain ASCII words.
        if let Ok(value) = HeaderValue::from_str(&message.replace(' ', "%20")) {
            headers.insert(GRPC_MESSAGE, value);
        }
        response
    }
}

/// Counts one request from its head to the end (or abandonment) of its response.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    context: Arc<Context>,
    conn: Arc<ConnState>,
    phase: Phase,
    started: Instant,
    /// A response was given (false when dropped: the client cancelled before it).
    answered: bool,
}

impl RequestGuard {
    /// Counts a request the client gave up on at `stage`.
    fn cancelled(&self, stage: &'static str) {
        self.context
            .metrics
            .requests_cancelled
            .with_label_values(&[self.phase.as_str(), stage])
            .inc();
    }

    fn start(context: Arc<Context>, conn: Arc<ConnState>) -> Self {
        context.metrics.requests_in_flight.inc();
        conn.request_started();
        Self {
            phase: context.lifecycle.phase(),
            context,
            conn,
            started: Instant::now(),
            answered: false,
        }
    }

    /// Accounts for the end of a response that began with `status`.
    fn end(self, status: u16, end: End) {
        match end {
            End::Complete => self.finish(status),
            End::Failed => {
                static FAILED: Limit = Limit::new();
                if let Some(suppressed) = FAILED.allow() {
                    warn!(status, suppressed, "response body failed mid-stream");
                }
                self.finish(599);
            }
            // A cut or abandoned response is a failure whatever its status said.
            End::Abandoned => {
                if !self.context.cut.is_cancelled() {
                    self.cancelled(crate::metrics::CANCELLED_DURING_RESPONSE);
                }
                self.finish(status.max(599));
            }
        }
    }

    /// The response was relayed to its end (or failed with `status`).
    fn finish(mut self, status: u16) {
        self.answered = true;
        self.context.metrics.record_request(
            self.phase,
            status,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Dropped unanswered: the client went away, unless the drain timeout cut it.
        if !self.answered && !self.context.cut.is_cancelled() {
            self.cancelled(crate::metrics::CANCELLED_BEFORE_RESPONSE);
        }
        self.context.metrics.requests_in_flight.dec();
        self.conn.request_done();
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every frame was delivered.
    Complete,
    /// The body failed mid-stream.
    Failed,
    /// Dropped before its end: the client went away or the connection was cut.
    Abandoned,
}

/// A body that calls `on_end` exactly once, when it ends or is dropped.
struct OnEnd<B, F: FnOnce(End)> {
    inner: B,
    on_end: Option<F>,
}

impl<B: HttpBody, F: FnOnce(End)> OnEnd<B, F> {
    fn new(inner: B, on_end: F) -> Self {
        let mut body = Self {
            inner,
            on_end: Some(on_end),
        };
        if body.inner.is_end_stream() {
            body.end(End::Complete);
        }
        body
    }

    fn end(&mut self, how: End) {
        if let Some(on_end) = self.on_end.take() {
            on_end(how);
        }
    }
}

impl<B, F: FnOnce(End)> Drop for OnEnd<B, F> {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(End::Abandoned);
        }
    }
}

impl<B, F> HttpBody for OnEnd<B, F>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: FnOnce(End) + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.end(End::Complete),
            Poll::Ready(Some(Err(_))) => this.end(End::Failed),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.end(End::Complete),
            _ => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_handed_back_unsent_every_time_is_a_502_not_a_connect_timeout() {
        let unsent = Failure::Upstream(UpstreamError::NotSent { attempts: 3 }).response(false);
        assert_eq!(unsent.status(), StatusCode::BAD_GATEWAY);
        let addr = "127.0.0.1:1".parse().expect("addr");
        let timed_out = Failure::Upstream(UpstreamError::ConnectTimeout { addr }).response(false);
        assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn grpc_clients_get_grpc_statuses_from_the_sidecar() {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let refused = Failure::Upstream(UpstreamError::Connect {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        })
        .response(true);
        assert_eq!(refused.status(), StatusCode::OK);
        assert_eq!(refused.headers()["grpc-status"], "14");
        assert_eq!(
            refused.headers()["grpc-message"],
            "the%20app%20refused%20the%20connection"
        );
        let late = Failure::NoAnswerInTime.response(true);
        assert_eq!(late.headers()["grpc-status"], "4");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_requests_are_recognised_and_timed_by_their_own_deadline() {
        use std::time::Duration;
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[(
            "content-type",
            "application/grpc-web"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        let timeout = |v| grpc_timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(timeout("10x"), None);
        assert_eq!(timeout("S"), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn te_trailers_is_kept_and_nothing_else_of_te() {
        assert!(accepts_trailers(&headers(&[("te", "trailers")])));
        assert!(accepts_trailers(&headers(&[(
            "te",
            "gzip, Trailers;q=0.5"
        )])));
        assert!(!accepts_trailers(&headers(&[("te", "gzip")])));
    }
}
