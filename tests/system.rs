//! Helpers of the opt-in system suite (the shared checks are in
//! `lameduck_test_support::system`): the repository and `kustomize`.

use std::path::PathBuf;
use std::process::Command;

pub(crate) use lameduck_test_support::system::{
    find_program, require_program, require_system_suite,
};

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
