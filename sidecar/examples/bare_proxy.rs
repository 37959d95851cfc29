//! Two hyper HTTP/1.1 connections and nothing else: the floor the sidecar's own
//! per-request cost is measured against (`benches/instructions`). Not a proxy to run:
//! no watchdog, drain, metrics, pool, retries or header rewriting.
//!
//! Each client connection is served by hyper and sends its requests on over one
//! keep-alive connection to the app of its own. That app connection is driven by a
//! task of its own (as the sidecar's are), or with `--inline` inside the client
//! connection's task.
//!
//! ```text
//! bare_proxy LISTEN APP [--inline] [--preserve-header-case]
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;
type AppConnection = client::Connection<TokioIo<TcpStream>, ProxyBody>;

/// How the app connection is driven.
#[derive(Clone, Copy)]
struct Options {
    inline: bool,
    preserve_header_case: bool,
}

/// A client connection's app connection, while no request uses it.
struct App {
    sender: client::SendRequest<ProxyBody>,
    /// Driven by the request that holds it (`--inline`); else its own task drives it.
    connection: Option<Pin<Box<AppConnection>>>,
}

type Slot = Arc<Mutex<Option<App>>>;
type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn connect(app: SocketAddr, options: Options) -> Result<App, Failure> {
    let stream = TcpStream::connect(app).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = client::Builder::new()
        .preserve_header_case(options.preserve_header_case)
        .handshake(TokioIo::new(stream))
        .await?;
    if options.inline {
        return Ok(App {
            sender,
            connection: Some(Box::pin(connection)),
        });
    }
    tokio::spawn(connection);
    Ok(App {
        sender,
        connection: None,
    })
}

async fn forward(
    request: Request<Incoming>,
    slot: Slot,
    app: SocketAddr,
    options: Options,
) -> Result<Response<ProxyBody>, Failure> {
    let taken = slot.lock().ok().and_then(|mut held| held.take());
    let mut held = match taken {
        Some(held) => held,
        None => connect(app, options).await?,
    };
    let request = request.map(BodyExt::boxed_unsync);
    let response = match held.connection.as_mut() {
        Some(connection) => {
            let sender = &mut held.sender;
            let mut ended = false;
            let mut drive = |cx: &mut Context<'_>| {
                if !ended && connection.as_mut().poll(cx).is_ready() {
                    ended = true;
                }
            };
            std::future::poll_fn(|cx| {
                drive(cx);
                sender.poll_ready(cx)
            })
            .await?;
            let mut sent = std::pin::pin!(sender.send_request(request));
            std::future::poll_fn(|cx| {
                drive(cx);
                sent.as_mut().poll(cx)
            })
            .await?
        }
        None => {
            held.sender.ready().await?;
            held.sender.send_request(request).await?
        }
    };
    Ok(response.map(|body| {
        GiveBack {
            body,
            held: Some(held),
            slot,
        }
        .boxed_unsync()
    }))
}

/// The response body; gives the app connection back once it has been read.
struct GiveBack {
    body: Incoming,
    held: Option<App>,
    slot: Slot,
}

impl Body for GiveBack {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(connection) = this.held.as_mut().and_then(|h| h.connection.as_mut())
            && connection.as_mut().poll(cx).is_ready()
        {
            this.held = None;
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if (matches!(polled, Poll::Ready(None)) || this.body.is_end_stream())
            && let Some(mut held) = this.held.take()
        {
            if let Some(connection) = held.connection.as_mut() {
                // Lets the connection take its next request.
                let _ = connection.as_mut().poll(cx);
            }
            if let Ok(mut slot) = this.slot.lock() {
                *slot = Some(held);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn bad_gateway() -> Response<ProxyBody> {
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(app)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bare_proxy LISTEN APP [--inline] [--preserve-header-case]");
        std::process::exit(2);
    };
    let (Ok(listen), Ok(app)) = (listen.parse::<SocketAddr>(), app.parse::<SocketAddr>()) else {
        eprintln!("LISTEN and APP are socket addresses, as 127.0.0.1:8080");
        std::process::exit(2);
    };
    let options = Options {
        inline: args.iter().any(|a| a == "--inline"),
        preserve_header_case: args.iter().any(|a| a == "--preserve-header-case"),
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("binding {listen}: {error}");
            std::process::exit(1);
        }
    };
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let slot: Slot = Arc::default();
            let service = hyper::service::service_fn(move |request| {
                let slot = slot.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        forward(request, slot, app, options)
                            .await
                            .unwrap_or_else(|_| bad_gateway()),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .preserve_header_case(options.preserve_header_case)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
