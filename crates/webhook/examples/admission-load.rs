//! A local client for the webhook benchmark (benches/webhook/run.sh): posts one
//! AdmissionReview body over CONNECTIONS TLS connections (HTTP/1.1 keep-alive, as the
//! API server's client reuses them) for SECONDS, closed loop, and prints one JSON line:
//! requests, admissions per second, and latency percentiles in milliseconds. Every
//! answer is checked: 200, an AdmissionReview, allowed, with a patch.
//!
//! usage: admission-load ADDR REVIEW.json CONNECTIONS SECONDS [RATE]
//! (RATE: requests per second in all, paced; none: as fast as answered)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

/// Accepts any server certificate: the bench serves a throwaway self-signed one.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn connection(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    body: Bytes,
    until: Instant,
    interval: Option<Duration>,
) -> Result<Vec<u64>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    let mut next = Instant::now();
    while Instant::now() < until {
        if let Some(interval) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += interval;
        }
        let request = http::Request::post("/mutate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        latencies.push(started.elapsed().as_micros() as u64);
        let review: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        if status != 200
            || review["response"]["allowed"] != true
            || review["response"]["patch"].is_null()
        {
            return Err(format!("unexpected answer {status}: {review}"));
        }
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, review, connections, seconds, rest @ ..] = args.as_slice() else {
        return Err("usage: admission-load ADDR REVIEW.json CONNECTIONS SECONDS [RATE]".to_owned());
    };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let body = Bytes::from(std::fs::read(review).map_err(|e| format!("{review}: {e}"))?);
    let connections: u32 = connections
        .parse()
        .map_err(|e| format!("{connections}: {e}"))?;
    let seconds: u64 = seconds.parse().map_err(|e| format!("{seconds}: {e}"))?;
    let rate: Option<f64> = rest
        .first()
        .map(|r| r.parse().map_err(|e| format!("{r}: {e}")))
        .transpose()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let config = Arc::new(config);
    let interval = rate.map(|r| Duration::from_secs_f64(f64::from(connections) / r));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(connection(
                addr,
                config.clone(),
                body.clone(),
                until,
                interval,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let quantile = |q: f64| {
        let index = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len().max(1)) - 1;
        all.get(index).map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(),
            "seconds": elapsed,
            "per_second": all.len() as f64 / elapsed,
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
            "p999_ms": quantile(0.999),
            "max_ms": quantile(1.0),
            "body_bytes": body.len(),
        })
    );
    Ok(())
}
