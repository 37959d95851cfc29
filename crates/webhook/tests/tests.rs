//! The webhook's integration tests, one module per concern:
//!
//! - `fixtures`: AdmissionReview and pod builders shared by the others;
//! - `admission`: each kind of pod in, the answer out, against `inject` on the same pod;
//! - `missed`: pods left without the sidecar, named by Events;
//! - `server`: the real HTTPS server: TLS, routes, metrics, certificate reloads.

mod admission;
mod fixtures;
mod missed;
mod server;
