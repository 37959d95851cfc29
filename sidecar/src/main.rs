//! The `lameduck-sidecar` binary: parse and validate the configuration, set up
//! logging and the metrics registry, then call [`lameduck_sidecar::run`].

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use clap::error::ErrorKind;
use lameduck_sidecar::config::LogFormat;
use lameduck_sidecar::{Args, Exit};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (log_format, check) = (args.log_format, args.check);
    let config = match args.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("lameduck-sidecar: invalid configuration: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if check {
        println!("configuration is valid: {config:#?}");
        return ExitCode::SUCCESS;
    }
    init_tracing(log_format);
    let registry = prometheus::Registry::new();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lameduck-sidecar: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(error) => {
                return Err(anyhow::Error::from(error).context("installing signal handlers"));
            }
        };
        Ok(lameduck_sidecar::run(config, registry, move || signals.next()).await?)
    });
    // Do not wait for lingering tasks (admin connections, checks): the drain is done.
    runtime.shutdown_background();
    match result {
        Ok(Exit::Drained(_)) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::from(130),
        Err(error) => {
            eprintln!("lameduck-sidecar: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAMEDUCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// SIGTERM and SIGINT, as one stream of signal names.
#[derive(Clone)]
struct Signals {
    inner: Arc<Mutex<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>>,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        Ok(Self {
            inner: Arc::new(Mutex::new((term, int))),
        })
    }

    fn next(&self) -> Pin<Box<dyn Future<Output = &'static str> + Send>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut guard = inner.lock().await;
            let (term, int) = &mut *guard;
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
}
