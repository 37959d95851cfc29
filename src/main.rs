//! The `lameduck` binary: parses the command line and hands each subcommand to its
//! module, which calls the library crates (`crates/`). Exit codes are named in the
//! contract crate; errors are printed once, with their chain.

mod check;
mod inject;
mod io;
mod lab;
mod live;
mod load;
mod uninject;
mod webhook;

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
    Load(load::LoadArgs),
    /// Add the lameduck sidecar to Kubernetes manifests (stdout).
    Inject(inject::InjectArgs),
    /// Remove what `inject` added, exactly.
    Uninject(uninject::UninjectArgs),
    /// Lint manifests for the zero-downtime rules (non-zero exit on findings).
    Check(check::CheckArgs),
    /// Local rolling-upgrade comparison with real processes: the main job.
    Lab(lab::LabArgs),
    /// Mutating admission webhook: inject the sidecar into pods as they are created.
    Webhook(webhook::WebhookArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => load::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Uninject(args) => uninject::run(args),
        Command::Check(args) => check::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Webhook(args) => webhook::run(args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("lameduck: {error:#}");
        ExitCode::from(lameduck_contract::exit::FAILURE)
    })
}

/// A usage error of `command`: printed, and exit 64.
fn usage(command: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("lameduck {command}: {message}");
    ExitCode::from(lameduck_contract::exit::USAGE)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
