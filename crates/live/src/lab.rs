//! The lab on a live cluster. Per scenario: its manifests (the local lab's, the
//! sidecar injected as the scenario says) are labelled with the run and server-side
//! applied, the rollout is awaited, POST load starts through the entry point, a
//! `VERSION` bump in the pod template rolls the Deployment, the load goes on until
//! every old pod is gone, and what the watches saw attributes each failure. Then
//! everything with the run's label is deleted and waited for, on success, error or
//! interruption alike.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Uri;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::{Api, Client};
use lameduck_lab::observed::{Observed, Response};
use lameduck_lab::{Scenario, ScenarioResult};
use lameduck_load::{Limit, LoadConfig, Progress, Report};
use serde_json::{Value, json};

use crate::access::{CLUSTER_RULES, LAB_RULES, Permission, permissions, require};
use crate::resources::{APPLIED, CONTROLLED, Kind};
use crate::watch::Watch;
use crate::{FIELD_MANAGER, LAB_LABEL, LiveError};

/// The lab's requests: most short, a quarter as long as the longest request the
/// shipped manifests allow for (10 s), as in the local lab.
const WAITS: [&str; 4] = ["0", "0.05", "0.2", "10"];
/// Load before the rollout starts, and after the last old pod is gone.
const LOAD_MARGIN: Duration = Duration::from_secs(5);
/// How long the entry point may take to serve a new scenario.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long deleted objects may take to go (pods drain for their grace period).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(240);
/// Beyond `progressDeadlineSeconds`, how long the lab waits for the controller to say so.
const DEADLINE_SLACK: Duration = Duration::from_secs(30);
/// Kubernetes' default `progressDeadlineSeconds`.
const DEFAULT_PROGRESS_DEADLINE: u64 = 600;
/// The name of the NodePort Service the lab adds when no entry URL is given.
pub const ENTRY_SERVICE: &str = "lameduck-lab-entry";
/// Container waiting reasons that mean the image will not come.
const IMAGE_FAILURES: [&str; 3] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];
/// The app container's env var the rollout bumps.
const VERSION_ENV: &str = "VERSION";

/// A lab run against a cluster.
#[derive(Clone)]
pub struct LiveLab {
    /// The cluster.
    pub client: Client,
    /// Where everything goes (created, and deleted at the end, when missing).
    pub namespace: String,
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// A Deployment and its Service (and Ingress) instead of the shipped demo.
    pub manifest: Option<Vec<Value>>,
    /// The app container's image instead of the manifest's.
    pub image: Option<String>,
    /// The entry point (none: a NodePort Service on a node's InternalIP).
    pub url: Option<String>,
    /// POST requests per second.
    pub rate: f64,
    /// This run's value of [`LAB_LABEL`].
    pub run: String,
}

impl std::fmt::Debug for LiveLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLab")
            .field("namespace", &self.namespace)
            .field("scenarios", &self.scenarios)
            .field("url", &self.url)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The scenarios that finished.
    pub results: Vec<ScenarioResult>,
    /// What stopped the run early, if anything did.
    pub error: Option<LiveError>,
    /// Interrupted (SIGINT) before its end.
    pub interrupted: bool,
    /// The clean-up's failure, if it left anything behind.
    pub cleanup: Option<LiveError>,
    /// Whether it created anything (not when a permission or the namespace check
    /// stopped it first).
    pub created: bool,
}

/// One scenario's objects, applied.
struct Applied {
    deployment: Value,
    service: String,
}

impl LiveLab {
    /// Checks the permissions (nothing is created when one is missing), then runs
    /// every scenario, calling `on_result` after each, until done, an error, or
    /// `interrupt`; then deletes everything with the run's label.
    pub async fn run(
        &self,
        mut on_result: impl FnMut(&ScenarioResult),
        interrupt: impl Future<Output = ()>,
    ) -> Outcome {
        if let Err(error) = self.prepare().await {
            return Outcome {
                results: Vec::new(),
                error: Some(error),
                interrupted: false,
                cleanup: None,
                created: false,
            };
        }
        let mut results = Vec::new();
        let work = Box::pin(self.scenarios(&mut results, &mut on_result));
        let (error, interrupted) = tokio::select! {
            finished = work => (finished.err(), false),
            () = interrupt => (None, true),
        };
        if interrupted {
            tracing::info!(run = %self.run, "interrupted; cleaning up");
        }
        let cleanup = self.cleanup().await.err();
        Outcome {
            results,
            error,
            interrupted,
            cleanup,
            created: true,
        }
    }

    async fn scenarios(
        &self,
        results: &mut Vec<ScenarioResult>,
        on_result: &mut impl FnMut(&ScenarioResult),
    ) -> Result<(), LiveError> {
        for scenario in &self.scenarios {
            let result = self.scenario(*scenario).await?;
            on_result(&result);
            results.push(result);
            self.delete_applied().await?;
        }
        Ok(())
    }

    /// Checks the permissions and makes sure the namespace exists.
    async fn prepare(&self) -> Result<(), LiveError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let exists = match namespaces.get(&self.namespace).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            // A Role-bound user may not read namespaces: theirs exists.
            Err(kube::Error::Api(e)) if e.code == 403 => true,
            Err(e) => {
                return Err(LiveError::api(
                    format!("get namespace {}", self.namespace),
                    e,
                ));
            }
        };
        let cluster = |resource: &str, verbs: &[&str]| -> Vec<Permission> {
            permissions(&CLUSTER_RULES)
                .into_iter()
                .filter(|p| p.resource == resource && verbs.contains(&p.verb))
                .collect()
        };
        if !exists {
            require(
                &self.client,
                "",
                &cluster("namespaces", &["create", "delete"]),
            )
            .await?;
        }
        if self.url.is_none() {
            require(&self.client, "", &cluster("nodes", &["list"])).await?;
        }
        require(&self.client, &self.namespace, &permissions(&LAB_RULES)).await?;
        if !exists {
            let namespace = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self.namespace, "labels": {LAB_LABEL: self.run}},
            });
            let namespace: Namespace = serde_json::from_value(namespace)
                .map_err(|e| LiveError::Manifest(format!("namespace {}: {e}", self.namespace)))?;
            namespaces
                .create(&PostParams::default(), &namespace)
                .await
                .map_err(|e| LiveError::api(format!("create namespace {}", self.namespace), e))?;
            tracing::info!(namespace = %self.namespace, "namespace created");
        }
        Ok(())
    }

    /// Plays one scenario.
    async fn scenario(&self, scenario: Scenario) -> Result<ScenarioResult, LiveError> {
        let mut documents = scenario
            .manifests(self.manifest.as_ref())
            .map_err(|source| LiveError::Scenario { scenario, source })?;
        prepare_documents(&mut documents, &self.run, self.image.as_deref())?;
        let applied = self.apply(&documents).await?;
        let name = name_of(&applied.deployment);
        self.until_rolled_out(&name).await?;
        let url = match &self.url {
            Some(url) => url.clone(),
            None => self.node_port_entry(&applied.service).await?,
        };
        let urls = load_urls(&url)?;
        self.until_the_entry_serves(&urls[0], &name).await?;

        let origin = SystemTime::now();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let watches = [
            Watch::start(pods, Some(self.selector()), false),
            Watch::start(
                slices,
                Some(format!("kubernetes.io/service-name={}", applied.service)),
                false,
            ),
            Watch::start(events, None, true),
        ];
        let load = RunningLoad::start(urls, self.rate);
        tokio::time::sleep(LOAD_MARGIN).await;
        tracing::info!(scenario = %scenario, deployment = %name, "rolling out");
        let rollout_started = Instant::now();
        let mut bumped = applied.deployment.clone();
        bump_version(&mut bumped)?;
        self.apply_one(&bumped).await?;
        let rolled = async {
            self.until_rolled_out(&name).await?;
            self.until_no_pod_terminates().await
        }
        .await;
        let rollout_seconds = rollout_started.elapsed().as_secs_f64();
        tokio::time::sleep(LOAD_MARGIN).await;
        let (started, report) = load.finish().await?;
        let [pods, slices, events] = watches.each_ref().map(Watch::stop);
        rolled?;
        let responses = responses(started, &report);
        let observed = Observed::from_responses(origin, &pods, &slices, &events, &responses);
        let summary = lameduck_load::Summary::of(&report);
        let p99 = summary.latency_from_scheduled.map_or(0.0, |l| l.p99_ms);
        Ok(observed.result(scenario.name(), &responses, rollout_seconds, p99))
    }

    fn selector(&self) -> String {
        format!("{LAB_LABEL}={}", self.run)
    }

    /// Applies `documents` in the order of [`APPLIED`]; returns the Deployment and the
    /// Service that selects its pods.
    async fn apply(&self, documents: &[Value]) -> Result<Applied, LiveError> {
        let mut ordered: Vec<&Value> = documents.iter().collect();
        ordered.sort_by_key(|d| Kind::of(d).and_then(|k| APPLIED.iter().position(|a| *a == k)));
        for document in &ordered {
            self.apply_one(document).await?;
        }
        let deployment = documents
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .cloned()
            .ok_or_else(|| LiveError::Manifest("no Deployment".to_owned()))?;
        let service = service_of(documents, &deployment)?;
        Ok(Applied {
            deployment,
            service,
        })
    }

    async fn apply_one(&self, document: &Value) -> Result<(), LiveError> {
        let kind = Kind::of(document).ok_or_else(|| unsupported(document))?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &kind.api_resource());
        let name = name_of(document);
        let mut object = document.clone();
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.insert("namespace".to_owned(), json!(self.namespace));
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|e| LiveError::api(format!("apply {} {name}", kind.kind.to_lowercase()), e))?;
        Ok(())
    }

    /// Waits until the Deployment's pods are all of its current template and
    /// available; an image that cannot be pulled or a passed progress deadline ends
    /// the wait with an error.
    async fn until_rolled_out(&self, name: &str) -> Result<(), LiveError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let started = Instant::now();
        loop {
            let deployment = deployments
                .get(name)
                .await
                .map_err(|e| LiveError::api(format!("get deployment {name}"), e))?;
            let deployment = serde_json::to_value(deployment).unwrap_or_default();
            let deadline = deployment["spec"]["progressDeadlineSeconds"]
                .as_u64()
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE);
            match rollout_state(&deployment) {
                RolloutState::Done => return Ok(()),
                RolloutState::Stuck(message) => {
                    return Err(LiveError::RolloutStuck {
                        name: name.to_owned(),
                        seconds: deadline,
                        message,
                    });
                }
                RolloutState::Progressing => {}
            }
            self.no_image_failure().await?;
            if started.elapsed() > Duration::from_secs(deadline) + DEADLINE_SLACK {
                return Err(LiveError::RolloutStuck {
                    name: name.to_owned(),
                    seconds: deadline,
                    message: "the Deployment controller did not report progress".to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn no_image_failure(&self) -> Result<(), LiveError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| LiveError::api("list pods", e))?;
        for pod in list.items {
            let pod = serde_json::to_value(pod).unwrap_or_default();
            let statuses = ["containerStatuses", "initContainerStatuses"]
                .iter()
                .flat_map(|list| pod["status"][*list].as_array().into_iter().flatten());
            for status in statuses {
                let waiting = &status["state"]["waiting"];
                if IMAGE_FAILURES.contains(&waiting["reason"].as_str().unwrap_or_default()) {
                    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                    return Err(LiveError::ImagePull {
                        image: text(&status["image"]),
                        pod: text(&pod["metadata"]["name"]),
                        message: text(&waiting["message"]),
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until no pod of the run is terminating.
    async fn until_no_pod_terminates(&self) -> Result<(), LiveError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        loop {
            let list = pods
                .list(&ListParams::default().labels(&self.selector()))
                .await
                .map_err(|e| LiveError::api("list pods", e))?;
            if list
                .items
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_none())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A NodePort Service like `service` (labelled as the lab's); its URL on the
    /// first node's InternalIP.
    async fn node_port_entry(&self, service: &str) -> Result<String, LiveError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let original = services
            .get(service)
            .await
            .map_err(|e| LiveError::api(format!("get service {service}"), e))?;
        let original = serde_json::to_value(original).unwrap_or_default();
        let ports: Vec<Value> = original["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                json!({"name": p["name"], "port": p["port"], "targetPort": p["targetPort"], "protocol": p["protocol"]})
            })
            .collect();
        let entry = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ENTRY_SERVICE, "labels": {LAB_LABEL: self.run}},
            "spec": {"type": "NodePort", "selector": original["spec"]["selector"], "ports": ports},
        });
        self.apply_one(&entry).await?;
        let entry = services
            .get(ENTRY_SERVICE)
            .await
            .map_err(|e| LiveError::api(format!("get service {ENTRY_SERVICE}"), e))?;
        let entry = serde_json::to_value(entry).unwrap_or_default();
        let node_port = entry["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .ok_or_else(|| {
                LiveError::Manifest(format!("service {ENTRY_SERVICE} got no nodePort"))
            })?;
        let nodes: Api<Node> = Api::all(self.client.clone());
        let nodes = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| LiveError::api("list nodes", e))?;
        let nodes = serde_json::to_value(nodes.items).unwrap_or_default();
        let address = nodes
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["status"]["addresses"].as_array().into_iter().flatten())
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .ok_or_else(|| LiveError::Manifest("no node has an InternalIP".to_owned()))?
            .to_owned();
        Ok(format!("http://{address}:{node_port}/"))
    }

    /// Waits until a POST to `url` is answered 200 by a pod of `deployment` three
    /// times in a row (an app without `x-pod` counts by its status alone).
    async fn until_the_entry_serves(&self, url: &Uri, deployment: &str) -> Result<(), LiveError> {
        let started = Instant::now();
        let mut streak = 0;
        let mut last = String::from("nothing yet");
        while streak < 3 {
            if started.elapsed() > ENTRY_TIMEOUT {
                return Err(LiveError::EntryPoint {
                    url: url.to_string(),
                    seconds: ENTRY_TIMEOUT.as_secs(),
                    last,
                });
            }
            let report = one_request(url).await?;
            let ours = report.records.first().is_some_and(|r| {
                let pod = r.pod().and_then(|i| report.strings.get(i));
                r.ok() && pod.is_none_or(|p| p.starts_with(&format!("{deployment}-")))
            });
            last = report.records.first().map_or_else(String::new, |r| {
                format!("status {:?}, error {:?}", r.status(), r.error())
            });
            streak = if ours { streak + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }

    /// Deletes every object of the scenario (by the run's label) and waits until
    /// they and their pods are gone.
    async fn delete_applied(&self) -> Result<(), LiveError> {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..DeleteParams::default()
        };
        for kind in APPLIED.iter().rev() {
            let (api, names) = self.labelled(kind).await?;
            for name in names {
                match api.delete(&name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        return Err(LiveError::api(
                            format!("delete {} {name}", kind.kind.to_lowercase()),
                            e,
                        ));
                    }
                }
            }
        }
        let started = Instant::now();
        loop {
            let left = self.left().await?;
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > CLEANUP_TIMEOUT {
                return Err(LiveError::Leftovers {
                    left: left.join(", "),
                    seconds: CLEANUP_TIMEOUT.as_secs(),
                    run: self.run.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The run's objects that still exist, as `kind/name`.
    async fn left(&self) -> Result<Vec<String>, LiveError> {
        let mut left = Vec::new();
        for kind in APPLIED.iter().chain(&CONTROLLED) {
            let (_, names) = self.labelled(kind).await?;
            left.extend(names.into_iter().map(|n| format!("{}/{n}", kind.kind)));
        }
        Ok(left)
    }

    /// The names of the run's objects of `kind`, and the API to reach them.
    async fn labelled(&self, kind: &Kind) -> Result<(Api<DynamicObject>, Vec<String>), LiveError> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &kind.api_resource());
        let objects = api
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| LiveError::api(format!("list {}", kind.resource()), e))?;
        let names = objects
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect();
        Ok((api, names))
    }

    /// Deletes what the run created, the namespace last if it carries the run's label
    /// (a namespace the user may not read was not created by the run).
    async fn cleanup(&self) -> Result<(), LiveError> {
        let deleted = self.delete_applied().await;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ours = match namespaces.get_opt(&self.namespace).await {
            Ok(Some(namespace)) => namespace
                .metadata
                .labels
                .is_some_and(|l| l.get(LAB_LABEL) == Some(&self.run)),
            _ => false,
        };
        if !ours {
            return deleted;
        }
        match namespaces
            .delete(&self.namespace, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return deleted,
            Err(e) => {
                return Err(LiveError::api(
                    format!("delete namespace {}", self.namespace),
                    e,
                ));
            }
        }
        let started = Instant::now();
        loop {
            match namespaces.get_opt(&self.namespace).await {
                Ok(None) => return deleted,
                Ok(Some(_)) if started.elapsed() > CLEANUP_TIMEOUT => {
                    return Err(LiveError::Leftovers {
                        left: format!("Namespace/{}", self.namespace),
                        seconds: CLEANUP_TIMEOUT.as_secs(),
                        run: self.run.clone(),
                    });
                }
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    return Err(LiveError::api(
                        format!("get namespace {}", self.namespace),
                        e,
                    ));
                }
            }
        }
    }
}

/// Where a Deployment's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RolloutState {
    /// Every pod is of the current template and available, and no other is left.
    Done,
    /// Still going.
    Progressing,
    /// The controller gave up: `ProgressDeadlineExceeded`, with its message.
    Stuck(String),
}

/// `kubectl rollout status`'s rule, on a Deployment as JSON.
fn rollout_state(deployment: &Value) -> RolloutState {
    let generation = deployment["metadata"]["generation"].as_u64().unwrap_or(0);
    let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
    let status = &deployment["status"];
    let stuck = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if let Some(condition) = stuck {
        return RolloutState::Stuck(condition["message"].as_str().unwrap_or_default().to_owned());
    }
    let count = |field: &str| status[field].as_u64().unwrap_or(0);
    let done = count("observedGeneration") >= generation
        && count("updatedReplicas") >= wanted
        && count("replicas") <= count("updatedReplicas")
        && count("availableReplicas") >= wanted;
    if done {
        RolloutState::Done
    } else {
        RolloutState::Progressing
    }
}

/// The lab's label on every document and on the Deployment's pod template; the app
/// container's image replaced by `image`. Kinds the lab does not apply are refused.
fn prepare_documents(
    documents: &mut [Value],
    run: &str,
    image: Option<&str>,
) -> Result<(), LiveError> {
    let deployments = documents
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .count();
    if deployments != 1 {
        return Err(LiveError::Manifest(format!(
            "the lab rolls one Deployment; the manifests hold {deployments}"
        )));
    }
    for document in documents.iter_mut() {
        if Kind::of(document).is_none() {
            return Err(unsupported(document));
        }
        document["metadata"]["labels"][LAB_LABEL] = json!(run);
        if document["kind"] == "Deployment" {
            document["spec"]["template"]["metadata"]["labels"][LAB_LABEL] = json!(run);
            if let Some(image) = image {
                let container = app_container(document).ok_or_else(|| {
                    LiveError::Manifest("the Deployment has no app container".to_owned())
                })?;
                container["image"] = json!(image);
            }
        }
    }
    Ok(())
}

fn unsupported(document: &Value) -> LiveError {
    let kinds: Vec<String> = APPLIED.iter().map(|k| k.kind.to_owned()).collect();
    LiveError::Manifest(format!(
        "{} {} is not a kind the lab applies ({})",
        document["kind"].as_str().unwrap_or("(no kind)"),
        name_of(document),
        kinds.join(", ")
    ))
}

fn name_of(document: &Value) -> String {
    document["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The Deployment's first container that is not the sidecar.
fn app_container(deployment: &mut Value) -> Option<&mut Value> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array_mut()?
        .iter_mut()
        .find(|c| c["name"] != lameduck_manifests::inject::SIDECAR_NAME)
}

/// Sets the app container's `VERSION` to one more than it was (or 2), which changes
/// the pod template and so rolls the Deployment.
fn bump_version(deployment: &mut Value) -> Result<(), LiveError> {
    let container = app_container(deployment)
        .ok_or_else(|| LiveError::Manifest("the Deployment has no app container".to_owned()))?;
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let env = container["env"]
        .as_array_mut()
        .ok_or_else(|| LiveError::Manifest("the app container's env is not a list".to_owned()))?;
    match env.iter_mut().find(|e| e["name"] == VERSION_ENV) {
        Some(var) => {
            let next = var["value"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(2, |v| v + 1);
            var["value"] = json!(next.to_string());
        }
        None => env.push(json!({"name": VERSION_ENV, "value": "2"})),
    }
    Ok(())
}

/// The Service whose selector matches the Deployment's pod labels.
fn service_of(documents: &[Value], deployment: &Value) -> Result<String, LiveError> {
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    documents
        .iter()
        .filter(|d| d["kind"] == "Service")
        .find(|service| {
            service["spec"]["selector"]
                .as_object()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
        })
        .map(name_of)
        .ok_or_else(|| {
            LiveError::Manifest(format!(
                "no Service selects the pods of deployment {}",
                name_of(deployment)
            ))
        })
}

/// The lab's request mix on `url`.
fn load_urls(url: &str) -> Result<Vec<Uri>, LiveError> {
    let separator = if url.contains('?') { '&' } else { '?' };
    WAITS
        .iter()
        .map(|wait| {
            format!("{url}{separator}wait={wait}")
                .parse()
                .map_err(|e| LiveError::Manifest(format!("--url {url}: {e}")))
        })
        .collect()
}

async fn one_request(url: &Uri) -> Result<Report, LiveError> {
    let config = LoadConfig::posts(vec![url.clone()], 100.0, Limit::Requests(1));
    Ok(lameduck_load::run(&config, std::future::pending(), Arc::default()).await?)
}

/// The load of a scenario, running.
struct RunningLoad {
    started: SystemTime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Report, lameduck_load::LoadError>>,
}

impl RunningLoad {
    fn start(urls: Vec<Uri>, rate: f64) -> Self {
        let config = LoadConfig::posts(urls, rate, Limit::Duration(Duration::from_secs(3600)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let started = SystemTime::now();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stopped.await;
            };
            lameduck_load::run(&config, stop, Arc::new(Progress::default())).await
        });
        Self {
            started,
            stop,
            task,
        }
    }

    async fn finish(self) -> Result<(SystemTime, Report), LiveError> {
        let _ = self.stop.send(());
        let report = self
            .task
            .await
            .map_err(|e| LiveError::Manifest(format!("the load task failed: {e}")))??;
        Ok((self.started, report))
    }
}

/// Each record of `report` as a [`Response`] on the wall clock.
fn responses(started: SystemTime, report: &Report) -> Vec<Response> {
    let at = |us: u64| started + Duration::from_micros(us);
    report
        .records
        .iter()
        .map(|record| Response {
            sent: at(if record.sent_us > 0 {
                record.sent_us
            } else {
                record.scheduled_us
            }),
            done: at(record.done_us),
            status: record.status(),
            pod: record
                .pod()
                .and_then(|i| report.strings.get(i))
                .map(str::to_owned),
            ok: record.ok(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Vec<Value> {
        Scenario::Plain.manifests(None).expect("the demo")
    }

    #[test]
    fn every_document_and_the_pod_template_carry_the_run_and_the_image_is_replaced() {
        let mut documents = demo();
        prepare_documents(&mut documents, "r1", Some("example/app:2")).expect("prepared");
        for document in &documents {
            assert_eq!(document["metadata"]["labels"][LAB_LABEL], "r1");
        }
        let deployment = documents
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("deployment");
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"][LAB_LABEL],
            "r1"
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "example/app:2"
        );
        assert_eq!(
            service_of(&documents, deployment).expect("service"),
            "demo-app"
        );
    }

    #[test]
    fn kinds_the_lab_does_not_apply_are_refused_by_name() {
        let mut documents = demo();
        documents.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}));
        let error = prepare_documents(&mut documents, "r", None).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("Secret s is not a kind the lab applies"),
            "{error}"
        );
        let mut two = demo();
        two.extend(demo().into_iter().filter(|d| d["kind"] == "Deployment"));
        let error = prepare_documents(&mut two, "r", None).expect_err("refused");
        assert!(error.to_string().contains("hold 2"), "{error}");
    }

    #[test]
    fn the_version_bump_changes_the_app_container_only() {
        let mut injected = Scenario::Sidecar.manifests(None).expect("injected");
        let deployment = injected
            .iter_mut()
            .find(|d| d["kind"] == "Deployment")
            .expect("deployment");
        bump_version(deployment).expect("bumped");
        bump_version(deployment).expect("bumped");
        let app = app_container(deployment).expect("app");
        assert_eq!(app["name"], "demo-app");
        let version = app["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "VERSION")
            .expect("VERSION");
        assert_eq!(version["value"], "3");
    }

    #[test]
    fn the_rollout_is_done_when_every_pod_is_new_and_available() {
        let deployment = |generation: u64, status: Value| {
            json!({
                "metadata": {"name": "d", "generation": generation},
                "spec": {"replicas": 3},
                "status": status,
            })
        };
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(
            rollout_state(&deployment(2, done.clone())),
            RolloutState::Done
        );
        assert_eq!(
            rollout_state(&deployment(3, done)),
            RolloutState::Progressing,
            "the controller has not seen the new template"
        );
        let surging = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(
            rollout_state(&deployment(2, surging)),
            RolloutState::Progressing
        );
        let stuck = json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"d-1\" has timed out progressing."}]});
        assert_eq!(
            rollout_state(&deployment(2, stuck)),
            RolloutState::Stuck("ReplicaSet \"d-1\" has timed out progressing.".to_owned())
        );
    }

    #[test]
    fn the_request_mix_is_appended_to_the_url() {
        let urls = load_urls("http://198.18.0.1/").expect("urls");
        assert_eq!(urls[3].to_string(), "http://198.18.0.1/?wait=10");
        let urls = load_urls("http://example.test/app?x=1").expect("urls");
        assert_eq!(urls[0].to_string(), "http://example.test/app?x=1&wait=0");
        assert!(load_urls("not a url at all").is_err());
    }
}
