//! The `lameduck-sidecar` binary: parse and validate the configuration, set up
//! logging and the metrics registry, then call [`lameduck_sidecar::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use lameduck_contract::exit::{INTERRUPTED, USAGE};
use lameduck_sidecar::config::LogFormat;
use lameduck_sidecar::{Args, DrainOutcome, Exit, UnixSignals};

/// jemalloc instead of glibc's malloc: buffers freed by connections that went idle or
/// closed go back to the kernel (glibc keeps the holes a burst leaves in its heap).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
            return ExitCode::from(USAGE);
        }
    };
    let (log_format, check) = (args.log_format, args.check);
    let config = match args.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("lameduck-sidecar: invalid configuration: {error}");
            return ExitCode::from(USAGE);
        }
    };
    if check {
        println!("configuration is valid: {config:#?}");
        return ExitCode::SUCCESS;
    }
    init_tracing(log_format);
    let registry = prometheus::Registry::new();
    // One worker: a single-threaded runtime (no work-stealing or cross-thread wakeups).
    let runtime = match config.workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lameduck-sidecar: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let signals = match UnixSignals::install() {
            Ok(signals) => signals,
            Err(error) => {
                return Err(anyhow::Error::from(error).context("installing signal handlers"));
            }
        };
        Ok(lameduck_sidecar::run(config, registry, signals).await?)
    });
    // Do not wait for lingering tasks (admin connections, checks): the drain is done.
    runtime.shutdown_background();
    match result {
        Ok(Exit::Drained(DrainOutcome::Failed)) => ExitCode::FAILURE,
        Ok(Exit::Drained(_)) => ExitCode::SUCCESS,
        Ok(Exit::Forced) => ExitCode::from(INTERRUPTED),
        Err(error) => {
            eprintln!("lameduck-sidecar: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env(lameduck_contract::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Json => output.json().boxed(),
        LogFormat::Text => output.with_ansi(std::io::stderr().is_terminal()).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(lameduck_sidecar::log_limit::ForeignWarnings::default()))
        .init();
}
