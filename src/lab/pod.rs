//! A pod as real processes on its own loopback address, run with kubelet semantics:
//! native sidecars first (the next container starts once a sidecar's startup probe
//! passes), readiness probes with their timing fields, and on deletion each
//! container's preStop hook, then SIGTERM, then SIGKILL at the end of the grace
//! period; native sidecars get SIGTERM only once the app containers have exited,
//! in reverse order.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::model::{Container, PreStop, Probe, ProbeAction, Program, Workload};

/// Where the programs are.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) demo_app: PathBuf,
    pub(crate) sidecar: PathBuf,
}

/// Something that happened to a pod, for the timeline and for attribution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventKind {
    Created,
    /// The app answers requests from now on (its startup delay has passed).
    AppServing,
    Ready,
    NotReady,
    Deleted,
    PreStopDone(String),
    Sigterm(String),
    Sigkill(String),
    Exited(String),
    /// The EndpointSlice changed (pod 0: not about one pod); the ready pods.
    Endpoints(Vec<usize>),
    /// The ingress workers picked up a new endpoint set (pod 0).
    IngressView(Vec<usize>),
}

/// One event.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) at: Duration,
    pub(crate) pod: usize,
    pub(crate) kind: EventKind,
}

/// Every event of a scenario, in order.
#[derive(Debug)]
pub(crate) struct Timeline {
    pub(crate) start: Instant,
    /// The same moment on the wall clock (nginx logs wall-clock times).
    pub(crate) epoch: std::time::SystemTime,
    events: Mutex<Vec<Event>>,
}

impl Timeline {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            epoch: std::time::SystemTime::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub(crate) fn record(&self, pod: usize, kind: EventKind) {
        let at = self.now();
        if let Ok(mut events) = self.events.lock() {
            events.push(Event { at, pod, kind });
        }
    }

    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// When `pod` last had an event matching `what`.
    pub(crate) fn last(&self, pod: usize, what: impl Fn(&EventKind) -> bool) -> Option<Duration> {
        self.find(pod, what, true)
    }

    /// When `pod` first had an event matching `what`.
    pub(crate) fn first(&self, pod: usize, what: impl Fn(&EventKind) -> bool) -> Option<Duration> {
        self.find(pod, what, false)
    }

    fn find(
        &self,
        pod: usize,
        what: impl Fn(&EventKind) -> bool,
        latest: bool,
    ) -> Option<Duration> {
        let events = self.events.lock().ok()?;
        let matching = |e: &&Event| e.pod == pod && what(&e.kind);
        let found = if latest {
            events.iter().rev().find(matching)
        } else {
            events.iter().find(matching)
        };
        found.map(|e| e.at)
    }
}

/// A running pod; dropping it kills every process.
#[derive(Debug)]
pub(crate) struct Pod {
    pub(crate) id: usize,
    pub(crate) ip: Ipv4Addr,
    pub(crate) name: String,
    pub(crate) ready: watch::Receiver<bool>,
    pub(crate) gone: watch::Receiver<bool>,
    delete: watch::Sender<bool>,
}

/// What a pod is made of.
#[derive(Debug, Clone)]
pub(crate) struct PodSpec {
    pub(crate) id: usize,
    pub(crate) ip: Ipv4Addr,
    pub(crate) name: String,
    pub(crate) workload: Arc<Workload>,
    pub(crate) binaries: Binaries,
    pub(crate) timeline: Arc<Timeline>,
}

impl Pod {
    /// Starts the pod's containers and its kubelet.
    pub(crate) fn start(spec: PodSpec) -> Self {
        let (ready_tx, ready) = watch::channel(false);
        let (gone_tx, gone) = watch::channel(false);
        let (delete, delete_rx) = watch::channel(false);
        spec.timeline.record(spec.id, EventKind::Created);
        let (id, ip, name) = (spec.id, spec.ip, spec.name.clone());
        tokio::spawn(async move {
            kubelet(spec, ready_tx, delete_rx).await;
            let _ = gone_tx.send(true);
        });
        Self {
            id,
            ip,
            name,
            ready,
            gone,
            delete,
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub(crate) fn is_deleted(&self) -> bool {
        *self.delete.borrow()
    }

    pub(crate) fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }

    /// Deletes the pod: termination starts now.
    pub(crate) fn delete(&self) {
        let _ = self.delete.send(true);
    }
}

struct Running {
    container: Container,
    child: Child,
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Rewrites `0.0.0.0:P` / `127.0.0.1:P` to the pod's address.
fn localize(value: &str, ip: Ipv4Addr) -> String {
    for any in ["0.0.0.0:", "127.0.0.1:"] {
        if let Some(port) = value.strip_prefix(any) {
            return format!("{ip}:{port}");
        }
    }
    value.to_owned()
}

fn spawn(
    container: &Container,
    ip: Ipv4Addr,
    pod_name: &str,
    binaries: &Binaries,
    startup_delay: Duration,
) -> std::io::Result<Child> {
    let mut command = match &container.program {
        Program::DemoApp => {
            let mut c = Command::new(&binaries.demo_app);
            let port = container.ports.first().map_or(8080, |(_, p)| *p);
            c.env("LISTEN", addr(ip, port).to_string());
            c.env("STARTUP_DELAY", format!("{}ms", startup_delay.as_millis()));
            c
        }
        Program::Sidecar => Command::new(&binaries.sidecar),
        Program::Command(template) => {
            let port = container.ports.first().map_or(8080, |(_, p)| *p);
            let line = template
                .replace("{addr}", &addr(ip, port).to_string())
                .replace("{host}", &ip.to_string())
                .replace("{port}", &port.to_string());
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("exec {line}"));
            c
        }
    };
    for (name, value) in &container.env {
        if name == "LISTEN" {
            continue;
        }
        command.env(name, localize(value, ip));
    }
    command
        .env("POD_NAME", pod_name)
        .env("RUST_LOG", "warn")
        .env("LAMEDUCK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

fn signal(child: &Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn http_status(
    target: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Option<Duration>,
) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(target).await.ok()?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\nuser-agent: kubelet\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::str::from_utf8(head.split(|b| *b == b' ').nth(1)?)
            .ok()?
            .parse()
            .ok()
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, exchange).await.ok().flatten(),
        None => exchange.await,
    }
}

async fn probe_once(probe: &Probe, ip: Ipv4Addr) -> bool {
    let timeout = probe.period.max(Duration::from_millis(100));
    match &probe.action {
        ProbeAction::Tcp { port } => {
            tokio::time::timeout(timeout, TcpStream::connect(addr(ip, *port)))
                .await
                .is_ok_and(|r| r.is_ok())
        }
        ProbeAction::Http { path, port } => {
            matches!(
                http_status(addr(ip, *port), path, &[], Some(timeout)).await,
                Some(200..=399)
            )
        }
    }
}

/// Runs a probe until it has passed `success_threshold` times in a row.
async fn until_passes(probe: &Probe, ip: Ipv4Addr) {
    tokio::time::sleep(probe.initial_delay).await;
    let mut passes = 0;
    loop {
        if probe_once(probe, ip).await {
            passes += 1;
            if passes >= probe.success_threshold.max(1) {
                return;
            }
        } else {
            passes = 0;
        }
        tokio::time::sleep(probe.period).await;
    }
}

/// Keeps a container's readiness in `ready` by its probe's thresholds.
async fn readiness_loop(probe: Probe, ip: Ipv4Addr, ready: watch::Sender<bool>) {
    tokio::time::sleep(probe.initial_delay).await;
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        if probe_once(&probe, ip).await {
            passes += 1;
            failures = 0;
            if passes >= probe.success_threshold.max(1) {
                ready.send_replace(true);
            }
        } else {
            failures += 1;
            passes = 0;
            if failures >= probe.failure_threshold.max(1) {
                ready.send_replace(false);
            }
        }
        tokio::time::sleep(probe.period).await;
    }
}

async fn kubelet(spec: PodSpec, ready_tx: watch::Sender<bool>, mut delete: watch::Receiver<bool>) {
    let PodSpec {
        id,
        ip,
        name,
        workload,
        binaries,
        timeline,
    } = spec;
    let mut running: Vec<Running> = Vec::new();
    let mut container_ready: Vec<watch::Receiver<bool>> = Vec::new();
    let mut probes = tokio::task::JoinSet::new();
    let startup_delay = Duration::from_millis(
        workload
            .containers
            .iter()
            .flat_map(|c| &c.env)
            .find(|(k, _)| k == "STARTUP_DELAY")
            .and_then(|(_, v)| humantime::parse_duration(v).ok())
            .map_or(0, |d| d.as_millis() as u64),
    );
    let start = async {
        for container in workload.containers.iter() {
            let child = match spawn(container, ip, &name, &binaries, startup_delay) {
                Ok(child) => child,
                Err(_) => return,
            };
            match &container.program {
                Program::DemoApp => {
                    let timeline = timeline.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(startup_delay).await;
                        timeline.record(id, EventKind::AppServing);
                    });
                }
                Program::Command(_) => {
                    // A server we know nothing about serves once it accepts connections.
                    let timeline = timeline.clone();
                    let target = addr(ip, container.ports.first().map_or(8080, |(_, p)| *p));
                    tokio::spawn(async move {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while Instant::now() < deadline {
                            if TcpStream::connect(target).await.is_ok() {
                                timeline.record(id, EventKind::AppServing);
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    });
                }
                Program::Sidecar => {}
            }
            running.push(Running {
                container: container.clone(),
                child,
            });
            if container.native_sidecar
                && let Some(probe) = &container.startup
            {
                until_passes(probe, ip).await;
            }
            let (tx, rx) = watch::channel(container.readiness.is_none());
            if let Some(probe) = container.readiness.clone() {
                probes.spawn(readiness_loop(probe, ip, tx));
            }
            container_ready.push(rx);
        }
    };
    tokio::select! {
        _ = start => {}
        _ = delete.wait_for(|d| *d) => {}
    }
    // Pod readiness = every container ready, until deletion.
    let mut was_ready = false;
    loop {
        let all = !container_ready.is_empty()
            && container_ready.len() == workload.containers.len()
            && container_ready.iter().all(|r| *r.borrow());
        if all != was_ready {
            was_ready = all;
            ready_tx.send_replace(all);
            timeline.record(
                id,
                if all {
                    EventKind::Ready
                } else {
                    EventKind::NotReady
                },
            );
        }
        if *delete.borrow() {
            break;
        }
        // Readiness is looked at every 20 ms, as the EndpointSlice controller batches too.
        tokio::select! {
            _ = delete.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    ready_tx.send_replace(false);
    timeline.record(id, EventKind::Deleted);
    terminate(
        id,
        ip,
        (workload.grace, workload.hook_extension),
        running,
        &timeline,
    )
    .await;
    probes.abort_all();
}

/// Stops the containers as the kubelet does.
async fn terminate(
    id: usize,
    ip: Ipv4Addr,
    (grace, extension): (Duration, Duration),
    running: Vec<Running>,
    timeline: &Timeline,
) {
    let deadline = Instant::now() + grace;
    let (sidecars, apps): (Vec<Running>, Vec<Running>) = running
        .into_iter()
        .partition(|r| r.container.native_sidecar);
    let stop = |mut r: Running, pre_stop: bool| async move {
        let name = r.container.name.clone();
        if pre_stop && let Some(hook) = &r.container.pre_stop {
            let run = async {
                match hook {
                    PreStop::Sleep(d) => tokio::time::sleep(*d).await,
                    PreStop::Http {
                        path,
                        port,
                        headers,
                    } => {
                        let _ = http_status(addr(ip, *port), path, headers, None).await;
                    }
                }
            };
            let mut run = std::pin::pin!(run);
            if tokio::time::timeout_at(deadline, &mut run).await.is_err() {
                // Still running at the end of the grace period: the kubelet's one-off extension.
                let _ = tokio::time::timeout(extension, &mut run).await;
            }
            timeline.record(id, EventKind::PreStopDone(name.clone()));
        }
        timeline.record(id, EventKind::Sigterm(name.clone()));
        signal(&r.child, "TERM");
        if tokio::time::timeout_at(deadline, r.child.wait())
            .await
            .is_err()
        {
            timeline.record(id, EventKind::Sigkill(name.clone()));
            let _ = r.child.start_kill();
            let _ = r.child.wait().await;
        }
        timeline.record(id, EventKind::Exited(name));
    };
    // App containers stop in parallel; native sidecars afterwards, in reverse order
    // (their own preStop hooks are not run: the injected sidecar has none).
    futures_util::future::join_all(apps.into_iter().map(|r| stop(r, true))).await;
    for sidecar in sidecars.into_iter().rev() {
        stop(sidecar, false).await;
    }
}
