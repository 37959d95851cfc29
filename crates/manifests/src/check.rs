//! `lameduck check`: lints workloads for the zero-downtime rules.
//!
//! - `readiness-probe`: a serving pod needs a readiness probe (or the sidecar's);
//! - `pre-stop`: a serving container needs a preStop hook (a sleep, or the sidecar's drain);
//! - `grace-period`: `terminationGracePeriodSeconds ≥ preStop + drain + margin`, which
//!   no common linter checks;
//! - `max-unavailable`: a rollout must keep at least one ready pod;
//! - `service-protocol`: a Service port that names a protocol must reach a pod port
//!   that serves it ([`protocol`]);
//! - `sidecar-memory`: the sidecar's memory limit must hold the connections and
//!   requests the pod expects (`crate::memory`).
//!
//! Every kind with a pod template is linted (Jobs and CronJobs too, as `inject`
//! injects them); the rollout rule applies to Deployments.

use lameduck_contract::{defaults, env};
use serde::Serialize;
use serde_json::Value;

use crate::inject::SIDECAR_NAME;
use crate::memory;

mod protocol;
use crate::workload::{self, RollingUpdate, Strategy};

/// The rules, with what each finds.
pub const RULES: [(&str, &str); 6] = [
    ("readiness-probe", "a serving pod has no readiness probe"),
    ("pre-stop", "a serving container has no preStop hook"),
    (
        "grace-period",
        "terminationGracePeriodSeconds is shorter than preStop plus drain plus margin",
    ),
    ("max-unavailable", "a rollout can take every ready pod down"),
    (
        "service-protocol",
        "a Service port names a protocol the pod port does not serve",
    ),
    (
        "sidecar-memory",
        "the sidecar's memory limit cannot hold the connections and requests the pod expects",
    ),
];

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

/// Lints a stream; `drain_seconds` is the longest request the app must be allowed to
/// finish when it has no lameduck sidecar.
pub fn check(documents: &[Value], drain_seconds: u64) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (document, object) in workload::objects(documents).enumerate() {
        let mut finding = |rule: &'static str, message: String| {
            findings.push(Finding {
                document,
                kind: workload::kind(object).to_owned(),
                name: workload::name(object).to_owned(),
                rule,
                message,
            });
        };
        check_object(object, drain_seconds, &mut finding);
    }
    let objects: Vec<&Value> = workload::objects(documents).collect();
    for (document, message) in protocol::check(documents) {
        let Some(object) = objects.get(document) else {
            continue;
        };
        findings.push(Finding {
            document,
            kind: workload::kind(object).to_owned(),
            name: workload::name(object).to_owned(),
            rule: "service-protocol",
            message,
        });
    }
    findings.sort_by_key(|f| f.document);
    findings
}

/// The containers of one pod spec, as the rules look at them.
struct Pod<'a> {
    spec: &'a Value,
    /// App containers that declare a port.
    serving: Vec<&'a Value>,
    /// The lameduck sidecar, native or classic.
    sidecar: Option<&'a Value>,
    /// Every container, init containers included.
    all: Vec<&'a Value>,
}

impl<'a> Pod<'a> {
    fn of(spec: &'a Value) -> Self {
        let all: Vec<&Value> = workload::containers(spec, "containers")
            .chain(workload::containers(spec, "initContainers"))
            .collect();
        let serving = workload::containers(spec, "containers")
            .filter(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .is_some_and(|p| !p.is_empty())
            })
            .filter(|c| workload::container_name(c) != SIDECAR_NAME)
            .collect();
        let sidecar = all
            .iter()
            .copied()
            .find(|c| workload::container_name(c) == SIDECAR_NAME);
        Self {
            spec,
            serving,
            sidecar,
            all,
        }
    }
}

type Report<'r> = dyn FnMut(&'static str, String) + 'r;

fn check_object(object: &Value, drain_seconds: u64, finding: &mut Report<'_>) {
    let kind = workload::kind(object);
    let Some(paths) = workload::pod_template_paths(kind) else {
        return;
    };
    let Some(spec) = object.pointer(paths.spec) else {
        return;
    };
    let pod = Pod::of(spec);
    if pod.serving.is_empty() {
        return;
    }
    if !pod.all.iter().any(|c| c.get("readinessProbe").is_some()) {
        finding(
            "readiness-probe",
            "no container has a readiness probe: the pod receives traffic as soon as it starts (premature activation)".to_owned(),
        );
    }
    for container in &pod.serving {
        if container.pointer("/lifecycle/preStop").is_none() {
            let name = workload::container_name(container);
            finding(
                "pre-stop",
                format!(
                    "container {name:?} has no preStop hook: it gets SIGTERM while ingress controllers still send it traffic (stale upstreams)"
                ),
            );
        }
    }
    check_grace(&pod, drain_seconds, finding);
    if let Some(sidecar) = pod.sidecar {
        let annotations = object.pointer(&format!("{}/annotations", paths.metadata));
        check_sidecar_memory(sidecar, annotations, finding);
    }
    if kind == "Deployment" {
        check_rollout(object, finding);
    }
}

/// `terminationGracePeriodSeconds` must cover what runs before SIGKILL.
fn check_grace(pod: &Pod<'_>, drain_seconds: u64, finding: &mut Report<'_>) {
    let grace = workload::grace_period(pod.spec).as_secs();
    let default = |text: &str| seconds(text).unwrap_or(0);
    let (pre_stop, drain, what) = match pod.sidecar {
        Some(sidecar) => (
            workload::env_value(sidecar, env::SHUTDOWN_DELAY)
                .and_then(seconds)
                .unwrap_or_else(|| default(defaults::SHUTDOWN_DELAY)),
            workload::env_value(sidecar, env::DRAIN_TIMEOUT)
                .and_then(seconds)
                .unwrap_or_else(|| default(defaults::DRAIN_TIMEOUT)),
            "shutdown delay",
        ),
        None => (
            pod.serving
                .iter()
                .filter_map(|c| workload::pre_stop_sleep(c))
                .map(|d| d.as_secs_f64().ceil() as u64)
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
    // The sidecar bounds its final-scrape wait by the grace period it was told of.
    let told = pod
        .sidecar
        .and_then(|sidecar| workload::env_value(sidecar, env::GRACE_PERIOD))
        .and_then(seconds);
    if let Some(told) = told.filter(|told| *told > grace) {
        finding(
            "grace-period",
            format!(
                "the sidecar's {} is {told}s but terminationGracePeriodSeconds is {grace}: its wait for a final scrape can outlast the grace period (inject again)",
                env::GRACE_PERIOD
            ),
        );
    }
}

/// The sidecar's memory limit against the estimate for the pod's expected traffic
/// (its annotations, or the defaults the injected limit is sized for).
fn check_sidecar_memory(sidecar: &Value, annotations: Option<&Value>, finding: &mut Report<'_>) {
    let Some(limit_text) = sidecar
        .pointer("/resources/limits/memory")
        .and_then(Value::as_str)
    else {
        return; // no limit: nothing to outgrow
    };
    let expected = |key: &str, default: u64| {
        annotations
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(default)
    };
    let connections = expected(
        memory::ANNOTATION_EXPECTED_CONNECTIONS,
        memory::DEFAULT_EXPECTED_CONNECTIONS,
    );
    let in_flight = expected(
        memory::ANNOTATION_EXPECTED_IN_FLIGHT,
        memory::DEFAULT_EXPECTED_IN_FLIGHT,
    );
    let needed_kib = memory::estimate_kib(connections, in_flight);
    let Some(limit) = memory::quantity_bytes(limit_text) else {
        finding(
            "sidecar-memory",
            format!("the sidecar's memory limit {limit_text:?} is not a quantity"),
        );
        return;
    };
    if limit / 1024 < needed_kib {
        finding(
            "sidecar-memory",
            format!(
                "the sidecar's memory limit {limit_text} cannot hold {connections} idle connections and {in_flight} requests in flight (about {}Mi: {}Mi idle + {} KiB per connection + {} KiB per request); raise it, or set the pod annotations {} and {} to the traffic this pod sees",
                needed_kib.div_ceil(1024),
                memory::BASE_KIB / 1024,
                memory::KIB_PER_CONNECTION,
                memory::KIB_PER_IN_FLIGHT,
                memory::ANNOTATION_EXPECTED_CONNECTIONS,
                memory::ANNOTATION_EXPECTED_IN_FLIGHT,
            ),
        );
    }
}

fn check_rollout(deployment: &Value, finding: &mut Report<'_>) {
    let RollingUpdate {
        replicas,
        max_unavailable,
        ..
    } = match workload::strategy(deployment) {
        Strategy::Recreate => {
            finding(
                "max-unavailable",
                "strategy Recreate stops every pod before starting new ones".to_owned(),
            );
            return;
        }
        Strategy::RollingUpdate(rolling) => rolling,
    };
    if replicas > 0 && max_unavailable >= replicas {
        finding(
            "max-unavailable",
            format!(
                "with {replicas} replicas and maxUnavailable {max_unavailable}, a rollout can take every ready pod down: set maxUnavailable: 0"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::parse_stream;

    fn rules(yaml: &str) -> Vec<&'static str> {
        let docs = parse_stream("t", yaml).expect("valid");
        check(&docs, 10).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn the_plain_and_fixed_demo_overlays() {
        let plain = include_str!("../../../k8s/rendered/plain.yaml");
        assert_eq!(rules(plain), ["readiness-probe", "pre-stop"]);
        let fixed = include_str!("../../../k8s/rendered/fixed.yaml");
        assert!(rules(fixed).is_empty());
    }

    #[test]
    fn grace_shorter_than_pre_stop_and_drain_is_found() {
        let yaml = "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 3\n  template:\n    spec:\n      terminationGracePeriodSeconds: 20\n      containers:\n      - name: a\n        ports: [{containerPort: 80}]\n        readinessProbe: {tcpSocket: {port: 80}}\n        lifecycle: {preStop: {exec: {command: [sh, -c, sleep 15]}}}\n";
        assert_eq!(rules(yaml), ["grace-period"]);
    }

    #[test]
    fn a_grace_period_lowered_after_injection_is_found() {
        let mut documents = parse_stream(
            "t",
            "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - name: a\n        ports: [{containerPort: 80}]\n        readinessProbe: {tcpSocket: {port: 80}}\n",
        )
        .expect("yaml");
        crate::inject::inject(&mut documents, &crate::inject::Options::default()).expect("inject");
        let injected = crate::stream::to_yaml(&documents).expect("yaml");
        assert!(rules(&injected).is_empty(), "{injected}");
        let lowered = injected.replace(
            "terminationGracePeriodSeconds: 55",
            "terminationGracePeriodSeconds: 50",
        );
        assert_eq!(rules(&lowered), ["grace-period"]);
    }

    #[test]
    fn jobs_and_cronjobs_are_linted_like_the_pods_inject_injects() {
        let yaml = "kind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - name: a\n            ports: [{containerPort: 80}]\n";
        assert_eq!(rules(yaml), ["readiness-probe", "pre-stop"]);
        let job = yaml
            .replace("CronJob", "Job")
            .replace("  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n          - name: a\n            ports", "  template:\n    spec:\n      containers:\n      - name: a\n        ports");
        assert_eq!(rules(&job), ["readiness-probe", "pre-stop"]);
    }

    #[test]
    fn a_service_naming_another_protocol_than_the_pod_serves_is_found() {
        let pod = "kind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      terminationGracePeriodSeconds: 60\n      containers:\n      - name: a\n        ports: [{containerPort: 50051, name: grpc}]\n        readinessProbe: {grpc: {port: 50051}}\n        lifecycle: {preStop: {sleep: {seconds: 5}}}\n";
        let service = |port: &str| {
            format!(
                "kind: Service\nmetadata: {{name: s}}\nspec:\n  selector: {{app: a}}\n  ports: [{port}]\n---\n{pod}"
            )
        };
        let http = service("{name: http-api, port: 80, targetPort: grpc}");
        assert_eq!(rules(&http), ["service-protocol"]);
        let grpc = service("{name: grpc, port: 80, targetPort: 50051}");
        assert!(rules(&grpc).is_empty());
        let unnamed = service("{port: 80, targetPort: grpc}");
        assert!(rules(&unnamed).is_empty());
        // Behind the sidecar, its listener mode is what serves the port.
        let injected = "kind: Service\nmetadata: {name: s}\nspec:\n  selector: {app: a}\n  ports: [{name: grpc, port: 80, targetPort: 18080}]\n---\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      terminationGracePeriodSeconds: 60\n      containers:\n      - name: lameduck-sidecar\n        env: [{name: LAMEDUCK_LISTEN, value: '0.0.0.0:18080'}]\n        ports: [{containerPort: 18080}]\n        readinessProbe: {httpGet: {port: 19901, path: /ready}}\n      - name: a\n        ports: [{containerPort: 50051}]\n        lifecycle: {preStop: {sleep: {seconds: 5}}}\n";
        let findings = check(&parse_stream("t", injected).expect("valid"), 10);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0]
                .message
                .contains("says grpc but the sidecar fronts it as http"),
            "{}",
            findings[0].message
        );
        let fixed = injected.replace(
            "value: '0.0.0.0:18080'}]",
            "value: '0.0.0.0:18080'}, {name: LAMEDUCK_UPSTREAM_PROTOCOL, value: h2c}]",
        );
        assert!(rules(&fixed).is_empty());
    }

    #[test]
    fn a_single_replica_that_may_go_unavailable_is_found() {
        let yaml = "kind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 1\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}\n  template:\n    spec:\n      terminationGracePeriodSeconds: 60\n      containers:\n      - name: a\n        ports: [{containerPort: 80}]\n        readinessProbe: {tcpSocket: {port: 80}}\n        lifecycle: {preStop: {sleep: {seconds: 5}}}\n";
        assert_eq!(rules(yaml), ["max-unavailable"]);
    }

    #[test]
    fn a_sidecar_memory_limit_below_the_expected_traffic_is_found() {
        let pod = |annotations: &str, limit: &str| {
            format!(
                "kind: Deployment\nmetadata: {{name: d}}\nspec:\n  template:\n    metadata: {{annotations: {{{annotations}}}}}\n    spec:\n      terminationGracePeriodSeconds: 60\n      initContainers:\n      - name: lameduck-sidecar\n        restartPolicy: Always\n        readinessProbe: {{httpGet: {{port: 19901, path: /ready}}}}\n        resources: {{limits: {{memory: {limit}}}}}\n      containers:\n      - name: a\n        ports: [{{containerPort: 80}}]\n        lifecycle: {{preStop: {{sleep: {{seconds: 5}}}}}}\n"
            )
        };
        // The injector's old default: 64 MiB holds nowhere near 10 000 connections
        // and 2 000 requests in flight.
        let old = check(&parse_stream("t", &pod("", "64Mi")).expect("valid"), 10);
        assert_eq!(old.len(), 1, "{old:?}");
        assert_eq!(old[0].rule, "sidecar-memory");
        assert!(
            old[0].message.contains(
                "64Mi cannot hold 10000 idle connections and 2000 requests in flight (about 124Mi"
            ),
            "{}",
            old[0].message
        );
        assert!(rules(&pod("", crate::inject::DEFAULT_MEMORY_LIMIT)).is_empty());
        // A pod that says it sees less traffic fits in less.
        let small =
            "'lameduck.dev/expected-connections': '500', 'lameduck.dev/expected-in-flight': '100'";
        assert!(rules(&pod(small, "64Mi")).is_empty());
        assert_eq!(rules(&pod(small, "12Mi")), ["sidecar-memory"]);
        assert_eq!(rules(&pod("", "lots")), ["sidecar-memory"]);
    }
}
