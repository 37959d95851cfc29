//! Integration tests of the load engine through its library API, in-process, against
//! the demo app on a real socket (the CLI's own tests run the binary: `tests/load.rs`).

/// A run's schedule and records: one record per scheduled request, whatever stops it.
mod engine;
