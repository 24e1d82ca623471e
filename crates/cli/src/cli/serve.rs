//! `mconnect serve`: run the broker with a configuration file, optionally
//! registering the operator's first participants on an empty state store
//! (`--init-participants`, `mconnect::bootstrap`).
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM, Ctrl-C); 64 for anything
//! wrong with the installation (configuration, keys and their permissions,
//! catalog, policies, the participants file, a non-empty store), before any
//! port is bound; 1 when a port cannot be bound.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use mconnect::app::{StartError, StartOptions};
use mconnect::config::{Config, EXIT_CONFIG};

/// `mconnect serve ...`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The TOML configuration (see examples/broker.toml, deploy/broker.toml).
    #[arg(long)]
    config: PathBuf,
    /// On the first start: register the participants of this JSON file
    /// (`{"participants": [...]}`, each as PUT /v1/participants/{id} takes
    /// it) on the empty state store, all or none, audited as admin changes
    /// by `broker`. On a store that already holds them exactly so, nothing
    /// is done; on any other non-empty store the broker refuses to start.
    #[arg(long, value_name = "FILE")]
    init_participants: Option<PathBuf>,
}

/// Runs the broker until SIGTERM or Ctrl-C.
pub(crate) async fn run(args: ServeArgs) -> Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mconnect: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG as u8));
        }
    };
    let options = StartOptions {
        init_participants: args.init_participants,
    };
    let running = match mconnect::app::start_with(config, options).await {
        Ok(r) => r,
        Err(e @ StartError::Bind { .. }) => bail!(e),
        Err(e) => {
            // Everything but binding is a problem with the installation.
            eprintln!("mconnect: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG as u8));
        }
    };
    eprintln!(
        "mconnect: data plane on https://{}, admin on https://{}, operations on http://{}",
        running.data_addr(),
        running.admin_addr(),
        running.ops_addr()
    );
    super::wait_for_shutdown().await;
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
