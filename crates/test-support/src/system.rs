//! The opt-in system suite: tests that need packages beyond cargo (kubectl or
//! kustomize, nginx, prometheus, chromium, nghttp2, iproute2). They are `#[ignore]`d
//! in the plain `cargo test` run and selected by `.ci/run` with
//! `LAMEDUCK_SYSTEM_TESTS=1 cargo test --workspace -- --ignored`. Once selected, a
//! missing package is a loud failure, never a silent skip.

use std::path::PathBuf;

/// The env var that opts into the system suite.
pub const SYSTEM_TESTS_ENV: &str = "LAMEDUCK_SYSTEM_TESTS";

/// Panics unless the system suite was asked for.
pub fn require_system_suite() {
    assert!(
        std::env::var(SYSTEM_TESTS_ENV).is_ok_and(|v| v == "1"),
        "system tests need {SYSTEM_TESTS_ENV}=1 (and their packages installed: see .ci/run)"
    );
}

/// Finds a program on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Finds a program on PATH (the system suite must be selected) or panics naming the
/// package that provides it.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    require_system_suite();
    find_program(program).unwrap_or_else(|| {
        panic!(
            "{SYSTEM_TESTS_ENV}=1 but `{program}` is not on PATH: install {package} (.ci/run does)"
        )
    })
}

/// `python3` on PATH, able to import `modules` (the system suite must be selected),
/// or a panic naming the PyPI packages that provide them.
pub fn require_python_modules(modules: &[&str], packages: &str) -> PathBuf {
    let python = require_program("python3", "python3");
    let imports = format!("import {}", modules.join(", "));
    let status = std::process::Command::new(&python)
        .args(["-c", &imports])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        status.success(),
        "{SYSTEM_TESTS_ENV}=1 but {} cannot `{imports}`: pip install {packages} (.ci/run does, into a venv on PATH)",
        python.display()
    );
    python
}
