//! `lab --prometheus-config`: a Prometheus configuration that scrapes the admin port
//! of every lab pod's sidecar while the pod lives, so a rollout can be watched live
//! with the same alerting rules as in a cluster.
//!
//! Targets are a `file_sd` file the lab rewrites (atomically) as pods come and go,
//! labelled as prometheus-operator's PodMonitor labels them (`namespace`, `pod`,
//! `container`), plus the lab's `scenario`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

/// The namespace label of every lab target.
pub const NAMESPACE: &str = "lameduck-lab";
/// The alerting rules shipped in `k8s/monitoring/rules.yml`.
const RULES: &str = include_str!("../../../k8s/monitoring/rules.yml");
/// Scrape and rule-evaluation interval: the lab's scenarios last seconds.
const INTERVAL: &str = "1s";

/// The files written next to the configuration.
#[derive(Debug, Clone)]
pub struct PrometheusFiles {
    /// The configuration to start Prometheus with.
    pub config: PathBuf,
    /// The targets (`file_sd`), rewritten as pods come and go.
    pub targets: PathBuf,
    /// The alerting rules.
    pub rules: PathBuf,
}

/// Writes the configuration, the rules and an empty target list beside it.
pub fn write_config(config: &Path) -> std::io::Result<PrometheusFiles> {
    let dir = config.parent().unwrap_or(Path::new("."));
    let stem = config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("prometheus");
    let (targets_name, rules_name) = (format!("{stem}.targets.json"), format!("{stem}.rules.yml"));
    let files = PrometheusFiles {
        config: config.to_path_buf(),
        targets: dir.join(&targets_name),
        rules: dir.join(&rules_name),
    };
    let text = format!(
        "# Written by `lameduck lab --prometheus-config`: scrapes the sidecar of every lab pod\n\
         # while it lives. Start: prometheus --config.file={config}\n\
         global:\n  scrape_interval: {INTERVAL}\n  scrape_timeout: {INTERVAL}\n  evaluation_interval: {INTERVAL}\n\
         rule_files:\n  - {rules_name}\n\
         scrape_configs:\n  - job_name: lameduck-lab\n    metrics_path: /metrics\n    file_sd_configs:\n\
         \x20     - files:\n          - {targets_name}\n        refresh_interval: {INTERVAL}\n",
        config = config.display(),
    );
    std::fs::write(&files.rules, RULES)?;
    replace(&files.targets, b"[]\n")?;
    std::fs::write(config, text)?;
    Ok(files)
}

/// Writes `path` through a rename, so Prometheus never reads half a file.
fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// One sidecar to scrape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Target {
    pub(crate) pod: String,
    pub(crate) admin: SocketAddr,
    pub(crate) container: String,
}

/// The target file of a running lab.
#[derive(Debug)]
pub(crate) struct Targets {
    path: PathBuf,
    written: Mutex<Vec<Target>>,
}

impl Targets {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            written: Mutex::new(Vec::new()),
        }
    }

    /// Makes the file list exactly `live` (rewritten only when it changed).
    pub(crate) fn sync(&self, scenario: &str, mut live: Vec<Target>) {
        live.sort();
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        if *written == live {
            return;
        }
        let groups: Vec<_> = live
            .iter()
            .map(|t| {
                json!({
                    "targets": [t.admin.to_string()],
                    "labels": {
                        "namespace": NAMESPACE,
                        "pod": t.pod,
                        "container": t.container,
                        "scenario": scenario,
                    },
                })
            })
            .collect();
        let mut text = serde_json::to_vec_pretty(&groups).unwrap_or_else(|_| b"[]".to_vec());
        text.push(b'\n');
        if let Err(error) = replace(&self.path, &text) {
            eprintln!(
                "lameduck lab: writing Prometheus targets {}: {error}",
                self.path.display()
            );
            return;
        }
        *written = live;
    }
}
