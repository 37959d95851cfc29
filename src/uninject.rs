//! `lameduck uninject`: take out exactly what `inject` added.

use std::process::ExitCode;

use clap::Args;

use crate::io::{Inputs, write_stdout};

/// Remove what `lameduck inject` added.
#[derive(Debug, Args)]
pub(crate) struct UninjectArgs {
    #[command(flatten)]
    inputs: Inputs,
}

pub(crate) fn run(args: UninjectArgs) -> anyhow::Result<ExitCode> {
    let mut documents = args.inputs.read()?;
    lameduck_manifests::uninject(&mut documents)?;
    write_stdout(&lameduck_manifests::to_yaml(&documents)?)?;
    Ok(ExitCode::SUCCESS)
}
