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

use clap::Parser;
use mconnect::catalog::Catalog;
use mconnect_portal::Portal;
use mconnect_sdk::server::{ListenerStats, ServerLimits, serve_with};

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
        Some(_) if !args.listen.ip().is_loopback() => {
            eprintln!(
                "mconnect-portal: --dev-officials signs anyone in as anyone listed: it is for a sandbox on a loopback address, not {}",
                args.listen
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mconnect-portal: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let portal = Arc::new(Portal::new(catalog).with_dev_sign_in(officials));
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
