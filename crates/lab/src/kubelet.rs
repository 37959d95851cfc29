//! A pod as real processes on its own loopback address, run with kubelet semantics:
//! native sidecars first (the next container starts once a sidecar's startup probe
//! passes), readiness probes with their timing fields, and on deletion each
//! container's preStop hook, then SIGTERM, then SIGKILL at the end of the grace
//! period; native sidecars get SIGTERM only once the app containers have exited,
//! in reverse order.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Binaries;
use crate::timeline::{EventKind, Timeline};
use crate::workload::{Container, PreStop, Probe, ProbeAction, Program, Workload};

/// The kubelet's readiness is looked at this often (the EndpointSlice controller batches too).
const READINESS_TICK: Duration = Duration::from_millis(20);
/// A server the lab knows nothing about gets this long to accept connections.
const COMMAND_START_TIMEOUT: Duration = Duration::from_secs(60);

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

fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
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
    let mut running = Vec::new();
    let mut container_ready = Vec::new();
    let mut probes = tokio::task::JoinSet::new();
    tokio::select! {
        _ = start_containers(&spec, &mut running, &mut container_ready, &mut probes) => {}
        _ = delete.wait_for(|d| *d) => {}
    }
    let all = spec.workload.containers.len();
    track_readiness(&spec, &container_ready, all, &ready_tx, &mut delete).await;
    ready_tx.send_replace(false);
    spec.timeline.record(spec.id, EventKind::Deleted);
    let workload = &spec.workload;
    terminate(
        spec.id,
        spec.ip,
        (workload.grace, workload.hook_extension),
        running,
        &spec.timeline,
    )
    .await;
    probes.abort_all();
}

/// demo-app's start-up delay, from the pod's env.
fn startup_delay(workload: &Workload) -> Duration {
    let delay = workload
        .containers
        .iter()
        .flat_map(|c| &c.env)
        .find(|(k, _)| k == "STARTUP_DELAY")
        .and_then(|(_, v)| humantime::parse_duration(v).ok());
    delay.unwrap_or_default()
}

/// Starts the containers in order: a native sidecar's startup probe must pass before
/// the next one starts. Each container's readiness probe runs from then on.
async fn start_containers(
    spec: &PodSpec,
    running: &mut Vec<Running>,
    container_ready: &mut Vec<watch::Receiver<bool>>,
    probes: &mut tokio::task::JoinSet<()>,
) {
    let (id, ip) = (spec.id, spec.ip);
    let startup_delay = startup_delay(&spec.workload);
    for container in &spec.workload.containers {
        let Ok(child) = spawn(container, ip, &spec.name, &spec.binaries, startup_delay) else {
            return;
        };
        let first_port = container.ports.first().map_or(8080, |(_, p)| *p);
        match &container.program {
            Program::DemoApp => {
                let timeline = spec.timeline.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(startup_delay).await;
                    timeline.record(id, EventKind::AppServing);
                });
            }
            Program::Command(_) => {
                // A server we know nothing about serves once it accepts connections.
                tokio::spawn(serving_once_accepting(
                    addr(ip, first_port),
                    id,
                    spec.timeline.clone(),
                ));
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
}

async fn serving_once_accepting(target: SocketAddr, id: usize, timeline: Arc<Timeline>) {
    let deadline = Instant::now() + COMMAND_START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(target).await.is_ok() {
            timeline.record(id, EventKind::AppServing);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pod readiness = every container ready, until deletion.
async fn track_readiness(
    spec: &PodSpec,
    container_ready: &[watch::Receiver<bool>],
    containers: usize,
    ready_tx: &watch::Sender<bool>,
    delete: &mut watch::Receiver<bool>,
) {
    let mut was_ready = false;
    loop {
        let all = !container_ready.is_empty()
            && container_ready.len() == containers
            && container_ready.iter().all(|r| *r.borrow());
        if all != was_ready {
            was_ready = all;
            ready_tx.send_replace(all);
            let kind = if all {
                EventKind::Ready
            } else {
                EventKind::NotReady
            };
            spec.timeline.record(spec.id, kind);
        }
        if *delete.borrow() {
            return;
        }
        tokio::select! {
            _ = delete.changed() => {}
            _ = tokio::time::sleep(READINESS_TICK) => {}
        }
    }
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
        signal(&r.child, Signal::SIGTERM);
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
