//! `lameduck`: the command-line side of the project.
//!
//! It holds what runs outside the pod: reading Kubernetes manifests (for `inject`
//! and `check`), the constant-rate load generator (`load`) and the local
//! rolling-upgrade lab (`lab`), each added as its issue lands. It is not the
//! sidecar (that is the `lameduck-sidecar` crate, one crate per deployable) and it
//! never talks to a cluster: manifests in, manifests or measurements out.

pub mod check;
pub mod inject;
pub mod lab;
pub mod load;
pub mod manifest;
