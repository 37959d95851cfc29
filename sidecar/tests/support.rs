//! Fixtures: the real `lameduck-sidecar` binary on port 0. The demo app on a real
//! socket, the clients and process handling are the shared ones (`lameduck-test-support`).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};

pub(crate) use lameduck_test_support::app::{Reserved, app_config, start_app};
use lameduck_test_support::http::wait_for_status;
pub(crate) use lameduck_test_support::http::{Client, get, request};
use lameduck_test_support::process::{Process, log_field};
use tokio::process::Command;

/// Builds a sidecar process.
pub(crate) struct Sidecar {
    args: Vec<String>,
    admin: String,
    open_files: Option<u32>,
}

impl Sidecar {
    pub(crate) fn new(upstream: SocketAddr) -> Self {
        Self {
            args: vec![
                "--listen=127.0.0.1:0".to_owned(),
                format!("--upstream={upstream}"),
            ],
            admin: "127.0.0.1:0".to_owned(),
            open_files: None,
        }
    }

    /// Runs the sidecar under `ulimit -n limit`.
    pub(crate) fn open_files(mut self, limit: u32) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Binds the admin port on `ip` (port 0) instead of loopback.
    pub(crate) fn admin(mut self, ip: std::net::IpAddr) -> Self {
        self.admin = SocketAddr::new(ip, 0).to_string();
        self
    }

    pub(crate) fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Starts the sidecar and waits until it has bound both ports.
    pub(crate) async fn start(self) -> Running {
        let binary = env!("CARGO_BIN_EXE_lameduck-sidecar");
        let mut command = match self.open_files {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        command
            .args(&self.args)
            .arg(format!("--admin={}", self.admin))
            .env(lameduck_contract::env::LOG, "info");
        let (process, up) = Process::spawn(&mut command, "sidecar", |line| {
            if !line.contains(" bound") {
                return None;
            }
            Some((log_field(line, "listen")?, log_field(line, "admin")?))
        });
        let (listen, admin) = process.until_up(up).await;
        Running {
            process,
            listen,
            admin,
        }
    }
}

/// A running sidecar, killed when dropped.
pub(crate) struct Running {
    process: Process,
    pub(crate) listen: SocketAddr,
    pub(crate) admin: SocketAddr,
}

impl Deref for Running {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Running {
    /// The serving addresses of the `--listener`s, in order (from the log).
    pub(crate) fn listeners(&self) -> Vec<SocketAddr> {
        self.log()
            .lines()
            .filter(|line| line.contains(" listener bound"))
            .filter_map(|line| log_field(line, "listen"))
            .collect()
    }

    /// The value of one metric series on the admin port.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = get(self.admin, lameduck_contract::admin::METRICS)
            .await
            .text();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    }
}

/// Polls `/ready` until it answers `status`.
pub(crate) async fn wait_ready(admin: SocketAddr, status: u16) {
    wait_for_status(admin, lameduck_contract::admin::READY, status).await;
}

/// An in-process HTTP app speaking HTTP/2 prior knowledge (and HTTP/1.1 unless
/// `h2_only`): it answers every request with the request's version in `x-version`,
/// the request body back in two DATA frames, and the trailers `grpc-status: 0` and
/// `x-trailer: yes`. Notifying `goaway` makes it shut every connection down
/// gracefully (HTTP/2 GOAWAY).
pub(crate) struct H2App {
    pub(crate) addr: SocketAddr,
    pub(crate) goaway: std::sync::Arc<tokio::sync::Notify>,
}

pub(crate) async fn start_h2_app(h2_only: bool) -> H2App {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let goaway = std::sync::Arc::new(tokio::sync::Notify::new());
    let shutdown = goaway.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        let body = request.into_body().collect().await?.to_bytes();
                        let half = body.len() / 2;
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        trailers.insert("x-trailer", http::HeaderValue::from_static("yes"));
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(Frame::data(body.slice(..half))),
                            Ok(Frame::data(body.slice(half..))),
                            Ok(Frame::trailers(trailers)),
                        ];
                        let response = http::Response::builder()
                            .header("x-version", version)
                            .body(StreamBody::new(futures_util::stream::iter(frames)))
                            .expect("response");
                        Ok::<_, hyper::Error>(response)
                    },
                );
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if h2_only {
                    builder = builder.http2_only();
                }
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = shutdown.notified() => connection.as_mut().graceful_shutdown(),
                }
                let _ = connection.await;
            });
        }
    });
    H2App { addr, goaway }
}

/// An HTTP/2 prior-knowledge client connection to `addr`; the task ends when the
/// connection does (`Ok` for a graceful close).
pub(crate) async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c prior-knowledge handshake");
    (sender, tokio::spawn(connection))
}

/// Writes `send` and reads back exactly `expect` within 2 s.
pub(crate) async fn exchange(
    stream: &mut tokio::net::TcpStream,
    send: &[u8],
    expect: &[u8],
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(send).await.is_err() {
        return false;
    }
    let mut reply = vec![0u8; expect.len()];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stream.read_exact(&mut reply),
    );
    matches!(read.await, Ok(Ok(_))) && reply == expect
}

/// Reads an HTTP/1.1 head (up to the blank line) from `stream`; none if the peer
/// closes first (the sidecar's TCP app check does).
pub(crate) async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}
