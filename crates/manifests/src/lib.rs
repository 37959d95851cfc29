//! Kubernetes manifests as lameduck reads and writes them: parsing YAML streams,
//! adding and removing the sidecar (`inject`, `uninject`), and linting workloads for
//! the zero-downtime rules (`check`).
//!
//! Objects stay generic, order-preserving trees (`serde_json::Value`), never typed
//! structs, so fields this crate does not know (newer API fields, CRDs, `status`)
//! survive untouched. [`workload`] holds the Kubernetes rules every caller shares
//! (where a kind keeps its pod template, `kind: List`, rolling-update arithmetic,
//! preStop sleeps, grace periods); the lab reads Deployments through it too.
//!
//! Not for: talking to a cluster, or files and standard input (the CLI reads those).

pub mod check;
pub mod inject;
pub mod memory;
pub mod stream;
pub mod workload;

pub use check::{Finding, check};
pub use inject::{InjectError, Mode, Options, Report, Resources, Skipped, inject, uninject};
pub use stream::{ManifestError, parse_documents, parse_stream, to_yaml};
pub use workload::kind;
