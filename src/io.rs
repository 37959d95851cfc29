//! Manifests in and out for `inject`, `uninject` and `check`: files, directories or
//! standard input in; standard output out, written only once everything is rendered.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use lameduck_manifests::parse_stream;
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
    /// The sources as given (none: standard input).
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.inputs.clone()
    }

    pub(crate) fn read(&self) -> anyhow::Result<Vec<Value>> {
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

pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing standard output")?;
    stdout.flush().context("writing standard output")
}
