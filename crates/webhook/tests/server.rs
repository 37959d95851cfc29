//! The real HTTPS server on loopback: TLS 1.2+ with HTTP/1.1 and HTTP/2, the routes,
//! the metrics, and the certificate read again when its files change.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lameduck_manifests::Options;
use lameduck_test_support::files::TempDir;
use lameduck_webhook::{Cluster, Injector, Metrics, ReloadingCertificate, Webhook};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::fixtures::{create, deployment_pod, response};

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().clone(),
    )
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Written aside and renamed in, as a Secret volume swaps its files.
    for (name, text) in [("tls.crt", cert), ("tls.key", key)] {
        let aside = dir.join(format!(".{name}.new"));
        std::fs::write(&aside, text).expect("write");
        std::fs::rename(&aside, dir.join(name)).expect("rename");
    }
}

struct Server {
    address: SocketAddr,
    webhook: Arc<Webhook>,
    stop: CancellationToken,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The webhook serving `cert`, checking its files every 50 ms.
async fn start(name: &str, cert: &str, key: &str) -> (Server, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let base = dir.path("");
    write_pair(&base, cert, key);
    let (cert_path, key_path) = (dir.path("tls.crt"), dir.path("tls.key"));
    let certificate = Arc::new(ReloadingCertificate::load(&cert_path, &key_path).expect("load"));
    let tls = Arc::new(certificate.server_config().expect("tls config"));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).expect("metrics");
    let webhook = Arc::new(Webhook {
        injector: Injector::new(Options::default()),
        cluster: Cluster::none(),
        metrics: metrics.clone(),
        registry,
        ready: AtomicBool::new(true),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    tokio::spawn(
        certificate.watch(
            Duration::from_millis(50),
            stop.clone(),
            move |result| match result {
                Ok(true) => metrics
                    .certificate_reloads
                    .with_label_values(&["reloaded"])
                    .inc(),
                Err(_) => metrics
                    .certificate_reloads
                    .with_label_values(&["failed"])
                    .inc(),
                Ok(false) => {}
            },
        ),
    );
    tokio::spawn(lameduck_webhook::serve(
        listener,
        tls,
        webhook.clone(),
        stop.clone(),
        Duration::from_secs(1),
    ));
    let server = Server {
        address,
        webhook,
        stop,
        _dir: dir,
    };
    (server, base)
}

struct Reply {
    status: StatusCode,
    body: Bytes,
    /// The certificate the server presented.
    peer: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

/// One request over a fresh TLS connection that trusts `roots`, speaking `alpn`.
async fn request(
    address: SocketAddr,
    roots: &[&CertificateDer<'static>],
    alpn: &[u8],
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Reply {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, session) = tls.get_ref();
    let peer = session.peer_certificates().expect("peer certificate")[0].clone();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let request = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let io = TokioIo::new(tls);
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("response")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("response")
    };
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        body,
        peer,
        alpn,
    }
}

/// Requests to one server over fresh connections that trust `roots`.
struct Client {
    address: SocketAddr,
    roots: Vec<CertificateDer<'static>>,
}

impl Client {
    fn new(server: &Server, roots: &[&CertificateDer<'static>]) -> Self {
        Self {
            address: server.address,
            roots: roots.iter().map(|r| (*r).clone()).collect(),
        }
    }

    async fn send(&self, alpn: &[u8], method: Method, path: &str, body: Vec<u8>) -> Reply {
        let roots: Vec<&CertificateDer<'static>> = self.roots.iter().collect();
        request(self.address, &roots, alpn, method, path, body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(b"http/1.1", Method::GET, path, Vec::new()).await
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Reply {
        self.send(b"http/1.1", Method::POST, path, body).await
    }
}

#[tokio::test]
async fn admissions_are_answered_over_http1_and_http2_and_counted() {
    let (cert, key, der) = certificate();
    let (server, _) = start("webhook-serve", &cert, &key).await;
    let client = Client::new(&server, &[&der]);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let reply = client
            .send(alpn, Method::POST, "/mutate", create(&deployment_pod()))
            .await;
        assert_eq!(reply.alpn.as_deref(), Some(alpn));
        assert_eq!(reply.status, StatusCode::OK);
        let review: Value = serde_json::from_slice(&reply.body).expect("json");
        let response = response(&review);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_some(), "{response}");
    }
    assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(client.get("/readyz").await.status, StatusCode::OK);
    let metrics = client.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for line in [
        "lameduck_webhook_admissions_total{outcome=\"injected\"} 2",
        "lameduck_webhook_admissions_total{outcome=\"refused\"} 0",
        "lameduck_webhook_admission_duration_seconds_count{outcome=\"injected\"} 2",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    server
        .webhook
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        client.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let (cert, key, der) = certificate();
    let (server, _) = start("webhook-bad", &cert, &key).await;
    let client = Client::new(&server, &[&der]);
    let garbage = client.post("/mutate", b"{".to_vec()).await;
    assert_eq!(
        garbage.status,
        StatusCode::OK,
        "an AdmissionReview saying why"
    );
    let review: Value = serde_json::from_slice(&garbage.body).expect("json");
    assert_eq!(response(&review)["allowed"], false);
    let huge = client.post("/mutate", vec![b' '; 5 << 20]).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        client.get("/mutate").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(client.get("/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_refused() {
    let (cert_a, key_a, der_a) = certificate();
    let (cert_b, key_b, der_b) = certificate();
    let (server, dir) = start("webhook-reload", &cert_a, &key_a).await;
    let client = Client::new(&server, &[&der_a, &der_b]);
    assert_eq!(client.get("/healthz").await.peer, der_a);
    write_pair(&dir, &cert_b, &key_b);
    let mut served = false;
    for _ in 0..100 {
        if client.get("/healthz").await.peer == der_b {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the renewed certificate was not served within 5 s");
    // A key that does not match the certificate: refused, the renewed pair stays.
    write_pair(&dir, &cert_a, &key_b);
    let reloads = &server.webhook.metrics.certificate_reloads;
    for _ in 0..100 {
        if reloads.with_label_values(&["failed"]).get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloads.with_label_values(&["failed"]).get() > 0);
    assert_eq!(reloads.with_label_values(&["reloaded"]).get(), 1);
    assert_eq!(client.get("/healthz").await.peer, der_b);
}
