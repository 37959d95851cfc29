//! `k8s/lab/role.yaml` is `lameduck lab --print-role` for the default namespace
//! (`LAMEDUCK_BLESS=1` rewrites it), and grants exactly the lab's rules.

use std::path::PathBuf;

use lameduck_live::access::{CLUSTER_RULES, LAB_RULES, role_yaml};
use serde_json::Value;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../k8s/lab/role.yaml")
}

#[test]
fn the_shipped_role_is_the_printed_one() {
    let printed = role_yaml(lameduck_live::DEFAULT_NAMESPACE);
    if std::env::var("LAMEDUCK_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(shipped().parent().expect("k8s/lab")).expect("k8s/lab");
        std::fs::write(shipped(), &printed).expect("blessed");
    }
    let file = std::fs::read_to_string(shipped()).expect("k8s/lab/role.yaml");
    assert_eq!(
        file, printed,
        "k8s/lab/role.yaml is stale: LAMEDUCK_BLESS=1 cargo test -p lameduck-live"
    );
}

#[test]
fn the_role_grants_the_lab_rules_and_nothing_cluster_wide() {
    let documents =
        lameduck_manifests::parse_stream("role", &role_yaml("shop")).expect("valid YAML");
    let kinds: Vec<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["Role", "ClusterRole"]);
    assert_eq!(documents[0]["metadata"]["namespace"], "shop");
    let verbs = |document: &Value| -> Vec<(String, String, String)> {
        let mut verbs = Vec::new();
        for rule in document["rules"].as_array().expect("rules") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    verbs.push((
                        rule["apiGroups"][0].as_str().expect("group").to_owned(),
                        resource.as_str().expect("resource").to_owned(),
                        verb.as_str().expect("verb").to_owned(),
                    ));
                }
            }
        }
        verbs
    };
    let role = verbs(&documents[0]);
    let count = |rules: &[lameduck_live::Rule]| -> usize {
        rules
            .iter()
            .map(|r| r.resources.len() * r.verbs.len())
            .sum()
    };
    assert_eq!(role.len(), count(&LAB_RULES));
    assert!(role.contains(&("apps".into(), "deployments".into(), "patch".into())));
    assert!(
        !role
            .iter()
            .any(|(_, resource, verb)| verb == "*" || resource == "*" || resource == "secrets"),
        "{role:?}"
    );
    assert_eq!(verbs(&documents[1]).len(), count(&CLUSTER_RULES));
}
