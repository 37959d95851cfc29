//! `lameduck inject`: add the sidecar to every pod template that serves a port.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use lameduck_contract::{defaults::MIN_DRAIN_TOKEN_LEN, env};
use lameduck_manifests::inject::{
    DEFAULT_ADMIN_PORT, DEFAULT_APP_STOP_TIME, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IMAGE,
    DEFAULT_SHUTDOWN_DELAY, DEFAULT_SIDECAR_PORT, Mode, Options,
};
use lameduck_manifests::to_yaml;

use crate::io::{Inputs, write_stdout};

/// Where the sidecar goes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Native sidecar (init container with restartPolicy: Always; Kubernetes ≥ 1.29).
    Native,
    /// Regular container, listed first.
    Classic,
}

/// Add the lameduck sidecar to every pod template that serves a port.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    #[command(flatten)]
    inputs: Inputs,
    /// The sidecar image.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Native sidecar, or a classic one.
    #[arg(long, value_enum, default_value_t = ModeArg::Native)]
    mode: ModeArg,
    /// Default shutdown delay (annotation lameduck.dev/shutdown-delay overrides).
    #[arg(long, default_value = DEFAULT_SHUTDOWN_DELAY, value_parser = humantime::parse_duration)]
    shutdown_delay: Duration,
    /// Default drain timeout (annotation lameduck.dev/drain-timeout overrides).
    #[arg(long, default_value = DEFAULT_DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Time the app needs to exit once drained (annotation lameduck.dev/app-stop-time overrides).
    #[arg(long, default_value = DEFAULT_APP_STOP_TIME, value_parser = humantime::parse_duration)]
    app_stop_time: Duration,
    /// The sidecar's serving port.
    #[arg(long, default_value_t = DEFAULT_SIDECAR_PORT)]
    sidecar_port: u16,
    /// The sidecar's admin port.
    #[arg(long, default_value_t = DEFAULT_ADMIN_PORT)]
    admin_port: u16,
    /// One /drain token for every workload (at least 16 characters). Default: a random
    /// one per workload, kept when the output is injected again.
    #[arg(long, env = env::DRAIN_TOKEN, hide_env_values = true)]
    drain_token: Option<String>,
}

pub(crate) fn run(args: InjectArgs) -> anyhow::Result<ExitCode> {
    if args
        .drain_token
        .as_deref()
        .is_some_and(|t| t.len() < MIN_DRAIN_TOKEN_LEN || t.contains(char::is_whitespace))
    {
        return Ok(crate::usage(
            "inject",
            "--drain-token is not valid: at least 16 characters, no spaces",
        ));
    }
    let mut documents = args.inputs.read()?;
    let options = Options {
        image: args.image,
        mode: match args.mode {
            ModeArg::Native => Mode::Native,
            ModeArg::Classic => Mode::Classic,
        },
        shutdown_delay: args.shutdown_delay,
        drain_timeout: args.drain_timeout,
        app_stop_time: args.app_stop_time,
        sidecar_port: args.sidecar_port,
        admin_port: args.admin_port,
        drain_token: args.drain_token,
    };
    let report = lameduck_manifests::inject(&mut documents, &options)?;
    // Everything is rendered before anything is written: no half-written output.
    let yaml = to_yaml(&documents)?;
    for chosen in &report.chosen {
        eprintln!("lameduck inject: {chosen}");
    }
    for skip in &report.skipped {
        eprintln!("lameduck inject: {skip}");
    }
    write_stdout(&yaml)?;
    Ok(ExitCode::SUCCESS)
}
