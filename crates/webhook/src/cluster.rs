//! What the webhook asks the API server: a namespace's annotations and Services
//! (cached for a few seconds: a rollout admits many pods of one namespace at once),
//! and Events on the owners of pods it could not inject. Every call is bounded in
//! time; a failed lookup admits the pod with what is known, never blocks it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use lameduck_manifests::Options;

use crate::INJECT_LABEL;
use crate::admit::{NamespaceFacts, Notice};

/// How long a namespace's facts are reused.
pub const FACTS_TTL: Duration = Duration::from_secs(5);
/// How long one lookup may take (the API server waits 5 s for the whole admission).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The Events' reporting controller.
pub const REPORTING_CONTROLLER: &str = "lameduck.dev/webhook";

/// Access to the cluster, or none (`--no-cluster`: no namespace defaults, no Service
/// check, no Events).
#[derive(Clone)]
pub struct Cluster {
    client: Option<Client>,
    /// This webhook's pod name: the Events' reporting instance.
    instance: String,
    cache: Arc<Mutex<HashMap<String, (Instant, NamespaceFacts)>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("connected", &self.client.is_some())
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster reached with `client`.
    pub fn new(client: Client, instance: String) -> Self {
        Self {
            client: Some(client),
            instance,
            cache: Arc::default(),
        }
    }

    /// Connects with the in-cluster service account, or the kubeconfig of
    /// `KUBECONFIG`/`~/.kube/config` outside a cluster.
    pub async fn connect(instance: String) -> Result<Self, kube::Error> {
        // kube's rustls needs a process-wide crypto provider; ring is the one built in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self::new(Client::try_default().await?, instance))
    }

    /// No cluster: every namespace has no annotations and no Services.
    pub fn none() -> Self {
        Self {
            client: None,
            instance: String::new(),
            cache: Arc::default(),
        }
    }

    /// The namespace's annotations and Services (cached for [`FACTS_TTL`]).
    pub async fn facts(&self, namespace: &str) -> Result<NamespaceFacts, String> {
        let Some(client) = &self.client else {
            return Ok(NamespaceFacts::default());
        };
        if namespace.is_empty() {
            return Ok(NamespaceFacts::default());
        }
        if let Some((at, facts)) = self.cache.lock().await.get(namespace)
            && at.elapsed() < FACTS_TTL
        {
            return Ok(facts.clone());
        }
        let lookup = async {
            let namespaces: Api<Namespace> = Api::all(client.clone());
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let params = ListParams::default();
            let (ns, list) = tokio::join!(namespaces.get(namespace), services.list(&params));
            let annotations: Map<String, Value> = ns
                .map_err(|e| format!("get namespace {namespace}: {e}"))?
                .metadata
                .annotations
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let services = list
                .map_err(|e| format!("list services in {namespace}: {e}"))?
                .items
                .into_iter()
                .filter_map(|service| {
                    let mut value = serde_json::to_value(service).ok()?;
                    if let Some(map) = value.as_object_mut() {
                        map.insert("apiVersion".to_owned(), json!("v1"));
                        map.insert("kind".to_owned(), json!("Service"));
                        map.remove("status");
                    }
                    Some(value)
                })
                .collect();
            Ok::<_, String>(NamespaceFacts {
                annotations,
                services,
            })
        };
        let facts = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("looking up namespace {namespace}: timed out"))??;
        self.cache
            .lock()
            .await
            .insert(namespace.to_owned(), (Instant::now(), facts.clone()));
        Ok(facts)
    }

    /// Records `notice` as a Warning Event (events.k8s.io/v1).
    pub async fn record(&self, notice: &Notice) -> Result<(), String> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let event = event_object(notice, &self.instance, &now);
        let event: Event = serde_json::from_value(event).map_err(|e| format!("event: {e}"))?;
        let events: Api<Event> = Api::namespaced(client.clone(), &notice.namespace);
        let created = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            events.create(&PostParams::default(), &event),
        )
        .await
        .map_err(|_| "creating an event: timed out".to_owned())?;
        match created {
            Ok(_) => Ok(()),
            // A fixed name already recorded (by another replica, or an earlier pass).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(format!("creating an event in {}: {e}", notice.namespace)),
        }
    }

    /// Records each notice in turn, counting the results.
    pub async fn record_all(&self, notices: &[Notice], metrics: &crate::Metrics) {
        for notice in notices {
            let result = match self.record(notice).await {
                Ok(()) => "created",
                Err(error) => {
                    tracing::warn!(%error, "event not recorded");
                    "failed"
                }
            };
            metrics.events.with_label_values(&[result]).inc();
        }
    }

    /// Pods that should have the sidecar and run without it, as notices
    /// ([`crate::missed`]): the opted-in namespaces' pods, and pods labelled in.
    pub async fn missed_pods(&self, options: &Options) -> Result<Vec<Notice>, String> {
        let Some(client) = &self.client else {
            return Ok(Vec::new());
        };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespaces = namespaces
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list namespaces: {e}"))?;
        let labelled_in = format!("{INJECT_LABEL}=enabled");
        let all_pods: Api<Pod> = Api::all(client.clone());
        let labelled = all_pods
            .list(&ListParams::default().labels(&labelled_in))
            .await
            .map_err(|e| format!("list pods labelled {labelled_in}: {e}"))?;
        let mut notices = Vec::new();
        for namespace in namespaces.items {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            let enabled = namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECT_LABEL))
                .is_some_and(|v| v == "enabled");
            let pods: Vec<Value> = if enabled {
                let api: Api<Pod> = Api::namespaced(client.clone(), &name);
                api.list(&ListParams::default())
                    .await
                    .map_err(|e| format!("list pods in {name}: {e}"))?
                    .items
                    .into_iter()
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect()
            } else {
                labelled
                    .items
                    .iter()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(name.as_str()))
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect()
            };
            if pods.is_empty() {
                continue;
            }
            let namespace = serde_json::to_value(&namespace).map_err(|e| e.to_string())?;
            notices.extend(crate::missed::notices(options, &namespace, &pods));
        }
        Ok(notices)
    }

    /// Every `interval` until `stop`: finds the missed pods and records their Events.
    pub async fn watch_missed_pods(
        self,
        options: Options,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
        metrics: crate::Metrics,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let notices = match self.missed_pods(&options).await {
                Ok(notices) => notices,
                Err(error) => {
                    tracing::warn!(%error, "missed-pod check failed");
                    continue;
                }
            };
            self.record_all(&notices, &metrics).await;
        }
    }
}

/// The Event for `notice` (events.k8s.io/v1, Warning). Without a fixed name it gets
/// a generated one after what it regards: a valid DNS subdomain, as Event names must be.
fn event_object(notice: &Notice, instance: &str, now: &str) -> Value {
    let regarding = notice
        .regarding
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim_end_matches(['*', '-', '.']);
    let regarding = if regarding.is_empty() {
        "pod"
    } else {
        regarding
    };
    let metadata = match &notice.event_name {
        Some(fixed) => json!({"name": fixed, "namespace": notice.namespace}),
        // The API server masks the trailing `-` of a generateName when validating it.
        None => {
            json!({"generateName": format!("{regarding}.lameduck-"), "namespace": notice.namespace})
        }
    };
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": metadata,
        "eventTime": now,
        "type": "Warning",
        "reason": notice.reason,
        "action": "Inject",
        "note": truncate(&notice.note, 1000),
        "regarding": notice.regarding,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
    })
}

/// At most `max` bytes, cut at a character boundary (an Event's note holds 1 kB).
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kubernetes' DNS subdomain rule (RFC 1123 labels joined by dots).
    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    fn notice(name: &str) -> Notice {
        Notice {
            namespace: "shop".to_owned(),
            regarding: json!({"kind": "Pod", "name": name}),
            reason: "NotInjected",
            note: "x".repeat(2000),
            event_name: None,
        }
    }

    #[test]
    fn generated_event_names_are_valid_for_every_kind_of_pod_name() {
        for name in ["web-7d9f8b6c5d", "web-7d9f8b6c5d-*", "*", "", "a.b-"] {
            let event = event_object(&notice(name), "webhook-0", "2026-12-02T16:00:00Z");
            let prefix = event["metadata"]["generateName"]
                .as_str()
                .expect("generateName");
            let masked = prefix.trim_end_matches('-');
            assert!(is_dns_subdomain(masked), "{name:?} gives {prefix:?}");
            assert_eq!(event["note"].as_str().map(str::len), Some(1000));
            serde_json::from_value::<Event>(event).expect("a typed Event");
        }
    }
}
