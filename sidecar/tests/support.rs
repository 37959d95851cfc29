//! Fixtures: the real `lameduck-sidecar` binary on port 0, the demo app on a real
//! socket (started in-process, possibly later than the sidecar), and small clients.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long any fixture waits before failing the test.
pub(crate) const FIXTURE_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that is bound but not listening: connects are refused until
/// [`Reserved::start_app`] turns it into the app's listener.
pub(crate) struct Reserved {
    socket: TcpSocket,
    pub(crate) addr: SocketAddr,
}

impl Reserved {
    pub(crate) fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        Self { socket, addr }
    }

    /// Starts the demo app on this port; it stops when the returned sender is dropped.
    pub(crate) fn start_app(self, config: demo_app::Config) -> AppHandle {
        let listener = self.socket.listen(1024).expect("listen");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = demo_app::serve(listener, config, async {
                let _ = stopped.await;
            })
            .await;
        });
        AppHandle {
            addr: self.addr,
            _stop: stop,
        }
    }
}

/// A running demo app.
pub(crate) struct AppHandle {
    pub(crate) addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// The demo app's configuration for tests: ready at once, named `test-pod`.
pub(crate) fn app_config() -> demo_app::Config {
    demo_app::Config {
        startup_delay: Duration::ZERO,
        pod: "test-pod".to_owned(),
        version: "1".to_owned(),
        ..demo_app::Config::default()
    }
}

/// Starts the demo app now.
pub(crate) fn start_app(config: demo_app::Config) -> AppHandle {
    Reserved::new().start_app(config)
}

/// Builds a sidecar process.
pub(crate) struct Sidecar {
    args: Vec<String>,
    admin: String,
}

impl Sidecar {
    pub(crate) fn new(upstream: SocketAddr) -> Self {
        Self {
            args: vec![
                "--listen=127.0.0.1:0".to_owned(),
                format!("--upstream={upstream}"),
            ],
            admin: "127.0.0.1:0".to_owned(),
        }
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

    pub(crate) async fn start(self) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lameduck-sidecar"))
            .args(&self.args)
            .arg(format!("--admin={}", self.admin))
            .env("LAMEDUCK_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning lameduck-sidecar");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = oneshot::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let log_writer = log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[sidecar] {line}");
                if let Ok(mut log) = log_writer.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                if line.contains(" bound")
                    && let (Some(listen), Some(admin)) =
                        (field(&line, "listen"), field(&line, "admin"))
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((listen, admin));
                }
            }
        });
        let (listen, admin) = tokio::time::timeout(FIXTURE_TIMEOUT, rx)
            .await
            .expect("the sidecar did not bind in time")
            .expect("the sidecar exited before binding");
        Running {
            child,
            listen,
            admin,
            log,
        }
    }
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
}

/// A running sidecar, killed when dropped.
pub(crate) struct Running {
    child: Child,
    pub(crate) listen: SocketAddr,
    pub(crate) admin: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Running {
    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the sidecar is running");
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
            .expect("the sidecar did not exit in time")
            .expect("waiting for the sidecar")
    }

    /// Whether the process has exited (without waiting).
    pub(crate) fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The value of one metric series on the admin port.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = get(self.admin, "/metrics").await.text();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
    }
}

/// One response, as the client saw it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn closes(&self) -> bool {
        self.headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub(crate) struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { sender, addr })
    }

    pub(crate) fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &'static [u8],
    ) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::from_static(body)))
            .map_err(|e| format!("building request: {e}"))?;
        let response = self
            .sender
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
}

/// One request on a fresh connection.
pub(crate) async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Reply, String> {
    Client::connect(addr).await?.send(method, path, b"").await
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Polls `/ready` until it answers `status`.
pub(crate) async fn wait_ready(admin: SocketAddr, status: u16) {
    let deadline = tokio::time::Instant::now() + FIXTURE_TIMEOUT;
    while get(admin, "/ready").await.status != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
