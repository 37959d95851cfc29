//! HTTP/2 prior knowledge (h2c) to the app: a few connections, each carrying many
//! streams, used in turn.
//!
//! Bodies and trailers stream through as frames (gRPC's `grpc-status` is a trailer),
//! with HTTP/2 flow control on both sides, so nothing is buffered whole. A request
//! handed back unsent (the connection was closing) goes again on another connection;
//! one that reached the app is never replayed.
//!
//! The frames the app sends are scanned for GOAWAY (only their 9-byte headers are
//! looked at): a connection the app said GOAWAY on gets no new request, and each one
//! is counted and announced ([`Pool::goaways`]) so that the serving port can relay it to
//! its own HTTP/2 clients.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tracing::debug;

use super::{Body, UpstreamError, connect};
use crate::h2_frames::GoawayScan;
use crate::metrics::{self, Metrics};

/// Connections opened to the app, at most; requests take them in turn.
const CONNECTIONS: usize = 4;
/// The most attempts one request gets (only requests handed back unsent are retried).
const MAX_ATTEMPTS: usize = 3;

/// The app's HTTP/2 connections.
#[derive(Debug)]
pub(crate) struct Pool {
    addr: SocketAddr,
    connect_timeout: Duration,
    metrics: Metrics,
    conns: Mutex<Vec<Conn>>,
    next: AtomicUsize,
    goaways: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct Conn {
    sender: SendRequest<Body>,
    /// The app sent GOAWAY, or a request found the connection closing.
    done: Arc<AtomicBool>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.done.load(Ordering::Acquire) && !self.sender.is_closed()
    }
}

impl Pool {
    pub(crate) fn new(addr: SocketAddr, connect_timeout: Duration, metrics: Metrics) -> Self {
        Self {
            addr,
            connect_timeout,
            metrics,
            conns: Mutex::new(Vec::with_capacity(CONNECTIONS)),
            next: AtomicUsize::new(0),
            goaways: watch::Sender::new(0),
        }
    }

    /// Changes each time the app sends GOAWAY on one of its connections.
    pub(crate) fn goaways(&self) -> watch::Receiver<u64> {
        self.goaways.subscribe()
    }

    pub(crate) async fn send(
        &self,
        mut request: Request<Body>,
        hold_until: Option<Instant>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let mut conn = self.pick(hold_until).await?;
            match conn.sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => {
                    conn.done.store(true, Ordering::Release);
                    let Some(unsent) = error.take_message() else {
                        return Err(UpstreamError::Request(error.into_error()));
                    };
                    debug!(attempt, "request not sent, retrying on another connection");
                    self.metrics
                        .upstream_retries
                        .with_label_values(&[metrics::RETRY_NOT_SENT])
                        .inc();
                    request = unsent;
                }
            }
        }
        Err(UpstreamError::NotSent {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The next connection in turn, opening one while there are fewer than
    /// [`CONNECTIONS`] usable.
    async fn pick(&self, hold_until: Option<Instant>) -> Result<Conn, UpstreamError> {
        let mut conns = self.conns.lock().await;
        conns.retain(Conn::usable);
        if conns.len() < CONNECTIONS {
            let conn = self.open(hold_until).await?;
            conns.push(conn.clone());
            return Ok(conn);
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        Ok(conns[turn].clone())
    }

    async fn open(&self, hold_until: Option<Instant>) -> Result<Conn, UpstreamError> {
        let stream = connect(self.addr, self.connect_timeout, hold_until, &self.metrics).await?;
        let done = Arc::new(AtomicBool::new(false));
        let io = AppIo {
            stream,
            scan: GoawayScan::default(),
            done: done.clone(),
            goaways: self.goaways.clone(),
            metrics: self.metrics.clone(),
        };
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(UpstreamError::Handshake)?;
        let task_done = done.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "HTTP/2 connection to the app ended with an error");
            }
            task_done.store(true, Ordering::Release);
        });
        Ok(Conn { sender, done })
    }
}

/// The socket to the app, its reads scanned for GOAWAY.
struct AppIo {
    stream: TcpStream,
    scan: GoawayScan,
    done: Arc<AtomicBool>,
    goaways: watch::Sender<u64>,
    metrics: Metrics,
}

impl AsyncRead for AppIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(())))
            && this.scan.feed(&buf.filled()[before..]).is_some()
            && !this.done.swap(true, Ordering::AcqRel)
        {
            debug!("the app sent GOAWAY");
            this.metrics.app_goaways.inc();
            this.goaways.send_modify(|count| *count += 1);
        }
        polled
    }
}

impl AsyncWrite for AppIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
