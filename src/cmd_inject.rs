//! `lameduck inject`, `uninject` and `check`: read manifests, transform or lint, write.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use lameduck::inject::{
    self, DEFAULT_ADMIN_PORT, DEFAULT_APP_STOP_TIME, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IMAGE,
    DEFAULT_SHUTDOWN_DELAY, DEFAULT_SIDECAR_PORT, Mode, Options,
};
use lameduck::manifest::{parse_stream, to_yaml};
use serde_json::Value;

/// Manifest sources: files, directories (their `.yaml`, `.yml` and `.json` files, in
/// name order, recursively) or `-` for standard input.
#[derive(Debug, Args)]
pub(crate) struct Inputs {
    /// FILE, DIR or - (standard input, the default).
    #[arg(value_name = "FILE|DIR|-")]
    inputs: Vec<PathBuf>,
}

impl Inputs {
    fn read(&self) -> anyhow::Result<Vec<Value>> {
        let sources = if self.inputs.is_empty() {
            vec![PathBuf::from("-")]
        } else {
            self.inputs.clone()
        };
        let mut documents = Vec::new();
        for source in sources {
            if source.as_os_str() == "-" {
                if std::io::stdin().is_terminal() {
                    bail!(
                        "reading manifests from standard input, which is a terminal: pipe them in or name files"
                    );
                }
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading standard input")?;
                documents.extend(parse_stream("-", &text)?);
            } else if source.is_dir() {
                for file in files_in(&source)? {
                    documents.extend(read_file(&file)?);
                }
            } else {
                documents.extend(read_file(&source)?);
            }
        }
        Ok(documents)
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_stream(&path.display().to_string(), &text)?)
}

fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(files_in(&path)?);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            files.push(path);
        }
    }
    Ok(files)
}

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
    #[arg(long, env = "LAMEDUCK_DRAIN_TOKEN", hide_env_values = true)]
    drain_token: Option<String>,
}

/// Remove what `lameduck inject` added.
#[derive(Debug, Args)]
pub(crate) struct UninjectArgs {
    #[command(flatten)]
    inputs: Inputs,
}

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

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing standard output")?;
    stdout.flush().context("writing standard output")
}

pub(crate) fn inject(args: InjectArgs) -> anyhow::Result<ExitCode> {
    if args
        .drain_token
        .as_deref()
        .is_some_and(|t| t.len() < 16 || t.contains(char::is_whitespace))
    {
        eprintln!("lameduck inject: --drain-token is not valid: at least 16 characters, no spaces");
        return Ok(ExitCode::from(64));
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
    let skipped = inject::inject(&mut documents, &options)?;
    // Everything is rendered before anything is written: no half-written output.
    let yaml = to_yaml(&documents)?;
    for skip in &skipped {
        eprintln!(
            "lameduck inject: skipped {} (document {}): {}",
            skip.object, skip.document, skip.reason
        );
    }
    write_stdout(&yaml)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn uninject(args: UninjectArgs) -> anyhow::Result<ExitCode> {
    let mut documents = args.inputs.read()?;
    inject::uninject(&mut documents)?;
    write_stdout(&to_yaml(&documents)?)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let documents = args.inputs.read()?;
    let findings = lameduck::check::check(&documents, args.drain.as_secs());
    match args.format {
        Format::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(&findings)?))?,
        Format::Text => {
            let mut text = String::new();
            for f in &findings {
                text.push_str(&format!(
                    "document {} {}/{}: {}: {}\n",
                    f.document, f.kind, f.name, f.rule, f.message
                ));
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
        ExitCode::from(1)
    })
}
