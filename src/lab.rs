//! `lameduck lab`: flags, the timings table, the results table and the JSON file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::builder::TypedValueParser as _;
use lameduck_contract::exit;
use lameduck_lab::{Binaries, Cause, IngressKind, LabConfig, Scenario, ScenarioResult};

/// Which ingress stands in front of the pods.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum IngressArg {
    /// The embedded ingress with ingress-nginx's semantics.
    Embedded,
    /// The real nginx (Debian package nginx), reloaded after the same lag.
    Nginx,
}

/// Local rolling-upgrade comparison with real processes (no cluster, no root).
#[derive(Debug, Args)]
pub(crate) struct LabArgs {
    /// Scenario to run (repeatable); default: all, in order.
    #[arg(long = "scenario", value_parser = scenario_parser())]
    scenarios: Vec<Scenario>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (timelines per scenario) here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// The ingress: embedded, or the real nginx.
    #[arg(long, value_enum, default_value_t = IngressArg::Embedded)]
    ingress: IngressArg,
    /// POST requests per second through the ingress.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Every duration from the manifests and the ingress is multiplied by this.
    #[arg(long, default_value_t = 0.12)]
    time_scale: f64,
    /// ingress-nginx controller sync interval (rate limit 0.3/s, burst 1), before scaling.
    #[arg(long, default_value = "3333ms", value_parser = humantime::parse_duration)]
    sync_interval: Duration,
    /// ingress-nginx worker poll interval, before scaling.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// A Deployment (and its Service) to use instead of the shipped demo.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Run this server as the app instead of demo-app, with `sh -c`; `{host}`, `{port}`
    /// and `{addr}` are replaced by the pod's address.
    #[arg(long)]
    app_cmd: Option<String>,
    /// Unary gRPC calls of this method (`/package.Service/Method`) instead of HTTP POSTs,
    /// over HTTP/2 through the embedded ingress; for a gRPC app given with --app-cmd
    /// (and its --manifest).
    #[arg(long, value_name = "/PACKAGE.SERVICE/METHOD", requires = "app_cmd")]
    grpc: Option<String>,
    /// The serialized request message of --grpc: hex, or @FILE. Default: empty.
    #[arg(long, value_name = "HEX|@FILE", requires = "grpc")]
    grpc_message: Option<String>,
    /// Write a Prometheus configuration here that scrapes every lab sidecar while it
    /// lives (targets and alerting rules are written beside it); start Prometheus with it
    /// to watch the rollout live.
    #[arg(long, value_name = "FILE")]
    prometheus_config: Option<PathBuf>,
    /// The demo-app binary (default: beside lameduck, built if needed).
    #[arg(long, requires = "sidecar")]
    demo_app: Option<PathBuf>,
    /// The lameduck-sidecar binary (default: beside lameduck, built if needed).
    #[arg(long, requires = "demo_app")]
    sidecar: Option<PathBuf>,
    #[command(flatten)]
    live: LiveArgs,
}

/// The lab on a live cluster instead of loopback.
#[derive(Debug, Args)]
struct LiveArgs {
    /// Run the scenarios on the cluster of this kubeconfig: applied into --namespace,
    /// rolled under load through --url, watched, attributed, then deleted.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["ingress", "time_scale", "sync_interval", "poll_interval", "app_cmd", "grpc", "prometheus_config", "demo_app", "sidecar"]
    )]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current one).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// The namespace the lab applies into (created, and deleted at the end, if missing).
    #[arg(long, default_value = lameduck_live::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The entry point the load goes through, e.g. your ingress (default: a NodePort
    /// Service on a node's InternalIP).
    #[arg(long, requires = "kubeconfig")]
    url: Option<String>,
    /// The app container's image instead of the manifest's.
    #[arg(long, requires = "kubeconfig")]
    image: Option<String>,
    /// Print the Role (in --namespace) and the optional ClusterRole the cluster lab
    /// needs, and exit.
    #[arg(long)]
    print_role: bool,
}

fn scenario_parser() -> impl clap::builder::TypedValueParser<Value = Scenario> {
    clap::builder::PossibleValuesParser::new(Scenario::ALL.map(Scenario::name))
        .try_map(|name| name.parse::<Scenario>())
}

pub(crate) fn row(result: &ScenarioResult) -> String {
    let mut line = format!(
        "{:<20} {:>8} {:>7}",
        result.name, result.requests, result.failed
    );
    for cause in Cause::ALL {
        let n = result.causes.get(&cause).copied().unwrap_or(0);
        line.push_str(&format!(" {n:>9}"));
    }
    line.push_str(&format!(
        " {:>9.1} {:>8.1}",
        result.rollout_seconds, result.p99_ms
    ));
    line
}

pub(crate) fn header() -> String {
    let mut header = format!("{:<20} {:>8} {:>7}", "scenario", "requests", "failed");
    for cause in Cause::ALL {
        let short: String = cause.as_str().chars().take(9).collect();
        header.push_str(&format!(" {short:>9}"));
    }
    header.push_str(&format!(" {:>9} {:>8}", "rollout s", "p99 ms"));
    header
}

/// The scaled durations of the shipped demo, printed above the table.
fn timings(args: &LabArgs) -> String {
    let scale = args.time_scale;
    format!(
        "timings (x{scale}): app startup {:.2}s, readiness period {:.2}s, preStop {:.2}s, grace {:.1}s/{:.1}s (plain/fixed), \
         sidecar delay {:.2}s + drain {:.2}s, ingress sync {:.2}s + poll {:.2}s, longest request {:.2}s; load {} {}/s",
        5.0 * scale,
        scale,
        15.0 * scale,
        30.0 * scale,
        40.0 * scale,
        15.0 * scale,
        30.0 * scale,
        args.sync_interval.as_secs_f64() * scale,
        args.poll_interval.as_secs_f64() * scale,
        10.0 * scale,
        args.rate,
        if args.grpc.is_some() {
            "gRPC calls"
        } else {
            "POST"
        }
    )
}

pub(crate) fn read_manifest(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(lameduck_manifests::parse_documents(
        &path.display().to_string(),
        &text,
    )?)
}

/// Writes the Prometheus files; returns the target file the lab keeps up to date.
fn prometheus_files(path: &Path) -> anyhow::Result<PathBuf> {
    let files = lameduck_lab::prometheus::write_config(path)
        .with_context(|| format!("writing the Prometheus configuration {}", path.display()))?;
    eprintln!(
        "Prometheus configuration written to {} (targets {}, rules {}): prometheus --config.file={}",
        files.config.display(),
        files.targets.display(),
        files.rules.display(),
        files.config.display()
    );
    Ok(files.targets)
}

fn config(args: &LabArgs) -> anyhow::Result<LabConfig> {
    let binaries = match (&args.demo_app, &args.sidecar) {
        (Some(demo_app), Some(sidecar)) => Binaries {
            demo_app: demo_app.clone(),
            sidecar: sidecar.clone(),
        },
        _ => lameduck_lab::find_binaries()
            .context("finding the pod programs (or pass --demo-app and --sidecar)")?,
    };
    Ok(LabConfig {
        ingress: match args.ingress {
            IngressArg::Embedded => IngressKind::Embedded,
            IngressArg::Nginx => IngressKind::Nginx,
        },
        scenarios: args.scenarios(),
        time_scale: args.time_scale,
        rate: args.rate,
        sync_interval: args.sync_interval,
        poll_interval: args.poll_interval,
        manifest: args.manifest.as_deref().map(read_manifest).transpose()?,
        binaries,
        app_cmd: args.app_cmd.clone(),
        prometheus_targets: args
            .prometheus_config
            .as_deref()
            .map(prometheus_files)
            .transpose()?,
        grpc: match &args.grpc {
            Some(method) => Some((
                method.clone(),
                crate::load::grpc_message(args.grpc_message.as_deref())?,
            )),
            None => None,
        },
    })
}

pub(crate) fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    if args.live.print_role {
        print!("{}", lameduck_live::access::role_yaml(&args.live.namespace));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(kubeconfig) = &args.live.kubeconfig {
        return crate::live::lab(&args, kubeconfig);
    }
    let valid = (0.0..=1.0).contains(&args.time_scale) && args.time_scale > 0.0 && args.rate > 0.0;
    if !valid {
        return Ok(crate::usage(
            "lab",
            "--time-scale must be in (0, 1] and --rate above 0",
        ));
    }
    if args.grpc.is_some() && matches!(args.ingress, IngressArg::Nginx) {
        return Ok(crate::usage(
            "lab",
            "--grpc needs the embedded ingress (--ingress embedded)",
        ));
    }
    let config = config(&args)?;
    let timings = timings(&args);
    println!("{timings}");
    println!("{}", header());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let results = runtime.block_on(async {
        tokio::select! {
            results = lameduck_lab::run(&config, |r| println!("{}", row(r))) => results.map(Some),
            _ = tokio::signal::ctrl_c() => Ok(None),
        }
    });
    // Dropping the runtime kills every pod process (kill_on_drop).
    drop(runtime);
    let Some(results) = results.map_err(with_hint)? else {
        eprintln!("lameduck lab: interrupted; every pod process was stopped");
        return Ok(ExitCode::from(exit::INTERRUPTED));
    };
    write_outputs(&args, &results, &timings)?;
    Ok(ExitCode::SUCCESS)
}

/// The `--html` and `--json` files of `results`.
pub(crate) fn write_outputs(
    args: &LabArgs,
    results: &[ScenarioResult],
    timings: &str,
) -> anyhow::Result<()> {
    if let Some(path) = &args.html {
        std::fs::write(path, lameduck_lab::report::html(results, timings))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "scenarios": results });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

impl LabArgs {
    /// The scenarios asked for, all by default.
    pub(crate) fn scenarios(&self) -> Vec<Scenario> {
        if self.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            self.scenarios.clone()
        }
    }

    pub(crate) fn manifest(&self) -> Option<&Path> {
        self.manifest.as_deref()
    }

    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.live.namespace
    }

    pub(crate) fn context(&self) -> Option<&str> {
        self.live.context.as_deref()
    }

    pub(crate) fn url(&self) -> Option<&str> {
        self.live.url.as_deref()
    }

    pub(crate) fn image(&self) -> Option<&str> {
        self.live.image.as_deref()
    }
}

/// The lab's error, with the flag that gets around it where there is one.
fn with_hint(error: lameduck_lab::LabError) -> anyhow::Error {
    let lameduck_lab::LabError::Scenario { source, .. } = &error;
    let hint = match source {
        lameduck_lab::ScenarioError::Workload(lameduck_lab::WorkloadError::UnknownImage {
            ..
        }) => Some("run another server as the app with --app-cmd"),
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{:#}: {hint}", anyhow::Error::from(error)),
        None => error.into(),
    }
}
