//! `mconnect-adapter-mpower`: MPower (powers of attorney) as a provider on
//! the bus, built only on the participant SDK (`mconnect_sdk`). The broker
//! forwards the `mpower/*` services here and asks it itself whether a caller
//! may act for a represented party (`MConnect-Represented-Party`).
//!
//! Started by `mconnect sandbox` with `--participant --pki --alg --listen
//! --data --broker-url`; prints `LISTENING https://…` once it serves. State
//! (the reference backend) lives in `--data` and survives restarts.
//!
//! Invariant: only requests signed by a certificate in `{pki}/broker.cert.pem`
//! reach the backend (the SDK checks before the handler runs), and every
//! answer is signed with this participant's key.

#![forbid(unsafe_code)]

mod backend;
mod consent;
mod lifecycle;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use mconnect_sdk::{Credentials, ProviderSettings, TrustedKeys};

/// Command line, as `mconnect sandbox` passes it.
#[derive(Parser)]
#[command(version, about = "MPower (powers of attorney) as an MConnect provider")]
struct Args {
    /// This adapter's participant id (its key and certificate are in --pki).
    #[arg(long, default_value = "mpower")]
    participant: String,
    /// Directory with ca.cert.pem, broker.cert.pem and {participant}.{cert,key}.pem.
    #[arg(long)]
    pki: PathBuf,
    /// Signature algorithm or key type.
    #[arg(long, default_value = "ed25519")]
    alg: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory for the reference backend's state.
    #[arg(long)]
    data: PathBuf,
    /// The broker's data-plane URL: MPower reads MSign results through it
    /// to verify a grantor's signature. Without it only the portal can
    /// convey consent.
    #[arg(long)]
    broker_url: Option<String>,
    /// The citizen portal's participant id: its calls for its signed-in
    /// user who is the grantor count as the grantor's consent.
    #[arg(long, default_value = "mcabinet")]
    portal: String,
    /// MSign's participant id; its certificate `{pki}/{msign}.cert.pem` is
    /// the only one whose signatures count as consent.
    #[arg(long, default_value = "msign")]
    msign: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // First of all: a sandbox that dies while this starts takes it along.
    mconnect_sdk::exit_when_parent_dies();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mconnect-adapter-mpower: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let credentials = Credentials::from_pki_dir(&args.pki, &args.participant, &args.alg)?;
    let broker = TrustedKeys::broker_in_pki_dir(&args.pki)?;
    let backend = Arc::new(backend::LocalBackend::open(&args.data)?);
    let msign = match &args.broker_url {
        Some(url) => {
            let cert = args.pki.join(format!("{}.cert.pem", args.msign));
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
    let server = mconnect_sdk::serve_provider(
        ProviderSettings {
            listen: args.listen,
            credentials,
            broker,
            max_body_bytes: 64 * 1024,
        },
        move |request| {
            let backend = backend.clone();
            let consent = consent.clone();
            async move { service::handle(&*backend, &consent, &request).await }
        },
    )
    .await?;
    println!("LISTENING https://{}", server.local_addr());
    // Ctrl-C, SIGTERM, or the sandbox that started it is gone.
    mconnect_sdk::until_stopped().await;
    server.shutdown().await;
    Ok(())
}
