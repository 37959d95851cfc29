//! One client connection on the serving port, from accept to close.
//!
//! The protocol is sniffed (HTTP/2 prior knowledge or HTTP/1.1), then the connection
//! is driven alongside its watchdog (header and idle deadlines, `crate::watchdog`) and
//! the phase, whose `shuts_down` says when it is shut down gracefully: HTTP/2 at once
//! when the drain starts (GOAWAY), HTTP/1 only once the listener has closed (every
//! response says `Connection: close` meanwhile). A GOAWAY the app sends on one of its
//! HTTP/2 connections is relayed as a graceful shutdown of every HTTP/2 client
//! connection. HTTP/1.1 header names keep their case both ways.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use crate::context::Context;
use crate::h2_frames::{CLIENT_PREFACE, GoawayScan, StrayWindowUpdates};
use crate::watchdog::{ConnState, Deadline, Timeouts};

type TaskContext<'a> = std::task::Context<'a>;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = CLIENT_PREFACE;
/// Bytes read from an HTTP/2 client at a time (before the frame filter).
const H2_READ_CHUNK: usize = 16 * 1024;
/// The most concurrent HTTP/2 streams per connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// How long an HTTP/2 connection that sent no request in time has, after our GOAWAY,
/// before it is closed regardless.
const H2_GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// An HTTP/1 keep-alive connection idle this long, with nothing half-done, is parked:
/// hyper's state and buffers (about 20 KiB) are dropped until the client sends again.
/// Short enough that idle pools cost little, long enough that a busy connection is
/// never taken apart between two requests.
const H1_PARK_AFTER: Duration = Duration::from_millis(200);

/// The client socket, replaying sniffed bytes first and reporting reads to the watchdog.
/// On HTTP/2 its bytes pass through the GOAWAY bookkeeping of `crate::h2_frames`.
struct ClientIo {
    source: Source,
    h2: Option<H2Frames>,
}

/// Where a client's bytes come from: the sniffed prefix, then the socket.
struct Source {
    prefix: Bytes,
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl Source {
    fn poll_read(
        &mut self,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        polled
    }
}

/// The HTTP/2 frames seen on a client connection, both ways.
struct H2Frames {
    /// Our writes, scanned for GOAWAY.
    sent: GoawayScan,
    /// We have sent GOAWAY: from now on the client's bytes go through the filter.
    goaway_sent: bool,
    /// The client's bytes, minus stray WINDOW_UPDATEs.
    received: StrayWindowUpdates,
    /// Filtered bytes not yet handed to hyper.
    pending: BytesMut,
}

impl H2Frames {
    fn new() -> Self {
        Self {
            sent: GoawayScan::default(),
            goaway_sent: false,
            received: StrayWindowUpdates::new(),
            pending: BytesMut::new(),
        }
    }

    fn wrote(&mut self, bytes: &[u8]) {
        if self.sent.feed(bytes).is_some() {
            self.goaway_sent = true;
        }
    }

    /// Reads for hyper: straight into its buffer until we have sent GOAWAY (nothing
    /// is dropped before), then through the filter.
    fn poll_read(
        &mut self,
        source: &mut Source,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if !self.goaway_sent {
                let before = buf.filled().len();
                std::task::ready!(source.poll_read(cx, buf))?;
                self.received.pass(&buf.filled()[before..]);
                return Poll::Ready(Ok(()));
            }
            let mut raw = [std::mem::MaybeUninit::<u8>::uninit(); H2_READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut raw);
            std::task::ready!(source.poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            self.received.filter(read.filled(), &mut self.pending);
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let ClientIo { source, h2 } = self.get_mut();
        match h2 {
            Some(frames) => frames.poll_read(source, cx, buf),
            None => source.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.source.stream).poll_write(cx, buf);
        this.source.state.on_write(polled.is_pending());
        if let (Poll::Ready(Ok(n)), Some(frames)) = (&polled, this.h2.as_mut()) {
            frames.wrote(&buf[..*n]);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.source.stream).poll_write_vectored(cx, bufs);
        this.source.state.on_write(polled.is_pending());
        if let (Poll::Ready(Ok(n)), Some(frames)) = (&polled, this.h2.as_mut()) {
            let mut left = *n;
            for slice in bufs {
                let take = left.min(slice.len());
                frames.wrote(&slice[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.source.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let source = &mut self.get_mut().source;
        let polled = Pin::new(&mut source.stream).poll_flush(cx);
        source.state.on_write(polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().source.stream).poll_shutdown(cx)
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
    let source = Source {
        prefix,
        stream,
        state: state.clone(),
    };
    // Boxed: the task itself stays small while an HTTP/1 connection is parked.
    if h2 {
        Box::pin(serve_h2(source, peer, &state, &context)).await;
    } else {
        serve_h1(source, peer, &state, &context).await;
    }
}

/// The service hyper calls for each request of one connection.
fn service(
    context: Arc<Context>,
    peer: SocketAddr,
    state: Arc<ConnState>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::upstream::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<http::Response<crate::upstream::Body>, std::convert::Infallible>,
    > + Send,
> + Clone
+ Unpin {
    let peer = crate::proxy::Peer::new(peer);
    service_fn(move |request| {
        let handled = context.clone().handle(request, peer.clone(), state.clone());
        async move { Ok::<_, std::convert::Infallible>(handled.await) }
    })
}

async fn serve_h2(
    source: Source,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    context: &Arc<Context>,
) {
    let io = TokioIo::new(ClientIo {
        source,
        h2: Some(H2Frames::new()),
    });
    // No keep-alive or adaptive-window PINGs: `h2_frames` takes the first PING
    // ACK after our GOAWAY to be the shutdown PING's.
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(context.config.max_header_size).unwrap_or(u32::MAX));
    let connection = builder.serve_connection(io, service(context.clone(), peer, state.clone()));
    let mut connection = std::pin::pin!(connection);
    drive(
        connection.as_mut(),
        |c| c.graceful_shutdown(),
        state,
        context,
        true,
        None,
    )
    .await;
}

/// Serves an HTTP/1 connection: hyper while there is something to do, the bare socket
/// while it is parked (idle past [`H1_PARK_AFTER`] with nothing half-done). Parking
/// drops hyper's connection state, its read and write buffers and the request future's
/// slot; the next byte from the client builds them again, replaying any bytes hyper
/// had read but not parsed.
async fn serve_h1(
    mut source: Source,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    context: &Arc<Context>,
) {
    let config = &context.config;
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .preserve_header_case(true)
        .header_read_timeout(None)
        .max_buf_size(
            config
                .max_header_size
                .max(crate::config::MIN_MAX_HEADER_SIZE),
        );
    builder.max_header_size(config.max_header_size);
    loop {
        let io = TokioIo::new(ClientIo { source, h2: None });
        let mut connection = Box::new(
            builder
                .serve_connection(io, service(context.clone(), peer, state.clone()))
                .with_upgrades(),
        );
        let driven = Box::pin(drive(
            Pin::new(&mut *connection),
            |c| c.graceful_shutdown(),
            state,
            context,
            false,
            Some(H1_PARK_AFTER),
        ))
        .await;
        if driven == Driven::Ended {
            return;
        }
        // Everything of hyper's is dropped here; only the socket and unparsed bytes
        // are kept (an empty read buffer would still pin its allocation).
        let Some((io, unparsed)) = connection.into_parts().map(|p| (p.io, p.read_buf)) else {
            return; // upgraded: the tunnel has the socket
        };
        source = io.into_inner().source;
        if !unparsed.is_empty() {
            // Bytes of a next request head hyper read behind the last one: serve them
            // at once, under the header clock.
            source.prefix = unparsed;
            state.on_read();
            continue;
        }
        drop(unparsed);
        if !park(&source.stream, state, context).await {
            return;
        }
    }
}

/// Waits on a parked connection's bare socket; `true` when the client sent something
/// (or closed: hyper reads the end), `false` when the connection is to be closed
/// (idle timeout, shutdown, cut).
async fn park(stream: &TcpStream, state: &ConnState, context: &Context) -> bool {
    context.metrics.connections_parked.inc();
    let mut phase = context.lifecycle.watch_phase();
    let idle_until = state.idle_deadline(context.config.idle_timeout);
    let resumed = if phase.borrow_and_update().shuts_down(false) {
        false
    } else {
        tokio::select! {
            readable = stream.readable() => readable.is_ok(),
            _ = context.cut.cancelled() => false,
            _ = phase.wait_for(|p| p.shuts_down(false)) => false,
            _ = tokio::time::sleep_until(idle_until) => false,
        }
    };
    context.metrics.connections_parked.dec();
    resumed
}

/// How [`drive`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// The connection is over.
    Ended,
    /// The HTTP/1 connection is parkable: take it apart.
    Park,
}

/// Runs a connection next to its watchdog and the phase.
///
/// The futures it waits on besides the connection live as long as it does, and its
/// one timer is set lazily: never later than the next deadline, but left where it is
/// when a deadline moves later (it then fires early, and is set again). The events
/// of a busy connection's requests thus neither wake this task nor touch the timer.
async fn drive<C>(
    mut connection: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    state: &ConnState,
    context: &Context,
    h2: bool,
    park_after: Option<Duration>,
) -> Driven
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let config = &context.config;
    let timeouts = Timeouts {
        header: config.header_read_timeout,
        idle: config.idle_timeout,
        send: config.response_send_timeout,
    };
    state.set_deadline_hints(&timeouts, park_after);
    // With nothing due, the timer looks again this soon (a request in flight).
    let recheck = park_after.map_or(config.idle_timeout, |park| park.min(config.idle_timeout));
    let mut phase = context.lifecycle.watch_phase();
    let shuts_down = |p: crate::lifecycle::Phase| p.shuts_down(h2);
    let mut closing = false;
    // Set when a connection that went away gracefully is to be dropped regardless.
    let mut hard_close_at: Option<Instant> = None;
    let mut app_goaways = context.app_goaways.clone();
    app_goaways.borrow_and_update();
    let accepted_in = *phase.borrow_and_update();
    // Set while a connection accepted during the shutdown delay awaits its first request.
    let goaway_after_first_request = h2 && accepted_in.h2_goaway_after_first_request();
    if shuts_down(accepted_in) && !goaway_after_first_request {
        graceful(connection.as_mut());
        closing = true;
    }
    let mut shutdown = std::pin::pin!(async {
        loop {
            if phase.changed().await.is_err() || shuts_down(*phase.borrow_and_update()) {
                return;
            }
        }
    });
    // Only HTTP/2 clients hear of the app's GOAWAYs; ends when the app sends one.
    let mut app_goaway = std::pin::pin!(async {
        if h2 && app_goaways.changed().await.is_ok() {
            return;
        }
        std::future::pending::<()>().await;
    });
    let mut cut = std::pin::pin!(context.cut.cancelled());
    let mut woken = std::pin::pin!(state.wake.notified());
    let mut timer = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
    let mut armed: Option<Instant> = None;
    loop {
        // Set the timer no later than the next deadline; read the state again after
        // publishing it (an event in between either saw it or is seen here).
        loop {
            let park = park_after.filter(|_| !closing);
            let deadline = state
                .next_deadline(&timeouts, park)
                .filter(|d| !(closing && matches!(d, Deadline::Idle(_))))
                .map(Deadline::at);
            let due = match (deadline, hard_close_at) {
                (Some(at), Some(hard)) => Some(at.min(hard)),
                (at, hard) => at.or(hard),
            };
            let due = match (due, armed) {
                (Some(due), Some(at)) if due >= at => break,
                (None, Some(_)) => break,
                (Some(due), _) => due,
                (None, None) => Instant::now() + recheck,
            };
            timer.as_mut().reset(due);
            armed = Some(due);
            state.armed(armed);
        }
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "client connection ended with an error");
                }
                return Driven::Ended;
            }
            () = &mut cut => return Driven::Ended,
            () = &mut woken => {
                woken.set(state.wake.notified());
                if goaway_after_first_request && !closing && state.first_request_seen() {
                    graceful(connection.as_mut());
                    closing = true;
                }
            }
            () = &mut shutdown, if !closing => {
                graceful(connection.as_mut());
                closing = true;
            }
            () = &mut app_goaway, if !closing => {
                debug!("the app sent GOAWAY, relaying it");
                context.metrics.goaways_relayed.inc();
                graceful(connection.as_mut());
                closing = true;
            }
            () = &mut timer => {
                armed = None;
                state.armed(None);
                let now = Instant::now();
                if hard_close_at.is_some_and(|at| at <= now) {
                    return Driven::Ended;
                }
                match state.next_deadline(&timeouts, park_after.filter(|_| !closing)) {
                    Some(Deadline::Header(at)) if at <= now && h2 => {
                        // No request on a new HTTP/2 connection: GOAWAY, then close
                        // once it had a moment to reach the client.
                        debug!("no request in time on an HTTP/2 connection, going away");
                        context.metrics.header_read_timeouts.inc();
                        state.clear_head_clock();
                        if !closing {
                            graceful(connection.as_mut());
                            closing = true;
                        }
                        hard_close_at = Some(now + H2_GOAWAY_GRACE);
                    }
                    Some(Deadline::Header(at)) if at <= now => {
                        debug!("request head not received in time, closing");
                        context.metrics.header_read_timeouts.inc();
                        return Driven::Ended;
                    }
                    Some(Deadline::Send(at)) if at <= now => {
                        debug!("the client read nothing within the send timeout, closing");
                        context.metrics.response_send_timeouts.inc();
                        return Driven::Ended;
                    }
                    Some(Deadline::Idle(at)) if at <= now && !closing => {
                        debug!("keep-alive idle timeout, closing");
                        graceful(connection.as_mut());
                        closing = true;
                    }
                    Some(Deadline::Park(at)) if at <= now => return Driven::Park,
                    _ => {}
                }
            }
        }
    }
}
