//! `mconnect-adapter-mnotify`: MNotify (the government notification
//! service) as a provider on the bus, built only on the participant SDK
//! (`mconnect_sdk`): notifications by e-mail (SMTP) and HTTPS webhooks, from
//! templates, through a persistent queue (`service` lists the routes and
//! catalog services).
//!
//! Started by `mconnect sandbox` with `--participant --pki --alg --listen
//! --data --broker-url` (the SDK's [`AdapterArgs`]; `--broker-url` is
//! unused: MNotify only answers); prints `LISTENING https://…` once it
//! serves. `--participant` and `--data` are required (no default id); the
//! algorithm is `ed25519` unless given. E-mail goes to the SMTP server of
//! `--smtp host:port`, or of the one line in `--data/smtp` when the flag is
//! absent (the sandbox starts adapters without extra flags); with neither,
//! e-mail is queued until one is set. Webhooks trust the bus CA. IDNP
//! recipients resolve through `--data/recipients.json` (`{"IDNP":
//! "address"}`), else to `{IDNP}@cetatean.mnotify.md`.
//!
//! Layout: `service` is the bus side (route, parse, check, answer);
//! `backend` the reference queue (`backend::store`), its delivery worker and
//! channels (`backend::delivery`) and the templates (`backend::templates`).
//!
//! Invariants: a request is answered only after its notification is on disk;
//! a repeated request with the same `idempotency_key` from the same client
//! gets the first notification back and sends nothing more; a client sees
//! only its own notifications.
//!
//! [`AdapterArgs`]: mconnect_sdk::adapter::AdapterArgs

#![forbid(unsafe_code)]

mod backend;
mod service;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mconnect_sdk::ProviderSettings;
use mconnect_sdk::adapter::{self, AdapterArgs};

use crate::backend::LocalBackend;
use crate::backend::delivery::{self, Backoff, Network};

/// Command line (the sandbox passes the common six).
#[derive(Parser, Clone)]
struct Args {
    #[command(flatten)]
    common: AdapterArgs,
    /// SMTP server `host:port`; default: `--data/smtp`, else queue only.
    #[arg(long)]
    smtp: Option<String>,
    /// First retry delay in milliseconds.
    #[arg(long, default_value_t = 250)]
    retry_base_ms: u64,
    /// Largest retry delay in milliseconds.
    #[arg(long, default_value_t = 5000)]
    retry_cap_ms: u64,
    /// Sends tried before a notification is Failed.
    #[arg(long, default_value_t = 12)]
    max_attempts: u32,
}

fn main() -> std::process::ExitCode {
    adapter::run_main("mconnect-adapter-mnotify", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Required arguments first, as a parser would check them.
    let participant = args.common.required_participant("MNotify")?;
    let data = args.common.data_dir()?;
    let (credentials, broker) = args.common.credentials(participant, "ed25519")?;
    let smtp = delivery::smtp_server(args.smtp.as_deref(), data)?;
    let backend = Arc::new(LocalBackend::open(data)?);
    let network = Network::new(smtp, credentials.ca.clone())?;
    // The worker needs no stopping of its own: it ends with the runtime,
    // after the server; what it was sending stays `Sending` on disk and is
    // sent again after a restart.
    backend.spawn_worker(
        network,
        Backoff {
            base: Duration::from_millis(args.retry_base_ms),
            cap: Duration::from_millis(args.retry_cap_ms),
            max_attempts: args.max_attempts.max(1),
        },
    );
    let settings = ProviderSettings {
        listen: args.common.listen,
        credentials,
        broker,
        max_body_bytes: 256 * 1024,
    };
    adapter::run_provider(settings, move |request| {
        let backend = backend.clone();
        async move { service::handle(&backend, request).await }
    })
    .await?;
    Ok(())
}
