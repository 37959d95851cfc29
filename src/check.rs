//! `lameduck check`: lint manifests, or what runs on a cluster (`--kubeconfig`), for
//! the zero-downtime rules; text, JSON or SARIF; exit 1 on findings.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::io::{Inputs, write_stdout};

/// Output format of `check`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    /// SARIF 2.1.0, for code-scanning UIs.
    Sarif,
}

/// Lint manifests, or a cluster's workloads, for the zero-downtime rules; exit 1 on
/// findings.
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
    /// Check what runs on the cluster of this kubeconfig instead of manifests.
    #[arg(long, value_name = "FILE", conflicts_with = "inputs")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current one).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// The namespace to check (default: the kubeconfig context's, else `default`).
    #[arg(long, short = 'n', requires = "kubeconfig")]
    namespace: Option<String>,
    /// Check every namespace.
    #[arg(
        long,
        short = 'A',
        requires = "kubeconfig",
        conflicts_with = "namespace"
    )]
    all_namespaces: bool,
}

/// One finding, from manifests or from a cluster.
struct Row {
    /// `namespace/` for a live object, `document N ` for a manifest.
    place: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    rule: &'static str,
    message: String,
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let drain = args.drain.as_secs();
    let (rows, json): (Vec<Row>, Value) = match &args.kubeconfig {
        Some(kubeconfig) => {
            let findings = crate::live::check(
                kubeconfig,
                args.context.as_deref(),
                args.namespace.as_deref(),
                args.all_namespaces,
                drain,
            )?;
            let rows = findings
                .iter()
                .map(|f| Row {
                    place: format!("{}/", f.namespace),
                    kind: f.kind.clone(),
                    name: f.name.clone(),
                    namespace: Some(f.namespace.clone()),
                    rule: f.rule,
                    message: f.message.clone(),
                })
                .collect();
            (rows, serde_json::to_value(&findings)?)
        }
        None => {
            let documents = args.inputs.read()?;
            let findings = lameduck_manifests::check(&documents, drain);
            let rows = findings
                .iter()
                .map(|f| Row {
                    place: format!("document {} ", f.document),
                    kind: f.kind.clone(),
                    name: f.name.clone(),
                    namespace: None,
                    rule: f.rule,
                    message: f.message.clone(),
                })
                .collect();
            (rows, serde_json::to_value(&findings)?)
        }
    };
    match args.format {
        Format::Json => write_stdout(&format!("{}\n", serde_json::to_string_pretty(&json)?))?,
        Format::Sarif => write_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(&sarif(&rows, &args.inputs.paths()))?
        ))?,
        Format::Text => {
            let mut text = String::new();
            for row in &rows {
                let _ = writeln!(
                    text,
                    "{}{}/{}: {}: {}",
                    row.place, row.kind, row.name, row.rule, row.message
                );
            }
            if rows.is_empty() {
                text.push_str("no findings\n");
            }
            write_stdout(&text)?;
        }
    }
    Ok(if rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(lameduck_contract::exit::FAILURE)
    })
}

/// The findings as a SARIF 2.1.0 log: every rule described, each finding a result at
/// its object (a logical location `namespace/Kind/name`), and at the manifest file
/// when exactly one was checked.
fn sarif(rows: &[Row], inputs: &[PathBuf]) -> Value {
    let rules: Vec<Value> = lameduck_manifests::check::RULES
        .iter()
        .chain(lameduck_live::check::RULES.iter())
        .map(|(id, text)| json!({"id": id, "shortDescription": {"text": text}}))
        .collect();
    let artifact = match inputs {
        [one] if one.as_os_str() != "-" => Some(one.display().to_string()),
        _ => None,
    };
    let results: Vec<Value> = rows
        .iter()
        .map(|row| {
            let object = match &row.namespace {
                Some(namespace) => format!("{namespace}/{}/{}", row.kind, row.name),
                None => format!("{}/{}", row.kind, row.name),
            };
            let mut location = json!({
                "logicalLocations": [{"fullyQualifiedName": object, "kind": "resource"}]
            });
            if let Some(uri) = &artifact {
                location["physicalLocation"] = json!({"artifactLocation": {"uri": uri}});
            }
            json!({
                "ruleId": row.rule,
                "level": "warning",
                "message": {"text": format!("{object}: {}", row.message)},
                "locations": [location],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "lameduck",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": env!("CARGO_PKG_REPOSITORY"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
