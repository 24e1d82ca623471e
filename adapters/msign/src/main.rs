//! `mconnect-adapter-msign`: MSign (electronic signatures) as a provider on
//! the bus, built only on the participant SDK (`mconnect_sdk`).
//!
//! Started by `mconnect sandbox` with `--participant --pki --alg --listen
//! --data --broker-url` (the SDK's [`AdapterArgs`]; `--data` and
//! `--broker-url` are unused: sign requests live in memory and MSign only
//! answers); prints `LISTENING https://…` once it serves. The participant is
//! `msign` and the algorithm `rsa-v1_5-sha256` unless given. The reference
//! backend signs for a person with their own key and certificate when the
//! development PKI holds them (`{pki}/signers/{IDNP}.key.pem`, `.cert.pem`,
//! issued by the sandbox to its people), else with this participant's own
//! key and certificate (`{pki}/{participant}.key.pem`, `.cert.pem`).
//!
//! Layout: `service` is the bus side (route, parse, answer), `backend` the
//! reference signer behind the `SignBackend` trait.
//!
//! Invariant: only requests signed by a certificate in `{pki}/broker.cert.pem`
//! reach the backend (the SDK checks before the handler runs), and every
//! answer is signed with this participant's key.
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

/// Command line, as `mconnect sandbox` passes it.
#[derive(Parser)]
#[command(
    version,
    about = "MSign (electronic signatures) as an MConnect provider"
)]
struct Args {
    #[command(flatten)]
    common: AdapterArgs,
    /// How long the simulated signer takes to sign, in milliseconds.
    #[arg(long, default_value_t = 0)]
    sign_delay_ms: u64,
    /// How long a sign request waits for its signer, in seconds.
    #[arg(long, default_value_t = 3600)]
    request_ttl_s: u64,
}

fn main() -> std::process::ExitCode {
    adapter::run_main("mconnect-adapter-msign", run(Args::parse()))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (credentials, broker) = args.common.credentials("msign", "rsa-v1_5-sha256")?;
    let participant = args.common.participant_or("msign");
    let cert_path = args.common.pki.join(format!("{participant}.cert.pem"));
    // The reference signer is this participant's own certificate: the sandbox
    // CA issued it, so anyone holding ca.cert.pem can check the chain.
    let backend = Arc::new(
        backend::LocalBackend::new(
            credentials.key.clone(),
            std::fs::read_to_string(&cert_path)?,
            Duration::from_millis(args.sign_delay_ms),
            Duration::from_secs(args.request_ttl_s),
        )?
        .with_signers(args.common.pki.join("signers")),
    );
    let settings = ProviderSettings {
        listen: args.common.listen,
        credentials,
        broker,
        max_body_bytes: 8 * 1024 * 1024,
    };
    adapter::run_provider(settings, move |request| {
        let backend = backend.clone();
        async move { service::handle(&*backend, &request).await }
    })
    .await?;
    Ok(())
}
