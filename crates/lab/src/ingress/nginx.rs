//! The real nginx (Debian's) in place of the embedded ingress.
//!
//! Its upstream block is rendered from the endpoints and reloaded (SIGHUP) after the
//! same lag as the embedded ingress ([`super::lag::Lag`]). Like
//! ingress-nginx it round-robins, never ejects a peer (`max_fails=0`), keeps upstream
//! connections 60 s, and retries `error timeout` up to 3 tries (POST only when
//! nothing was sent). One difference stays: ingress-nginx changes endpoints without a
//! reload (Lua), while a reload here starts new workers and lets old ones finish.
//! Each request's tries are read back from the access log.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::{Entry, IngressError, Try};
use crate::endpoints::Endpoint;
use crate::timeline::{EventKind, Timeline};

/// How long nginx gets to stop its workers before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A running nginx and where its log is.
#[derive(Debug)]
pub(crate) struct Nginx {
    pub(crate) addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

/// Sends `signal` to `child` (nothing when it has been reaped).
fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn config(dir: &Path, listen: SocketAddr, endpoints: &[Endpoint]) -> String {
    let mut servers = String::new();
    for endpoint in endpoints {
        servers.push_str(&format!("    server {} max_fails=0;\n", endpoint.addr));
    }
    if endpoints.is_empty() {
        // nginx needs one server; this one refuses, as an empty Service would.
        servers.push_str("    server 127.0.0.1:9 max_fails=0;\n");
    }
    let d = dir.display();
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
events {{ worker_connections 4096; }}\n\
http {{\n  log_format lab '$http_x_lameduck_seq|$msec|$request_time|$status|$upstream_addr|$upstream_status|$upstream_connect_time|$upstream_bytes_received';\n\
  access_log {d}/access.log lab;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  upstream app {{\n{servers}    keepalive 64;\n    keepalive_timeout 60s;\n  }}\n\
  server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
      proxy_next_upstream error timeout;\n      proxy_next_upstream_tries 3;\n      proxy_connect_timeout 5s;\n      proxy_read_timeout 60s;\n    }}\n  }}\n}}\n"
    )
}

/// `nginx` on PATH, else where Debian installs it (/usr/sbin is not always on PATH).
fn nginx_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts nginx on the endpoints of `view`, reloading it whenever the view changes.
pub(crate) async fn start(
    view: watch::Receiver<Vec<Endpoint>>,
    timeline: Arc<Timeline>,
) -> Result<Nginx, IngressError> {
    let dir = std::env::temp_dir().join(format!(
        "lameduck-lab-nginx-{}-{}",
        std::process::id(),
        timeline.start.elapsed().as_nanos()
    ));
    let files = |source| IngressError::NginxFiles {
        dir: dir.clone(),
        source,
    };
    tokio::fs::create_dir_all(&dir).await.map_err(files)?;
    let listen = free_port().map_err(files)?;
    let initial = view.borrow().clone();
    tokio::fs::write(dir.join("nginx.conf"), config(&dir, listen, &initial))
        .await
        .map_err(files)?;
    let child = Command::new(nginx_program())
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(IngressError::NginxStart)?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id();
    tokio::spawn(reload_on_change(view, dir.clone(), listen, pid, timeline));
    Ok(Nginx {
        addr: listen,
        dir,
        child,
    })
}

/// Rewrites the upstreams and reloads nginx (SIGHUP) on every change of the view.
async fn reload_on_change(
    mut view: watch::Receiver<Vec<Endpoint>>,
    dir: PathBuf,
    listen: SocketAddr,
    pid: Option<u32>,
    timeline: Arc<Timeline>,
) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    while view.changed().await.is_ok() {
        let latest = view.borrow_and_update().clone();
        let written = tokio::fs::write(dir.join("nginx.conf"), config(&dir, listen, &latest)).await;
        if written.is_ok() && kill(Pid::from_raw(pid), Signal::SIGHUP).is_ok() {
            let pods = latest.iter().map(|e| e.pod).collect();
            timeline.record(0, EventKind::IngressView(pods));
        }
    }
}

impl Nginx {
    /// Each request's tries, from the access log; `pods` maps pod addresses to pods.
    pub(crate) async fn entries(
        &self,
        timeline: &Timeline,
        pods: &HashMap<Ipv4Addr, usize>,
    ) -> HashMap<u64, Entry> {
        let text = tokio::fs::read_to_string(self.dir.join("access.log"))
            .await
            .unwrap_or_default();
        let start = timeline
            .epoch
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        parse_access_log(&text, start, pods)
    }
}

/// The lab's access-log lines (`log_format lab`) as entries; `start` is the
/// scenario's start in Unix time.
fn parse_access_log(
    text: &str,
    start: Duration,
    pods: &HashMap<Ipv4Addr, usize>,
) -> HashMap<u64, Entry> {
    let start = start.as_secs_f64();
    let mut entries = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let [
            seq,
            msec,
            request_time,
            _status,
            addrs,
            statuses,
            connects,
            bytes,
        ] = fields[..]
        else {
            continue;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            continue;
        };
        let ended = msec.parse::<f64>().unwrap_or(0.0);
        let took = request_time.parse::<f64>().unwrap_or(0.0);
        let at = Duration::from_secs_f64((ended - took - start).max(0.0));
        let split = |s: &str| s.split(", ").map(str::to_owned).collect::<Vec<_>>();
        let (addrs, statuses, connects, bytes) =
            (split(addrs), split(statuses), split(connects), split(bytes));
        let mut tries = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let pod = addr
                .parse::<SocketAddr>()
                .ok()
                .and_then(|a| match a.ip() {
                    std::net::IpAddr::V4(ip) => pods.get(&ip).copied(),
                    std::net::IpAddr::V6(_) => None,
                })
                .unwrap_or(0);
            let status = statuses.get(i).and_then(|s| s.parse::<u16>().ok());
            let connected = connects.get(i).is_some_and(|c| c != "-");
            let received = bytes
                .get(i)
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or(0);
            tries.push(match (connected, received, status) {
                (false, _, _) => Try::ConnectFailed { pod },
                (true, 0, _) => Try::SentAndFailed { pod, reused: false },
                (true, _, Some(status)) => Try::Answered { pod, status },
                (true, _, None) => Try::SentAndFailed { pod, reused: false },
            });
        }
        entries.insert(seq, Entry { at, tries });
    }
    entries
}

impl Nginx {
    /// Stops nginx: SIGTERM lets the master stop its workers (SIGKILL on the master
    /// alone would orphan them), then it is waited for, and killed if it lingers.
    pub(crate) async fn stop(mut self) {
        signal(&self.child, Signal::SIGTERM);
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Nginx {
    /// A lab stopped mid-scenario (SIGINT) still asks nginx to stop its workers (not
    /// killed on drop: that would orphan them), and its files go.
    fn drop(&mut self) {
        signal(&self.child, Signal::SIGTERM);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
