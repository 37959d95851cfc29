//! `lameduck lab --kubeconfig` and `lameduck check --kubeconfig`: the live-cluster
//! forms of the lab and the lint (crates/live), with the same tables and files.

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use lameduck_contract::exit;
use lameduck_live::{LiveFinding, LiveLab, Scope};

use crate::lab::{LabArgs, header, read_manifest, row, write_outputs};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// A run's label value: unique enough to tell runs apart, a valid label value.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}",
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(40)
    )
}

/// Resolves on SIGINT (never, if it cannot be listened for).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub(crate) fn lab(args: &LabArgs, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    if args.rate() <= 0.0 {
        return Ok(crate::usage("lab", "--rate must be above 0"));
    }
    let manifest = args.manifest().map(read_manifest).transpose()?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = lameduck_live::connect(kubeconfig, args.context()).await?;
        let lab = LiveLab {
            client,
            namespace: args.namespace().to_owned(),
            scenarios: args.scenarios(),
            manifest,
            image: args.image().map(str::to_owned),
            url: args.url().map(str::to_owned),
            rate: args.rate(),
            run: run_id(),
        };
        let timings = format!(
            "live cluster ({}), namespace {}, entry {}, run label {}={}; load {} POST/s",
            kubeconfig.display(),
            lab.namespace,
            lab.url.as_deref().unwrap_or("a NodePort Service"),
            lameduck_live::LAB_LABEL,
            lab.run,
            lab.rate
        );
        println!("{timings}");
        println!("{}", header());
        let outcome = lab.run(|r| println!("{}", row(r)), interrupted()).await;
        write_outputs(args, &outcome.results, &timings)?;
        let clean = outcome.cleanup.is_none();
        if let Some(error) = outcome.cleanup {
            eprintln!("lameduck lab: {:#}", anyhow::Error::from(error));
        }
        let cleaned = match (outcome.created, clean) {
            (false, _) => "nothing was created",
            (true, true) => "everything it created was deleted",
            (true, false) => "cleaning up failed",
        };
        if outcome.interrupted {
            eprintln!("lameduck lab: interrupted; {cleaned}");
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
        match outcome.error {
            Some(error) => {
                Err(anyhow::Error::from(error)
                    .context(format!("the cluster lab stopped ({cleaned})")))
            }
            None if clean => Ok(ExitCode::SUCCESS),
            None => Ok(ExitCode::from(exit::FAILURE)),
        }
    })
}

/// The live findings in `namespace` (default: the context's, as kubectl takes it), or
/// in every namespace.
pub(crate) fn check(
    kubeconfig: &Path,
    context: Option<&str>,
    namespace: Option<&str>,
    all_namespaces: bool,
    drain_seconds: u64,
) -> anyhow::Result<Vec<LiveFinding>> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let client = lameduck_live::connect(kubeconfig, context).await?;
        let scope = if all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(namespace.unwrap_or(client.default_namespace()).to_owned())
        };
        Ok(lameduck_live::check::check(&client, &scope, drain_seconds).await?)
    })
}
