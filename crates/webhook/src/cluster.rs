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
        let name = notice
            .regarding
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("pod")
            .trim_end_matches('*');
        let metadata = match &notice.event_name {
            Some(fixed) => json!({"name": fixed, "namespace": notice.namespace}),
            None => {
                json!({"generateName": format!("{name}.lameduck."), "namespace": notice.namespace})
            }
        };
        let event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": metadata,
            "eventTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            "type": "Warning",
            "reason": notice.reason,
            "action": "Inject",
            "note": truncate(&notice.note, 1000),
            "regarding": notice.regarding,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
        });
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
            for notice in notices {
                let result = match self.record(&notice).await {
                    Ok(()) => "created",
                    Err(error) => {
                        tracing::warn!(%error, "event not recorded");
                        "failed"
                    }
                };
                metrics.events.with_label_values(&[result]).inc();
            }
        }
    }
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
