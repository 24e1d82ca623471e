//! `mconnect backup` and `mconnect restore`: one broker's state store and
//! audit log, copied consistently while the broker runs and put back only
//! into an empty installation (`mconnect::backup` holds the invariants).
//!
//! Exit codes: 0 done and verified; 1 the copy or the restored log failed
//! verification, or a file could not be read or written; 64 a bad
//! configuration, or a target that is not empty.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use mconnect::backup::BackupError;
use mconnect::config::{Config, EXIT_CONFIG};

/// `mconnect backup ...`.
#[derive(Args)]
pub(crate) struct BackupArgs {
    /// The broker's TOML configuration: where its state and audit log are.
    #[arg(long)]
    config: PathBuf,
    /// A new (or empty) directory for the backup.
    #[arg(long)]
    out: PathBuf,
}

/// `mconnect restore ...`.
#[derive(Args)]
pub(crate) struct RestoreArgs {
    /// The TOML configuration of the broker to restore: its storage.state
    /// must not exist and its storage.audit_dir must hold no log.
    #[arg(long)]
    config: PathBuf,
    /// The backup directory (written by `mconnect backup`).
    #[arg(long)]
    from: PathBuf,
}

/// Takes a backup.
pub(crate) async fn backup(args: BackupArgs) -> Result<ExitCode> {
    let Some(config) = load(&args.config) else {
        return Ok(ExitCode::from(EXIT_CONFIG as u8));
    };
    let out = args.out.clone();
    let result =
        tokio::task::spawn_blocking(move || mconnect::backup::backup(&config, &out)).await?;
    finish("backup", &args.out, result)
}

/// Restores a backup.
pub(crate) async fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let Some(config) = load(&args.config) else {
        return Ok(ExitCode::from(EXIT_CONFIG as u8));
    };
    let from = args.from.clone();
    let result =
        tokio::task::spawn_blocking(move || mconnect::backup::restore(&config, &from)).await?;
    finish("restore", &args.from, result)
}

fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("mconnect: {e}");
            None
        }
    }
}

fn finish(
    what: &str,
    dir: &std::path::Path,
    result: Result<mconnect::backup::Manifest, BackupError>,
) -> Result<ExitCode> {
    match result {
        Ok(m) => {
            println!("{what}        : {}", dir.display());
            println!("taken at      : {}", m.created_at);
            println!("audit records : {} (verified)", m.audit_records);
            println!("signed size   : {}", m.tree_size);
            match m.participants {
                Some(n) => println!("state         : redb, {n} participants"),
                None => println!(
                    "state         : in PostgreSQL, not in this backup: use pg_dump / pg_restore (docs/OPERATIONS.md)"
                ),
            }
            println!("files         : {}", m.files.len());
            println!("result        : OK");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ BackupError::Refused(_)) => {
            eprintln!("mconnect: {what}: {e}");
            Ok(ExitCode::from(EXIT_CONFIG as u8))
        }
        Err(e) => {
            eprintln!("mconnect: {what}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
