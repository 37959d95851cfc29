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
//! Used by `lameduck load` and by the lab. Not for closed-loop benchmarking (a
//! constant rate is the point) or for HTTPS.
//!
//! - [`record`]: one compact record per request, and its JSON-lines and CSV forms;
//! - [`summary`]: what a run amounts to;
//! - `worker`: HTTP/1.1 connection workers; `exchange`: request and response handling
//!   shared with the HTTP/2 path (hyper's pooled client).

mod exchange;
pub mod record;
pub mod summary;
mod worker;

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
    /// The requests are unary gRPC calls (see [`grpc_request`]): each is recorded
    /// with its `grpc-status`, and fails unless that is OK.
    pub grpc: bool,
}

/// Makes `config` unary gRPC calls of `method` (`/package.Service/Method`) with the
/// serialized request `message`: HTTP/2, `POST` to the method's path on every target,
/// `content-type: application/grpc`, `te: trailers`, the message in one
/// length-prefixed frame.
pub fn grpc_request(
    config: &mut LoadConfig,
    method: &str,
    message: &[u8],
) -> Result<(), LoadError> {
    let invalid = |reason| LoadError::Grpc {
        method: method.to_owned(),
        reason,
    };
    let parts: Vec<&str> = method.split('/').collect();
    if !matches!(parts.as_slice(), ["", service, name] if !service.is_empty() && !name.is_empty()) {
        return Err(invalid("expected /package.Service/Method"));
    }
    let length = u32::try_from(message.len()).map_err(|_| invalid("the message is over 4 GiB"))?;
    for url in &mut config.urls {
        let mut parts = url.clone().into_parts();
        parts.path_and_query = Some(
            method
                .parse()
                .map_err(|_| invalid("not a valid URL path"))?,
        );
        *url = Uri::from_parts(parts).map_err(|_| invalid("not a valid URL path"))?;
    }
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0); // not compressed
    body.extend_from_slice(&length.to_be_bytes());
    body.extend_from_slice(message);
    config.body = Bytes::from(body);
    config.method = Method::POST;
    config.http2 = true;
    config.grpc = true;
    config.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    config
        .headers
        .insert(http::header::TE, HeaderValue::from_static("trailers"));
    Ok(())
}

/// A load run that cannot start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// The rate is not a positive number.
    #[error("rate {rate} is not valid: must be above 0")]
    Rate {
        /// The rate asked for.
        rate: f64,
    },
    /// The limit asks for no requests, or for more than a run can record.
    #[error("the run would send {requests} requests: must be between 1 and {max}")]
    RequestCount {
        /// Requests the limit works out to.
        requests: u64,
        /// The most one run may schedule.
        max: u64,
    },
    /// Too few or too many target URLs.
    #[error("{count} target URLs: between 1 and 255 are needed")]
    UrlCount {
        /// URLs given.
        count: usize,
    },
    /// A gRPC method or message that cannot be sent.
    #[error("gRPC method {method:?} is not valid: {reason}")]
    Grpc {
        /// The method.
        method: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A target URL without a usable host.
    #[error("target URL {url} is not valid: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl LoadConfig {
    /// The lab's load: a small POST body to `urls` in rotation at `rate`, over
    /// keep-alive connections (one per request in flight), each request allowed 30 s
    /// and its connect 5 s.
    pub fn posts(urls: Vec<Uri>, rate: f64, limit: Limit) -> Self {
        Self {
            urls,
            rate,
            limit,
            method: Method::POST,
            body: Bytes::from_static(b"lab"),
            headers: HeaderMap::new(),
            keepalive: true,
            http2: false,
            grpc: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_inflight: 10_000,
            connections: None,
        }
    }

    /// How many requests the run will schedule.
    pub fn total(&self) -> Result<u64, LoadError> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(LoadError::Rate { rate: self.rate });
        }
        let total = match self.limit {
            Limit::Requests(n) => n,
            Limit::Duration(d) => (d.as_secs_f64() * self.rate).round() as u64,
        };
        if total == 0 || total > MAX_REQUESTS {
            return Err(LoadError::RequestCount {
                requests: total,
                max: MAX_REQUESTS,
            });
        }
        if self.urls.is_empty() || self.urls.len() > 255 {
            return Err(LoadError::UrlCount {
                count: self.urls.len(),
            });
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

/// A finished request on its way to the collector.
#[derive(Debug)]
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
    let sender = Sender::new(config, start, done_tx.clone(), progress.clone())?;
    let mut slots = Slots::new(config.max_inflight);
    let mut collector = Collector::new(total);
    let mut stop = pin!(stop);
    let mut interrupted = false;
    for seq in 0..collector.capacity {
        let due = start + Duration::from_secs_f64(seq as f64 / config.rate);
        if unless_stopped(&mut stop, until_due(due)).await.is_none() {
            interrupted = true;
            break;
        }
        let Some(permit) = unless_stopped(&mut stop, slots.acquire(&progress)).await else {
            interrupted = true;
            break;
        };
        let Some(permit) = permit else { break };
        // Drain finished requests as we go so memory holds records, not messages.
        while let Ok(done) = done_rx.try_recv() {
            collector.collect(done);
        }
        let target = seq % config.urls.len();
        let scheduled_us = micros(due - start);
        collector.schedule(scheduled_us, target);
        progress.scheduled.fetch_add(1, Ordering::Relaxed);
        sender.send(worker::Job {
            seq,
            target,
            scheduled_us,
            permit,
        });
    }
    drop(slots);
    sender.close();
    drop(done_tx);
    while let Some(done) = done_rx.recv().await {
        collector.collect(done);
    }
    Ok(collector.report(config, total, &progress, interrupted, start))
}

/// Waits for `what`, unless `stop` resolves first (then `None`).
async fn unless_stopped<T>(
    stop: &mut Pin<&mut impl Future<Output = ()>>,
    what: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.as_mut() => None,
        value = what => Some(value),
    }
}

/// Sleeps until `due`; behind schedule (high rates) there is no timer, but the
/// connections still get a turn once the task's budget is spent.
async fn until_due(due: Instant) {
    if due > Instant::now() {
        tokio::time::sleep_until(due).await;
    } else {
        tokio::task::consume_budget().await;
    }
}

/// The in-flight cap.
struct Slots {
    semaphore: Arc<Semaphore>,
    /// Slots taken in a batch at the cap and not handed out yet.
    reserve: Option<OwnedSemaphorePermit>,
    batch: u32,
}

impl Slots {
    fn new(max_inflight: usize) -> Self {
        let max = max_inflight.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            reserve: None,
            batch: PERMIT_BATCH.min(u32::try_from(max).unwrap_or(1)),
        }
    }

    /// One slot; `None` once the semaphore is closed.
    async fn acquire(&mut self, progress: &Progress) -> Option<OwnedSemaphorePermit> {
        if let Some(permit) = self.reserve.as_mut().and_then(|r| r.split(1)) {
            return Some(permit);
        }
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        // At the cap: wait for a batch of slots, so that each finished request does not
        // wake the scheduler on its own.
        progress.max_inflight_waits.fetch_add(1, Ordering::Relaxed);
        let mut permits = self
            .semaphore
            .clone()
            .acquire_many_owned(self.batch)
            .await
            .ok()?;
        match permits.split(1) {
            Some(permit) => {
                self.reserve = Some(permits);
                Some(permit)
            }
            None => Some(permits),
        }
    }
}

/// Where due requests go: connection workers for HTTP/1.1, hyper's multiplexing
/// client for HTTP/2.
enum Sender {
    Workers(Arc<worker::Shared>),
    Http2(Box<Http2>),
}

/// What the HTTP/2 path sends with.
struct Http2 {
    client: exchange::HttpClient,
    config: LoadConfig,
    start: Instant,
    done: mpsc::UnboundedSender<Done>,
    progress: Arc<Progress>,
}

impl Sender {
    fn new(
        config: &LoadConfig,
        start: Instant,
        done: mpsc::UnboundedSender<Done>,
        progress: Arc<Progress>,
    ) -> Result<Self, LoadError> {
        if config.http2 {
            return Ok(Sender::Http2(Box::new(Http2 {
                client: exchange::client(config),
                config: config.clone(),
                start,
                done,
                progress,
            })));
        }
        let workers = Arc::new(worker::Shared::new(config, start, done, progress)?);
        tokio::spawn(worker::sweep(Arc::downgrade(&workers), config.timeout));
        Ok(Sender::Workers(workers))
    }

    fn send(&self, job: worker::Job) {
        match self {
            Sender::Workers(workers) => workers.dispatch(job),
            Sender::Http2(http2) => {
                let request = exchange::build_request(&http2.config, job.seq, job.target);
                let client = http2.client.clone();
                let (done, progress) = (http2.done.clone(), http2.progress.clone());
                let (start, timeout) = (http2.start, http2.config.timeout);
                let grpc = http2.config.grpc;
                tokio::spawn(async move {
                    let finished =
                        exchange::send(client, request, &job, start, timeout, grpc).await;
                    drop(job.permit);
                    finish(finished, &progress, &done);
                });
            }
        }
    }

    fn close(self) {
        if let Sender::Workers(workers) = self {
            workers.close();
        }
    }
}

/// Records as they are scheduled and finish.
struct Collector {
    records: Vec<Record>,
    strings: Interner,
    capacity: usize,
}

impl Collector {
    fn new(total: u64) -> Self {
        let capacity = usize::try_from(total).unwrap_or(usize::MAX);
        Self {
            records: Vec::with_capacity(capacity),
            strings: Interner::default(),
            capacity,
        }
    }

    fn schedule(&mut self, scheduled_us: u64, target: usize) {
        self.records.push(Record::new(
            scheduled_us,
            u8::try_from(target).unwrap_or(u8::MAX),
        ));
    }

    fn collect(&mut self, done: Done) {
        let mut record = done.record;
        let mut intern = |value: &Option<HeaderValue>| {
            value
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.strings.intern(v))
        };
        let (pod, version) = (intern(&done.pod), intern(&done.version));
        record.set_origin(pod, version);
        if let Some(slot) = self.records.get_mut(done.seq) {
            *slot = record;
        }
    }

    fn report(
        self,
        config: &LoadConfig,
        planned: u64,
        progress: &Progress,
        interrupted: bool,
        start: Instant,
    ) -> Report {
        Report {
            records: self.records,
            strings: self.strings,
            targets: config.urls.iter().map(Uri::to_string).collect(),
            rate: config.rate,
            planned,
            max_inflight_waits: progress.max_inflight_waits.load(Ordering::Relaxed),
            connection_waits: progress.connection_waits.load(Ordering::Relaxed),
            interrupted,
            elapsed: start.elapsed(),
        }
    }
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

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
