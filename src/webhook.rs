//! `lameduck webhook`: the mutating admission webhook that injects the sidecar into
//! pods as they are created (installed by the Helm chart in charts/lameduck).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use lameduck_webhook::{Cluster, Injector, Metrics, ReloadingCertificate, Webhook};
use tokio_util::sync::CancellationToken;

use crate::inject::SidecarArgs;

/// Default address of the webhook's HTTPS server.
const DEFAULT_LISTEN: &str = "0.0.0.0:9443";

/// Serve the mutating admission webhook that injects the sidecar into new pods.
#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// Where to serve HTTPS (POST /mutate, GET /healthz, /readyz, /metrics).
    #[arg(long, env = "LAMEDUCK_WEBHOOK_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The serving certificate chain (PEM); read again when it changes.
    #[arg(long, env = "LAMEDUCK_WEBHOOK_TLS_CERT")]
    tls_cert: PathBuf,
    /// The serving certificate's private key (PEM).
    #[arg(long, env = "LAMEDUCK_WEBHOOK_TLS_KEY")]
    tls_key: PathBuf,
    /// How often the certificate files are checked for a change.
    #[arg(long, env = "LAMEDUCK_WEBHOOK_CERT_CHECK_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    cert_check_interval: Duration,
    /// After SIGTERM, how long /readyz says 503 while admissions are still answered
    /// (the API server learns of the removed endpoint late, as every client does).
    #[arg(long, env = "LAMEDUCK_WEBHOOK_SHUTDOWN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    webhook_shutdown_delay: Duration,
    /// How often pods that should have the sidecar and do not are looked for (each
    /// gets a NotInjected Event, once); 0 turns it off.
    #[arg(long, env = "LAMEDUCK_WEBHOOK_MISSED_POD_CHECK_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    missed_pod_check_interval: Duration,
    /// Log lines as JSON objects (one per line) instead of text.
    #[arg(long, env = "LAMEDUCK_WEBHOOK_LOG_JSON")]
    log_json: bool,
    /// Run without the API server: no namespace defaults, no Service check, no Events.
    #[arg(long, env = "LAMEDUCK_WEBHOOK_NO_CLUSTER")]
    no_cluster: bool,
    #[command(flatten)]
    sidecar: SidecarArgs,
}

pub(crate) fn run(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    if args.cert_check_interval.is_zero() {
        return Ok(crate::usage(
            "webhook",
            "--cert-check-interval must be above 0",
        ));
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    // Checked before anything is bound: a bad pair is a startup error naming the file.
    let certificate = Arc::new(ReloadingCertificate::load(&args.tls_cert, &args.tls_key)?);
    let tls = Arc::new(
        certificate
            .server_config()
            .context("building the TLS configuration")?,
    );
    let options = args.sidecar.options(None);
    let missed_options = options.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let cluster = if args.no_cluster {
            Cluster::none()
        } else {
            let instance = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "lameduck-webhook".to_owned());
            Cluster::connect(instance)
                .await
                .context("connecting to the API server (--no-cluster runs without it)")?
        };
        let registry = prometheus::Registry::new();
        let metrics = Metrics::register(&registry).context("registering the metrics")?;
        let webhook = Arc::new(Webhook {
            injector: Injector::new(options),
            cluster,
            metrics: metrics.clone(),
            registry,
            ready: AtomicBool::new(true),
        });
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let address = listener.local_addr().context("the bound address")?;
        tracing::info!(%address, cluster = !args.no_cluster, "webhook serving");
        let stop = CancellationToken::new();
        tokio::spawn(certificate.clone().watch(
            args.cert_check_interval,
            stop.clone(),
            move |result| match result {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!("serving certificate reloaded");
                    metrics
                        .certificate_reloads
                        .with_label_values(&["reloaded"])
                        .inc();
                }
                Err(error) => {
                    tracing::warn!(%error, "serving certificate not reloaded; the old one stays");
                    metrics
                        .certificate_reloads
                        .with_label_values(&["failed"])
                        .inc();
                }
            },
        ));
        if !args.no_cluster && !args.missed_pod_check_interval.is_zero() {
            tokio::spawn(webhook.cluster.clone().watch_missed_pods(
                missed_options,
                args.missed_pod_check_interval,
                stop.clone(),
                webhook.metrics.clone(),
            ));
        }
        let server = tokio::spawn(lameduck_webhook::serve(
            listener,
            tls,
            webhook.clone(),
            stop.clone(),
            Duration::from_secs(10),
        ));
        shutdown_signal().await?;
        tracing::info!(delay = ?args.webhook_shutdown_delay, "shutting down: not ready, still answering");
        webhook.ready.store(false, Ordering::Relaxed);
        tokio::time::sleep(args.webhook_shutdown_delay).await;
        stop.cancel();
        server.await.context("the server task failed")?;
        tracing::info!("webhook stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("listening for SIGINT")?,
    }
    Ok(())
}
