//! Integration tests of the `lameduck` CLI crate: one test binary, one module per area.

mod inject;
mod k8s;
mod lab;
mod load;
mod monitoring;
mod system;
