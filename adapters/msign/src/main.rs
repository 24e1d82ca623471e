//! `mconnect-adapter-msign`: MSign (electronic signatures) as a provider on
//! the bus, built only on the participant SDK (`mconnect_sdk`).
//!
//! Started by `mconnect sandbox` with `--participant --pki --alg --listen
//! --data --broker-url`; prints `LISTENING https://…` once it serves. The
//! reference backend signs with this participant's own key and certificate
//! from the development PKI (`{pki}/{participant}.key.pem`, `.cert.pem`).
//!
//! Invariant: only requests signed by a certificate in `{pki}/broker.cert.pem`
//! reach the backend (the SDK checks before the handler runs), and every
//! answer is signed with this participant's key.

#![forbid(unsafe_code)]

mod backend;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mconnect_sdk::{Credentials, ProviderSettings, TrustedKeys};

/// Command line, as `mconnect sandbox` passes it.
#[derive(Parser)]
#[command(
    version,
    about = "MSign (electronic signatures) as an MConnect provider"
)]
struct Args {
    /// This adapter's participant id (its key and certificate are in --pki).
    #[arg(long, default_value = "msign")]
    participant: String,
    /// Directory with ca.cert.pem, broker.cert.pem and {participant}.{cert,key}.pem.
    #[arg(long)]
    pki: PathBuf,
    /// Signature algorithm or key type.
    #[arg(long, default_value = "rsa-v1_5-sha256")]
    alg: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Data directory (unused: sign requests live in memory).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The broker's data-plane URL (unused: MSign only answers).
    #[arg(long)]
    broker_url: Option<String>,
    /// How long the simulated signer takes to sign, in milliseconds.
    #[arg(long, default_value_t = 0)]
    sign_delay_ms: u64,
    /// How long a sign request waits for its signer, in seconds.
    #[arg(long, default_value_t = 3600)]
    request_ttl_s: u64,
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
            eprintln!("mconnect-adapter-msign: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let cert_path = args.pki.join(format!("{}.cert.pem", args.participant));
    let credentials = Credentials::from_pki_dir(&args.pki, &args.participant, &args.alg)?;
    let broker = TrustedKeys::broker_in_pki_dir(&args.pki)?;
    // The reference signer is this participant's own certificate: the sandbox
    // CA issued it, so anyone holding ca.cert.pem can check the chain.
    let backend = Arc::new(backend::LocalBackend::new(
        credentials.key.clone(),
        std::fs::read_to_string(&cert_path)?,
        Duration::from_millis(args.sign_delay_ms),
        Duration::from_secs(args.request_ttl_s),
    )?);
    let server = mconnect_sdk::serve_provider(
        ProviderSettings {
            listen: args.listen,
            credentials,
            broker,
            max_body_bytes: 8 * 1024 * 1024,
        },
        move |request| {
            let backend = backend.clone();
            async move { service::handle(&*backend, &request).await }
        },
    )
    .await?;
    println!("LISTENING https://{}", server.local_addr());
    // Ctrl-C, SIGTERM, or the sandbox that started it is gone.
    mconnect_sdk::until_stopped().await;
    server.shutdown().await;
    Ok(())
}
