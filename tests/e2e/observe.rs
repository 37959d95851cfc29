//! Watching a real rollout: kubectl watches of the Pods, EndpointSlices and Events of
//! a namespace (each object stamped as it arrives), the ingress's access log from an
//! offset, and the load's records, handed to the lab's attribution
//! (`lameduck_lab::observed`).

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use lameduck_lab::Cause;
use lameduck_lab::observed::{Access, EndpointLag, Failure, Observed, Watched, load_epoch};
use serde_json::Value;

/// One `kubectl get --watch -o json`, read on a thread of its own.
pub(super) struct Watch {
    child: Child,
    reader: JoinHandle<()>,
    seen: Arc<Mutex<Vec<Watched>>>,
}

impl Watch {
    /// Watches `resource` in `namespace`; `changes_only` leaves out what exists already.
    pub(super) fn start(
        kubeconfig: &Path,
        namespace: &str,
        resource: &str,
        changes_only: bool,
    ) -> Self {
        let mut command = Command::new("kubectl");
        command
            .env("KUBECONFIG", kubeconfig)
            .args(["get", resource, "-n", namespace, "--watch", "-o", "json"]);
        if changes_only {
            command.arg("--watch-only");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl --watch");
        let stdout = child.stdout.take().expect("kubectl's stdout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let reader = std::thread::spawn(move || {
            let objects = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for object in objects.into_iter::<Value>() {
                let Ok(object) = object else { return };
                let at = SystemTime::now();
                if let Ok(mut seen) = into.lock() {
                    seen.push(Watched { at, object });
                }
            }
        });
        Self {
            child,
            reader,
            seen,
        }
    }

    /// Stops the watch; what it received, in order.
    pub(super) fn stop(mut self) -> Vec<Watched> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        std::mem::take(&mut *self.seen.lock().expect("watch results"))
    }
}

/// Where the ingress's access log ended when the rollout began.
pub(super) struct AccessLog {
    path: PathBuf,
    offset: u64,
}

impl AccessLog {
    pub(super) fn mark(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.to_owned(),
            offset,
        }
    }

    /// The log's lines since the mark.
    pub(super) fn since_mark(&self) -> String {
        let mut file = std::fs::File::open(&self.path).expect("the ingress's access log");
        file.seek(SeekFrom::Start(self.offset)).expect("seek");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("access log text");
        text
    }
}

/// The load's records (`lameduck load -o FILE`, JSON lines): per request number, when
/// it was sent and, for the failed ones, when they ended (seconds since the load began).
struct Records {
    sent: BTreeMap<u64, Duration>,
    failed: Vec<(u64, Duration)>,
}

impl Records {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("the load's records");
        let mut records = Self {
            sent: BTreeMap::new(),
            failed: Vec::new(),
        };
        for line in text.lines() {
            let record: Value = serde_json::from_str(line).expect("a record line");
            let seq = record["seq"].as_u64().expect("seq");
            if let Some(sent) = record["sent"].as_f64() {
                records.sent.insert(seq, Duration::from_secs_f64(sent));
            }
            let ok = record["error"].is_null()
                && record["status"]
                    .as_u64()
                    .is_some_and(|s| (200..400).contains(&s));
            if !ok {
                let done = record["done"].as_f64().expect("done");
                records.failed.push((seq, Duration::from_secs_f64(done)));
            }
        }
        records
    }
}

/// Writes what a rollout's watches saw (`pods.jsonl`, `endpointslices.jsonl`,
/// `events.jsonl`: `{"at": …, "object": …}` lines), the ingress's access log lines and
/// the load's records into `dir`, for a look afterwards.
fn keep_raw(dir: &Path, watched: &[Vec<Watched>; 3], access_log: &str, records: &Path) {
    std::fs::create_dir_all(dir).expect("raw results directory");
    for (name, seen) in ["pods", "endpointslices", "events"].iter().zip(watched) {
        let mut lines = String::new();
        for Watched { at, object } in seen {
            let at = humantime::format_rfc3339_nanos(*at).to_string();
            let line = serde_json::json!({ "at": at, "object": object });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        std::fs::write(dir.join(format!("{name}.jsonl")), lines).expect("raw watch");
    }
    std::fs::write(dir.join("ingress-access.jsonl"), access_log).expect("raw access log");
    std::fs::copy(records, dir.join("load-records.jsonl")).expect("raw records");
}

/// A rollout as the cluster and the ingress saw it.
pub(super) struct Rollout {
    pub(super) causes: BTreeMap<Cause, u64>,
    pub(super) lags: Vec<EndpointLag>,
    /// The pods the rollout touched (their watched objects).
    pub(super) pods: Vec<Watched>,
}

impl Rollout {
    /// The rollout from what was `watched` (Pods, EndpointSlices, Events), the
    /// `access_log`'s lines and the load's `records`; all of it kept in `raw`.
    pub(super) fn attribute(
        origin: SystemTime,
        watched: [Vec<Watched>; 3],
        access_log: &str,
        records: &Path,
        raw: &Path,
    ) -> Self {
        keep_raw(raw, &watched, access_log, records);
        let accesses: Vec<Access> = access_log
            .lines()
            .filter_map(Access::from_traefik)
            .collect();
        let accesses = accesses.as_slice();
        let records = Records::read(records);
        let [pods, slices, events] = watched;
        let observed = Observed::new(origin, &pods, &slices, &events, accesses);
        let epoch = load_epoch(&records.sent, accesses);
        let failures: Vec<Failure> = records
            .failed
            .iter()
            .map(|(seq, done)| Failure {
                seq: *seq,
                // A load whose requests the ingress never logged: its failures end
                // "now", and find no access line (cause: other).
                done: epoch.map_or_else(SystemTime::now, |e| e + *done),
            })
            .collect();
        let rollout = Self {
            causes: observed.causes(&failures, accesses),
            lags: observed.endpoint_lags(accesses),
            pods,
        };
        let summary = format!("{}\n{}\n", rollout.causes_line(), rollout.lag_line());
        std::fs::write(raw.join("causes.txt"), summary).expect("causes");
        rollout
    }

    /// `cause=count` pairs, in report order.
    pub(super) fn causes_line(&self) -> String {
        Cause::ALL
            .iter()
            .filter_map(|c| self.causes.get(c).map(|n| format!("{c}={n}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The ingress's lag as `added`/`removed` medians and maxima over the pods.
    pub(super) fn lag_line(&self) -> String {
        let stats = |mut values: Vec<Duration>| -> String {
            values.sort_unstable();
            match (values.get(values.len() / 2), values.last()) {
                (Some(median), Some(max)) => format!(
                    "median {} ms, max {} ms over {} pods",
                    median.as_millis(),
                    max.as_millis(),
                    values.len()
                ),
                _ => "none seen".to_owned(),
            }
        };
        format!(
            "ingress follows an added endpoint: {}; a removed endpoint: {}",
            stats(self.lags.iter().filter_map(|l| l.added).collect()),
            stats(self.lags.iter().filter_map(|l| l.removed).collect()),
        )
    }
}
