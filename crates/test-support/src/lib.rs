//! Test fixtures shared by the project's test suites, so that each is written once:
//! spawned binaries with their logs and signals ([`process`]), the demo app on a
//! port-0 socket in the test's own process ([`app`]), small HTTP/1.1 clients
//! ([`http`]), temporary directories and built binaries ([`files`]), the opt-in
//! system suite's checks ([`system`]) and its gRPC app and client ([`grpc`]).
//!
//! Dev-only (`publish = false`): never a dependency of a shipped crate. Fixtures
//! panic with a message naming what failed, as tests want.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod files;
pub mod grpc;
pub mod http;
pub mod process;
pub mod system;

/// How long any fixture waits before failing the test.
pub const FIXTURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
