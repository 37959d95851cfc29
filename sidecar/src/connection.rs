//! One client connection on the serving port, from accept to close.
//!
//! The protocol is sniffed (HTTP/2 prior knowledge or HTTP/1.1), then the connection
//! is driven alongside its watchdog (header and idle deadlines, `crate::watchdog`) and
//! the phase, whose `shuts_down` says when it is shut down gracefully: HTTP/2 at once
//! when the drain starts (GOAWAY), HTTP/1 only once the listener has closed (every
//! response says `Connection: close` meanwhile).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::context::Context;
use crate::watchdog::{ConnState, Deadline};

type TaskContext<'a> = std::task::Context<'a>;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most concurrent HTTP/2 streams per connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// The client socket, replaying sniffed bytes first and reporting reads to the watchdog.
struct ClientIo {
    prefix: Bytes,
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        polled
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Reads just enough to tell HTTP/2 prior knowledge from HTTP/1.
async fn sniff(stream: &mut TcpStream, state: &ConnState) -> io::Result<Option<(Bytes, bool)>> {
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    loop {
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        state.on_read();
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] {
            return Ok(Some((buf.freeze(), false)));
        }
        if buf.len() >= H2_PREFACE.len() {
            return Ok(Some((buf.freeze(), true)));
        }
        buf.reserve(H2_PREFACE.len());
    }
}

/// Serves one accepted connection until it closes, is shut down, or is cut.
pub(crate) async fn serve(mut stream: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let _ = stream.set_nodelay(true);
    let state = Arc::new(ConnState::new());
    let header_timeout = context.config.header_read_timeout;
    let sniffed = tokio::select! {
        sniffed = tokio::time::timeout(header_timeout, sniff(&mut stream, &state)) => sniffed,
        _ = context.cut.cancelled() => return,
    };
    let (prefix, h2) = match sniffed {
        Ok(Ok(Some(sniffed))) => sniffed,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            debug!(%peer, %error, "reading from client failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "client sent no request head in time");
            context.metrics.header_read_timeouts.inc();
            return;
        }
    };
    state.h2.store(h2, Ordering::Relaxed);
    let io = TokioIo::new(ClientIo {
        prefix,
        stream,
        state: state.clone(),
    });
    let service = {
        let context = context.clone();
        let state = state.clone();
        service_fn(move |request| {
            let handled = context.clone().handle(request, peer, state.clone());
            async move { Ok::<_, std::convert::Infallible>(handled.await) }
        })
    };
    if h2 {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(
                u32::try_from(context.config.max_header_size).unwrap_or(u32::MAX),
            );
        let connection = builder.serve_connection(io, service);
        drive(
            connection,
            |c| c.graceful_shutdown(),
            &state,
            &context,
            true,
        )
        .await;
    } else {
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(true)
            .header_read_timeout(None)
            .max_buf_size(
                context
                    .config
                    .max_header_size
                    .max(crate::config::MIN_MAX_HEADER_SIZE),
            );
        builder.max_header_size(context.config.max_header_size);
        let connection = builder.serve_connection(io, service).with_upgrades();
        drive(
            connection,
            |c| c.graceful_shutdown(),
            &state,
            &context,
            false,
        )
        .await;
    }
}

/// Runs a connection next to its watchdog and the phase.
async fn drive<C>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    state: &ConnState,
    context: &Context,
    h2: bool,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let config = &context.config;
    let mut connection = std::pin::pin!(connection);
    let mut phase = context.lifecycle.watch_phase();
    let shuts_down = |p: crate::lifecycle::Phase| p.shuts_down(h2);
    let mut closing = false;
    if shuts_down(*phase.borrow_and_update()) {
        graceful(connection.as_mut());
        closing = true;
    }
    loop {
        let deadline = state
            .next_deadline(config.header_read_timeout, config.idle_timeout)
            .filter(|d| !(closing && matches!(d, Deadline::Idle(_))));
        let wake_at = deadline.map_or_else(|| Instant::now() + config.idle_timeout, Deadline::at);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "client connection ended with an error");
                }
                return;
            }
            _ = context.cut.cancelled() => return,
            changed = phase.changed(), if !closing => {
                if changed.is_err() || shuts_down(*phase.borrow_and_update()) {
                    graceful(connection.as_mut());
                    closing = true;
                }
            }
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {
                match state.next_deadline(config.header_read_timeout, config.idle_timeout) {
                    Some(Deadline::Header(at)) if at <= Instant::now() => {
                        debug!("request head not received in time, closing");
                        context.metrics.header_read_timeouts.inc();
                        return;
                    }
                    Some(Deadline::Idle(at)) if at <= Instant::now() && !closing => {
                        debug!("keep-alive idle timeout, closing");
                        graceful(connection.as_mut());
                        closing = true;
                    }
                    _ => {}
                }
            }
        }
    }
}
