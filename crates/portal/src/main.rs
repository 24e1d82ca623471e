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
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use std::collections::HashMap;

use clap::Parser;
use mconnect::catalog::Catalog;
use mconnect::connect::client::AdminClient;
use mconnect::policy::{Grant, PolicyIndex};
use mconnect::trust::TrustAnchors;
use mconnect_portal::Portal;
use mconnect_portal::applications::Applications;
use mconnect_portal::assignments::Assignments;
use mconnect_portal::audit::PortalAudit;
use mconnect_portal::auditor::Auditing;
use mconnect_portal::history::History;
use mconnect_portal::lookup::Lookups;
use mconnect_portal::mpass::Mpass;
use mconnect_portal::saml::{IdentityProvider, ServiceProvider};
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
    /// The broker's admin URL: the hosted organisations' connection
    /// applications and decisions, and auditors' reads of the log, go there
    /// over mutual TLS as each of them.
    #[arg(long, requires_all = ["pki"])]
    admin_url: Option<String>,
    /// The portal's own participant, as `participant:algorithm`, with its
    /// key and certificate in --pki: a signed-in person reads who accessed
    /// their data through the broker under its grant for
    /// `mconnect/find-usage`, and the portal's audit log (in --state) is
    /// signed with its key. Required with any sign-in.
    #[arg(long, requires_all = ["broker_url", "pki", "policies", "state"])]
    own_participant: Option<String>,
    /// Where the portal keeps its state (which official may use which
    /// grant: `assignments.json`). Required with lookups.
    #[arg(long)]
    state: Option<PathBuf>,
    /// MPass (SAML 2.0) sign-in: the identity provider's metadata file
    /// (its entity id, HTTP-POST SSO URL and signing certificates). Or
    /// give --mpass-idp-cert, --mpass-idp-sso-url and --mpass-idp-entity-id.
    /// Without either, nobody signs in with MPass.
    #[arg(long, requires = "public_url", conflicts_with_all = ["mpass_idp_cert", "mpass_idp_sso_url"])]
    mpass_idp_metadata: Option<PathBuf>,
    /// The identity provider's signing certificate (PEM): its signatures
    /// verify with this certificate only.
    #[arg(long, requires_all = ["mpass_idp_sso_url", "mpass_idp_entity_id", "public_url"])]
    mpass_idp_cert: Option<PathBuf>,
    /// The identity provider's SSO URL (HTTP-POST binding).
    #[arg(long, requires = "mpass_idp_cert")]
    mpass_idp_sso_url: Option<String>,
    /// The identity provider's entity id (with --mpass-idp-metadata, which
    /// of the providers it lists).
    #[arg(long)]
    mpass_idp_entity_id: Option<String>,
    /// This portal's entity id at MPass [default: {public-url}/saml/metadata].
    #[arg(long)]
    mpass_sp_entity_id: Option<String>,
    /// The portal's external base URL (`https://...`): MPass posts its
    /// answer to {public-url}/saml/acs.
    #[arg(long)]
    public_url: Option<String>,
    /// The officials who sign in with MPass (JSON, the format of
    /// --dev-officials): their roles and organisation come from this file;
    /// anyone else MPass signs in is a resident.
    #[arg(long)]
    officials: Option<PathBuf>,
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
        let (participant, consumer) = consumer(hosted, pki, url, &broker)?;
        consumers.insert(participant, consumer);
    }
    let assignments = Assignments::open(&state.join("assignments.json"))?;
    Ok(Some(Lookups::new(
        consumers,
        grants(policies, catalog)?,
        assignments,
    )))
}

/// The grants of the bus. Grants name participants the portal cannot check
/// here; the broker decides every call anyway.
fn grants(policies: &Path, catalog: &Catalog) -> Result<Vec<Grant>, String> {
    let index = PolicyIndex::load_dir(policies, catalog, &|_| true).map_err(|e| e.to_string())?;
    Ok(index.grants().cloned().collect())
}

/// A consumer client for `participant:algorithm`, with its key and
/// certificate from the PKI directory.
fn consumer(
    entry: &str,
    pki: &Path,
    url: &str,
    broker: &TrustedKeys,
) -> Result<(String, Consumer), String> {
    let (participant, alg) = entry
        .split_once(':')
        .ok_or_else(|| format!("{entry}: write participant:algorithm"))?;
    let credentials = Credentials::from_pki_dir(pki, participant, alg)
        .map_err(|e| format!("{participant}: {e}"))?;
    let consumer = Consumer::new(credentials, url, broker.clone())
        .map_err(|e| format!("{participant}: {e}"))?;
    Ok((participant.to_owned(), consumer))
}

/// An admin-API client for each hosted organisation, when `--admin-url`
/// is given.
fn admin_clients(args: &Args) -> Result<HashMap<String, AdminClient>, String> {
    let (Some(url), Some(pki)) = (&args.admin_url, &args.pki) else {
        return Ok(HashMap::new());
    };
    let mut clients = HashMap::new();
    for hosted in &args.hosted {
        let (participant, alg) = hosted
            .split_once(':')
            .ok_or_else(|| format!("{hosted}: write participant:algorithm"))?;
        let credentials = Credentials::from_pki_dir(pki, participant, alg)
            .map_err(|e| format!("{participant}: {e}"))?;
        let client =
            AdminClient::new(credentials, url).map_err(|e| format!("{participant}: {e}"))?;
        clients.insert(participant.to_owned(), client);
    }
    Ok(clients)
}

/// The access-history reader, when `--own-participant` names the portal's
/// own participant.
fn history(args: &Args, catalog: &Catalog) -> Result<Option<History>, String> {
    let (Some(entry), Some(url), Some(pki), Some(policies)) = (
        &args.own_participant,
        &args.broker_url,
        &args.pki,
        &args.policies,
    ) else {
        return Ok(None);
    };
    let broker = TrustedKeys::broker_in_pki_dir(pki).map_err(|e| e.to_string())?;
    let (participant, consumer) = consumer(entry, pki, url, &broker)?;
    History::new(&participant, consumer, grants(policies, catalog)?).map(Some)
}

/// Connection applications, when the portal reaches the admin API and has
/// its own participant: it asks MSign for officials' signatures and MNotify
/// for the applicants' notices as that participant (its grants
/// `portal-application-signing` and `portal-connection-notices`).
///
/// It files the applications of authorities not yet on the bus on the admin
/// API as that participant too (which the broker must know as an
/// `intermediary`; otherwise it refuses them, and says why), and checks
/// their systems' certificates against the bus CA (`ca.cert.pem` in
/// --pki) before the official signs.
fn applications(args: &Args) -> Result<Option<Applications>, String> {
    let (Some(admin_url), Some(entry), Some(url), Some(pki)) = (
        &args.admin_url,
        &args.own_participant,
        &args.broker_url,
        &args.pki,
    ) else {
        return Ok(None);
    };
    let broker = TrustedKeys::broker_in_pki_dir(pki).map_err(|e| e.to_string())?;
    let (participant, consumer) = consumer(entry, pki, url, &broker)?;
    let alg = entry.split_once(':').map_or("", |(_, alg)| alg);
    let credentials = Credentials::from_pki_dir(pki, &participant, alg)
        .map_err(|e| format!("{participant}: {e}"))?;
    let own =
        AdminClient::new(credentials, admin_url).map_err(|e| format!("{participant}: {e}"))?;
    // The bus CA: a joining system's certificate is checked against it
    // with the form, before the official signs.
    let ca = pki.join("ca.cert.pem");
    let anchors = mconnect::tls::load_certificates(&ca)
        .and_then(|cas| TrustAnchors::new(&cas))
        .map_err(|e| format!("the bus CA, {}: {e}", ca.display()))?;
    Ok(Some(
        Applications::new(consumer)
            .with_own_admin(own)
            .with_trust(anchors),
    ))
}

/// The portal's audit log in `{state}/audit`, its tree heads signed with
/// the key of `participant:algorithm` from the PKI directory.
fn open_audit(state: &Path, own: &str, pki: &Path) -> Result<PortalAudit, String> {
    let participant = own.split_once(':').map_or(own, |(p, _)| p);
    let read = |suffix: &str| {
        let path = pki.join(format!("{participant}.{suffix}"));
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    PortalAudit::open(&state.join("audit"), &read("cert.pem")?, &read("key.pem")?)
}

/// MPass sign-in, when an identity provider is configured.
fn mpass(args: &Args) -> Result<Option<Mpass>, String> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let idp = match (&args.mpass_idp_metadata, &args.mpass_idp_cert) {
        (Some(metadata), _) => {
            IdentityProvider::from_metadata(&read(metadata)?, args.mpass_idp_entity_id.as_deref())
        }
        (None, Some(cert)) => IdentityProvider::from_certificate_pem(
            &read(cert)?,
            args.mpass_idp_sso_url.as_deref().unwrap_or_default(),
            args.mpass_idp_entity_id.as_deref().unwrap_or_default(),
        ),
        (None, None) if args.officials.is_some() => {
            return Err("--officials names who signs in with MPass: configure MPass with --mpass-idp-metadata or --mpass-idp-cert".into());
        }
        (None, None) => return Ok(None),
    }
    .map_err(|e| e.to_string())?;
    let public = args
        .public_url
        .as_deref()
        .ok_or("--public-url is required")?
        .trim_end_matches('/');
    let entity_id = args
        .mpass_sp_entity_id
        .clone()
        .unwrap_or_else(|| format!("{public}/saml/metadata"));
    let sp = ServiceProvider::new(&entity_id, &format!("{public}/saml/acs"), idp)
        .map_err(|e| e.to_string())?;
    let officials = match &args.officials {
        Some(path) => mconnect_portal::session::load_officials(path)?,
        None => Vec::new(),
    };
    Ok(Some(Mpass::new(sp, officials)))
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
    let mpass = match mpass(&args) {
        Ok(mpass) => mpass,
        Err(e) => {
            eprintln!("mconnect-portal: MPass: {e}");
            return ExitCode::from(64);
        }
    };
    // Every sign-in is recorded before it takes effect: no sign-in without
    // the portal's audit log.
    if (!officials.is_empty() || mpass.is_some())
        && (args.state.is_none() || args.own_participant.is_none())
    {
        eprintln!(
            "mconnect-portal: sign-ins are audited: give --state (where the portal's audit log is kept) and --own-participant (whose key signs it)"
        );
        return ExitCode::from(64);
    }
    let lookups = match lookups(&args, &catalog) {
        Ok(lookups) => lookups,
        Err(e) => {
            eprintln!("mconnect-portal: lookups: {e}");
            return ExitCode::from(64);
        }
    };
    let history = match history(&args, &catalog) {
        Ok(history) => history,
        Err(e) => {
            eprintln!("mconnect-portal: --own-participant: {e}");
            return ExitCode::from(64);
        }
    };
    let admin = match admin_clients(&args) {
        Ok(admin) => admin,
        Err(e) => {
            eprintln!("mconnect-portal: --admin-url: {e}");
            return ExitCode::from(64);
        }
    };
    let applications = match applications(&args) {
        Ok(applications) => applications,
        Err(e) => {
            eprintln!("mconnect-portal: --own-participant: {e}");
            return ExitCode::from(64);
        }
    };
    // Auditors read the log on the admin API; its tree heads are checked
    // with the broker certificate of the PKI directory.
    let auditing = match (&args.admin_url, &args.pki) {
        (Some(_), Some(pki)) => match Auditing::from_pki_dir(pki) {
            Ok(auditing) => Some(auditing),
            Err(e) => {
                eprintln!("mconnect-portal: the broker certificate: {e}");
                return ExitCode::from(64);
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mconnect-portal: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let audit = match (&args.state, &args.own_participant, &args.pki) {
            (Some(state), Some(own), Some(pki)) => match open_audit(state, own, pki) {
                Ok(audit) => Some(audit),
                Err(e) => {
                    eprintln!("mconnect-portal: {e}");
                    return ExitCode::from(1);
                }
            },
            _ => None,
        };
        let mut portal = Portal::new(catalog).with_dev_sign_in(officials);
        if let Some(audit) = &audit {
            portal = portal.with_audit(audit.clone());
        }
        if let Some(lookups) = lookups {
            portal = portal.with_lookups(lookups);
        }
        if let Some(history) = history {
            portal = portal.with_history(history);
        }
        portal = portal.with_admin(admin);
        if let Some(auditing) = auditing {
            portal = portal.with_auditing(auditing);
        }
        if let Some(applications) = applications {
            portal = portal.with_applications(applications);
        }
        if let Some(mpass) = mpass {
            portal = portal.with_mpass(mpass);
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
                if let Some(audit) = audit
                    && let Err(e) = audit.close().await
                {
                    eprintln!("mconnect-portal: closing the audit log: {e}");
                    return ExitCode::from(1);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mconnect-portal: cannot listen on {}: {e}", args.listen);
                ExitCode::from(1)
            }
        }
    })
}
