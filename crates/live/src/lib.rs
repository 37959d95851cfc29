//! lameduck against a live cluster, over kube-rs.
//!
//! - [`lab`]: the lab's scenarios on a real cluster. Each scenario's manifests are
//!   server-side applied into one namespace, rolled (a `VERSION` bump) under POST load
//!   through a real entry point, and every failed request is attributed from the
//!   watched Pods, EndpointSlices and Events and the pod each response names
//!   (`x-pod`), with the local lab's pure attribution ([`lameduck_lab::observed`]).
//!   Everything it applies carries [`LAB_LABEL`]; it deletes only by that label.
//! - [`access`]: the lab's Role, as rules that are both the shipped YAML and the
//!   permission check made before anything is created.
//! - [`check`]: the manifest rules on live Deployments, StatefulSets and DaemonSets,
//!   plus rules only a live view can check (Services that bypass the sidecar, pods an
//!   opted-in namespace left uninjected, PodDisruptionBudgets that block every
//!   eviction).
//!
//! Not for: running the cluster (the e2e suite builds one), or installing lameduck
//! (the Helm chart does).

pub mod access;
pub mod check;
pub mod lab;
mod resources;
mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use access::{LAB_ROLE_NAME, Rule};
pub use check::{LiveFinding, Scope};
pub use lab::{LiveLab, Outcome};

/// The label on everything the lab applies; its value names the run.
pub const LAB_LABEL: &str = "lameduck.dev/lab-run";
/// The field manager of the lab's server-side applies.
pub const FIELD_MANAGER: &str = "lameduck-lab";
/// The namespace the lab uses unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "lameduck-lab";
/// How long the API server may take to answer the first request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a live run or check could not be done.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The kubeconfig could not be read or has no such context.
    #[error("reading the kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The API server did not answer.
    #[error("the cluster at {server} is unreachable")]
    Unreachable {
        /// The API server's URL.
        server: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("the cluster at {server} did not answer within {seconds} s")]
    Timeout {
        /// The API server's URL.
        server: String,
        /// The wait.
        seconds: u64,
    },
    /// The credentials lack a permission the lab's Role grants.
    #[error(
        "missing permission: {verb} {resource} in namespace {namespace} (the lab needs the Role `lameduck lab --print-role` prints)"
    )]
    Forbidden {
        /// The verb.
        verb: String,
        /// The resource, with its API group (`deployments.apps`).
        resource: String,
        /// The namespace (empty: cluster scope).
        namespace: String,
    },
    /// An API call failed.
    #[error("{action}")]
    Api {
        /// What was being done (`apply deployment demo-app`).
        action: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// A container image cannot be pulled.
    #[error("image {image} cannot be pulled by pod {pod}: {message}")]
    ImagePull {
        /// The image.
        image: String,
        /// The pod that tried.
        pod: String,
        /// The kubelet's message.
        message: String,
    },
    /// A rollout made no progress for its `progressDeadlineSeconds`.
    #[error(
        "the rollout of deployment {name} is stuck past its progressDeadlineSeconds ({seconds} s): {message}"
    )]
    RolloutStuck {
        /// The Deployment.
        name: String,
        /// Its deadline.
        seconds: u64,
        /// The Deployment controller's message.
        message: String,
    },
    /// The manifests cannot be rolled by the lab.
    #[error("the manifests: {0}")]
    Manifest(String),
    /// The entry point never answered.
    #[error("the entry point {url} did not answer 200 within {seconds} s (last: {last})")]
    EntryPoint {
        /// The URL.
        url: String,
        /// The wait.
        seconds: u64,
        /// The last outcome.
        last: String,
    },
    /// The scenario's manifests could not be built.
    #[error("scenario {scenario}")]
    Scenario {
        /// The scenario.
        scenario: lameduck_lab::Scenario,
        /// Why.
        #[source]
        source: lameduck_lab::ScenarioError,
    },
    /// The load could not start.
    #[error("starting the load")]
    Load(#[from] lameduck_load::LoadError),
    /// Cleaning up left objects behind.
    #[error("cleaning up: {left} still exist after {seconds} s (label {LAB_LABEL}={run})")]
    Leftovers {
        /// What is left.
        left: String,
        /// The wait.
        seconds: u64,
        /// The run's label value.
        run: String,
    },
}

impl LiveError {
    /// An API error, a missing permission named as such.
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }
}

/// A client for `kubeconfig`'s `context` (its current one by default), after the API
/// server answered within [`CONNECT_TIMEOUT`].
pub async fn connect(kubeconfig: &Path, context: Option<&str>) -> Result<Client, LiveError> {
    // kube's rustls needs a process-wide crypto provider; ring is the one built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let file = |source| LiveError::Kubeconfig {
        path: kubeconfig.to_owned(),
        source,
    };
    let config = Kubeconfig::read_from(kubeconfig).map_err(file)?;
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let mut config = Config::from_custom_kubeconfig(config, &options)
        .await
        .map_err(file)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| LiveError::Unreachable {
        server: server.clone(),
        source,
    })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(source)) => Err(LiveError::Unreachable { server, source }),
        Err(_) => Err(LiveError::Timeout {
            server,
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}
