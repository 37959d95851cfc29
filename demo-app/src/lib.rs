//! `demo-app`: the plain, unmodified HTTP app that lameduck is compared against.
//!
//! It reproduces the behaviour of a typical web app that nobody tuned for Kubernetes:
//! it takes a while to start (answering 500 meanwhile, or refusing connections with
//! `--listen-after-startup`), honours `?wait=SECONDS` on every path so requests can be
//! made long, reports which pod and version served each response (`x-pod`,
//! `x-version`), and on SIGTERM simply exits, cutting whatever is in flight, unless it
//! is told to shut down gracefully. Its keep-alive idle timeout is configurable so the
//! Node.js keep-alive race (5 s) can be reproduced.
//!
//! It is not a production server and not part of the sidecar: it must stay naive so
//! that every fix lameduck makes is visible against it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Default listen address, as in the container image.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default time the app needs before it can serve.
pub const DEFAULT_STARTUP_DELAY: &str = "5s";
/// Default keep-alive idle timeout (long, like most servers; `5s` mimics Node.js).
pub const DEFAULT_IDLE_TIMEOUT: &str = "120s";
/// Default request body cap in bytes (1 MiB).
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// The longest `?wait=` accepted, so a typo cannot pin a connection for days.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Header naming the pod that served the response.
pub const POD_HEADER: &str = "x-pod";
/// Header naming the version that served the response.
pub const VERSION_HEADER: &str = "x-version";

/// Everything the app needs to run; validated by the binary before anything is bound.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long after start every request answers 500 `starting up`.
    pub startup_delay: Duration,
    /// Open the port only once the startup delay has passed.
    pub listen_after_startup: bool,
    /// `None`: exit at once on SIGTERM (the naive app). `Some(d)`: stop accepting and
    /// let in-flight requests finish for up to `d`.
    pub graceful_shutdown_timeout: Option<Duration>,
    /// Close keep-alive connections idle for this long.
    pub idle_timeout: Duration,
    /// Request bodies above this many bytes get 413.
    pub max_body: u64,
    /// Value of `x-pod`.
    pub pod: String,
    /// Value of `x-version`.
    pub version: String,
}

impl Default for Config {
    /// The binary's defaults, with `POD_NAME`/`VERSION` left empty.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            startup_delay: Duration::from_secs(5),
            listen_after_startup: false,
            graceful_shutdown_timeout: None,
            idle_timeout: Duration::from_secs(120),
            max_body: DEFAULT_MAX_BODY,
            pod: String::new(),
            version: String::new(),
        }
    }
}

/// Errors that stop the app.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the shutdown sequence ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The naive path: the listener and every connection were dropped at once.
    Abrupt,
    /// Graceful shutdown: every in-flight request finished.
    Drained,
    /// Graceful shutdown: the timeout passed with this many connections still open.
    TimedOut {
        /// Connections still open at the deadline.
        open_connections: usize,
    },
}

/// The pod name as Kubernetes would give it: `POD_NAME`, else the hostname.
pub fn pod_name_from_env() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    if let Ok(name) = std::env::var("HOSTNAME")
        && !name.is_empty()
    {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Shared request-handling state.
#[derive(Debug)]
struct App {
    ready_at: Instant,
    max_body: u64,
    pod: HeaderValue,
    version: HeaderValue,
}

impl App {
    fn started(&self) -> bool {
        Instant::now() >= self.ready_at
    }
}

/// Runs the app until `shutdown` resolves, then shuts down as configured.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Exit, Error> {
    let mut shutdown = pin!(shutdown);
    let mut config = config;
    if config.listen_after_startup {
        info!(delay = ?config.startup_delay, "starting up before listening");
        tokio::select! {
            _ = tokio::time::sleep(config.startup_delay) => {}
            _ = &mut shutdown => {
                info!("signal received during startup, exiting");
                return Ok(Exit::Abrupt);
            }
        }
        config.startup_delay = Duration::ZERO;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    serve(listener, config, shutdown).await
}

/// Serves on an already bound `listener` (its `listen` field is ignored): requests
/// answer 500 until `startup_delay` has passed from now.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, Error> {
    let app = Arc::new(App {
        ready_at: Instant::now() + config.startup_delay,
        max_body: config.max_body,
        pod: header_value(&config.pod),
        version: header_value(&config.version),
    });
    let mut shutdown = pin!(shutdown);
    let local = listener.local_addr().unwrap_or(config.listen);
    info!(addr = %local, pod = %config.pod, version = %config.version, "listening");

    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    debug!(%peer, "accepted");
                    connections.spawn(serve_connection(
                        stream,
                        app.clone(),
                        config.idle_timeout,
                        drain_rx.clone(),
                    ));
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);

    let Some(timeout) = config.graceful_shutdown_timeout else {
        info!(
            open_connections = connections.len(),
            "signal received, exiting at once"
        );
        connections.abort_all();
        return Ok(Exit::Abrupt);
    };
    info!(
        open_connections = connections.len(),
        ?timeout,
        "signal received, draining"
    );
    let _ = drain_tx.send(true);
    let deadline = Instant::now() + timeout;
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() {
                info!("drained, exiting");
                return Ok(Exit::Drained);
            },
            _ = tokio::time::sleep_until(deadline) => {
                let open_connections = connections.len();
                warn!(open_connections, "graceful shutdown timed out, exiting");
                connections.abort_all();
                return Ok(Exit::TimedOut { open_connections });
            }
        }
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Per-connection activity, for the keep-alive idle timeout.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// When the connection becomes idle-expired, or `None` while a request runs.
    fn idle_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.epoch + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(last + idle_timeout)
    }
}

/// Marks one request in flight on a connection; stamps the connection's last activity when dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = self.0.epoch.elapsed().as_millis();
        self.0
            .last_done_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Arc<App>,
    idle_timeout: Duration,
    mut drain: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        service_fn(move |req| {
            let guard = InFlight::begin(&activity);
            let app = app.clone();
            async move {
                let response = handle(req, &app).await;
                drop(guard);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = pin!(connection);
    let mut closing = false;
    loop {
        let idle = activity.idle_deadline(idle_timeout);
        // While a request runs, look again after a while: its end restarts the idle clock.
        let wake =
            idle.unwrap_or_else(|| Instant::now() + idle_timeout.min(Duration::from_secs(1)));
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = drain.changed(), if !closing => {
                if changed.is_ok() && *drain.borrow() {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(wake), if !closing => {
                if activity.idle_deadline(idle_timeout).is_some_and(|d| d <= Instant::now()) {
                    debug!("keep-alive idle timeout, closing");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn handle(req: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    let mut response = route(req, app).await;
    let headers = response.headers_mut();
    headers.insert(POD_HEADER, app.pod.clone());
    headers.insert(VERSION_HEADER, app.version.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn route(req: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => return text(StatusCode::OK, "ok\n"),
        "/readyz" if app.started() => return text(StatusCode::OK, "ready\n"),
        "/readyz" => return text(StatusCode::SERVICE_UNAVAILABLE, "starting up\n"),
        _ => {}
    }
    let wait = match parse_wait(req.uri().query()) {
        Ok(wait) => wait,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    if let Err(status) = discard_body(req, app.max_body).await {
        return text(status, status.canonical_reason().unwrap_or("error"));
    }
    if !app.started() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "starting up\n");
    }
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
    }
    text(StatusCode::OK, "ok\n")
}

/// Reads and discards the body, refusing anything above `max_body` with 413.
async fn discard_body(req: Request<Incoming>, max_body: u64) -> Result<(), StatusCode> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(_) => Ok(()),
        Err(error) if error.is::<LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// Parses `wait=SECONDS` (fractional) out of a query string.
fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, &'static str> {
    let Some(query) = query else { return Ok(None) };
    let Some(value) = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == "wait").then_some(v))
    else {
        return Ok(None);
    };
    let seconds: f64 = value.parse().map_err(|_| "invalid wait: not a number\n")?;
    if !seconds.is_finite() || seconds < 0.0 || seconds > MAX_WAIT.as_secs_f64() {
        return Err("invalid wait: must be between 0 and 3600 seconds\n");
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_parsed_from_the_query() {
        assert_eq!(parse_wait(None), Ok(None));
        assert_eq!(parse_wait(Some("a=1")), Ok(None));
        assert_eq!(
            parse_wait(Some("a=1&wait=0.25")),
            Ok(Some(Duration::from_millis(250)))
        );
        assert!(parse_wait(Some("wait=-1")).is_err());
        assert!(parse_wait(Some("wait=NaN")).is_err());
        assert!(parse_wait(Some("wait=abc")).is_err());
        assert!(parse_wait(Some("wait=99999")).is_err());
    }
}
