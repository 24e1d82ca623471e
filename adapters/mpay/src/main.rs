//! `mconnect-adapter-mpay`: MPay (the government payment service) as a
//! provider on the bus, built only on the participant SDK (`mconnect_sdk`):
//! payment orders, their details and cancellation, and payment confirmation
//! (`service` lists the routes and catalog services).
//!
//! Started by `mconnect sandbox` with `--participant --pki --alg --listen
//! --data --broker-url` (the SDK's [`AdapterArgs`]); prints `LISTENING
//! https://…` once it serves. `--participant` and `--data` are required (no
//! default id); the algorithm is `ed25519` unless given. Orders live in
//! `--data` and survive restarts. When an order becomes Paid, its provider
//! is told through MNotify over the bus (`--broker-url`; without it the
//! notices wait).
//!
//! Layout: `service` is the bus side (route, parse, answer); `backend` the
//! reference order store behind the `PaymentBackend` trait, and
//! `backend::notifier` the task that sends the paid notices.
//!
//! Invariants: amounts are kept as whole bani; a paid notice is decided in
//! the same disk write as the payment that completes the order, and is
//! retried (bounded, with backoff) until MNotify has queued it, never queued
//! twice.
//!
//! [`AdapterArgs`]: mconnect_sdk::adapter::AdapterArgs

#![forbid(unsafe_code)]

mod backend;
mod service;

use std::sync::Arc;

use clap::Parser;
use mconnect_sdk::adapter::{self, AdapterArgs};
use mconnect_sdk::{Consumer, ProviderSettings};
use tokio::sync::Notify;

/// Command line (what the sandbox passes).
#[derive(Parser, Clone)]
struct Args {
    #[command(flatten)]
    common: AdapterArgs,
}

fn main() -> std::process::ExitCode {
    adapter::run_main("mconnect-adapter-mpay", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Required arguments first, as a parser would check them.
    let participant = args.common.required_participant("MPay")?;
    let data = args.common.data_dir()?;
    let (credentials, broker) = args.common.credentials(participant, "ed25519")?;
    let backend = Arc::new(backend::LocalBackend::open(data)?);
    let wake = Arc::new(Notify::new());
    match &args.common.broker_url {
        Some(url) => {
            let consumer = Consumer::new(credentials.clone(), url, broker.clone())?;
            tokio::spawn(backend::notifier::run_notifier(
                backend.clone(),
                consumer,
                wake.clone(),
            ));
        }
        None => tracing::warn!("no --broker-url: paid notices wait until one is given"),
    }
    let settings = ProviderSettings {
        listen: args.common.listen,
        credentials,
        broker,
        max_body_bytes: 256 * 1024,
    };
    // The notifier needs no stopping of its own: it ends with the runtime,
    // after the server, and a notice it was sending is retried on restart.
    adapter::run_provider(settings, move |request| {
        let backend = backend.clone();
        let wake = wake.clone();
        async move { service::handle(backend.as_ref(), &wake, request) }
    })
    .await?;
    Ok(())
}
