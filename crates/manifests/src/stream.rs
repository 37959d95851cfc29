//! YAML streams in and out: multi-document text to generic, order-preserving trees
//! (`serde_json::Value` with `preserve_order`) and back.

use serde_json::Value;

use crate::workload;

/// A manifest stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The YAML itself is malformed.
    #[error("{source_name}: malformed YAML: {message}")]
    Yaml {
        /// Where the stream came from (a path, or `-` for standard input).
        source_name: String,
        /// The parser's message, with its line and column.
        message: String,
    },
    /// A document is valid YAML but not a Kubernetes object.
    #[error("{source_name}: document {index}: {message}")]
    NotAnObject {
        /// Where the stream came from.
        source_name: String,
        /// The document's position in the stream, from 0.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Parses a multi-document YAML stream as it is (empty documents skipped, `kind: List`
/// kept); a malformed stream is an error naming the document and line.
pub fn parse_stream(source_name: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(text).map_err(|e| {
        let first_line = e.to_string().lines().next().unwrap_or("").to_owned();
        let message = match e.location() {
            Some(location) => {
                let line = usize::try_from(location.line()).unwrap_or(usize::MAX);
                format!(
                    "document {} (line {line}): {}",
                    document_at_line(text, line),
                    first_line.trim_start_matches("error: ")
                )
            }
            None => first_line,
        };
        ManifestError::Yaml {
            source_name: source_name.to_owned(),
            message,
        }
    })?;
    let mut objects = Vec::with_capacity(documents.len());
    for (index, document) in documents.into_iter().enumerate() {
        match document {
            Value::Null => {}
            Value::Object(_) => objects.push(document),
            _ => {
                return Err(ManifestError::NotAnObject {
                    source_name: source_name.to_owned(),
                    index,
                    message: "not a mapping".to_owned(),
                });
            }
        }
    }
    Ok(objects)
}

/// The index (from 0) of the document that holds 1-based `line`.
fn document_at_line(text: &str, line: usize) -> usize {
    let is_marker = |l: &str| l == "---" || l.starts_with("--- ");
    let starts_with_marker = text.lines().next().is_some_and(is_marker);
    let markers = text
        .lines()
        .take(line.saturating_sub(1))
        .filter(|l| is_marker(l))
        .count();
    markers.saturating_sub(usize::from(starts_with_marker))
}

/// Writes documents as one YAML stream, `---` between documents.
pub fn to_yaml(documents: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for (index, document) in documents.iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        let text = serde_saphyr::to_string(document).map_err(|e| ManifestError::NotAnObject {
            source_name: "output".to_owned(),
            index,
            message: format!("cannot be written as YAML: {e}"),
        })?;
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Parses a multi-document YAML stream; empty documents are skipped and `kind: List`
/// documents are replaced by their items.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let documents = parse_stream(source_name, text)?;
    let list_without_items =
        |d: &Value| workload::kind(d) == "List" && !d.get("items").is_some_and(Value::is_array);
    if let Some(index) = documents.iter().position(list_without_items) {
        return Err(ManifestError::NotAnObject {
            source_name: source_name.to_owned(),
            index,
            message: "kind List without an items array".to_owned(),
        });
    }
    Ok(workload::objects(&documents).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::kind;

    #[test]
    fn lists_are_flattened_and_empty_documents_skipped() {
        let text = "kind: A\n---\n---\nkind: List\nitems:\n- kind: B\n- kind: C\n";
        let objects = parse_documents("t", text).expect("valid stream");
        let kinds: Vec<&str> = objects.iter().map(kind).collect();
        assert_eq!(kinds, ["A", "B", "C"]);
    }

    #[test]
    fn malformed_yaml_names_the_source() {
        let error = parse_documents("in.yaml", "a: [1, 2\n").expect_err("malformed");
        assert!(
            error.to_string().starts_with("in.yaml: malformed YAML"),
            "{error}"
        );
    }
}
