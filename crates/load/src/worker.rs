//! HTTP/1.1 connection workers: each owns its connections and takes one request
//! at a time from the scheduler.
//!
//! The scheduler hands a due request to an idle worker. When none is idle, the
//! request is queued and a new worker (a new connection) is started for it; the
//! first of that connection or a busy worker finishing takes it. With
//! `--connections` set and reached, queued requests wait for a busy worker (counted,
//! and in the latency from scheduled). A request costs a short lock of the idle list
//! and a one-shot send, not a spawned task and a pool checkout. Why each piece is
//! there, measured: docs/design.md, "The load engine".

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::{HOST, HeaderValue};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use crate::exchange::{BoxError, build_request, read_response};
use crate::record::{ErrorClass, Record};
use crate::{Done, LoadError, micros};

/// One due request. The request itself is built by the worker that sends it: built
/// by the scheduler, it waited in the queue going cold when the run fell behind, and
/// the run then fell further behind.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) seq: usize,
    pub(crate) target: usize,
    pub(crate) scheduled_us: u64,
    /// The in-flight slot, given back when the request is done.
    pub(crate) permit: OwnedSemaphorePermit,
}

/// Where each target connects.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `host:port` to connect to.
    pub(crate) authority: String,
    /// The `Host` header.
    pub(crate) host: HeaderValue,
    /// Index of the connection this target shares with others on the same authority.
    pub(crate) connection: usize,
}

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What every request is made of.
    config: crate::LoadConfig,
    pub(crate) targets: Vec<Target>,
    pub(crate) connections: usize,
    pub(crate) start: Instant,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) done: mpsc::UnboundedSender<Done>,
    pub(crate) progress: Arc<crate::Progress>,
    pub(crate) idle: Mutex<Idle>,
    /// The most connections (workers) at once.
    max_connections: usize,
    /// Every worker's deadline, for the sweeper.
    deadlines: Mutex<Vec<Arc<Deadline>>>,
}

/// A worker's request deadline. One sweeper task expires them instead of a timer per
/// request: registering a timer per request cost the rate held at 90 000/s.
#[derive(Debug, Default)]
struct Deadline {
    /// Microseconds since the start; 0 while no request runs.
    at_us: AtomicU64,
    expired: Notify,
}

/// Expires the deadlines that have passed, every `timeout / 20` (1 to 100 ms), until
/// the run is over.
pub(crate) async fn sweep(shared: Weak<Shared>, timeout: Duration) {
    let tick = (timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(100));
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = micros(shared.start.elapsed());
        if let Ok(mut deadlines) = shared.deadlines.lock() {
            deadlines.retain(|d| Arc::strong_count(d) > 1);
            for deadline in deadlines.iter() {
                let at = deadline.at_us.load(Ordering::Acquire);
                if at != 0 && at <= now {
                    deadline.expired.notify_one();
                }
            }
        }
    }
}

/// Workers waiting for a job, and jobs waiting for a worker.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    /// Idle workers, each waiting on a one-shot channel for its next job.
    workers: Vec<oneshot::Sender<Job>>,
    /// Due requests no idle worker was there for.
    pending: VecDeque<Job>,
    /// Workers opening a connection for the pending requests.
    connecting: usize,
    /// Workers started.
    started: usize,
    closed: bool,
}

impl Shared {
    /// Gives `job` to an idle worker; when none is idle, queues it and opens one more
    /// connection for it (unless `--connections` are all open): the job goes to
    /// whichever is first, that new connection or a busy worker finishing, as hyper's
    /// pool races a checkout against a connect. A burst of due requests thus reuses
    /// the connections that free up meanwhile instead of waiting for new ones.
    pub(crate) fn dispatch(self: &Arc<Self>, mut job: Job) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        while let Some(worker) = idle.workers.pop() {
            match worker.send(job) {
                Ok(()) => return,
                // That worker is gone (cannot happen while the run is open): next one.
                Err(back) => job = back,
            }
        }
        let slot = self.targets.get(job.target).map_or(0, |t| t.connection);
        idle.pending.push_back(job);
        if idle.started >= self.max_connections {
            // Every connection is busy: the job waits for the first one free.
            self.progress
                .connection_waits
                .fetch_add(1, Ordering::Relaxed);
        } else if idle.connecting < idle.pending.len() {
            idle.connecting += 1;
            idle.started += 1;
            drop(idle);
            tokio::spawn(work(self.clone(), slot));
        }
    }

    /// No more jobs: idle workers exit, busy ones once nothing is pending.
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.closed = true;
            idle.workers.clear();
        }
    }

    /// The next job: a pending one, else wait to be given one; `None` once closed.
    async fn next_job(&self, connected: bool) -> Option<Job> {
        let next = {
            let mut idle = self.idle.lock().ok()?;
            if connected {
                idle.connecting = idle.connecting.saturating_sub(1);
            }
            if let Some(job) = idle.pending.pop_front() {
                return Some(job);
            }
            if idle.closed {
                return None;
            }
            let (inbox, next) = oneshot::channel();
            idle.workers.push(inbox);
            next
        };
        next.await.ok()
    }
}

/// A worker: opens a connection to `slot`, then serves jobs until the run closes.
async fn work(shared: Arc<Shared>, slot: usize) {
    let mut connections: Vec<Option<Connection>> = (0..shared.connections).map(|_| None).collect();
    let deadline = Arc::new(Deadline::default());
    if let Ok(mut deadlines) = shared.deadlines.lock() {
        deadlines.push(deadline.clone());
    }
    let authority = shared
        .targets
        .iter()
        .find(|t| t.connection == slot)
        .map(|t| t.authority.clone());
    let mut failed_connect = None;
    if let (Some(authority), Some(entry)) = (authority, connections.get_mut(slot)) {
        match connect(&shared, &authority).await {
            Ok(sender) => *entry = Some(sender),
            Err(error) => failed_connect = Some(ErrorClass::classify(error.as_ref())),
        }
    }
    let mut job = shared.next_job(true).await;
    while let Some(current) = job {
        // The request that waited for this connection shares its failure.
        let to_slot = shared.targets.get(current.target).map(|t| t.connection);
        let done = match failed_connect.take() {
            Some(class) if to_slot == Some(slot) => fail(&shared, current, class),
            _ => exchange(&shared, &mut connections, &deadline, current).await,
        };
        crate::finish(done, &shared.progress, &shared.done);
        job = shared.next_job(false).await;
    }
}

/// A job that failed before anything was sent.
fn fail(shared: &Shared, job: Job, class: ErrorClass) -> Done {
    let mut record = Record::new(
        job.scheduled_us,
        u8::try_from(job.target).unwrap_or(u8::MAX),
    );
    record.sent_us = micros(shared.start.elapsed()).max(1);
    record.set_error(class);
    record.done_us = record.sent_us;
    drop(job.permit);
    Done {
        seq: job.seq,
        record,
        pod: None,
        version: None,
    }
}

fn is_close(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

async fn connect(shared: &Shared, authority: &str) -> Result<Connection, BoxError> {
    let stream = tokio::time::timeout(shared.connect_timeout, TcpStream::connect(authority))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

type Connection = SendRequest<Full<Bytes>>;

/// Sends one job's request on its target's connection and records how it went.
async fn exchange(
    shared: &Shared,
    connections: &mut [Option<Connection>],
    deadline: &Deadline,
    job: Job,
) -> Done {
    let Some(to) = shared.targets.get(job.target) else {
        return fail(shared, job, ErrorClass::Other);
    };
    let Job {
        seq,
        target,
        scheduled_us,
        permit,
    } = job;
    let mut record = Record::new(scheduled_us, u8::try_from(target).unwrap_or(u8::MAX));
    record.sent_us = micros(shared.start.elapsed()).max(1);
    let (mut pod, mut version) = (None, None);
    let mut request = build_request(&shared.config, seq, target);
    request.headers_mut().insert(HOST, to.host.clone());
    let slot = to.connection;
    let run = async {
        let closing = is_close(request.headers());
        let response = send_on(shared, connections, to, request).await?;
        let closing = closing || is_close(response.headers());
        (pod, version) = read_response(response, &mut record, shared.config.grpc).await?;
        if closing && let Some(entry) = connections.get_mut(slot) {
            // Either side said `Connection: close`: the next request gets a new one.
            *entry = None;
        }
        Ok::<(), BoxError>(())
    };
    let outcome = within_deadline(shared, deadline, run).await;
    if let Some(class) = match outcome {
        Some(Ok(())) => None,
        Some(Err(error)) => Some(ErrorClass::classify(error.as_ref())),
        None => Some(ErrorClass::Timeout),
    } {
        record.set_error(class);
        // Whatever happened, the connection is not trusted again.
        if let Some(entry) = connections.get_mut(slot) {
            *entry = None;
        }
    }
    record.done_us = micros(shared.start.elapsed());
    drop(permit);
    Done {
        seq,
        record,
        pod,
        version,
    }
}

/// Sends `request` on the target's connection, connecting when there is none. A
/// reused connection the server has closed meanwhile is replaced, and a request it
/// refused before writing anything is sent once more on a new one (as hyper's pooled
/// client does); a fresh connection gets no second chance.
async fn send_on(
    shared: &Shared,
    connections: &mut [Option<Connection>],
    to: &Target,
    mut request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    loop {
        let Some(entry) = connections.get_mut(to.connection) else {
            return Err("no connection slot".into());
        };
        let reused = entry.as_ref().is_some_and(|s| !s.is_closed());
        if !reused {
            *entry = Some(connect(shared, &to.authority).await?);
        }
        let Some(sender) = entry.as_mut() else {
            return Err("no connection".into());
        };
        if let Err(error) = sender.ready().await {
            *entry = None;
            if reused {
                continue;
            }
            return Err(error.into());
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok(response),
            Err(mut error) => {
                *entry = None;
                match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(error.into_error().into()),
                }
            }
        }
    }
}

/// Runs `run` until it ends or the worker's deadline (the run's timeout from now)
/// expires: `None` then.
async fn within_deadline<T>(
    shared: &Shared,
    deadline: &Deadline,
    run: impl std::future::Future<Output = T>,
) -> Option<T> {
    let expires = micros(shared.start.elapsed() + shared.timeout);
    deadline.at_us.store(expires, Ordering::Release);
    let mut run = pin!(run);
    let outcome = loop {
        tokio::select! {
            biased;
            result = &mut run => break Some(result),
            // A wake-up meant for an earlier request is ignored.
            () = deadline.expired.notified() => {
                if micros(shared.start.elapsed()) >= expires {
                    break None;
                }
            }
        }
    };
    deadline.at_us.store(0, Ordering::Release);
    outcome
}

impl Shared {
    /// Worker state for a run: one connection slot per distinct `host:port`.
    pub(crate) fn new(
        config: &crate::LoadConfig,
        start: Instant,
        done: mpsc::UnboundedSender<Done>,
        progress: Arc<crate::Progress>,
    ) -> Result<Self, LoadError> {
        let mut authorities: Vec<String> = Vec::new();
        let mut targets = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let (Some(host), Some(authority)) = (url.host(), url.authority()) else {
                return Err(LoadError::Url {
                    url: url.to_string(),
                    reason: "it needs a host",
                });
            };
            let port = url.port_u16().unwrap_or(80);
            let address = match host.starts_with('[') || !host.contains(':') {
                true => format!("{host}:{port}"),
                false => format!("[{host}]:{port}"),
            };
            let connection = match authorities.iter().position(|a| *a == address) {
                Some(index) => index,
                None => {
                    authorities.push(address.clone());
                    authorities.len() - 1
                }
            };
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| LoadError::Url {
                url: url.to_string(),
                reason: "its host is not a valid Host header",
            })?;
            targets.push(Target {
                authority: address,
                host,
                connection,
            });
        }
        Ok(Self {
            config: config.clone(),
            targets,
            connections: authorities.len(),
            start,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            done,
            progress,
            idle: Mutex::new(Idle::default()),
            max_connections: config.connections.unwrap_or(usize::MAX).max(1),
            deadlines: Mutex::new(Vec::new()),
        })
    }
}
