//! Small HTTP/1.1 clients on hyper's connection API: one request on a fresh
//! connection, or a keep-alive connection to send several on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::FIXTURE_TIMEOUT;

/// One response, as the client saw it.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: u16,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether it said `Connection: close`.
    pub fn closes(&self) -> bool {
        self.headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    }
}

/// A keep-alive HTTP/1.1 client connection.
#[derive(Debug)]
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { sender, addr })
    }

    /// Whether the connection can still be used.
    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: impl AsRef<[u8]>,
    ) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::copy_from_slice(body.as_ref())))
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

/// One bodiless request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Reply, String> {
    request_with_body(addr, method, path, []).await
}

/// One request with `body` on a fresh connection.
pub async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: impl AsRef<[u8]>,
) -> Result<Reply, String> {
    Client::connect(addr).await?.send(method, path, body).await
}

/// `GET path`, failing the test if there is no response.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Polls `path` until it answers `status`.
pub async fn wait_for_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + FIXTURE_TIMEOUT;
    while get(addr, path).await.status != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
