//! The programs a lab pod runs: `demo-app` and `lameduck-sidecar`, found beside the
//! running `lameduck` and, in a checkout, built first so they are as fresh as it is.

use std::path::{Path, PathBuf};

/// Where the programs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The demo app.
    pub demo_app: PathBuf,
    /// The lameduck sidecar.
    pub sidecar: PathBuf,
}

/// The programs could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// The running executable's path is unknown.
    #[error("locating the running executable")]
    CurrentExe(#[source] std::io::Error),
    /// cargo could not be run.
    #[error("running cargo build")]
    Cargo(#[source] std::io::Error),
    /// cargo ran and failed.
    #[error("cargo build -p demo-app -p lameduck-sidecar failed")]
    BuildFailed,
    /// They are not where they should be.
    #[error("demo-app and lameduck-sidecar are not in {dir}: build them (cargo build --release)")]
    Missing {
        /// Where they were looked for.
        dir: PathBuf,
    },
}

/// The workspace this crate was built in, when it is still there (a checkout).
fn workspace() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("Cargo.toml").is_file().then_some(root)
}

/// Finds `demo-app` and `lameduck-sidecar` beside the running executable; in a
/// checkout, `cargo build`s them first (a no-op when nothing changed). Blocks: call
/// it before the runtime starts.
pub fn find_binaries() -> Result<Binaries, BinariesError> {
    let exe = std::env::current_exe().map_err(BinariesError::CurrentExe)?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(workspace) = workspace() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.current_dir(&workspace).args([
            "build",
            "-q",
            "-p",
            "demo-app",
            "-p",
            "lameduck-sidecar",
        ]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().map_err(BinariesError::Cargo)?;
        if !status.success() {
            return Err(BinariesError::BuildFailed);
        }
    }
    let binaries = Binaries {
        demo_app: dir.join("demo-app"),
        sidecar: dir.join("lameduck-sidecar"),
    };
    if binaries.demo_app.is_file() && binaries.sidecar.is_file() {
        Ok(binaries)
    } else {
        Err(BinariesError::Missing { dir })
    }
}
