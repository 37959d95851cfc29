//! Connections to the app, in the protocol each request goes with (`config::Wire`):
//! an HTTP/1.1 keep-alive pool (`http1`) and a few multiplexed HTTP/2 prior-knowledge
//! connections (`h2`). Both connect the same way ([`connect`]): refused connects are
//! retried while a request is held for a starting app, and only then.

mod h2;
mod http1;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

pub use http1::Lease;

use crate::config::Wire;
use crate::metrics::Metrics;

/// Errors carried by bodies flowing through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy handles.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// `EMFILE` and `ENFILE` on Linux: the process's or the system's open-file limit.
const OUT_OF_FILES: [i32; 2] = [24, 23];

/// Pause between connection attempts while the app is starting.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The app refused the connection or the connect failed.
    #[error("connecting to the app at {addr}")]
    Connect {
        /// The app's address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The sidecar itself is out of file descriptors (its own fault, not the app's).
    #[error("no file descriptor left to connect to the app at {addr}")]
    OutOfFiles {
        /// The app's address.
        addr: SocketAddr,
        /// The socket error (EMFILE or ENFILE).
        #[source]
        source: std::io::Error,
    },
    /// The connect did not finish in time.
    #[error("connecting to the app at {addr} timed out")]
    ConnectTimeout {
        /// The app's address.
        addr: SocketAddr,
    },
    /// The HTTP handshake failed (for HTTP/2: the app does not speak it).
    #[error("handshake with the app failed")]
    Handshake(#[source] hyper::Error),
    /// The request failed after it was (at least partly) sent.
    #[error("the app did not answer")]
    Request(#[source] hyper::Error),
    /// Every attempt found its connection closing and handed the request back unsent.
    #[error("the app closed every connection before the request was sent ({attempts} attempts)")]
    NotSent {
        /// Attempts made.
        attempts: usize,
    },
}

/// How the sidecar connects to the app.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Pooled HTTP/1.1 connections idle longer than this are not reused.
    pub idle_timeout: Duration,
    /// HTTP/1.1 connections open or opening at most; further requests wait in line.
    pub max_connections: usize,
}

/// The app, reached over HTTP/1.1 or HTTP/2 as each request needs.
#[derive(Debug)]
pub struct Upstream {
    http1: http1::Pool,
    h2: h2::Pool,
}

impl Upstream {
    /// The pools for the app at `addr`.
    pub fn new(addr: SocketAddr, settings: Settings, metrics: Metrics) -> Self {
        Self {
            http1: http1::Pool::new(addr, settings, metrics.clone()),
            h2: h2::Pool::new(addr, settings.connect_timeout, metrics),
        }
    }

    /// Sends `request` over `wire`. While `hold_until` has not passed, refused connects
    /// are retried (nothing was sent, so this is safe for any method). An HTTP/1.1
    /// response comes with the lease of its connection, to [`release`](Self::release)
    /// once the response has been read to its end.
    pub async fn send(
        &self,
        request: Request<Body>,
        hold_until: Option<Instant>,
        wire: Wire,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        match wire {
            Wire::Http1 => {
                let (response, lease) = self.http1.send(request, hold_until).await?;
                Ok((response, Some(lease)))
            }
            // Boxed: the HTTP/1.1 path's future, moved with every request, stays small.
            Wire::H2c => Ok((Box::pin(self.h2.send(request, hold_until)).await?, None)),
        }
    }

    /// Returns an HTTP/1.1 connection whose response has been read completely.
    pub fn release(&self, lease: Lease) {
        self.http1.release(lease);
    }

    /// Counts the GOAWAYs the app has sent on its HTTP/2 connections; changes each time
    /// (the serving port relays them to its HTTP/2 clients).
    pub fn app_goaways(&self) -> watch::Receiver<u64> {
        self.h2.goaways()
    }
}

/// Connects to the app, retrying refused or timed-out connects every 50 ms until
/// `hold_until` (only while a request is held for a starting app).
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    hold_until: Option<Instant>,
    metrics: &Metrics,
) -> Result<TcpStream, UpstreamError> {
    loop {
        let error = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(source))
                if source
                    .raw_os_error()
                    .is_some_and(|code| OUT_OF_FILES.contains(&code)) =>
            {
                // Not the app's failure: the connect never left this process.
                return Err(UpstreamError::OutOfFiles { addr, source });
            }
            Ok(Err(source)) => UpstreamError::Connect { addr, source },
            Err(_) => UpstreamError::ConnectTimeout { addr },
        };
        metrics.upstream_connect_errors.inc();
        match hold_until {
            Some(until) if Instant::now() + CONNECT_RETRY_PAUSE < until => {
                tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
            }
            _ => return Err(error),
        }
    }
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
