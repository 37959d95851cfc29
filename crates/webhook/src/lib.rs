//! The lameduck mutating admission webhook: the API server sends it each pod being
//! created in an opted-in namespace, and it answers with a JSON patch that adds the
//! sidecar, computed by the same transform as `lameduck inject` (the pod and the
//! namespace's Services in, the injected pod out).
//!
//! - [`admit`]: one AdmissionReview in, one out; pure, the cluster's facts passed in;
//! - [`cluster`]: the namespace's annotations and Services, Events on pods' owners;
//! - [`missed`]: pods that should have the sidecar and do not, named by Events;
//! - [`tls`]: the serving certificate, reloaded when its files change;
//! - [`server`]: HTTPS with `/mutate`, `/healthz`, `/readyz`, `/metrics`;
//! - [`metrics`]: admissions by outcome, latency, certificate reloads, Events.
//!
//! Not for: the MutatingWebhookConfiguration and the certificate's issuance (the Helm
//! chart in `charts/lameduck` does those), or editing manifests (`lameduck inject`).

pub mod admit;
pub mod cluster;
pub mod metrics;
pub mod missed;
pub mod server;
pub mod tls;

pub use admit::{Admission, Answer, Injector, NamespaceFacts, Notice, Outcome, SkipReason};
pub use cluster::Cluster;
pub use metrics::Metrics;
pub use server::{Webhook, serve};
pub use tls::{CertificateError, ReloadingCertificate};

/// Where the API server posts AdmissionReviews.
pub const PATH_MUTATE: &str = "/mutate";
/// Liveness.
pub const PATH_HEALTHZ: &str = "/healthz";
/// Readiness: 503 once shutting down.
pub const PATH_READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const PATH_METRICS: &str = "/metrics";

/// The label (namespace or pod) that opts in with `enabled`; on a pod, the
/// annotation of the same name opts out with `disabled`.
pub const INJECT_LABEL: &str = lameduck_manifests::inject::ANNOTATION_INJECT;
/// The label the webhook's own pods carry (never injected).
pub const COMPONENT_LABEL: &str = "lameduck.dev/component";
/// [`COMPONENT_LABEL`]'s value on the webhook's pods.
pub const COMPONENT_WEBHOOK: &str = "webhook";
/// Namespaces never injected, whatever their labels say.
pub const EXCLUDED_NAMESPACES: [&str; 2] = ["kube-system", "kube-node-lease"];
