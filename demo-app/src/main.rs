//! The `demo-app` binary: parses flags and runs [`demo_app::run`] until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use demo_app::{
    Config, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_STARTUP_DELAY, Exit,
};
use tokio::signal::unix::{SignalKind, signal};

/// The plain, unmodified HTTP app lameduck is compared against.
#[derive(Debug, Parser)]
#[command(name = "demo-app", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Time before the app can serve; requests answer 500 `starting up` until then.
    #[arg(long, env = "STARTUP_DELAY", default_value = DEFAULT_STARTUP_DELAY, value_parser = humantime::parse_duration)]
    startup_delay: Duration,
    /// Open the port only after the startup delay (connections are refused meanwhile).
    #[arg(long, env = "LISTEN_AFTER_STARTUP")]
    listen_after_startup: bool,
    /// On SIGTERM, stop accepting and let in-flight requests finish for up to this long.
    /// Unset or 0: exit at once, dropping in-flight requests.
    #[arg(long, env = "GRACEFUL_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration)]
    graceful_shutdown_timeout: Option<Duration>,
    /// Close keep-alive connections after this long idle (`5s` mimics Node.js).
    #[arg(long, env = "IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    max_body: u64,
}

impl Args {
    fn into_config(self) -> anyhow::Result<Config> {
        anyhow::ensure!(
            !self.idle_timeout.is_zero(),
            "--idle-timeout must be above 0, got {:?}",
            self.idle_timeout
        );
        Ok(Config {
            listen: self.listen,
            startup_delay: self.startup_delay,
            listen_after_startup: self.listen_after_startup,
            graceful_shutdown_timeout: self.graceful_shutdown_timeout.filter(|d| !d.is_zero()),
            idle_timeout: self.idle_timeout,
            max_body: self.max_body,
            pod: demo_app::pod_name_from_env(),
            version: std::env::var("VERSION").unwrap_or_default(),
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Args::parse().into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("demo-app: invalid configuration: {error:#}");
            return ExitCode::from(lameduck_contract::exit::USAGE);
        }
    };
    match serve(config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-app: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        Ok(demo_app::run(config, shutdown).await?)
    })
}
