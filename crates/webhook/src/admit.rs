//! One admission: an `AdmissionReview` body in, an `AdmissionReview` answer out, and
//! the outcome for the metrics and the Event. Pure: what the cluster knows (the
//! namespace's annotations, its Services) comes in as [`NamespaceFacts`].

use json_patch::Patch;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use lameduck_manifests::inject::{
    ANNOTATION_APP_CHECK, ANNOTATION_APP_PORT, ANNOTATION_APP_STOP_TIME, ANNOTATION_DRAIN_TIMEOUT,
    ANNOTATION_INJECT, ANNOTATION_INJECTED, ANNOTATION_PROTOCOL, ANNOTATION_SHUTDOWN_DELAY,
    Options, SIDECAR_NAME,
};
use serde_json::{Map, Value};

use crate::{COMPONENT_LABEL, COMPONENT_WEBHOOK, EXCLUDED_NAMESPACES};

/// Pod annotations a namespace can give defaults for (the pod's own win).
pub const NAMESPACE_DEFAULTS: [&str; 6] = [
    ANNOTATION_SHUTDOWN_DELAY,
    ANNOTATION_DRAIN_TIMEOUT,
    ANNOTATION_APP_STOP_TIME,
    ANNOTATION_APP_CHECK,
    ANNOTATION_APP_PORT,
    ANNOTATION_PROTOCOL,
];

/// What the cluster knows about the pod's namespace.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFacts {
    /// The namespace's annotations.
    pub annotations: Map<String, Value>,
    /// The namespace's Services, as objects.
    pub services: Vec<Value>,
}

/// Why a pod was admitted unchanged although the webhook was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a pod CREATE (the webhook is registered for those only).
    NotPodCreate,
    /// `lameduck.dev/inject: disabled` on the pod.
    Disabled,
    /// The pod already has the sidecar.
    AlreadyInjected,
    /// `hostNetwork: true`.
    HostNetwork,
    /// One of the webhook's own pods.
    Webhook,
    /// A namespace the webhook never injects into.
    ExcludedNamespace(String),
    /// No container port, or every serving port is `skip`.
    NothingToFront(String),
}

impl SkipReason {
    /// Words for logs and warnings.
    pub fn describe(&self) -> String {
        match self {
            Self::NotPodCreate => "not a pod being created".to_owned(),
            Self::Disabled => format!("{ANNOTATION_INJECT}: disabled"),
            Self::AlreadyInjected => "the pod already has the lameduck sidecar".to_owned(),
            Self::HostNetwork => {
                "hostNetwork: true (a sidecar cannot take over a port on the node's network)"
                    .to_owned()
            }
            Self::Webhook => "one of the lameduck webhook's own pods".to_owned(),
            Self::ExcludedNamespace(ns) => format!("namespace {ns} is never injected"),
            Self::NothingToFront(why) => why.clone(),
        }
    }
}

/// What became of one admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// Admitted unchanged on purpose.
    Skipped(SkipReason),
    /// The transform refused the pod: admitted unchanged, with a warning and an Event.
    Refused(String),
    /// The body was not an AdmissionReview: answered as invalid.
    Invalid(String),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped(_) => "skipped",
            Self::Refused(_) => "refused",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// Something to tell the pod's owner with an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The namespace.
    pub namespace: String,
    /// What the Event is about: the pod's controller (`apiVersion`, `kind`, `name`,
    /// `uid`), or the pod itself when it has none.
    pub regarding: Value,
    /// `NotInjected` or `ServiceBypassesSidecar`.
    pub reason: &'static str,
    /// The Event's note.
    pub note: String,
    /// A fixed Event name, so that it is recorded once; `None`: a generated one.
    pub event_name: Option<String>,
}

/// The answer to one admission request.
#[derive(Debug)]
pub struct Answer {
    /// The AdmissionReview to send back.
    pub review: AdmissionReview<DynamicObject>,
    /// What happened.
    pub outcome: Outcome,
    /// Events to record on the pod's owner.
    pub notices: Vec<Notice>,
    /// Whether the request was a dry run (no Events then).
    pub dry_run: bool,
}

/// One admission request, and its object exactly as the API server sent it (the
/// patch is computed against that, not against a typed copy).
#[derive(Debug)]
pub struct Admission {
    /// The request.
    pub request: AdmissionRequest<DynamicObject>,
    /// `request.object`, untyped.
    pub object: Option<Value>,
}

impl Answer {
    /// The answer to a body that is not an AdmissionReview (`message` says why).
    pub fn invalid(message: String) -> Self {
        Self {
            review: AdmissionResponse::invalid(&message).into_review(),
            outcome: Outcome::Invalid(message),
            notices: Vec::new(),
            dry_run: false,
        }
    }
}

/// Reads an AdmissionReview body.
pub fn parse(body: &[u8]) -> Result<Admission, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let object = value
        .pointer("/request/object")
        .filter(|o| o.is_object())
        .cloned();
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request = review
        .try_into()
        .map_err(|_| "an AdmissionReview without a request".to_owned())?;
    Ok(Admission { request, object })
}

/// The injector: the options `lameduck inject` would use.
#[derive(Debug, Clone)]
pub struct Injector {
    options: Options,
}

impl Injector {
    /// An injector with these sidecar options. A drain token in them is ignored:
    /// each pod gets its own random one.
    pub fn new(options: Options) -> Self {
        Self {
            options: Options {
                drain_token: None,
                ..options
            },
        }
    }

    /// Answers one AdmissionReview body.
    pub fn review(&self, body: &[u8], facts: &NamespaceFacts) -> Answer {
        match parse(body) {
            Ok(admission) => self.admit(&admission, facts),
            Err(message) => Answer::invalid(message),
        }
    }

    /// Answers one admission request.
    pub fn admit(&self, admission: &Admission, facts: &NamespaceFacts) -> Answer {
        let request = &admission.request;
        let namespace = request.namespace.clone().unwrap_or_default();
        let pod = admission.object.clone();
        let allowed = AdmissionResponse::from(request);
        let answer = |response: AdmissionResponse, outcome, notices| Answer {
            review: response.into_review(),
            outcome,
            notices,
            dry_run: request.dry_run,
        };
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        let (true, Operation::Create, Some(mut pod)) = (is_pod, &request.operation, pod) else {
            return answer(allowed, Outcome::Skipped(SkipReason::NotPodCreate), vec![]);
        };
        // The API server fills the namespace in after the webhooks; the transform's
        // error messages and the Events want it now.
        if let Some(metadata) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata
                .entry("namespace")
                .or_insert_with(|| Value::String(namespace.clone()));
        }
        if let Some(reason) = skip_reason(&pod, &namespace) {
            return answer(allowed, Outcome::Skipped(reason), vec![]);
        }
        let original = pod.clone();
        apply_namespace_defaults(&mut pod, &facts.annotations);
        let mut documents = vec![pod];
        documents.extend(facts.services.iter().cloned());
        let report = match lameduck_manifests::inject(&mut documents, &self.options) {
            Ok(report) => report,
            Err(error) => {
                let why = format!("{}: {}", error.path, error.message);
                let warning = format!("lameduck: sidecar not injected: {why}");
                let notice = notice(&original, &namespace, "NotInjected", warning.clone());
                return answer(
                    with_warnings(allowed, vec![warning]),
                    Outcome::Refused(why),
                    vec![notice],
                );
            }
        };
        if let Some(skipped) = report.skipped.first() {
            let reason = SkipReason::NothingToFront(skipped.reason.clone());
            return answer(allowed, Outcome::Skipped(reason), vec![]);
        }
        if report.chosen.is_empty() {
            let reason = SkipReason::NothingToFront("no container port to front".to_owned());
            return answer(allowed, Outcome::Skipped(reason), vec![]);
        }
        let mut documents = documents.into_iter();
        let injected = documents.next().unwrap_or_default();
        // Services the CLI would have retargeted: live ones bypass the sidecar.
        let bypassing: Vec<String> = facts
            .services
            .iter()
            .zip(documents)
            .filter(|(before, after)| before != &after)
            .map(|(before, after)| bypass_warning(before, &after))
            .collect();
        let notices = bypassing
            .iter()
            .map(|w| notice(&original, &namespace, "ServiceBypassesSidecar", w.clone()))
            .collect();
        let patch: Patch = json_patch::diff(&original, &injected);
        match allowed.clone().with_patch(patch) {
            Ok(response) => answer(
                with_warnings(response, bypassing),
                Outcome::Injected,
                notices,
            ),
            Err(error) => {
                let why = format!("the patch could not be written: {error}");
                answer(
                    with_warnings(allowed, vec![format!("lameduck: {why}")]),
                    Outcome::Refused(why),
                    vec![],
                )
            }
        }
    }
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn labels(pod: &Value) -> Map<String, Value> {
    pod.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Why this pod is admitted as it is, before the transform is tried.
fn skip_reason(pod: &Value, namespace: &str) -> Option<SkipReason> {
    if EXCLUDED_NAMESPACES.contains(&namespace) {
        return Some(SkipReason::ExcludedNamespace(namespace.to_owned()));
    }
    if labels(pod).get(COMPONENT_LABEL).and_then(Value::as_str) == Some(COMPONENT_WEBHOOK) {
        return Some(SkipReason::Webhook);
    }
    if annotation(pod, ANNOTATION_INJECT) == Some("disabled") {
        return Some(SkipReason::Disabled);
    }
    if has_sidecar(pod) {
        return Some(SkipReason::AlreadyInjected);
    }
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    None
}

/// The pod has the sidecar already: a container of its name, or the injection record.
pub(crate) fn has_sidecar(pod: &Value) -> bool {
    let named = |list: &str| {
        pod["spec"][list]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == SIDECAR_NAME))
    };
    named("containers") || named("initContainers") || annotation(pod, ANNOTATION_INJECTED).is_some()
}

/// Copies the namespace's defaults into the pod's annotations where the pod has none.
fn apply_namespace_defaults(pod: &mut Value, namespace: &Map<String, Value>) {
    let defaults: Vec<(&str, &Value)> = NAMESPACE_DEFAULTS
        .iter()
        .filter_map(|key| Some((*key, namespace.get(*key)?)))
        .filter(|(_, value)| value.is_string())
        .collect();
    if defaults.is_empty() {
        return;
    }
    let Some(metadata) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    if let Some(annotations) = annotations.as_object_mut() {
        for (key, value) in defaults {
            annotations.entry(key).or_insert_with(|| value.clone());
        }
    }
}

/// The pod's name, or its `generateName` prefix with `*`.
pub fn pod_name(pod: &Value) -> String {
    match pod.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => format!(
            "{}*",
            pod.pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
    }
}

/// An Event about `pod`, on its controller when it has one.
fn notice(pod: &Value, namespace: &str, reason: &'static str, note: String) -> Notice {
    let owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|owners| {
            owners
                .iter()
                .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
                .or_else(|| owners.first())
        });
    let regarding = match owner {
        Some(owner) => {
            let field = |key: &str| owner.get(key).cloned().unwrap_or(Value::Null);
            serde_json::json!({
                "apiVersion": field("apiVersion"),
                "kind": field("kind"),
                "name": field("name"),
                "uid": field("uid"),
                "namespace": namespace,
            })
        }
        None => serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod_name(pod),
            "namespace": namespace,
        }),
    };
    Notice {
        namespace: namespace.to_owned(),
        regarding,
        reason,
        note,
        event_name: None,
    }
}

/// Why a live Service bypasses the sidecar, and the fix, from what `inject` changed.
fn bypass_warning(before: &Value, after: &Value) -> String {
    let name = before
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ports = |service: &Value| {
        service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let changes: Vec<String> = ports(before)
        .iter()
        .zip(ports(after).iter())
        .filter_map(|(old, new)| {
            let old_target = old.get("targetPort").or_else(|| old.get("port"))?;
            let new_target = new.get("targetPort")?;
            (old_target != new_target).then(|| format!("targetPort {old_target} → {new_target}"))
        })
        .collect();
    format!(
        "lameduck: Service {name} reaches this pod's app port by number and bypasses the sidecar; \
         set {} (or `lameduck inject` the Service)",
        changes.join(", ")
    )
}
