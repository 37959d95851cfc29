//! The `lameduck` binary: parses the command line and calls the library.

use std::process::ExitCode;

use clap::Parser;

/// Roll out unmodified HTTP apps on Kubernetes without dropping a request.
///
/// Subcommands arrive with their issues: `load`, `inject`, `check`, `lab`.
#[derive(Debug, Parser)]
#[command(name = "lameduck", version)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("lameduck: no subcommand is available yet; see `lameduck --help`");
    ExitCode::from(64)
}
