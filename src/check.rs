//! `lameduck check`: lint manifests for the zero-downtime rules; exit 1 on findings.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::io::{Inputs, write_stdout};

/// Output format of `check`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Lint manifests for the zero-downtime rules; exit 1 on findings.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The longest request an app without the sidecar must be allowed to finish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let documents = args.inputs.read()?;
    let findings = lameduck_manifests::check(&documents, args.drain.as_secs());
    match args.format {
        Format::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(&findings)?))?,
        Format::Text => {
            let mut text = String::new();
            for f in &findings {
                let _ = writeln!(
                    text,
                    "document {} {}/{}: {}: {}",
                    f.document, f.kind, f.name, f.rule, f.message
                );
            }
            if findings.is_empty() {
                text.push_str("no findings\n");
            }
            write_stdout(&text)?;
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(lameduck_contract::exit::FAILURE)
    })
}
