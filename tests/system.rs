//! The opt-in system suite: tests that need packages beyond cargo (kubectl or
//! kustomize, nginx, prometheus, chromium). They are `#[ignore]`d in the plain
//! `cargo test` run and selected by `.ci/run` with
//! `LAMEDUCK_SYSTEM_TESTS=1 cargo test --workspace -- --ignored`. Once selected,
//! a missing package is a loud failure, never a silent skip.

use std::path::PathBuf;
use std::process::Command;

/// The env var that opts into the system suite.
pub(crate) const SYSTEM_TESTS_ENV: &str = "LAMEDUCK_SYSTEM_TESTS";

/// Panics unless the system suite was asked for.
pub(crate) fn require_system_suite() {
    assert!(
        std::env::var(SYSTEM_TESTS_ENV).is_ok_and(|v| v == "1"),
        "system tests need {SYSTEM_TESTS_ENV}=1 (and their packages installed: see .ci/run)"
    );
}

/// Finds a program on PATH.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Finds a program on PATH or panics naming the package that provides it.
pub(crate) fn require_program(program: &str, package: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "{SYSTEM_TESTS_ENV}=1 but `{program}` is not on PATH: install {package} (.ci/run does)"
        )
    })
}

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Renders a kustomization with `kubectl kustomize`, or `kustomize build` where
/// kubectl is absent.
pub(crate) fn kustomize(dir: &str) -> String {
    require_system_suite();
    let root = repo_root();
    let mut command = if let Some(kubectl) = find_program("kubectl") {
        let mut c = Command::new(kubectl);
        c.arg("kustomize");
        c
    } else {
        let mut c = Command::new(require_program("kustomize", "kubectl or kustomize"));
        c.arg("build");
        c
    };
    let output = command
        .arg(root.join(dir))
        .output()
        .expect("running kustomize");
    assert!(
        output.status.success(),
        "kustomize {dir} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize output is UTF-8")
}
