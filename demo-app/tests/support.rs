//! Fixtures: the real `demo-app` binary on port 0. Clients and process handling are
//! the shared ones (`lameduck-test-support`).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};

pub(crate) use lameduck_test_support::http::{get, request_with_body as request};
use lameduck_test_support::process::{Process, log_field};
use tokio::process::Command;
use tokio::sync::oneshot;

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
        let mut command = Command::new(env!("CARGO_BIN_EXE_demo-app"));
        command
            .arg("--listen")
            .arg(&self.listen)
            .args(&self.args)
            .env_remove("POD_NAME")
            .env_remove("VERSION")
            .envs(self.env)
            .env("RUST_LOG", "info");
        let (process, listening) = Process::spawn(&mut command, "demo-app", |line| {
            if line.contains("listening") {
                log_field(line, "addr")
            } else {
                None
            }
        });
        Running {
            process,
            listening: Some(listening),
        }
    }

    /// Starts the process and waits until it listens.
    pub(crate) async fn start(self) -> (Running, SocketAddr) {
        let mut running = self.spawn();
        let addr = running.listening().await;
        (running, addr)
    }
}

/// A running `demo-app`, killed when dropped.
pub(crate) struct Running {
    process: Process,
    listening: Option<oneshot::Receiver<SocketAddr>>,
}

impl Running {
    pub(crate) async fn listening(&mut self) -> SocketAddr {
        let rx = self.listening.take().expect("listening() is called once");
        self.process.until_up(rx).await
    }
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

/// A loopback port that was free a moment ago (for `--listen-after-startup`).
pub(crate) fn reserve_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local addr")
}
