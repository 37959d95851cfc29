//! The kinds the lab applies, named as the API and RBAC name them.

use kube::api::ApiResource;
use serde_json::Value;

/// One kind the lab applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub(crate) kind: &'static str,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) plural: &'static str,
}

/// Every kind a scenario's manifests may hold, in the order they are applied.
pub(crate) const APPLIED: [Kind; 4] = [
    Kind {
        kind: "ConfigMap",
        group: "",
        version: "v1",
        plural: "configmaps",
    },
    Kind {
        kind: "Service",
        group: "",
        version: "v1",
        plural: "services",
    },
    Kind {
        kind: "Deployment",
        group: "apps",
        version: "v1",
        plural: "deployments",
    },
    Kind {
        kind: "Ingress",
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
    },
];

/// What the controllers make of the applied objects, with the run's label (from the
/// pod template): waited for after a deletion.
pub(crate) const CONTROLLED: [Kind; 2] = [
    Kind {
        kind: "ReplicaSet",
        group: "apps",
        version: "v1",
        plural: "replicasets",
    },
    Kind {
        kind: "Pod",
        group: "",
        version: "v1",
        plural: "pods",
    },
];

impl Kind {
    /// The kind of `document`, if the lab applies it.
    pub(crate) fn of(document: &Value) -> Option<Kind> {
        let api_version = document["apiVersion"].as_str()?;
        let kind = document["kind"].as_str()?;
        APPLIED
            .into_iter()
            .find(|k| k.kind == kind && k.api_version() == api_version)
    }

    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// As RBAC names it: `deployments.apps`, `services`.
    pub(crate) fn resource(&self) -> String {
        resource(self.group, self.plural)
    }

    pub(crate) fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

/// A resource as RBAC names it: `plural.group`, or `plural` in the core group.
pub(crate) fn resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}
