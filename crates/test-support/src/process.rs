//! A spawned binary under test: its stderr echoed with a prefix and kept, the first
//! log line that says it is up turned into a value (its addresses), signals sent
//! with `kill(2)`, killed when dropped.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::FIXTURE_TIMEOUT;

/// A running process, killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    name: &'static str,
    log: Arc<Mutex<String>>,
    /// The task copying stderr into `log`; it ends at the process's end of output.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Spawns `command` (stderr piped, killed on drop); `up` is asked about each log
    /// line until it returns a value, which the receiver then yields.
    pub fn spawn<T: Send + 'static>(
        command: &mut Command,
        name: &'static str,
        up: impl Fn(&str) -> Option<T> + Send + 'static,
    ) -> (Self, oneshot::Receiver<T>) {
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = oneshot::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let writer = log.clone();
        let reader = tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name}] {line}");
                if let Ok(mut log) = writer.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
                if tx.is_some()
                    && let Some(value) = up(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(value);
                }
            }
        });
        (
            Self {
                child,
                name,
                log,
                reader: Some(reader),
            },
            rx,
        )
    }

    /// Waits for the value `spawn`'s `up` found, failing the test after the fixture timeout.
    pub async fn until_up<T>(&self, up: oneshot::Receiver<T>) -> T {
        tokio::time::timeout(FIXTURE_TIMEOUT, up)
            .await
            .unwrap_or_else(|_| panic!("{} did not come up in time", self.name))
            .unwrap_or_else(|_| panic!("{} exited before it came up", self.name))
    }

    /// Sends `SIG<name>` (`TERM`, `INT`, ...).
    pub fn signal(&self, name: &str) {
        let signal = Signal::from_str(&format!("SIG{name}")).expect("a signal name");
        let pid = self.child.id().expect("the process is running");
        kill(Pid::from_raw(i32::try_from(pid).expect("pid")), signal)
            .unwrap_or_else(|e| panic!("kill -{name} {pid}: {e}"));
    }

    /// Waits for the exit and for the last of its log, failing the test after the
    /// fixture timeout.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(FIXTURE_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit in time", self.name))
            .expect("waiting for the process");
        if let Some(reader) = self.reader.take() {
            // The log is complete once its reader has seen the end of the output.
            let _ = tokio::time::timeout(FIXTURE_TIMEOUT, reader).await;
        }
        status
    }

    /// Its resident memory in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the process is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The address in a `name=ADDR` field of a log line.
pub fn log_field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|token| token.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
}

/// Sends `SIG<name>` to another process by pid (a `lameduck` run the test spawned
/// with `std::process`).
pub fn signal_pid(pid: u32, name: &str) {
    let signal = Signal::from_str(&format!("SIG{name}")).expect("a signal name");
    kill(Pid::from_raw(i32::try_from(pid).expect("pid")), signal)
        .unwrap_or_else(|e| panic!("kill -{name} {pid}: {e}"));
}

/// Runs `command` to its end with `stdin` (or none) and collects its output.
pub fn output_with_stdin(
    command: &mut std::process::Command,
    stdin: Option<&[u8]>,
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("writing stdin");
    }
    child.wait_with_output().expect("the command's output")
}

/// Raises this process's open-file limit to its hard limit and panics, naming both
/// numbers, if that is still below `needed` (a burst test needs a socket per client).
pub fn require_open_files(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard} (raise it with ulimit -Hn)"
    );
}
