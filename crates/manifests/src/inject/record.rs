//! What `inject` changed, kept in the object's `lameduck.dev/injected` annotation so
//! that `uninject` can undo exactly that. The records are typed: a field spelled
//! wrong does not compile, and a record missing a field is refused, not guessed.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

use super::{ANNOTATION_INJECTED, InjectError, Located};

/// What was changed on a pod template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PodRecord {
    /// The app container (its port, probes and preStop were changed).
    pub(super) container: String,
    /// The app port's name before the sidecar took it over.
    pub(super) port_name: Option<String>,
    /// The names of the other fronted app ports before the sidecar took them over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) more_port_names: Vec<Option<String>>,
    /// `terminationGracePeriodSeconds` as it was (absent or null: none).
    pub(super) grace: Option<Value>,
    /// The app container had a `lifecycle` before.
    pub(super) lifecycle: bool,
    /// The pod spec had `initContainers` before.
    pub(super) init_containers: bool,
    /// The template's metadata had `annotations` before.
    pub(super) annotations: bool,
    /// The template had `metadata` before.
    pub(super) metadata: bool,
}

/// What was changed on a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ServiceRecord {
    /// Each changed port (by index, as a string) and its `targetPort` before (null: none).
    pub(super) target_ports: Map<String, Value>,
    /// The Service had `annotations` before.
    pub(super) annotations: bool,
}

/// Writes `record` into the annotation, creating the metadata path as needed.
pub(super) fn write(object: &mut Value, metadata: &str, record: &impl Serialize) {
    let Ok(text) = serde_json::to_string(record) else {
        return;
    };
    let mut path = String::new();
    for segment in metadata
        .trim_start_matches('/')
        .split('/')
        .chain(["annotations"])
    {
        let Some(parent) = object.pointer_mut(&path).and_then(Value::as_object_mut) else {
            return;
        };
        parent
            .entry(segment.to_owned())
            .or_insert_with(|| json!({}));
        path.push('/');
        path.push_str(segment);
    }
    if let Some(annotations) = object.pointer_mut(&path).and_then(Value::as_object_mut) {
        annotations.insert(ANNOTATION_INJECTED.to_owned(), json!(text));
    }
}

/// Reads the record of an injected object.
pub(super) fn read<R: DeserializeOwned>(
    object: &Value,
    metadata: &str,
    at: &Located,
) -> Result<R, InjectError> {
    // The key holds a '/', so it cannot be part of a JSON pointer.
    let text = object
        .pointer(&format!("{metadata}/annotations"))
        .and_then(|a| a.get(ANNOTATION_INJECTED))
        .and_then(Value::as_str)
        .unwrap_or("");
    serde_json::from_str(text).map_err(|e| {
        at.error(
            &format!("{metadata}/annotations/{ANNOTATION_INJECTED}"),
            format!("the injection record is not valid ({e})"),
        )
    })
}

/// Removes the annotation, and the maps `inject` created to hold it.
pub(super) fn remove(
    object: &mut Value,
    metadata: &str,
    annotations_existed: bool,
    metadata_existed: bool,
) {
    if let Some(annotations) = object
        .pointer_mut(&format!("{metadata}/annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(ANNOTATION_INJECTED);
    }
    if !annotations_existed
        && let Some(meta) = object.pointer_mut(metadata).and_then(Value::as_object_mut)
    {
        meta.shift_remove("annotations");
    }
    if !metadata_existed
        && let Some((parent, key)) = metadata.rsplit_once('/')
        && let Some(map) = object.pointer_mut(parent).and_then(Value::as_object_mut)
        && map
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        map.shift_remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_record_keeps_its_wire_form() {
        let record = PodRecord {
            container: "app".to_owned(),
            port_name: Some("http".to_owned()),
            more_port_names: Vec::new(),
            grace: None,
            lifecycle: false,
            init_containers: true,
            annotations: true,
            metadata: true,
        };
        let text = serde_json::to_string(&record).expect("record");
        assert_eq!(
            text,
            r#"{"container":"app","portName":"http","grace":null,"lifecycle":false,"initContainers":true,"annotations":true,"metadata":true}"#
        );
        assert_eq!(serde_json::from_str::<PodRecord>(&text).ok(), Some(record));
    }

    #[test]
    fn a_record_with_a_missing_or_unknown_field_is_refused() {
        let missing = r#"{"container":"app","portName":null,"grace":null,"lifecycle":false}"#;
        assert!(serde_json::from_str::<PodRecord>(missing).is_err());
        let unknown = r#"{"targetPorts":{},"annotations":true,"annotation":false}"#;
        assert!(serde_json::from_str::<ServiceRecord>(unknown).is_err());
    }
}
