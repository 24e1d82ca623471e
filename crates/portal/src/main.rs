//! `mconnect-portal`: the data-access portal as a process of its own,
//! serving HTTPS on `--listen` with `--cert` and `--key` (the sandbox
//! passes its development PKI's `portal` certificate). Prints `LISTENING
//! https://{addr}` once it serves.
//!
//! Without a certificate it serves plain HTTP, and then only on a loopback
//! address unless `--behind-proxy` says a TLS-terminating proxy stands in
//! front: the session cookies it will set are `Secure`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::collections::HashMap;

use clap::Parser;
use mconnect::catalog::Catalog;
use mconnect::policy::PolicyIndex;
use mconnect_portal::Portal;
use mconnect_portal::assignments::Assignments;
use mconnect_portal::lookup::Lookups;
use mconnect_sdk::server::{ListenerStats, ServerLimits, serve_with};
use mconnect_sdk::{Consumer, Credentials, TrustedKeys};

/// Command line.
#[derive(Parser)]
#[command(version, about = "The MConnect data-access portal")]
struct Args {
    /// The catalog directory (one JSON file per register).
    #[arg(long)]
    catalog: PathBuf,
    /// Listen address (loopback unless --behind-proxy).
    #[arg(long, default_value = "127.0.0.1:8450")]
    listen: SocketAddr,
    /// The portal's TLS certificate (PEM chain); with --key, serve HTTPS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// A TLS-terminating proxy stands in front: allow plain HTTP on a
    /// non-loopback address.
    #[arg(long)]
    behind_proxy: bool,
    /// The development sign-in's officials (JSON; the sandbox writes it).
    /// Refused unless the portal listens on a loopback address: it signs
    /// anyone in as anyone listed, which only a sandbox may do.
    #[arg(long)]
    dev_officials: Option<PathBuf>,
    /// The broker's data-plane URL, for lookups.
    #[arg(long, requires_all = ["pki", "policies"])]
    broker_url: Option<String>,
    /// Directory with ca.cert.pem, broker.cert.pem and the hosted
    /// organisations' {participant}.{cert,key}.pem.
    #[arg(long)]
    pki: Option<PathBuf>,
    /// The policies directory (the grants the lookups are offered under).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// An organisation whose lookups the portal makes, as
    /// `participant:algorithm` (repeat for each).
    #[arg(long = "hosted")]
    hosted: Vec<String>,
    /// Where the portal keeps its state (which official may use which
    /// grant: `assignments.json`). Required with lookups.
    #[arg(long)]
    state: Option<PathBuf>,
}

/// Consumer clients for the hosted organisations and the grants of the bus.
fn lookups(args: &Args, catalog: &Catalog) -> Result<Option<Lookups>, String> {
    let (Some(url), Some(pki), Some(policies)) = (&args.broker_url, &args.pki, &args.policies)
    else {
        return Ok(None);
    };
    let state = args
        .state
        .as_ref()
        .ok_or("--state is required: the portal keeps which official may use which grant there")?;
    let broker = TrustedKeys::broker_in_pki_dir(pki).map_err(|e| e.to_string())?;
    let mut consumers = HashMap::new();
    for hosted in &args.hosted {
        let (participant, alg) = hosted
            .split_once(':')
            .ok_or_else(|| format!("--hosted {hosted}: write participant:algorithm"))?;
        let credentials = Credentials::from_pki_dir(pki, participant, alg)
            .map_err(|e| format!("{participant}: {e}"))?;
        let consumer = Consumer::new(credentials, url, broker.clone())
            .map_err(|e| format!("{participant}: {e}"))?;
        consumers.insert(participant.to_owned(), consumer);
    }
    // Grants name participants the portal cannot check here; the broker
    // decides every call anyway.
    let index = PolicyIndex::load_dir(policies, catalog, &|_| true).map_err(|e| e.to_string())?;
    let assignments = Assignments::open(&state.join("assignments.json"))?;
    Ok(Some(Lookups::new(
        consumers,
        index.grants().cloned().collect(),
        assignments,
    )))
}

fn main() -> ExitCode {
    mconnect_sdk::exit_when_parent_dies();
    mconnect_sdk::adapter::init_logging("mconnect_portal");
    let args = Args::parse();
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => match mconnect_sdk::tls::Identity::load(cert, key)
            .and_then(|identity| mconnect_sdk::tls::browser_server_config(&identity))
        {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("mconnect-portal: TLS: {e}");
                return ExitCode::from(64);
            }
        },
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() && !args.behind_proxy {
        eprintln!(
            "mconnect-portal: {} is not a loopback address: the portal serves plain HTTP, so put a TLS proxy in front and pass --behind-proxy",
            args.listen
        );
        return ExitCode::from(64);
    }
    let catalog = match Catalog::load_dir(&args.catalog) {
        Ok(catalog) => Arc::new(catalog),
        Err(e) => {
            eprintln!("mconnect-portal: catalog: {e}");
            return ExitCode::from(64);
        }
    };
    let officials = match &args.dev_officials {
        None => Vec::new(),
        // A proxy in front of a loopback portal would publish it, so the
        // development sign-in and a proxy never go together.
        Some(_) if !args.listen.ip().is_loopback() || args.behind_proxy => {
            eprintln!(
                "mconnect-portal: --dev-officials signs anyone in as anyone listed: it is for a sandbox on a loopback address with no proxy in front, not {}{}",
                args.listen,
                if args.behind_proxy {
                    " behind a proxy"
                } else {
                    ""
                }
            );
            return ExitCode::from(64);
        }
        Some(path) => match mconnect_portal::session::load_officials(path) {
            Ok(officials) => officials,
            Err(e) => {
                eprintln!("mconnect-portal: {e}");
                return ExitCode::from(64);
            }
        },
    };
    let lookups = match lookups(&args, &catalog) {
        Ok(lookups) => lookups,
        Err(e) => {
            eprintln!("mconnect-portal: lookups: {e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mconnect-portal: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let mut portal = Portal::new(catalog).with_dev_sign_in(officials);
        if let Some(lookups) = lookups {
            portal = portal.with_lookups(lookups);
        }
        let portal = Arc::new(portal);
        let server = serve_with(
            args.listen,
            tls.clone(),
            ServerLimits::default(),
            Arc::new(ListenerStats::default()),
            move |_peer, request| {
                let portal = portal.clone();
                async move { portal.handle(request).await }
            },
        )
        .await;
        match server {
            Ok(server) => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                println!("LISTENING {scheme}://{}", server.local_addr());
                mconnect_sdk::until_stopped().await;
                server.shutdown().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mconnect-portal: cannot listen on {}: {e}", args.listen);
                ExitCode::from(1)
            }
        }
    })
}
