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

    /// Starts the sidecar and waits until it has bound both ports.
    pub(crate) async fn start(self) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lameduck-sidecar"));
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
