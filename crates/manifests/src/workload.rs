//! The Kubernetes rules that `inject`, `check` and the lab share, in one place:
//! where each kind keeps its pod template, the objects of a stream with `kind: List`
//! flattened, rolling-update arithmetic as the Deployment controller does it, preStop
//! sleeps, grace periods, and the small lookups on containers they all need.

use std::time::Duration;

use serde_json::Value;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;
/// Kubernetes' default `maxSurge` and `maxUnavailable`, in percent of the replicas.
pub const DEFAULT_ROLLING_PERCENT: u64 = 25;

/// The `kind` of an object, or `""`.
pub fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The `metadata.name` of an object, or `""`.
pub fn name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Where a kind keeps its pod template, as JSON pointers into the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatePaths {
    /// The template's `metadata`.
    pub metadata: &'static str,
    /// The template's pod `spec`.
    pub spec: &'static str,
}

/// The pod template of every kind that has one (a Pod is its own template).
pub fn pod_template_paths(kind: &str) -> Option<TemplatePaths> {
    let (metadata, spec) = match kind {
        "Pod" => ("/metadata", "/spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => ("/spec/template/metadata", "/spec/template/spec"),
        "CronJob" => (
            "/spec/jobTemplate/spec/template/metadata",
            "/spec/jobTemplate/spec/template/spec",
        ),
        _ => return None,
    };
    Some(TemplatePaths { metadata, spec })
}

/// Every object of a stream in order, the items of a `kind: List` in its place.
pub fn objects(documents: &[Value]) -> impl Iterator<Item = &Value> {
    documents.iter().flat_map(|document| {
        let items: Box<dyn Iterator<Item = &Value>> = if kind(document) == "List" {
            Box::new(
                document
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            )
        } else {
            Box::new(std::iter::once(document))
        };
        items
    })
}

/// [`objects`], mutably.
pub fn objects_mut(documents: &mut [Value]) -> impl Iterator<Item = &mut Value> {
    documents.iter_mut().flat_map(|document| {
        let items: Box<dyn Iterator<Item = &mut Value>> = if kind(document) == "List" {
            Box::new(
                document
                    .get_mut("items")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten(),
            )
        } else {
            Box::new(std::iter::once(document))
        };
        items
    })
}

/// The containers of a pod spec's list (`containers` or `initContainers`).
pub fn containers<'a>(spec: &'a Value, list: &str) -> impl Iterator<Item = &'a Value> + 'a {
    spec.get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A container's name, or `""`.
pub fn container_name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// The container ports declared in the pod spec's `lists` (e.g. `containers`).
pub fn container_ports(spec: &Value, lists: &[&str]) -> Vec<u16> {
    lists
        .iter()
        .flat_map(|list| containers(spec, list))
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

/// The plain `value` of a container's environment variable.
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container
        .get("env")?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

/// How long a container's preStop hook holds SIGTERM back, when it is a sleep: the
/// kubelet's `sleep` action, or an `exec` whose command runs `sleep N`.
pub fn pre_stop_sleep(container: &Value) -> Option<Duration> {
    let hook = container.pointer("/lifecycle/preStop")?;
    if let Some(seconds) = hook.pointer("/sleep/seconds").and_then(Value::as_f64) {
        return Some(Duration::from_secs_f64(seconds.max(0.0)));
    }
    let command = hook.pointer("/exec/command")?.as_array()?;
    let words: Vec<&str> = command.iter().filter_map(Value::as_str).collect();
    let text = words.join(" ");
    let seconds: f64 = text
        .split("sleep")
        .nth(1)?
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(seconds.max(0.0)))
}

/// A pod spec's `terminationGracePeriodSeconds`, or Kubernetes' default.
pub fn grace_period(pod_spec: &Value) -> Duration {
    Duration::from_secs(
        pod_spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_GRACE_SECONDS),
    )
}

/// A Deployment's `spec.replicas`, or Kubernetes' default of 1.
pub fn replicas(deployment: &Value) -> u64 {
    deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

/// A Deployment's `minReadySeconds`: how long a Ready pod waits to count as available.
pub fn min_ready(deployment: &Value) -> Duration {
    Duration::from_secs(
        deployment
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    )
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every old pod is stopped before new ones start.
    Recreate,
    /// New pods are surged in while old ones go, within the limits.
    RollingUpdate(RollingUpdate),
}

/// A rolling update's limits, resolved to pod counts as the Deployment controller
/// resolves them: a `maxSurge` percentage rounds up, a `maxUnavailable` one down, and
/// when both come to zero `maxUnavailable` is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingUpdate {
    /// Desired pods.
    pub replicas: u64,
    /// Pods above `replicas` allowed during the rollout.
    pub max_surge: u64,
    /// Pods below `replicas` allowed to be unavailable during the rollout.
    pub max_unavailable: u64,
}

impl RollingUpdate {
    /// The limits of a Deployment (defaults: 25 % each), whatever its strategy type.
    pub fn of(deployment: &Value) -> Self {
        let replicas = replicas(deployment);
        let limit = |field: &str, round_up: bool| {
            let value = deployment.pointer(&format!("/spec/strategy/rollingUpdate/{field}"));
            resolve(value, replicas, round_up)
        };
        let max_surge = limit("maxSurge", true);
        let mut max_unavailable = limit("maxUnavailable", false);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Self {
            replicas,
            max_surge,
            max_unavailable,
        }
    }

    /// The fewest available pods the rollout keeps.
    pub fn min_available(&self) -> u64 {
        self.replicas.saturating_sub(self.max_unavailable)
    }
}

/// An int-or-percent limit as a pod count.
fn resolve(value: Option<&Value>, replicas: u64, round_up: bool) -> u64 {
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
        _ => percent(DEFAULT_ROLLING_PERCENT),
    }
}

/// A Deployment's strategy.
pub fn strategy(deployment: &Value) -> Strategy {
    match deployment
        .pointer("/spec/strategy/type")
        .and_then(Value::as_str)
    {
        Some("Recreate") => Strategy::Recreate,
        _ => Strategy::RollingUpdate(RollingUpdate::of(deployment)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: u64, surge: Value, unavailable: Value) -> Value {
        json!({"kind": "Deployment", "spec": {"replicas": replicas, "strategy": {
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
    }

    fn limits(d: &Value) -> (u64, u64) {
        let r = RollingUpdate::of(d);
        (r.max_surge, r.max_unavailable)
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let defaults = json!({"kind": "Deployment", "spec": {"replicas": 5}});
        assert_eq!(limits(&defaults), (2, 1), "25% of 5");
        assert_eq!(limits(&deployment(5, json!("50%"), json!("50%"))), (3, 2));
        assert_eq!(limits(&deployment(3, json!("10%"), json!("10%"))), (1, 0));
        assert_eq!(limits(&deployment(4, json!(2), json!(1))), (2, 1));
        assert_eq!(RollingUpdate::of(&defaults).min_available(), 4);
    }

    #[test]
    fn both_limits_zero_means_one_unavailable() {
        assert_eq!(limits(&deployment(5, json!(0), json!(0))), (0, 1));
        assert_eq!(limits(&deployment(1, json!("0%"), json!("10%"))), (0, 1));
    }

    #[test]
    fn recreate_and_default_replicas() {
        let recreate = json!({"kind": "Deployment", "spec": {"strategy": {"type": "Recreate"}}});
        assert_eq!(strategy(&recreate), Strategy::Recreate);
        assert_eq!(replicas(&recreate), 1);
        let d = json!({"spec": {"minReadySeconds": 10}});
        assert_eq!(min_ready(&d), Duration::from_secs(10));
    }

    #[test]
    fn pre_stop_sleeps_are_read_from_every_form() {
        let hook = |h: Value| json!({"lifecycle": {"preStop": h}});
        let secs = |c: Value| pre_stop_sleep(&c).map(|d| d.as_secs_f64());
        assert_eq!(secs(hook(json!({"sleep": {"seconds": 5}}))), Some(5.0));
        assert_eq!(
            secs(hook(json!({"exec": {"command": ["sh", "-c", "sleep 15"]}}))),
            Some(15.0)
        );
        assert_eq!(
            secs(hook(json!({"exec": {"command": ["/bin/sleep", "2.5"]}}))),
            Some(2.5)
        );
        assert_eq!(
            secs(hook(
                json!({"exec": {"command": ["sh", "-c", "sleep 7s; kill 1"]}})
            )),
            Some(7.0)
        );
        assert_eq!(secs(hook(json!({"httpGet": {"path": "/drain"}}))), None);
        assert_eq!(secs(json!({"name": "app"})), None);
    }

    #[test]
    fn template_paths_cover_every_pod_owner() {
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
        ] {
            let paths = pod_template_paths(kind).expect(kind);
            assert_eq!(paths.spec, "/spec/template/spec");
        }
        assert_eq!(
            pod_template_paths("CronJob").map(|p| p.spec),
            Some("/spec/jobTemplate/spec/template/spec")
        );
        assert_eq!(
            pod_template_paths("Pod").map(|p| p.metadata),
            Some("/metadata")
        );
        assert_eq!(pod_template_paths("Service"), None);
    }

    #[test]
    fn list_items_take_the_place_of_their_list() {
        let mut docs = vec![
            json!({"kind": "A"}),
            json!({"kind": "List", "items": [{"kind": "B"}, {"kind": "C"}]}),
            json!({"kind": "List"}),
        ];
        let kinds: Vec<&str> = objects(&docs).map(kind).collect();
        assert_eq!(kinds, ["A", "B", "C"]);
        assert_eq!(objects_mut(&mut docs).count(), 3);
        assert_eq!(grace_period(&json!({})), Duration::from_secs(30));
    }
}
