//! The load engine: constant-rate, open-model HTTP load that records every request.
//!
//! Request `seq` is due at `start + seq / rate`, whatever happened to earlier ones;
//! latency is measured both from that due time (so a slow server cannot hide behind
//! a slowed-down client: no coordinated omission) and from the moment the request
//! was handed to a connection. Every scheduled request gets exactly one [`Record`],
//! including the ones that failed and the ones still running when the run is
//! stopped. Concurrency is only capped by `max_inflight`; when the cap is hit the
//! run says so instead of quietly lowering the rate.
//!
//! Used by `lameduck load` and by the lab.

pub mod record;
pub mod summary;
mod worker;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

pub use record::{ErrorClass, Interner, Record};
pub use summary::Summary;

/// The header that numbers each request, so proxy logs can be joined to records.
pub const SEQ_HEADER: &str = "x-lameduck-seq";
/// The header lameduck never sends: retries it would allow are exactly what we measure.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// At the in-flight cap, the scheduler waits for this many slots at once.
const PERMIT_BATCH: u32 = 32;
/// The most requests one run may schedule (records are kept in memory).
pub const MAX_REQUESTS: u64 = 50_000_000;

/// How much load to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Send for this long.
    Duration(Duration),
    /// Send this many requests.
    Requests(u64),
}

/// A validated load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Targets, used in rotation: request `seq` goes to `urls[seq % len]`.
    pub urls: Vec<Uri>,
    /// Requests per second.
    pub rate: f64,
    /// When to stop scheduling.
    pub limit: Limit,
    /// Method of every request.
    pub method: Method,
    /// Body of every request.
    pub body: Bytes,
    /// Extra headers.
    pub headers: HeaderMap,
    /// Reuse connections (HTTP/1.1 keep-alive).
    pub keepalive: bool,
    /// Speak HTTP/2 with prior knowledge.
    pub http2: bool,
    /// Time a request may take from send to the end of its body.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The most requests in flight at once.
    pub max_inflight: usize,
    /// The most HTTP/1.1 connections at once (`None`: one per request in flight, the
    /// open model); beyond it, due requests wait for a free connection.
    pub connections: Option<usize>,
}

/// A load run that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl LoadConfig {
    /// How many requests the run will schedule.
    pub fn total(&self) -> Result<u64, LoadError> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(LoadError::Invalid(format!(
                "--rate={} is not valid: must be above 0",
                self.rate
            )));
        }
        let total = match self.limit {
            Limit::Requests(n) => n,
            Limit::Duration(d) => (d.as_secs_f64() * self.rate).round() as u64,
        };
        if total == 0 || total > MAX_REQUESTS {
            return Err(LoadError::Invalid(format!(
                "the run would send {total} requests: must be between 1 and {MAX_REQUESTS}"
            )));
        }
        if self.urls.is_empty() || self.urls.len() > 255 {
            return Err(LoadError::Invalid(
                "between 1 and 255 --url values are needed".to_owned(),
            ));
        }
        Ok(total)
    }
}

/// Counters a progress display can read while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests scheduled so far.
    pub scheduled: AtomicU64,
    /// Requests finished (any outcome).
    pub done: AtomicU64,
    /// Requests that succeeded.
    pub ok: AtomicU64,
    /// Failures per error class (index: class as u8), plus index 0 for bad statuses.
    pub failed: [AtomicU64; 8],
    /// Times a request had to wait for an in-flight slot.
    pub max_inflight_waits: AtomicU64,
    /// Times a due request found every connection busy (with `connections` set).
    pub connection_waits: AtomicU64,
}

impl Progress {
    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.scheduled
            .load(Ordering::Relaxed)
            .saturating_sub(self.done.load(Ordering::Relaxed))
    }

    /// Requests failed so far.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// One record per scheduled request, indexed by `seq`.
    pub records: Vec<Record>,
    /// Interned pod and version strings.
    pub strings: Interner,
    /// The target URLs.
    pub targets: Vec<String>,
    /// The requested rate.
    pub rate: f64,
    /// Requests the limit asked for.
    pub planned: u64,
    /// Times the in-flight cap made a request wait.
    pub max_inflight_waits: u64,
    /// Times a due request found every connection busy.
    pub connection_waits: u64,
    /// The run was stopped before its end.
    pub interrupted: bool,
    /// From start to the last record.
    pub elapsed: Duration,
}

struct Done {
    seq: usize,
    record: Record,
    pod: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

/// Runs the load until the limit is reached or `stop` resolves; then waits for the
/// requests in flight (each is bounded by the config's timeout) and returns every record.
pub async fn run(
    config: &LoadConfig,
    stop: impl Future<Output = ()>,
    progress: Arc<Progress>,
) -> Result<Report, LoadError> {
    let total = config.total()?;
    let start = Instant::now();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    // HTTP/1.1 goes through connection workers; HTTP/2 multiplexes on hyper's client.
    let client = config.http2.then(|| client(config));
    let mut workers = match config.http2 {
        true => None,
        false => Some(Arc::new(worker::Shared::new(
            config,
            start,
            done_tx.clone(),
            progress.clone(),
        )?)),
    };
    if let Some(workers) = &workers {
        tokio::spawn(worker::sweep(Arc::downgrade(workers), config.timeout));
    }
    let slots = Arc::new(Semaphore::new(config.max_inflight.max(1)));
    let mut stop = pin!(stop);
    let mut interrupted = false;
    let mut reserve: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut scheduled: usize = 0;
    let capacity = usize::try_from(total).unwrap_or(usize::MAX);
    let mut records: Vec<Record> = Vec::with_capacity(capacity);
    let mut strings = Interner::default();
    let collect = |done: Done, records: &mut Vec<Record>, strings: &mut Interner| {
        let mut record = done.record;
        let pod = done
            .pod
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| strings.intern(v));
        let version = done
            .version
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| strings.intern(v));
        record.set_origin(pod, version);
        if let Some(slot) = records.get_mut(done.seq) {
            *slot = record;
        }
    };

    for seq in 0..capacity {
        let due = start + Duration::from_secs_f64(seq as f64 / config.rate);
        if due > Instant::now() {
            tokio::select! {
                biased;
                _ = &mut stop => { interrupted = true; break; }
                _ = tokio::time::sleep_until(due) => {}
            }
        } else {
            // Behind schedule (high rates): no timer, but still notice a stop, and give
            // the connections a turn once the task's budget is spent.
            tokio::task::consume_budget().await;
            tokio::select! {
                biased;
                _ = &mut stop => { interrupted = true; break; }
                _ = std::future::ready(()) => {}
            }
        }
        let spare = reserve.as_mut().and_then(|r| r.split(1));
        let permit = match spare
            .map(Ok)
            .unwrap_or_else(|| slots.clone().try_acquire_owned())
        {
            Ok(permit) => permit,
            Err(_) => {
                // At the cap: wait for a batch of slots, so that each finished request
                // does not wake the scheduler on its own.
                progress.max_inflight_waits.fetch_add(1, Ordering::Relaxed);
                let batch =
                    PERMIT_BATCH.min(u32::try_from(config.max_inflight).unwrap_or(1).max(1));
                tokio::select! {
                    biased;
                    _ = &mut stop => { interrupted = true; break; }
                    permits = slots.clone().acquire_many_owned(batch) => match permits {
                        Ok(mut permits) => match permits.split(1) {
                            Some(permit) => {
                                reserve = Some(permits);
                                permit
                            }
                            None => permits,
                        },
                        Err(_) => break,
                    },
                }
            }
        };
        // Drain finished requests as we go so memory holds records, not messages.
        while let Ok(done) = done_rx.try_recv() {
            collect(done, &mut records, &mut strings);
        }
        let target = seq % config.urls.len();
        let scheduled_us = micros(due - start);
        records.push(Record::new(
            scheduled_us,
            u8::try_from(target).unwrap_or(u8::MAX),
        ));
        scheduled += 1;
        progress.scheduled.fetch_add(1, Ordering::Relaxed);
        match (&client, &workers) {
            (Some(client), _) => {
                let request = build_request(config, seq, target);
                let client = client.clone();
                let done_tx = done_tx.clone();
                let progress = progress.clone();
                let timeout = config.timeout;
                tokio::spawn(async move {
                    let done =
                        send(client, request, seq, scheduled_us, target, start, timeout).await;
                    drop(permit);
                    finish(done, &progress, &done_tx);
                });
            }
            (None, Some(workers)) => workers.dispatch(worker::Job {
                seq,
                target,
                scheduled_us,
                permit,
            }),
            (None, None) => break,
        }
    }
    drop(reserve);
    if let Some(workers) = workers.take() {
        workers.close();
    }
    drop(done_tx);
    while let Some(done) = done_rx.recv().await {
        collect(done, &mut records, &mut strings);
    }
    records.truncate(scheduled);
    Ok(Report {
        records,
        strings,
        targets: config.urls.iter().map(Uri::to_string).collect(),
        rate: config.rate,
        planned: total,
        max_inflight_waits: progress.max_inflight_waits.load(Ordering::Relaxed),
        connection_waits: progress.connection_waits.load(Ordering::Relaxed),
        interrupted,
        elapsed: start.elapsed(),
    })
}

/// Counts a finished request and hands its record to the collector.
fn finish(done: Done, progress: &Progress, done_tx: &mpsc::UnboundedSender<Done>) {
    if done.record.ok() {
        progress.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        let index = done.record.error().map_or(0, |class| class as usize);
        if let Some(counter) = progress.failed.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    progress.done.fetch_add(1, Ordering::Relaxed);
    let _ = done_tx.send(done);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Records a response's status and size, reading its body to the end; returns its
/// `x-pod` and `x-version` headers.
async fn read_response(
    response: http::Response<hyper::body::Incoming>,
    record: &mut Record,
) -> Result<(Option<HeaderValue>, Option<HeaderValue>), BoxError> {
    record.set_status(response.status().as_u16());
    let pod = owned(response.headers().get("x-pod"));
    let version = owned(response.headers().get("x-version"));
    let mut body = response.into_body();
    let mut bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            bytes += data.len() as u64;
        }
    }
    record.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    Ok((pod, version))
}

/// A copy of a response header value: the value itself is a slice of the connection's
/// read buffer, and holding it while the record travels to the collector kept hyper
/// from reusing that buffer (a fresh buffer and a copy per response).
fn owned(value: Option<&HeaderValue>) -> Option<HeaderValue> {
    value.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client(config: &LoadConfig) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90));
    if !config.keepalive {
        builder.pool_max_idle_per_host(0);
    }
    if config.http2 {
        builder.http2_only(true);
    }
    builder.build(connector)
}

fn build_request(config: &LoadConfig, seq: usize, target: usize) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(config.body.clone()));
    *request.method_mut() = config.method.clone();
    let uri = &config.urls[target];
    *request.uri_mut() = if config.http2 {
        uri.clone()
    } else {
        // Connection workers speak to the origin directly: origin-form, Host set by them.
        uri.path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()))
    };
    let headers = request.headers_mut();
    headers.clone_from(&config.headers);
    headers.insert(
        HeaderName::from_static(SEQ_HEADER),
        HeaderValue::from(seq as u64),
    );
    if !config.keepalive && !config.http2 {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    request
}

async fn send(
    client: HttpClient,
    request: Request<Full<Bytes>>,
    seq: usize,
    scheduled_us: u64,
    target: usize,
    start: Instant,
    timeout: Duration,
) -> Done {
    let mut record = Record::new(scheduled_us, u8::try_from(target).unwrap_or(u8::MAX));
    record.sent_us = micros(start.elapsed()).max(1);
    let mut pod = None;
    let mut version = None;
    let exchange = async {
        let response = client.request(request).await?;
        (pod, version) = read_response(response, &mut record).await?;
        Ok::<_, BoxError>(())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => record.set_error(ErrorClass::classify(error.as_ref())),
        Err(_) => record.set_error(ErrorClass::Timeout),
    }
    record.done_us = micros(start.elapsed());
    Done {
        seq,
        record,
        pod,
        version,
    }
}
