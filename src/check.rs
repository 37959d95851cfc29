//! `lameduck check`: lints workloads for the zero-downtime rules.
//!
//! - `readiness-probe`: a serving pod needs a readiness probe (or the sidecar's);
//! - `pre-stop`: a serving container needs a preStop hook (a sleep, or the sidecar's drain);
//! - `grace-period`: `terminationGracePeriodSeconds ≥ preStop + drain + margin`, which
//!   no common linter checks;
//! - `max-unavailable`: a rollout must keep at least one ready pod.

use serde::Serialize;
use serde_json::Value;

use crate::inject::SIDECAR_NAME;

/// Seconds added on top of preStop and drain.
pub const MARGIN_SECONDS: u64 = 5;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The document's index in the stream (List items count as documents).
    pub document: usize,
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The rule.
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn seconds(text: &str) -> Option<u64> {
    humantime::parse_duration(text).ok().map(|d| d.as_secs())
}

fn env(container: &Value, name: &str) -> Option<String> {
    container
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

/// How long a preStop hook holds SIGTERM back, if it is a sleep we can read.
fn pre_stop_seconds(container: &Value) -> Option<u64> {
    let hook = container.pointer("/lifecycle/preStop")?;
    if let Some(seconds) = hook.pointer("/sleep/seconds").and_then(Value::as_u64) {
        return Some(seconds);
    }
    let command = hook.pointer("/exec/command")?.as_array()?;
    let words: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
    let text = words.join(" ");
    let after = text.split("sleep").nth(1)?;
    after
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// Lints a stream; `drain_seconds` is the longest request the app must be allowed to
/// finish when it has no lameduck sidecar.
pub fn check(documents: &[Value], drain_seconds: u64) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut index = 0;
    for document in documents {
        let items: Vec<&Value> = if crate::manifest::kind(document) == "List" {
            document
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect()
        } else {
            vec![document]
        };
        for object in items {
            check_object(object, index, drain_seconds, &mut findings);
            index += 1;
        }
    }
    findings
}

fn check_object(object: &Value, document: usize, drain_seconds: u64, findings: &mut Vec<Finding>) {
    let kind = crate::manifest::kind(object);
    let spec_path = match kind {
        "Pod" => "/spec",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" => {
            "/spec/template/spec"
        }
        _ => return,
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut finding = |rule: &'static str, message: String| {
        findings.push(Finding {
            document,
            kind: kind.to_owned(),
            name: name.to_owned(),
            rule,
            message,
        });
    };
    let Some(spec) = object.pointer(spec_path) else {
        return;
    };
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let init: Vec<&Value> = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let serving: Vec<&Value> = containers
        .iter()
        .copied()
        .filter(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty())
        })
        .filter(|c| c.get("name").and_then(Value::as_str) != Some(SIDECAR_NAME))
        .collect();
    if serving.is_empty() {
        return;
    }
    let sidecar = containers
        .iter()
        .chain(init.iter())
        .find(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME));

    let has_readiness = containers
        .iter()
        .chain(init.iter())
        .any(|c| c.get("readinessProbe").is_some());
    if !has_readiness {
        finding(
            "readiness-probe",
            "no container has a readiness probe: the pod receives traffic as soon as it starts (premature activation)".to_owned(),
        );
    }
    for container in &serving {
        if container.pointer("/lifecycle/preStop").is_none() {
            let cname = container.get("name").and_then(Value::as_str).unwrap_or("");
            finding(
                "pre-stop",
                format!(
                    "container {cname:?} has no preStop hook: it gets SIGTERM while ingress controllers still send it traffic (stale upstreams)"
                ),
            );
        }
    }
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(30);
    let (pre_stop, drain, what) = match sidecar {
        Some(sidecar) => (
            env(sidecar, "LAMEDUCK_SHUTDOWN_DELAY")
                .and_then(|s| seconds(&s))
                .unwrap_or(15),
            env(sidecar, "LAMEDUCK_DRAIN_TIMEOUT")
                .and_then(|s| seconds(&s))
                .unwrap_or(30),
            "shutdown delay",
        ),
        None => (
            serving
                .iter()
                .filter_map(|c| pre_stop_seconds(c))
                .max()
                .unwrap_or(0),
            drain_seconds,
            "preStop",
        ),
    };
    let needed = pre_stop + drain + MARGIN_SECONDS;
    if grace < needed {
        finding(
            "grace-period",
            format!(
                "terminationGracePeriodSeconds {grace} < {what} {pre_stop} + drain {drain} + margin {MARGIN_SECONDS} = {needed}: requests are killed at the end of the grace period"
            ),
        );
    }
    if kind == "Deployment" {
        check_rollout(object, &mut finding);
    }
}

fn scaled(value: Option<&Value>, replicas: u64, default_percent: u64, round_up: bool) -> u64 {
    let percent = |p: u64| {
        let scaled = replicas * p;
        if round_up {
            scaled.div_ceil(100)
        } else {
            scaled / 100
        }
    };
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().map(percent).unwrap_or(0),
        _ => percent(default_percent),
    }
}

fn check_rollout(deployment: &Value, finding: &mut impl FnMut(&'static str, String)) {
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let strategy = deployment
        .pointer("/spec/strategy/type")
        .and_then(Value::as_str)
        .unwrap_or("RollingUpdate");
    if strategy == "Recreate" {
        finding(
            "max-unavailable",
            "strategy Recreate stops every pod before starting new ones".to_owned(),
        );
        return;
    }
    let surge = scaled(
        deployment.pointer("/spec/strategy/rollingUpdate/maxSurge"),
        replicas,
        25,
        true,
    );
    let mut unavailable = scaled(
        deployment.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        replicas,
        25,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    if replicas > 0 && unavailable >= replicas {
        finding(
            "max-unavailable",
            format!(
                "with {replicas} replicas and maxUnavailable {unavailable}, a rollout can take every ready pod down: set maxUnavailable: 0"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_stream;

    fn rules(yaml: &str) -> Vec<&'static str> {
        let docs = parse_stream("t", yaml).expect("valid");
        check(&docs, 10).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn the_plain_and_fixed_demo_overlays() {
        let root = env!("CARGO_MANIFEST_DIR");
        let plain =
            std::fs::read_to_string(format!("{root}/k8s/rendered/plain.yaml")).expect("plain");
        assert_eq!(rules(&plain), ["readiness-probe", "pre-stop"]);
        let fixed =
            std::fs::read_to_string(format!("{root}/k8s/rendered/fixed.yaml")).expect("fixed");
        assert!(rules(&fixed).is_empty());
    }

    #[test]
    fn grace_shorter_than_pre_stop_and_drain_is_found() {
        let yaml = "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 3\n  template:\n    spec:\n      terminationGracePeriodSeconds: 20\n      containers:\n      - name: a\n        ports: [{containerPort: 80}]\n        readinessProbe: {tcpSocket: {port: 80}}\n        lifecycle: {preStop: {exec: {command: [sh, -c, sleep 15]}}}\n";
        assert_eq!(rules(yaml), ["grace-period"]);
    }

    #[test]
    fn a_single_replica_that_may_go_unavailable_is_found() {
        let yaml = "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 1\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}\n  template:\n    spec:\n      terminationGracePeriodSeconds: 60\n      containers:\n      - name: a\n        ports: [{containerPort: 80}]\n        readinessProbe: {tcpSocket: {port: 80}}\n        lifecycle: {preStop: {sleep: {seconds: 5}}}\n";
        assert_eq!(rules(yaml), ["max-unavailable"]);
    }
}
