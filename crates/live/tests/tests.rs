//! lameduck-live's integration tests. Its cluster behaviour is proven on the e2e
//! cluster (the root package's e2e suite); here, what needs no cluster.
//!
//! - `role`: the shipped Role is the one the lab checks for, and is valid RBAC.

mod role;
