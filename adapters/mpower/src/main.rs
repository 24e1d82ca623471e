//! `mconnect-adapter-mpower`: MPower (powers of attorney) as a provider on
//! the bus, built only on the participant SDK (`mconnect_sdk`). The broker
//! forwards the `mpower/*` services here and asks it itself whether a caller
//! may act for a represented party (`MConnect-Represented-Party`).
//!
//! Started by `mconnect sandbox` with `--participant --pki --alg --listen
//! --data --broker-url` (the SDK's [`AdapterArgs`]); prints `LISTENING
//! https://…` once it serves. The participant is `mpower` and the algorithm
//! `ed25519` unless given; `--data` is required. State (the reference
//! backend) lives in `--data` and survives restarts. Through `--broker-url`
//! MPower reads MSign results to verify a grantor's signature.
//!
//! Layout: `service` is the bus side (route, parse, answer) and `consent`
//! its check of who consents (portal or MSign, over the bus); `backend` is
//! the reference store behind the `PowerBackend` trait, with the
//! authorisation's state machine (`backend::lifecycle`).
//!
//! Invariant: only requests signed by a certificate in `{pki}/broker.cert.pem`
//! reach the backend (the SDK checks before the handler runs), and every
//! answer is signed with this participant's key.
//!
//! [`AdapterArgs`]: mconnect_sdk::adapter::AdapterArgs

#![forbid(unsafe_code)]

mod backend;
mod consent;
mod service;

use std::sync::Arc;

use clap::Parser;
use mconnect_sdk::ProviderSettings;
use mconnect_sdk::adapter::{self, AdapterArgs};

/// Command line, as `mconnect sandbox` passes it.
#[derive(Parser)]
#[command(version, about = "MPower (powers of attorney) as an MConnect provider")]
struct Args {
    #[command(flatten)]
    common: AdapterArgs,
    /// The citizen portal's participant id: its calls for its signed-in
    /// user who is the grantor count as the grantor's consent.
    #[arg(long, default_value = "mcabinet")]
    portal: String,
    /// MSign's participant id; its certificate `{pki}/{msign}.cert.pem` is
    /// the only one whose signatures count as consent.
    #[arg(long, default_value = "msign")]
    msign: String,
}

fn main() -> std::process::ExitCode {
    adapter::run_main("mconnect-adapter-mpower", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Required arguments first, as a parser would check them.
    let data = args.common.data_dir()?;
    let (credentials, broker) = args.common.credentials("mpower", "ed25519")?;
    let backend = Arc::new(backend::LocalBackend::open(data)?);
    let msign = match &args.common.broker_url {
        Some(url) => {
            let cert = args.common.pki.join(format!("{}.cert.pem", args.msign));
            let pem = std::fs::read_to_string(&cert)
                .map_err(|e| format!("{}: {e} (MSign's certificate)", cert.display()))?;
            let der = mconnect_sdk::parse_certs(&pem)?
                .into_iter()
                .next()
                .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
            Some(consent::Msign {
                consumer: mconnect_sdk::Consumer::new(credentials.clone(), url, broker.clone())?,
                participant: args.msign.clone(),
                certificate_fingerprint: mconnect_sdk::certificate_fingerprint(&der),
            })
        }
        None => {
            tracing::warn!("no --broker-url: MSign signatures cannot be checked as consent");
            None
        }
    };
    let consent = Arc::new(consent::ConsentChecker {
        portal: args.portal.clone(),
        msign,
    });
    let settings = ProviderSettings {
        listen: args.common.listen,
        credentials,
        broker,
        max_body_bytes: 64 * 1024,
    };
    adapter::run_provider(settings, move |request| {
        let backend = backend.clone();
        let consent = consent.clone();
        async move { service::handle(&*backend, &consent, &request).await }
    })
    .await?;
    Ok(())
}
