//! The serving certificate, read from PEM files and read again when they change
//! (a Secret volume or cert-manager renewing it), without a restart: new handshakes
//! get the new certificate, open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// A certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The key file holds no usable private key, or it does not match the certificate.
    #[error("{path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The two files and what they held when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

/// The certificate and key files of the server.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Stamp>,
    provider: Arc<CryptoProvider>,
}

impl ReloadingCertificate {
    /// Reads the certificate chain and key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertificateError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = stamp(cert_path, key_path);
        let key = read(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            stamp: RwLock::new(stamp),
            provider,
        })
    }

    /// A TLS 1.2+ server configuration that uses this certificate, with ALPN for
    /// HTTP/2 and HTTP/1.1 (the API server speaks either).
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Reads the files again if they changed. `Ok(true)`: a new certificate is in use.
    /// A broken new pair is refused and the old certificate kept.
    pub fn reload_if_changed(&self) -> Result<bool, CertificateError> {
        let now = stamp(&self.cert_path, &self.key_path);
        if self.stamp.read().map(|s| *s == now).unwrap_or(false) {
            return Ok(false);
        }
        if let Ok(mut stamp) = self.stamp.write() {
            *stamp = now;
        }
        let key = read(&self.cert_path, &self.key_path, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        Ok(true)
    }

    /// Checks the files every `interval` until `stop`; `on_reload` hears each attempt.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
        on_reload: impl Fn(&Result<bool, CertificateError>) + Send,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let this = self.clone();
            // File reads are blocking: off the async workers.
            let result = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            if let Ok(result) = result {
                on_reload(&result);
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|key| key.clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of = |path: &Path| {
        // Follows symlinks: a Secret volume swaps a `..data` link.
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    Stamp(of(cert), of(key))
}

fn read(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertificateError> {
    let bytes = |path: &Path| {
        std::fs::read(path).map_err(|source| CertificateError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes(cert_path)?)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate(cert_path.to_owned()));
    }
    let key_error = |message: String| CertificateError::Key {
        path: key_path.to_owned(),
        message,
    };
    let key = PrivateKeyDer::from_pem_slice(&bytes(key_path)?)
        .map_err(|e| key_error(format!("no PEM private key in it ({e})")))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| key_error(format!("not a key for {}: {e}", cert_path.display())))
}
