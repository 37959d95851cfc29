//! Fixtures: the real `demo-app` binary on port 0, and a one-request HTTP/1.1 client.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long any fixture waits for the app before failing the test.
pub(crate) const FIXTURE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a `demo-app` process.
pub(crate) struct DemoApp {
    args: Vec<String>,
    env: Vec<(String, String)>,
    listen: String,
}

impl DemoApp {
    pub(crate) fn new() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            listen: "127.0.0.1:0".to_owned(),
        }
    }

    pub(crate) fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// Starts the process without waiting for it to listen.
    pub(crate) fn spawn(self) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_demo-app"))
            .arg("--listen")
            .arg(&self.listen)
            .args(&self.args)
            .env_remove("POD_NAME")
            .env_remove("VERSION")
            .envs(self.env)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning demo-app");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[demo-app] {line}");
                if line.contains("listening")
                    && let Some(addr) = field(&line, "addr")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        Running {
            child,
            listening: Some(rx),
        }
    }

    /// Starts the process and waits until it listens.
    pub(crate) async fn start(self) -> (Running, SocketAddr) {
        let mut running = self.spawn();
        let addr = running.listening().await;
        (running, addr)
    }
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
}

/// A running `demo-app`, killed when dropped.
pub(crate) struct Running {
    child: Child,
    listening: Option<oneshot::Receiver<SocketAddr>>,
}

impl Running {
    pub(crate) async fn listening(&mut self) -> SocketAddr {
        let rx = self.listening.take().expect("listening() is called once");
        tokio::time::timeout(FIXTURE_TIMEOUT, rx)
            .await
            .expect("demo-app did not listen in time")
            .expect("demo-app exited before listening")
    }

    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().expect("demo-app is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    pub(crate) async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(FIXTURE_TIMEOUT, self.child.wait())
            .await
            .expect("demo-app did not exit in time")
            .expect("waiting for demo-app")
    }
}

/// One response, as the client saw it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

/// Sends one request on a fresh connection.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A loopback port that was free a moment ago (for `--listen-after-startup`).
pub(crate) fn reserve_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local addr")
}
