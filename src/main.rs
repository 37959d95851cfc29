//! The `lameduck` binary: parses the command line and calls the library.

mod cmd_inject;
mod cmd_lab;
mod cmd_load;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: `lameduck load` allocates per request
/// (request heads, records in transit) on every core at once. See benches/README.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Roll out unmodified HTTP apps on Kubernetes without dropping a request.
#[derive(Debug, Parser)]
#[command(name = "lameduck", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Constant-rate POST load that records and classifies every request.
    Load(cmd_load::LoadArgs),
    /// Add the lameduck sidecar to Kubernetes manifests (stdout).
    Inject(cmd_inject::InjectArgs),
    /// Remove what `inject` added, exactly.
    Uninject(cmd_inject::UninjectArgs),
    /// Lint manifests for the zero-downtime rules (non-zero exit on findings).
    Check(cmd_inject::CheckArgs),
    /// Local rolling-upgrade comparison with real processes: the main job.
    Lab(cmd_lab::LabArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => cmd_load::run(args),
        Command::Inject(args) => cmd_inject::inject(args),
        Command::Uninject(args) => cmd_inject::uninject(args),
        Command::Check(args) => cmd_inject::check(args),
        Command::Lab(args) => cmd_lab::run(args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("lameduck: {error:#}");
        ExitCode::FAILURE
    })
}
