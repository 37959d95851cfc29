//! `lameduck load`: flags, progress display, output files and the exit status.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Args;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use lameduck_contract::exit;
use lameduck_load::record::{CSV_HEADER, write_csv_line, write_json_line};
use lameduck_load::{
    ErrorClass, IDEMPOTENCY_KEY, Limit, LoadConfig, LoadError, Progress, Report, SEQ_HEADER,
    Summary,
};

/// Constant-rate (open-model) HTTP load that records and classifies every request.
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Target URL, http:// only; repeat to rotate over several (request i goes to URL i mod n).
    #[arg(long = "url", required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Requests per second, whatever the responses do.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, conflicts_with = "requests")]
    duration: Duration,
    /// Send this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// HTTP method (POST by default: proxies do not retry it once sent; GET shows how they hide failures).
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request body.
    #[arg(long, default_value = "")]
    body: String,
    /// Extra header, `Name: value` (repeatable). `Idempotency-Key` is refused.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A new connection per request instead of a keep-alive pool.
    #[arg(long)]
    no_keepalive: bool,
    /// HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    http2: bool,
    /// Unary gRPC calls of this method (`/package.Service/Method`) instead of HTTP
    /// requests: HTTP/2 POSTs to the method's path on each --url; a call fails unless
    /// its grpc-status is 0 (OK).
    #[arg(long, value_name = "/PACKAGE.SERVICE/METHOD", conflicts_with_all = ["method", "body", "no_keepalive"])]
    grpc: Option<String>,
    /// The serialized request message of --grpc: hex, or @FILE for its bytes. Default: empty.
    #[arg(long, value_name = "HEX|@FILE", requires = "grpc")]
    grpc_message: Option<String>,
    /// Time a request may take from send to the end of its body.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Connect timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// The most requests in flight; reaching it is reported and fails the run.
    #[arg(long, default_value_t = 10_000)]
    max_inflight: usize,
    /// At most this many HTTP/1.1 connections; due requests beyond wait for a free one
    /// (counted, and in the latency from scheduled). Default: a connection per request
    /// in flight, the pure open model; a cap suits very high rates.
    #[arg(long)]
    connections: Option<usize>,
    /// Write every record here: JSON lines, or CSV when the name ends in `.csv`.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Write the summary here as JSON.
    #[arg(long)]
    json_summary: Option<PathBuf>,
    /// Exit 0 even with up to this many failed requests.
    #[arg(long, default_value_t = 0)]
    allow_failures: u64,
    /// No live progress.
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl LoadArgs {
    fn config(&self) -> anyhow::Result<LoadConfig> {
        let mut urls = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            let uri: Uri = url
                .parse()
                .with_context(|| format!("--url={url} is not a URL"))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some(other) => bail!("--url={url} is not supported: scheme {other}, only http"),
                None => bail!("--url={url} is not valid: it needs http://host:port/"),
            }
            if uri.authority().is_none() {
                bail!("--url={url} is not valid: no host");
            }
            urls.push(uri);
        }
        let method = Method::from_bytes(self.method.as_bytes())
            .with_context(|| format!("--method={} is not an HTTP method", self.method))?;
        let mut headers = HeaderMap::new();
        for header in &self.headers {
            let Some((name, value)) = header.split_once(':') else {
                bail!("--header={header:?} is not valid: expected `Name: value`");
            };
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--header={header:?} has an invalid name"))?;
            if name == IDEMPOTENCY_KEY {
                bail!(
                    "--header={header:?} is refused: lameduck load never sends an Idempotency-Key, it would let proxies retry what we measure"
                );
            }
            if name == SEQ_HEADER {
                bail!("--header={header:?} is refused: {SEQ_HEADER} is set on every request");
            }
            let value = HeaderValue::from_str(value.trim())
                .with_context(|| format!("--header={header:?} has an invalid value"))?;
            headers.append(name, value);
        }
        let mut config = LoadConfig {
            urls,
            rate: self.rate,
            limit: self
                .requests
                .map_or(Limit::Duration(self.duration), Limit::Requests),
            method,
            body: Bytes::from(self.body.clone()),
            headers,
            keepalive: !self.no_keepalive,
            http2: self.http2,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            max_inflight: self.max_inflight,
            connections: self.connections,
            grpc: false,
        };
        if let Some(method) = &self.grpc {
            let message = grpc_message(self.grpc_message.as_deref())?;
            lameduck_load::grpc_request(&mut config, method, &message).map_err(flag_error)?;
        }
        config.total().map_err(flag_error)?;
        if self.max_inflight == 0 {
            bail!("--max-inflight=0 is not valid: must be at least 1");
        }
        if self.connections == Some(0) {
            bail!("--connections=0 is not valid: must be at least 1");
        }
        if self.connections.is_some() && self.http2 {
            bail!("--connections is for HTTP/1.1: --http2 multiplexes on one connection");
        }
        Ok(config)
    }
}

/// The bytes of `--grpc-message`: hex, or `@FILE`; none is the empty message.
pub(crate) fn grpc_message(text: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    if let Some(path) = text.strip_prefix('@') {
        return std::fs::read(path)
            .with_context(|| format!("--grpc-message={text}: reading {path}"));
    }
    let text = text.trim();
    if text.len() % 2 != 0 {
        bail!("--grpc-message={text:?} is not valid hex: an odd number of digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| anyhow!("--grpc-message={text:?} is not valid hex"))
        })
        .collect()
}

/// A load error as the flags that caused it spell it.
fn flag_error(error: LoadError) -> anyhow::Error {
    match error {
        LoadError::Rate { rate } => anyhow!("--rate={rate} is not valid: must be above 0"),
        LoadError::RequestCount { requests, max } => anyhow!(
            "--duration/--requests would send {requests} requests: must be between 1 and {max}"
        ),
        LoadError::UrlCount { count } => {
            anyhow!("between 1 and 255 --url values are needed, not {count}")
        }
        LoadError::Url { url, reason } => anyhow!("--url={url} is not valid: {reason}"),
        LoadError::Grpc { method, reason } => anyhow!("--grpc={method} is not valid: {reason}"),
    }
}

pub(crate) fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let config = match args.config() {
        Ok(config) => config,
        Err(error) => return Ok(crate::usage("load", format!("{error:#}"))),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let quiet = args.quiet;
    let run_config = config.clone();
    // The scheduler runs as a task on the runtime's workers: driven from `block_on`'s
    // own thread, every wake-up of it was a futex syscall, and past its top rate the
    // run collapsed (measured: 100 000/s asked, 64 000/s achieved).
    let run = async move {
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            eprintln!("lameduck load: stopping: no new requests; waiting for those in flight");
        };
        let progress = Arc::new(Progress::default());
        let display = (!quiet && std::io::stderr().is_terminal()).then(|| {
            tokio::spawn(show_progress(
                progress.clone(),
                run_config.total().unwrap_or(0),
            ))
        });
        let report = lameduck_load::run(&run_config, stop, progress).await;
        if let Some(display) = display {
            display.abort();
        }
        report
    };
    let task = runtime.spawn(run);
    let report = runtime.block_on(task).context("the load task failed")??;
    if let Some(path) = &args.output {
        write_records(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    let summary = Summary::of(&report);
    print!("{}", summary.render());
    if let Some(path) = &args.json_summary {
        let json = serde_json::to_vec_pretty(&summary).context("encoding the summary")?;
        write_atomically(path, |out| out.write_all(&json))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if summary.failed > args.allow_failures {
        ExitCode::from(exit::FAILURE)
    } else if summary.max_inflight_waits > 0 {
        ExitCode::from(exit::RATE_NOT_HELD)
    } else if summary.interrupted {
        ExitCode::from(exit::INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn show_progress(progress: Arc<Progress>, total: u64) {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} scheduled  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = tokio::time::Instant::now();
    loop {
        let scheduled = progress.scheduled.load(Ordering::Relaxed);
        bar.set_position(scheduled);
        let failures: Vec<String> = ErrorClass::ALL
            .iter()
            .filter_map(|class| {
                let n = progress.failed[*class as usize].load(Ordering::Relaxed);
                (n > 0).then(|| format!("{}={n}", class.as_str()))
            })
            .collect();
        let bad_status = progress.failed[0].load(Ordering::Relaxed);
        bar.set_message(format!(
            "{:.0}/s  in flight {}  ok {}  failed {}{}{}",
            scheduled as f64 / started.elapsed().as_secs_f64().max(0.001),
            progress.in_flight(),
            progress.ok.load(Ordering::Relaxed),
            progress.failed_total(),
            if bad_status > 0 {
                format!(" status={bad_status}")
            } else {
                String::new()
            },
            if failures.is_empty() {
                String::new()
            } else {
                format!(" {}", failures.join(" "))
            },
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes every record, in `seq` order, through a temporary file renamed at the end.
fn write_records(path: &Path, report: &Report) -> std::io::Result<()> {
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    write_atomically(path, |out| {
        if csv {
            out.write_all(CSV_HEADER.as_bytes())?;
        }
        for (seq, record) in report.records.iter().enumerate() {
            if csv {
                write_csv_line(out, seq, record, &report.strings, &report.targets)?;
            } else {
                write_json_line(out, seq, record, &report.strings, &report.targets)?;
            }
        }
        Ok(())
    })
}

fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
