//! The gRPC fixtures of the system suite: a Python grpcio app and client (the real
//! gRPC stack and its standard health service, from PyPI), so every suite drives the
//! same server. The app is the repository's example (`examples/grpc/app.py`, also
//! what `lameduck lab --grpc` runs); the client is in `crates/test-support/grpc/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::process::Process;
use crate::system::require_python_modules;

/// The gRPC service the app serves: `Echo`, `Slow`, `Count` (server streaming),
/// `Concat` (client streaming), `Chat` (bidi), methods on raw bytes.
pub const SERVICE: &str = "lameduck.test.Echo";

/// The directory of the client script.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("grpc")
}

/// The example gRPC app.
pub fn app_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/grpc/app.py")
}

/// `python3` able to import grpcio and its health service (the system suite must be
/// selected; a loud failure naming the packages otherwise).
pub fn python() -> PathBuf {
    require_python_modules(&["grpc", "grpc_health"], "grpcio grpcio-health-checking")
}

/// The gRPC app on a port of its own (`extra`: its flags), killed when dropped.
pub async fn start_app(extra: &[&str]) -> (Process, SocketAddr) {
    let mut command = Command::new(python());
    command.arg(app_script()).args(extra);
    let (process, up) = Process::spawn(&mut command, "grpc-app", |line| {
        line.strip_prefix("listening on ")?
            .trim()
            .parse::<u16>()
            .ok()
    });
    let port = process.until_up(up).await;
    (process, SocketAddr::from(([127, 0, 0, 1], port)))
}
