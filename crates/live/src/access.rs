//! What the lab may do in its namespace, as one table: the shipped Role
//! (`lameduck lab --print-role`) is rendered from it, and before creating anything the
//! lab asks the API server (SelfSubjectAccessReview) for each of its verbs, so a
//! missing one is named before anything exists to clean up.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::LiveError;
use crate::resources::resource;

/// The namespaced Role's name.
pub const LAB_ROLE_NAME: &str = "lameduck-lab";
/// The optional ClusterRole's name (namespace creation, node addresses).
pub const LAB_CLUSTER_ROLE_NAME: &str = "lameduck-lab-cluster";

/// One rule of the lab's Role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The API group (empty: core).
    pub group: &'static str,
    /// The resources.
    pub resources: &'static [&'static str],
    /// The verbs.
    pub verbs: &'static [&'static str],
    /// Why the lab needs them.
    pub why: &'static str,
}

/// Verbs on what the lab applies: server-side apply is `patch`, and `create` when the
/// object is new; `get` and `list` read it back; `delete` removes it by its label.
const APPLY: &[&str] = &["get", "list", "create", "patch", "delete"];

/// The lab's Role in its namespace.
pub const LAB_RULES: [Rule; 6] = [
    Rule {
        group: "apps",
        resources: &["deployments"],
        verbs: APPLY,
        why: "applies each scenario's Deployment, bumps VERSION in its pod template, follows its rollout, deletes it",
    },
    Rule {
        group: "",
        resources: &["services", "configmaps"],
        verbs: APPLY,
        why: "applies each scenario's Services and ConfigMaps (and a NodePort entry Service when no --url is given)",
    },
    Rule {
        group: "networking.k8s.io",
        resources: &["ingresses"],
        verbs: APPLY,
        why: "applies each scenario's Ingress",
    },
    Rule {
        group: "apps",
        resources: &["replicasets"],
        verbs: &["list"],
        why: "waits until a deleted Deployment's ReplicaSets are gone",
    },
    Rule {
        group: "",
        resources: &["pods", "events"],
        verbs: &["list", "watch"],
        why: "watches pod phases, readiness, deletions and container exits, and the kubelet's Killing events",
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list", "watch"],
        why: "watches the endpoint conditions (ready, serving, terminating) the entry point follows",
    },
];

/// The cluster-scoped rules, each needed only in one case.
pub const CLUSTER_RULES: [Rule; 2] = [
    Rule {
        group: "",
        resources: &["namespaces"],
        verbs: &["get", "create", "delete"],
        why: "only when the namespace does not exist: creates it (labelled as the lab's) and deletes it at the end",
    },
    Rule {
        group: "",
        resources: &["nodes"],
        verbs: &["list"],
        why: "only without --url: the NodePort entry is reached on a node's InternalIP",
    },
];

/// The Role (in `namespace`) and the optional ClusterRole, as a YAML stream.
pub fn role_yaml(namespace: &str) -> String {
    let rules = |rules: &[Rule]| -> Vec<Value> {
        rules
            .iter()
            .map(|r| json!({"apiGroups": [r.group], "resources": r.resources, "verbs": r.verbs}))
            .collect()
    };
    let comments = |rules: &[Rule]| -> String {
        rules
            .iter()
            .map(|r| format!("# - {}: {}\n", r.resources.join(", "), r.why))
            .collect()
    };
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": LAB_ROLE_NAME, "namespace": namespace},
        "rules": rules(&LAB_RULES),
    });
    let cluster_role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": LAB_CLUSTER_ROLE_NAME},
        "rules": rules(&CLUSTER_RULES),
    });
    let yaml = |value: &Value| {
        lameduck_manifests::to_yaml(std::slice::from_ref(value)).unwrap_or_default()
    };
    format!(
        "# What `lameduck lab --kubeconfig` needs in its namespace ({namespace}); bind it to the\n\
         # user or ServiceAccount that runs the lab. It touches only objects it created:\n\
         # everything it applies carries the label lameduck.dev/lab-run, and it deletes by it.\n\
         {}{}---\n\
         # Optional, cluster-wide:\n{}{}",
        comments(&LAB_RULES),
        yaml(&role),
        comments(&CLUSTER_RULES),
        yaml(&cluster_role),
    )
}

/// One permission: a verb on a resource in a namespace (empty: cluster scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    pub(crate) verb: &'static str,
    pub(crate) group: &'static str,
    pub(crate) resource: &'static str,
}

/// Every permission of `rules`.
pub(crate) fn permissions(rules: &[Rule]) -> Vec<Permission> {
    rules
        .iter()
        .flat_map(|rule| {
            rule.resources.iter().flat_map(move |resource| {
                rule.verbs.iter().map(move |verb| Permission {
                    verb,
                    group: rule.group,
                    resource,
                })
            })
        })
        .collect()
}

/// Asks the API server whether the client may do each of `permissions` in
/// `namespace`; the first it may not is the error.
pub(crate) async fn require(
    client: &Client,
    namespace: &str,
    permissions: &[Permission],
) -> Result<(), LiveError> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for permission in permissions {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
                    verb: Some(permission.verb.to_owned()),
                    group: Some(permission.group.to_owned()),
                    resource: Some(permission.resource.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| LiveError::api("asking the API server for the lab's permissions", e))?;
        if !answer.status.is_some_and(|s| s.allowed) {
            return Err(LiveError::Forbidden {
                verb: permission.verb.to_owned(),
                resource: resource(permission.group, permission.resource),
                namespace: namespace.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_of_the_role_is_checked_and_nothing_else() {
        let permissions = permissions(&LAB_RULES);
        let in_role: usize = LAB_RULES
            .iter()
            .map(|r| r.resources.len() * r.verbs.len())
            .sum();
        assert_eq!(permissions.len(), in_role);
        assert!(permissions.contains(&Permission {
            verb: "watch",
            group: "discovery.k8s.io",
            resource: "endpointslices"
        }));
        assert!(
            !permissions
                .iter()
                .any(|p| p.verb == "deletecollection" || p.verb == "*"),
            "deletes go one by one, by label"
        );
    }
}
