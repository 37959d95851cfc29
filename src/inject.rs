//! `lameduck inject`: add the sidecar to every pod template that serves a port.
//! [`SidecarArgs`] are the sidecar settings `inject` and `webhook` share.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use lameduck_contract::{defaults::MIN_DRAIN_TOKEN_LEN, env};
use lameduck_manifests::inject::{
    DEFAULT_ADMIN_PORT, DEFAULT_APP_STOP_TIME, DEFAULT_CPU_REQUEST, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_IMAGE, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST, DEFAULT_SHUTDOWN_DELAY,
    DEFAULT_SIDECAR_PORT, Mode, Options, Resources,
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

/// The sidecar as it is added to a pod: image, timing, ports and resources.
#[derive(Debug, Args)]
pub(crate) struct SidecarArgs {
    /// The sidecar image.
    #[arg(long, env = "LAMEDUCK_SIDECAR_IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// Native sidecar, or a classic one.
    #[arg(long, env = "LAMEDUCK_SIDECAR_MODE", value_enum, default_value_t = ModeArg::Native)]
    mode: ModeArg,
    /// Default shutdown delay (annotation lameduck.dev/shutdown-delay overrides).
    #[arg(long, env = "LAMEDUCK_SIDECAR_SHUTDOWN_DELAY", default_value = DEFAULT_SHUTDOWN_DELAY, value_parser = humantime::parse_duration)]
    shutdown_delay: Duration,
    /// Default drain timeout (annotation lameduck.dev/drain-timeout overrides).
    #[arg(long, env = "LAMEDUCK_SIDECAR_DRAIN_TIMEOUT", default_value = DEFAULT_DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Time the app needs to exit once drained (annotation lameduck.dev/app-stop-time overrides).
    #[arg(long, env = "LAMEDUCK_APP_STOP_TIME", default_value = DEFAULT_APP_STOP_TIME, value_parser = humantime::parse_duration)]
    app_stop_time: Duration,
    /// The sidecar's serving port.
    #[arg(long, env = "LAMEDUCK_SIDECAR_PORT", default_value_t = DEFAULT_SIDECAR_PORT)]
    sidecar_port: u16,
    /// The sidecar's admin port.
    #[arg(long, env = "LAMEDUCK_SIDECAR_ADMIN_PORT", default_value_t = DEFAULT_ADMIN_PORT)]
    admin_port: u16,
    /// The sidecar's CPU request ("" for none).
    #[arg(long, env = "LAMEDUCK_SIDECAR_CPU_REQUEST", default_value = DEFAULT_CPU_REQUEST)]
    sidecar_cpu_request: String,
    /// The sidecar's memory request ("" for none).
    #[arg(long, env = "LAMEDUCK_SIDECAR_MEMORY_REQUEST", default_value = DEFAULT_MEMORY_REQUEST)]
    sidecar_memory_request: String,
    /// The sidecar's CPU limit (none by default).
    #[arg(long, env = "LAMEDUCK_SIDECAR_CPU_LIMIT", default_value = "")]
    sidecar_cpu_limit: String,
    /// The sidecar's memory limit ("" for none).
    #[arg(long, env = "LAMEDUCK_SIDECAR_MEMORY_LIMIT", default_value = DEFAULT_MEMORY_LIMIT)]
    sidecar_memory_limit: String,
}

impl SidecarArgs {
    /// The injection options, with `drain_token` for every workload (`None`: random).
    pub(crate) fn options(self, drain_token: Option<String>) -> Options {
        let quantity = |text: String| (!text.trim().is_empty()).then_some(text);
        Options {
            image: self.image,
            mode: match self.mode {
                ModeArg::Native => Mode::Native,
                ModeArg::Classic => Mode::Classic,
            },
            shutdown_delay: self.shutdown_delay,
            drain_timeout: self.drain_timeout,
            app_stop_time: self.app_stop_time,
            sidecar_port: self.sidecar_port,
            admin_port: self.admin_port,
            drain_token,
            resources: Resources {
                cpu_request: quantity(self.sidecar_cpu_request),
                memory_request: quantity(self.sidecar_memory_request),
                cpu_limit: quantity(self.sidecar_cpu_limit),
                memory_limit: quantity(self.sidecar_memory_limit),
            },
        }
    }
}

/// Add the lameduck sidecar to every pod template that serves a port.
#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    #[command(flatten)]
    inputs: Inputs,
    #[command(flatten)]
    sidecar: SidecarArgs,
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
    let options = args.sidecar.options(args.drain_token);
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
