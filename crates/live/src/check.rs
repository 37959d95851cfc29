//! `check` on what runs: the manifest rules over live Deployments, StatefulSets and
//! DaemonSets (with their namespace's Services), and the rules only a live view can
//! check:
//!
//! - `service-bypasses-sidecar`: a Service that selects injected pods but targets the
//!   app's port (by number or name) behind the sidecar: its traffic never drains;
//! - `not-injected`: a running pod that its namespace (or its own label) opts in but
//!   that has no sidecar: created while no webhook answered, or before the opt-in;
//! - `pdb-blocks-eviction`: a PodDisruptionBudget that allows no eviction even with
//!   every pod healthy: node drains and cluster upgrades wait on it forever.
//!
//! The rules are pure functions over the listed objects ([`findings`]); [`check`]
//! only lists them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use lameduck_contract::env;
use lameduck_manifests::inject::{Options, SIDECAR_NAME};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::LiveError;

/// The live rules, with what each finds.
pub const RULES: [(&str, &str); 3] = [
    (
        "service-bypasses-sidecar",
        "a Service reaches the app's port behind the sidecar: its traffic is not drained",
    ),
    (
        "not-injected",
        "a pod its namespace or labels opt in to injection runs without the sidecar",
    ),
    (
        "pdb-blocks-eviction",
        "a PodDisruptionBudget allows no eviction even with every pod healthy",
    ),
];

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace.
    All,
}

/// One broken rule on a live object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveFinding {
    /// The object's namespace.
    pub namespace: String,
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The rule.
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// What one namespace holds, as JSON objects with `apiVersion` and `kind`.
#[derive(Debug, Clone, Default)]
pub struct NamespaceView {
    /// The namespace object (labels), if it could be read.
    pub namespace: Value,
    /// Deployments, StatefulSets and DaemonSets.
    pub workloads: Vec<Value>,
    /// Services.
    pub services: Vec<Value>,
    /// Pods.
    pub pods: Vec<Value>,
    /// PodDisruptionBudgets.
    pub budgets: Vec<Value>,
}

/// Lists what `scope` holds and checks it; `drain_seconds` as in the manifest rules.
pub async fn check(
    client: &Client,
    scope: &Scope,
    drain_seconds: u64,
) -> Result<Vec<LiveFinding>, LiveError> {
    let views = views(client, scope).await?;
    Ok(views
        .iter()
        .flat_map(|(name, view)| findings(name, view, drain_seconds))
        .collect())
}

async fn list<K>(client: &Client, scope: &Scope) -> Result<Vec<Value>, LiveError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = match scope {
        Scope::Namespace(namespace) => Api::namespaced(client.clone(), namespace),
        Scope::All => Api::all(client.clone()),
    };
    let where_ = match scope {
        Scope::Namespace(namespace) => format!(" in namespace {namespace}"),
        Scope::All => " in all namespaces".to_owned(),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 403 => LiveError::Forbidden {
                verb: "list".to_owned(),
                resource: crate::resources::resource(&K::group(&()), &K::plural(&())),
                namespace: match scope {
                    Scope::Namespace(n) => n.clone(),
                    Scope::All => "(all)".to_owned(),
                },
            },
            _ => LiveError::api(format!("list {}{where_}", K::plural(&())), e),
        })?;
    Ok(list
        .items
        .iter()
        .filter_map(|item| {
            let mut value = serde_json::to_value(item).ok()?;
            value["apiVersion"] = json!(K::api_version(&()));
            value["kind"] = json!(K::kind(&()));
            Some(value)
        })
        .collect())
}

/// Every namespace of `scope`, with what it holds.
async fn views(
    client: &Client,
    scope: &Scope,
) -> Result<BTreeMap<String, NamespaceView>, LiveError> {
    let mut views: BTreeMap<String, NamespaceView> = BTreeMap::new();
    let namespace_of = |object: &Value| {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (deployments, stateful, daemons, services, pods, budgets) = tokio::try_join!(
        list::<Deployment>(client, scope),
        list::<StatefulSet>(client, scope),
        list::<DaemonSet>(client, scope),
        list::<Service>(client, scope),
        list::<Pod>(client, scope),
        list::<PodDisruptionBudget>(client, scope),
    )?;
    for workload in deployments.into_iter().chain(stateful).chain(daemons) {
        views
            .entry(namespace_of(&workload))
            .or_default()
            .workloads
            .push(workload);
    }
    for service in services {
        views
            .entry(namespace_of(&service))
            .or_default()
            .services
            .push(service);
    }
    for pod in pods {
        views.entry(namespace_of(&pod)).or_default().pods.push(pod);
    }
    for budget in budgets {
        views
            .entry(namespace_of(&budget))
            .or_default()
            .budgets
            .push(budget);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match scope {
        Scope::Namespace(name) => {
            // A Role-bound user may not read its namespace: its labels stay unknown,
            // and pods opted in by their own label are still checked.
            let namespace = match namespaces.get(name).await {
                Ok(namespace) => serde_json::to_value(namespace).unwrap_or_default(),
                Err(_) => json!({"metadata": {"name": name}}),
            };
            views.entry(name.clone()).or_default().namespace = namespace;
        }
        Scope::All => {
            let list = namespaces
                .list(&ListParams::default())
                .await
                .map_err(|e| LiveError::api("list namespaces", e))?;
            for namespace in list.items {
                let name = namespace.metadata.name.clone().unwrap_or_default();
                if let Some(view) = views.get_mut(&name) {
                    view.namespace = serde_json::to_value(namespace).unwrap_or_default();
                }
            }
        }
    }
    Ok(views)
}

/// The findings in one namespace's objects.
pub fn findings(namespace: &str, view: &NamespaceView, drain_seconds: u64) -> Vec<LiveFinding> {
    let mut findings = Vec::new();
    // The manifest rules, over the workloads and the Services that may select them.
    let documents: Vec<Value> = view
        .services
        .iter()
        .chain(&view.workloads)
        .map(without_status)
        .collect();
    for finding in lameduck_manifests::check(&documents, drain_seconds) {
        findings.push(LiveFinding {
            namespace: namespace.to_owned(),
            kind: finding.kind,
            name: finding.name,
            rule: finding.rule,
            message: finding.message,
        });
    }
    let mut push = |kind: &str, name: &str, rule: &'static str, message: String| {
        findings.push(LiveFinding {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            rule,
            message,
        });
    };
    let live: Vec<&Value> = view
        .pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    for service in &view.services {
        for message in bypasses(service, &live) {
            push(
                "Service",
                name(service),
                "service-bypasses-sidecar",
                message,
            );
        }
    }
    let pods: Vec<Value> = live.iter().map(|p| (*p).clone()).collect();
    let mut namespace_object = view.namespace.clone();
    namespace_object["metadata"]["name"] = json!(namespace);
    for notice in lameduck_webhook::missed::notices(&Options::default(), &namespace_object, &pods) {
        let pod = notice.regarding["name"].as_str().unwrap_or_default();
        let message = notice.note.trim_start_matches("lameduck: ").to_owned();
        push("Pod", pod, "not-injected", message);
    }
    for budget in &view.budgets {
        if let Some(message) = blocks_eviction(budget) {
            push(
                "PodDisruptionBudget",
                name(budget),
                "pdb-blocks-eviction",
                message,
            );
        }
    }
    findings
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn without_status(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    object
}

/// The sidecar's listeners on `pod`: (the port it serves, the app port behind it).
fn listeners(pod: &Value) -> Vec<(u16, u16)> {
    let port = |address: &str| address.rsplit(':').next()?.parse::<u16>().ok();
    let Some(sidecar) = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().into_iter().flatten())
        .find(|c| c["name"] == SIDECAR_NAME)
    else {
        return Vec::new();
    };
    let mut listeners = Vec::new();
    let listen = lameduck_manifests::workload::env_value(sidecar, env::LISTEN)
        .unwrap_or(lameduck_contract::defaults::LISTEN);
    let upstream = lameduck_manifests::workload::env_value(sidecar, env::UPSTREAM)
        .unwrap_or(lameduck_contract::defaults::UPSTREAM);
    if let (Some(listen), Some(upstream)) = (port(listen), port(upstream)) {
        listeners.push((listen, upstream));
    }
    let more = lameduck_manifests::workload::env_value(sidecar, env::LISTENERS).unwrap_or_default();
    for listener in more.split(',').filter(|l| !l.is_empty()) {
        let Some((listen, upstream)) = listener.split_once('=') else {
            continue;
        };
        let upstream = upstream.split('/').next().unwrap_or_default();
        if let (Some(listen), Some(upstream)) = (port(listen), port(upstream)) {
            listeners.push((listen, upstream));
        }
    }
    listeners
}

/// The name of `pod`'s container port `number`, if one names it.
fn port_name(pod: &Value, number: u16) -> Option<&str> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|list| pod["spec"][*list].as_array().into_iter().flatten())
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["containerPort"].as_u64() == Some(u64::from(number)))
        .and_then(|p| p["name"].as_str())
}

fn selects(service: &Value, pod: &Value) -> bool {
    let Some(selector) = service["spec"]["selector"].as_object() else {
        return false;
    };
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| pod["metadata"]["labels"][k] == *v)
}

/// Each port of `service` that reaches, on an injected pod it selects, the app's port
/// behind the sidecar.
fn bypasses(service: &Value, pods: &[&Value]) -> Vec<String> {
    let mut messages = Vec::new();
    let service_name = name(service);
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        let target = &port["targetPort"];
        let found = pods
            .iter()
            .filter(|pod| selects(service, pod))
            .find_map(|pod| {
                listeners(pod).into_iter().find_map(|(listen, upstream)| {
                    let by_number = target.as_u64() == Some(u64::from(upstream))
                        || (target.is_null() && port["port"].as_u64() == Some(u64::from(upstream)));
                    let by_name = target
                        .as_str()
                        .is_some_and(|t| port_name(pod, upstream) == Some(t));
                    (by_number || by_name)
                        .then(|| (name(pod), listen, upstream, port_name(pod, listen)))
                })
            });
        if let Some((pod, listen, upstream, listen_name)) = found {
            let fix = match listen_name {
                Some(named) => format!("{named} ({listen})"),
                None => listen.to_string(),
            };
            messages.push(format!(
                "Service {service_name} port {} targets {} on pod {pod}, the app's port {upstream} behind the sidecar: \
                 its requests bypass the drain; set targetPort to {fix}",
                port["port"],
                match target {
                    Value::Null => port["port"].to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            ));
        }
    }
    messages
}

/// Why `budget` blocks every eviction, if it does.
fn blocks_eviction(budget: &Value) -> Option<String> {
    let spec = &budget["spec"];
    let status = &budget["status"];
    let expected = status["expectedPods"].as_u64().unwrap_or(0);
    let zero = |v: &Value| v.as_u64() == Some(0) || v.as_str() == Some("0%");
    let why = if zero(&spec["maxUnavailable"]) {
        Some(format!("maxUnavailable {}", spec["maxUnavailable"]))
    } else if spec["minAvailable"].as_str() == Some("100%") {
        Some("minAvailable 100%".to_owned())
    } else if let Some(min) = spec["minAvailable"].as_u64()
        && expected > 0
        && min >= expected
    {
        Some(format!("minAvailable {min} with {expected} pods"))
    } else {
        let healthy = status["currentHealthy"].as_u64().unwrap_or(0);
        let allowed = status["disruptionsAllowed"].as_u64();
        (expected > 0 && healthy >= expected && allowed == Some(0))
            .then(|| format!("no disruption allowed with all {expected} pods healthy"))
    };
    why.map(|why| {
        format!(
            "PodDisruptionBudget {} allows no eviction ({why}): node drains and upgrades wait on it forever; \
             allow at least one (maxUnavailable: 1)",
            name(budget)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injected_pod(name: &str) -> Value {
        json!({
            "metadata": {"name": name, "labels": {"app": "a"}},
            "spec": {
                "initContainers": [{"name": SIDECAR_NAME, "restartPolicy": "Always",
                    "env": [{"name": "LAMEDUCK_LISTEN", "value": "0.0.0.0:18080"},
                            {"name": "LAMEDUCK_UPSTREAM", "value": "127.0.0.1:8080"}],
                    "ports": [{"name": "http", "containerPort": 18080}]}],
                "containers": [{"name": "app", "ports": [{"name": "lameduck-app", "containerPort": 8080}]}]
            }
        })
    }

    fn service(target: Value) -> Value {
        json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"},
               "ports": [{"port": 80, "targetPort": target}]}})
    }

    #[test]
    fn a_service_targeting_the_app_port_of_injected_pods_bypasses_the_sidecar() {
        let pod = injected_pod("a-1");
        let pods = [&pod];
        let found = bypasses(&service(json!(8080)), &pods);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("set targetPort to http (18080)"),
            "{}",
            found[0]
        );
        assert_eq!(bypasses(&service(json!("lameduck-app")), &pods).len(), 1);
        assert!(bypasses(&service(json!("http")), &pods).is_empty());
        assert!(bypasses(&service(json!(18080)), &pods).is_empty());
        let mut other = service(json!(8080));
        other["spec"]["selector"] = json!({"app": "b"});
        assert!(
            bypasses(&other, &pods).is_empty(),
            "selects no injected pod"
        );
    }

    #[test]
    fn budgets_that_allow_no_eviction_are_found() {
        let budget = |spec: Value, status: Value| json!({"metadata": {"name": "b"}, "spec": spec, "status": status});
        let healthy = json!({"expectedPods": 3, "currentHealthy": 3, "disruptionsAllowed": 0});
        let blocked = [
            budget(json!({"maxUnavailable": 0}), json!({})),
            budget(json!({"maxUnavailable": "0%"}), json!({})),
            budget(json!({"minAvailable": "100%"}), json!({})),
            budget(json!({"minAvailable": 3}), healthy.clone()),
            budget(json!({"minAvailable": "90%"}), healthy),
        ];
        for b in &blocked {
            assert!(blocks_eviction(b).is_some(), "{b}");
        }
        let fine = [
            budget(
                json!({"maxUnavailable": 1}),
                json!({"expectedPods": 3, "currentHealthy": 3, "disruptionsAllowed": 1}),
            ),
            budget(
                json!({"minAvailable": 2}),
                json!({"expectedPods": 3, "currentHealthy": 3, "disruptionsAllowed": 1}),
            ),
            // Unhealthy pods are why nothing may be evicted: not the budget's fault.
            budget(
                json!({"minAvailable": 2}),
                json!({"expectedPods": 3, "currentHealthy": 2, "disruptionsAllowed": 0}),
            ),
        ];
        for b in &fine {
            assert_eq!(blocks_eviction(b), None, "{b}");
        }
    }

    #[test]
    fn an_opted_in_namespace_with_an_uninjected_pod_is_found() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}
        });
        let view = |labels: Value| NamespaceView {
            namespace: json!({"metadata": {"name": "shop", "labels": labels}}),
            pods: vec![pod.clone()],
            ..NamespaceView::default()
        };
        let found = findings("shop", &view(json!({"lameduck.dev/inject": "enabled"})), 10);
        let rules: Vec<&str> = found.iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["not-injected"]);
        assert_eq!(
            (found[0].kind.as_str(), found[0].name.as_str()),
            ("Pod", "web-1")
        );
        assert!(findings("shop", &view(json!({})), 10).is_empty());
    }
}
