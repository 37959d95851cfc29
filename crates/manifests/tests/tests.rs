//! Integration tests of the manifests crate: one test binary, one module per area.

/// Generated workloads: uninject inverts inject, inject is idempotent.
mod properties;
/// The golden corpus's outputs as typed Kubernetes objects.
mod typed;

use std::path::PathBuf;

/// The corpus: inputs `*.yaml`, expected outputs `*.golden.yaml` or `*.err`.
pub(crate) fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/inject")
}

/// Every golden output of the corpus.
pub(crate) fn goldens() -> Vec<PathBuf> {
    let mut goldens: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".golden.yaml"))
        .collect();
    goldens.sort();
    goldens
}
