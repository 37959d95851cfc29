//! Integration tests of the sidecar (issue 3).
