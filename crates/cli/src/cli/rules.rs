//! `mconnect catalog check DIR` and `mconnect policy check DIR`: the checks
//! the broker runs on load and reload, for operators and CI before a change
//! is deployed.
//!
//! Output: every problem on its own line as `file: at /json/pointer: reason`
//! (`(root)` for the whole document) and exit 1 when there is any; otherwise
//! one summary line and exit 0. The checks are the loaders themselves, so a
//! directory that passes here loads in the broker (given the same registry).

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use mconnect::catalog::{self, Catalog};
use mconnect::policy;

/// `mconnect catalog …`.
#[derive(Subcommand)]
pub(crate) enum CatalogCommand {
    /// Validate a catalog directory against the register schema and the
    /// cross-checks of the loader; list every problem.
    Check {
        /// The catalog directory (one JSON file per register).
        dir: PathBuf,
    },
}

/// `mconnect policy …`.
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy directory against the grant schema, the catalog and
    /// the participants; list every problem.
    Check {
        /// The policy directory (JSON files of grants).
        dir: PathBuf,
        /// The catalog the grants refer to.
        #[arg(long, default_value = "catalog")]
        catalog: PathBuf,
        /// The participants grants may name (`{"participants": [{"id": …}]}`,
        /// the sandbox definition format).
        #[arg(long, default_value = "examples/sandbox/participants.json")]
        participants: PathBuf,
    },
}

/// Runs `mconnect catalog …`.
pub(crate) fn catalog(command: CatalogCommand) -> Result<ExitCode> {
    let CatalogCommand::Check { dir } = command;
    Ok(match catalog::check_dir(&dir) {
        Ok(summary) => {
            println!("{}: {summary}", dir.display());
            ExitCode::SUCCESS
        }
        Err(problems) => report(&problems),
    })
}

/// Runs `mconnect policy …`.
pub(crate) fn policy(command: PolicyCommand) -> Result<ExitCode> {
    let PolicyCommand::Check {
        dir,
        catalog,
        participants,
    } = command;
    let known = participant_ids(&participants)?;
    // The grants are checked against the catalog, so a broken catalog is
    // reported first: every grant naming its services would fail otherwise.
    let catalog = match catalog::check_dir(&catalog) {
        Ok(_) => Catalog::load_dir(&catalog)
            .with_context(|| format!("loading the catalog {}", catalog.display()))?,
        Err(problems) => {
            eprintln!(
                "mconnect: the catalog {} does not load; fix it first",
                catalog.display()
            );
            return Ok(report(&problems));
        }
    };
    let is_known = |id: &str| known.contains(id);
    Ok(match policy::check_dir(&dir, &catalog, &is_known) {
        Ok(summary) => {
            println!("{}: {summary}", dir.display());
            ExitCode::SUCCESS
        }
        Err(problems) => report(&problems),
    })
}

/// Prints every problem and a count; exit 1.
fn report(problems: &[impl Display]) -> ExitCode {
    for problem in problems {
        println!("{problem}");
    }
    eprintln!(
        "mconnect: {} problem{} found",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

/// The participant ids of a sandbox-style participants file.
fn participant_ids(path: &Path) -> Result<HashSet<String>> {
    #[derive(serde::Deserialize)]
    struct File {
        participants: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the participants file {}", path.display()))?;
    let file: File = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"participants\": [{{\"id\": …}}, …]}}",
            path.display()
        )
    })?;
    Ok(file.participants.into_iter().map(|p| p.id).collect())
}
