//! `mconnect sandbox`: the whole bus on loopback in one command
//! (PROTOCOL.md section 9). It makes a development PKI, registers the
//! participants of `examples/sandbox/participants.json`, starts the example
//! registers as child processes, starts the broker on the shipped `catalog/`
//! and `policies/`, writes `sandbox.json`, and waits for Ctrl-C or SIGTERM.
//!
//! Invariants: a second start on the same directory reuses its PKI, state and
//! audit log (nothing is lost); every call listed under `try` is allowed by
//! the shipped policies; child processes die with the sandbox, even when it
//! is killed (`children`); it reads nothing relative to the working
//! directory: the shipped data is built into the binary (`shipped`) and the
//! child binaries are found beside the executable.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::io::AsyncBufReadExt;

use mconnect::app::RunningBroker;
use mconnect::catalog::Service;
use mconnect::catalog::params::{self, ParamFormat};
use mconnect::config::Config;
use mconnect::pki::{DevCa, KeyType};
use mconnect::registry::{
    Endpoint, Organisation, Participant, Registry, Role, registered_certificate,
};
use mconnect::rules::Rules;

mod banner;
mod children;
pub mod cluster;
mod fixtures;
mod lock;
mod nginx;
pub mod postgres;
mod shipped;
mod signers;

pub use children::ManifestProcess;
pub use mconnect_sdk::manifest::{
    ManifestAuditor, ManifestBroker, ManifestCluster, ManifestClusterBroker, ManifestOfficial,
    ManifestParticipant, ManifestPortal, ManifestTry, SandboxManifest,
};

/// Options of `mconnect sandbox`.
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {
    /// Directory for PKI, state, audit log and sandbox.json.
    #[arg(long, default_value = "sandbox")]
    pub dir: PathBuf,
    /// Data plane port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    pub data_port: u16,
    /// Admin API port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8444)]
    pub admin_port: u16,
    /// Operations port (plain HTTP: /healthz, /readyz, /metrics) on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8445)]
    pub ops_port: u16,
    /// The catalog directory (default: the shipped catalog, built into this
    /// binary and written to `{dir}/shipped/catalog` on every start).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// The policies directory (default: the shipped policies, as for --catalog).
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// The sandbox participants file (default: the shipped
    /// `examples/sandbox/participants.json`, as for --catalog).
    #[arg(long)]
    pub participants: Option<PathBuf>,
    /// Where the example register binaries are (default: `examples/` beside
    /// this executable); the adapters are looked for in its parent.
    #[arg(long)]
    pub examples_dir: Option<PathBuf>,
    /// Start, print, and stop at once (for scripts and tests).
    #[arg(long)]
    pub no_wait: bool,
    /// Two brokers on one PostgreSQL database behind a load balancer
    /// (Debian's nginx in stream mode): --data-port is then the load
    /// balancer's, and the brokers listen on free ports. Needs Debian's
    /// postgresql, nginx and libnginx-mod-stream.
    #[arg(long)]
    pub cluster: bool,
}

/// A participant of the sandbox definition.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct SandboxParticipant {
    /// Participant id.
    pub id: String,
    /// Organisation.
    pub organisation: Organisation,
    /// Roles.
    pub roles: Vec<Role>,
    /// Key type or RFC 9421 algorithm it signs with.
    pub key: String,
    /// The example register it runs, for providers.
    #[serde(default)]
    pub serves: Option<String>,
    /// The adapter it runs (`msign`, `mpay`, `mpower`, `mnotify`): the
    /// binary `mconnect-adapter-{name}` beside `mconnect`.
    #[serde(default)]
    pub adapter: Option<String>,
    /// Left out of citizens' access history.
    #[serde(default)]
    pub confidential: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxDefinition {
    participants: Vec<SandboxParticipant>,
    /// The officials the portal's development sign-in offers.
    #[serde(default)]
    officials: Vec<ManifestOfficial>,
}

/// A running sandbox.
pub struct RunningSandbox {
    /// The broker.
    pub broker: RunningBroker,
    /// What was written to sandbox.json.
    pub manifest: SandboxManifest,
    /// The directory.
    pub dir: PathBuf,
    /// The child processes, as listed in sandbox.json.
    pub processes: Vec<ManifestProcess>,
    children: Vec<tokio::process::Child>,
    /// Held while the sandbox runs: one sandbox per directory.
    _lock: std::fs::File,
}

impl RunningSandbox {
    /// Stops the broker (closing its audit log), then the example registers
    /// and adapters, waiting until each has exited.
    pub async fn shutdown(mut self) {
        self.broker.shutdown().await;
        children::stop_all(&mut self.children).await;
    }
}

/// `mconnect sandbox`.
pub async fn run(args: SandboxArgs) -> Result<ExitCode> {
    if args.cluster {
        return cluster::run(args).await;
    }
    let sandbox = start(&args).await?;
    print_welcome(&sandbox);
    if !args.no_wait {
        crate::cli::wait_for_shutdown().await;
        eprintln!("mconnect: stopping the sandbox");
    }
    sandbox.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Starts the sandbox and returns once everything listens (one broker, in
/// this process; `--cluster` is [`cluster::start`]).
pub async fn start(args: &SandboxArgs) -> Result<RunningSandbox> {
    if args.cluster {
        bail!("a cluster sandbox is started with sandbox::cluster::start");
    }
    let setup = setup(args)?;
    let (dir, pki_dir) = (&setup.dir, &setup.pki_dir);
    if !pki_dir.join("broker.key.pem").exists() {
        // Ed25519: the broker signs twice per exchange (the forwarded request
        // and the receipt), and an Ed25519 signature costs half of a P-256
        // one (benches/README.md, "Signatures"); consumers verify receipts
        // faster too.
        setup
            .ca
            .issue(
                "broker",
                "Agenția de Guvernare Electronică",
                KeyType::Ed25519,
            )?
            .write(pki_dir, "broker")?;
    }

    // Configuration, written so `mconnect serve --config` can run the same broker.
    let config_path = dir.join("broker.toml");
    std::fs::write(
        &config_path,
        format!(
            "# Written by `mconnect sandbox`; see examples/broker.toml for every key.\n[listen]\ndata = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\nops = \"127.0.0.1:{}\"\n\n[tls]\nca = \"pki/ca.cert.pem\"\ncert = \"pki/broker.cert.pem\"\nkey = \"pki/broker.key.pem\"\n\n[storage]\nstate = \"state.redb\"\naudit_dir = \"audit\"\n\n[catalog]\ndir = {:?}\n\n[policies]\ndir = {:?}\n",
            args.data_port,
            args.admin_port,
            args.ops_port,
            absolute(&setup.catalog_dir)?,
            absolute(&setup.policies_dir)?,
        ),
    )?;
    let config = Config::load(&config_path)?;

    // Registry: participants and certificates. Endpoints are set once the
    // providers listen, below; old ones from an earlier run are cleared.
    {
        let anchors = mconnect::trust::TrustAnchors::from_pem(setup.ca.cert_pem())?;
        let registry = Registry::open(mconnect::store::open(&config.state)?, anchors)?;
        register_participants(&registry, &setup)?;
    }

    // The broker first: adapters that call the bus need its address.
    let broker = mconnect::app::start(config).await?;
    let data_url = format!("https://127.0.0.1:{}", broker.data_addr().port());

    // Example registers and adapters: child processes on free ports.
    let Spawned {
        mut children,
        mut processes,
        endpoints,
    } = spawn_participants(&setup, &data_url).await?;
    for (id, url) in &endpoints {
        broker.broker.registry().set_endpoints(
            id,
            vec![Endpoint {
                service: None,
                url: url.clone(),
            }],
        )?;
    }

    // The data-access portal, on the same catalog as the broker.
    let rules = broker.broker.rules();
    let (portal, portal_process, portal_url) = start_portal(
        &setup,
        &rules,
        &data_url,
        &format!("https://127.0.0.1:{}", broker.admin_addr().port()),
    )
    .await?;
    processes.push(portal_process);
    children.push(portal);

    let broker_entry = ManifestBroker {
        data_url: format!("https://127.0.0.1:{}", broker.data_addr().port()),
        admin_url: format!("https://127.0.0.1:{}", broker.admin_addr().port()),
        ops_url: format!("http://127.0.0.1:{}", broker.ops_addr().port()),
        cert: "pki/broker.cert.pem".into(),
        keyid: keyid_of(&pki_dir.join("broker.cert.pem"))?,
    };
    let mut manifest = manifest(&rules, &setup.definition, &endpoints, broker_entry)?;
    manifest.portal = Some(ManifestPortal {
        url: portal_url,
        officials: setup.definition.officials.clone(),
    });
    fixtures::prepare(&mut manifest, dir).await?;
    children::write_manifest(dir, &manifest, &processes)?;
    Ok(RunningSandbox {
        broker,
        manifest,
        dir: dir.clone(),
        processes,
        children,
        _lock: setup.lock,
    })
}

/// What every sandbox, one broker or a cluster, sets up alike before a
/// broker starts: the directory's lock, the shipped data, the definition,
/// the child binaries and the development PKI (but the broker's own keys).
struct Setup {
    dir: PathBuf,
    pki_dir: PathBuf,
    lock: std::fs::File,
    catalog_dir: PathBuf,
    policies_dir: PathBuf,
    definition: SandboxDefinition,
    binaries: children::Binaries,
    ca: DevCa,
}

fn setup(args: &SandboxArgs) -> Result<Setup> {
    let dir = &args.dir;
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let dir_lock = lock::lock(dir)?;
    // One broker keeps its state in state.redb, a cluster in PostgreSQL
    // (`postgres/`): a directory serves one kind, so neither finds the
    // other's participants, grants and audit log missing.
    if args.cluster && dir.join("state.redb").exists() {
        bail!(
            "{} holds a one-broker sandbox (state.redb); start a cluster in another --dir",
            dir.display()
        );
    }
    if !args.cluster && dir.join(cluster::POSTGRES_DIR).exists() {
        bail!(
            "{} holds a cluster sandbox (its state is in PostgreSQL, {}/); start it with --cluster, or a one-broker sandbox in another --dir",
            dir.display(),
            cluster::POSTGRES_DIR
        );
    }
    // A manifest left by an earlier run names dead ports and processes:
    // scripts wait for this run's.
    match std::fs::remove_file(dir.join("sandbox.json")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing the old sandbox.json"),
    }
    // The shipped data unless the caller names other files: never paths
    // relative to the working directory.
    let shipped = match (&args.catalog, &args.policies, &args.participants) {
        (Some(_), Some(_), Some(_)) => None,
        _ => Some(shipped::write(dir)?),
    };
    let (catalog_dir, policies_dir, participants_file) = (
        args.catalog
            .clone()
            .or_else(|| shipped.as_ref().map(|s| s.catalog.clone())),
        args.policies
            .clone()
            .or_else(|| shipped.as_ref().map(|s| s.policies.clone())),
        args.participants
            .clone()
            .or_else(|| shipped.as_ref().map(|s| s.participants.clone())),
    );
    let (Some(catalog_dir), Some(policies_dir), Some(participants_file)) =
        (catalog_dir, policies_dir, participants_file)
    else {
        bail!("the shipped sandbox data could not be placed");
    };
    let definition: SandboxDefinition = serde_json::from_str(
        &std::fs::read_to_string(&participants_file)
            .with_context(|| format!("reading {}", participants_file.display()))?,
    )
    .with_context(|| format!("parsing {}", participants_file.display()))?;
    // Before anything starts: a missing binary is a build step, not a crash.
    let binaries =
        children::Binaries::locate(args.examples_dir.as_deref(), &definition, args.cluster)?;

    // PKI: made once, reused on every later start.
    let ca = if pki_dir.join("ca.key.pem").exists() {
        DevCa::load(&pki_dir)?
    } else {
        let ca = DevCa::generate("MConnect sandbox CA")?;
        ca.write(&pki_dir)?;
        ca
    };
    if !pki_dir.join("portal-tls.key.pem").exists() {
        // The portal's HTTPS certificate (a server certificate for
        // 127.0.0.1 and localhost, like every certificate of this CA),
        // apart from any key the portal signs bus requests with.
        ca.issue(
            "portal-tls",
            "Agenția de Guvernare Electronică",
            KeyType::EcdsaP256,
        )?
        .write(&pki_dir, "portal-tls")?;
    }
    for p in &definition.participants {
        if !pki_dir.join(format!("{}.key.pem", p.id)).exists() {
            let key_type = KeyType::parse(&p.key)
                .with_context(|| format!("participant {}: unknown key `{}`", p.id, p.key))?;
            ca.issue(&p.id, &p.organisation.name, key_type)?
                .write(&pki_dir, &p.id)?;
        }
    }
    // The officials' own signing certificates, which MSign signs with.
    signers::write(&ca, &pki_dir, &definition.officials)?;
    Ok(Setup {
        dir: dir.clone(),
        pki_dir,
        lock: dir_lock,
        catalog_dir,
        policies_dir,
        definition,
        binaries,
        ca,
    })
}

/// The absolute form of an existing path, as a string for broker.toml.
fn absolute(p: &Path) -> Result<String> {
    Ok(std::fs::canonicalize(p)
        .with_context(|| format!("{} not found", p.display()))?
        .display()
        .to_string())
}

/// The keyid of the (first) certificate in a PEM file: the lowercase hex
/// SHA-256 of its DER.
fn keyid_of(path: &Path) -> Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let der = mconnect_sdk::parse_certs(&pem)?;
    Ok(mconnect::crypto::certificate_fingerprint(
        der.first()
            .with_context(|| format!("{} holds no certificate", path.display()))?,
    ))
}

/// Registers the definition's participants with their certificates (those
/// of an earlier run kept), without endpoints: those are set once the
/// providers listen.
fn register_participants(registry: &Registry, setup: &Setup) -> Result<()> {
    let (ca, pki_dir) = (&setup.ca, &setup.pki_dir);
    let now = mconnect::exchange::unix_now();
    for p in &setup.definition.participants {
        let cert_file = pki_dir.join(format!("{}.cert.pem", p.id));
        let mut pem = std::fs::read_to_string(&cert_file)?;
        // A sandbox directory kept past its certificates' two years (or
        // given another CA) gets fresh ones rather than refusing to start.
        if mconnect::registry::admit(registry.anchors(), &pem, now).is_err() {
            let key_type = KeyType::parse(&p.key)
                .with_context(|| format!("participant {}: unknown key `{}`", p.id, p.key))?;
            let issued = ca.issue(&p.id, &p.organisation.name, key_type)?;
            issued.write(pki_dir, &p.id)?;
            pem = issued.cert_pem;
        }
        // Certificates of an earlier run stay; those that no longer pass
        // are kept listed by the registry but sign nothing.
        let mut certificates = registry
            .snapshot()
            .get(&p.id)
            .map(|e| e.participant.certificates.clone())
            .unwrap_or_default();
        let cert = registered_certificate(&pem)?;
        if !certificates
            .iter()
            .any(|c| c.fingerprint == cert.fingerprint)
        {
            certificates.push(cert);
        }
        registry.upsert(Participant {
            id: p.id.clone(),
            organisation: p.organisation.clone(),
            roles: p.roles.clone(),
            certificates,
            endpoints: Vec::new(),
            confidential: p.confidential,
        })?;
    }
    Ok(())
}

/// The example registers and adapters, running.
struct Spawned {
    children: Vec<tokio::process::Child>,
    processes: Vec<ManifestProcess>,
    /// (participant, endpoint URL) of each.
    endpoints: Vec<(String, String)>,
}

/// Starts the example registers and the adapters (child processes on free
/// ports); adapters call the bus at `data_url`.
async fn spawn_participants(setup: &Setup, data_url: &str) -> Result<Spawned> {
    let (dir, pki_dir, binaries) = (&setup.dir, &setup.pki_dir, &setup.binaries);
    let mut children = Vec::new();
    let mut processes = Vec::new();
    let mut endpoints = Vec::new();
    for p in &setup.definition.participants {
        let spawned = match (&p.serves, &p.adapter) {
            (Some(register), _) => {
                Some(spawn_register(&binaries.register, pki_dir, p, register).await?)
            }
            (None, Some(adapter)) => Some(
                spawn_adapter(
                    &binaries.adapter(adapter),
                    dir,
                    pki_dir,
                    p,
                    adapter,
                    data_url,
                )
                .await?,
            ),
            (None, None) => None,
        };
        if let Some((child, url)) = spawned {
            processes.push(ManifestProcess {
                participant: p.id.clone(),
                pid: child.id().unwrap_or_default(),
                program: p
                    .serves
                    .as_ref()
                    .map(|_| "state_register".to_string())
                    .or_else(|| p.adapter.as_ref().map(|a| format!("mconnect-adapter-{a}")))
                    .unwrap_or_default(),
            });
            children.push(child);
            endpoints.push((p.id.clone(), url));
        }
    }
    Ok(Spawned {
        children,
        processes,
        endpoints,
    })
}

/// Starts the data-access portal on the sandbox's catalog: its lookups go
/// to `data_url`, its administrative reads and changes to `admin_url`.
async fn start_portal(
    setup: &Setup,
    rules: &Rules,
    data_url: &str,
    admin_url: &str,
) -> Result<(tokio::process::Child, ManifestProcess, String)> {
    let (dir, definition) = (&setup.dir, &setup.definition);
    let officials_file = write_officials(dir, definition)?;
    seed_assignments(dir, definition, rules)?;
    // It looks up for the organisations its officials belong to, signing as
    // each with that organisation's own key.
    let mut hosted: Vec<String> = Vec::new();
    for o in &definition.officials {
        if let Some(p) = definition
            .participants
            .iter()
            .find(|p| p.id == o.participant)
        {
            let entry = format!("{}:{}", p.id, p.key);
            if !hosted.contains(&entry) {
                hosted.push(entry);
            }
        }
    }
    let own = definition
        .participants
        .iter()
        .find(|p| p.id == PORTAL_PARTICIPANT)
        .map(|p| format!("{}:{}", p.id, p.key));
    let (portal, portal_url) = spawn_portal(
        &setup.binaries.portal,
        PortalFiles {
            pki: &setup.pki_dir,
            catalog: &setup.catalog_dir,
            policies: &setup.policies_dir,
            officials: &officials_file,
            state: &dir.join("portal"),
        },
        (data_url, admin_url),
        (&hosted, own.as_deref()),
    )
    .await?;
    let process = ManifestProcess {
        participant: "portal".to_string(),
        pid: portal.id().unwrap_or_default(),
        program: "mconnect-portal".to_string(),
    };
    Ok((portal, process, portal_url))
}

async fn spawn_register(
    exe: &Path,
    pki_dir: &Path,
    participant: &SandboxParticipant,
    register: &str,
) -> Result<(tokio::process::Child, String)> {
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--register")
        .arg(register)
        .arg("--participant")
        .arg(&participant.id)
        .arg("--pki")
        .arg(pki_dir)
        .arg("--alg")
        .arg(&participant.key)
        .arg("--listen")
        .arg("127.0.0.1:0");
    spawn_listening(exe, command, &participant.id).await
}

async fn spawn_adapter(
    exe: &Path,
    sandbox_dir: &Path,
    pki_dir: &Path,
    participant: &SandboxParticipant,
    adapter: &str,
    broker_url: &str,
) -> Result<(tokio::process::Child, String)> {
    let data = sandbox_dir.join("adapters").join(adapter);
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--participant")
        .arg(&participant.id)
        .arg("--pki")
        .arg(pki_dir)
        .arg("--alg")
        .arg(&participant.key)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data")
        .arg(&data)
        .arg("--broker-url")
        .arg(broker_url);
    spawn_listening(exe, command, &participant.id).await
}

/// Checks the definition's officials (each of an organisation in the
/// definition whose participant roles allow the official's portal roles,
/// with a valid IDNP, listed once) and writes them where the
/// portal's development sign-in reads them.
fn write_officials(dir: &Path, definition: &SandboxDefinition) -> Result<PathBuf> {
    for (i, o) in definition.officials.iter().enumerate() {
        if !mconnect_sdk::ids::is_valid_idnp(&o.idnp) {
            bail!("officials/{i}: `{}` is not a valid IDNP", o.idnp);
        }
        let Some(organisation) = definition
            .participants
            .iter()
            .find(|p| p.id == o.participant)
        else {
            // An authority not yet on the bus: its administrator applies to
            // join through the portal (which files for it as an
            // intermediary), and can do nothing else there.
            if o.roles != ["administrator"] {
                bail!(
                    "officials/{i}: no participant `{}`; an official of an organisation not on the bus may only be an administrator (roles exactly [\"administrator\"]), who applies to join",
                    o.participant
                );
            }
            if !mconnect_sdk::ids::is_valid_participant_id(&o.participant) {
                bail!("officials/{i}: `{}` is not a participant id", o.participant);
            }
            if definition.officials[..i].iter().any(|e| e.idnp == o.idnp) {
                bail!("officials/{i}: {} is listed twice", o.idnp);
            }
            continue;
        };
        for role in &o.roles {
            // Each portal role needs its organisation's participant role: the
            // broker would refuse every call of it otherwise.
            let needed = match role.as_str() {
                "official" | "administrator" => Role::Consumer,
                "operator" => Role::Operator,
                "auditor" => Role::Auditor,
                "provider" => Role::Provider,
                other => bail!(
                    "officials/{i}: `{other}` is not a portal role (official, administrator, operator, auditor, provider)"
                ),
            };
            if !organisation.roles.contains(&needed) {
                bail!(
                    "officials/{i}: `{role}` needs `{}` to be a {needed:?} on the bus, and it is not",
                    o.participant
                );
            }
        }
        if definition.officials[..i].iter().any(|e| e.idnp == o.idnp) {
            bail!("officials/{i}: {} is listed twice", o.idnp);
        }
    }
    let portal_dir = dir.join("portal");
    std::fs::create_dir_all(&portal_dir)
        .with_context(|| format!("creating {}", portal_dir.display()))?;
    let path = portal_dir.join("officials.json");
    let text =
        serde_json::to_string_pretty(&serde_json::json!({ "officials": definition.officials }))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The files the portal is started with.
struct PortalFiles<'a> {
    pki: &'a Path,
    catalog: &'a Path,
    policies: &'a Path,
    officials: &'a Path,
    /// The portal's own state directory.
    state: &'a Path,
}

/// Gives each official every grant of their organisation the first time the
/// sandbox starts, so its lookups work out of the box; later the
/// administrators' choices in the portal stay (the file is kept).
fn seed_assignments(dir: &Path, definition: &SandboxDefinition, rules: &Rules) -> Result<()> {
    let path = dir.join("portal").join("assignments.json");
    if path.exists() {
        return Ok(());
    }
    let mut table: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, Vec<&str>>> =
        std::collections::BTreeMap::new();
    for o in &definition.officials {
        let grants = rules
            .policy
            .grants()
            .filter(|g| g.consumer == o.participant && g.representation.is_none())
            .map(|g| g.id.as_str())
            .collect();
        table
            .entry(o.participant.as_str())
            .or_default()
            .insert(o.idnp.as_str(), grants);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&table)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The data-access portal's own participant on the bus: people read who
/// accessed their data under its grant.
const PORTAL_PARTICIPANT: &str = "mconnect-portal";

async fn spawn_portal(
    exe: &Path,
    files: PortalFiles<'_>,
    (broker_url, admin_url): (&str, &str),
    (hosted, own): (&[String], Option<&str>),
) -> Result<(tokio::process::Child, String)> {
    let pki_dir = files.pki;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--catalog")
        .arg(files.catalog)
        .arg("--policies")
        .arg(files.policies)
        .arg("--pki")
        .arg(pki_dir)
        .arg("--broker-url")
        .arg(broker_url)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--cert")
        .arg(pki_dir.join("portal-tls.cert.pem"))
        .arg("--key")
        .arg(pki_dir.join("portal-tls.key.pem"))
        .arg("--dev-officials")
        .arg(files.officials)
        .arg("--state")
        .arg(files.state);
    for h in hosted {
        command.arg("--hosted").arg(h);
    }
    if let Some(own) = own {
        command.arg("--own-participant").arg(own);
    }
    command.arg("--admin-url").arg(admin_url);
    spawn_listening(exe, command, "the portal").await
}

/// Starts a child process and waits for its `LISTENING https://…` line.
async fn spawn_listening(
    exe: &Path,
    mut command: tokio::process::Command,
    participant: &str,
) -> Result<(tokio::process::Child, String)> {
    children::give_lifeline(&mut command);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let stdout = child.stdout.take().context("provider stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("LISTENING ") {
                return Some(url.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .with_context(|| format!("{} for {participant} did not start", exe.display()))?;
    // Keep draining its stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

/// The calling user of sandbox calls unless told otherwise (`mconnect call --user`).
pub const SANDBOX_CALLING_USER: &str = "2000000000015";

/// A value for a query parameter the catalog gives no example for.
fn sample(format: ParamFormat) -> &'static str {
    match format {
        ParamFormat::Idno => "1003603000063",
        ParamFormat::Idnp | ParamFormat::IdnpOrIdno => "2000000000015",
        ParamFormat::Uuid => "0190a8c2-6d1e-7b4a-9c55-3f1e2d3c4b5a",
        ParamFormat::Date => "2025-01-01",
        ParamFormat::DateOrTime => "2025-01-01T00:00:00Z",
        ParamFormat::Integer => "10",
        ParamFormat::Code | ParamFormat::Text => "sample",
    }
}

/// The query, body and subject of a call that the service accepts: every
/// required parameter (and every one with an example) filled with its
/// catalogued example or a value of its format, the request schema's first
/// example as body, and as subject the person the call then asks about.
fn sample_call(service: &Service) -> (String, Option<serde_json::Value>, Option<String>) {
    let mut pairs = Vec::new();
    for q in &service.query {
        if let Some(value) = q.example.as_deref() {
            pairs.push(format!("{}={value}", q.name));
        } else if q.required {
            pairs.push(format!("{}={}", q.name, sample(q.format)));
        }
    }
    let query = pairs.join("&");
    let body = service
        .request_schema
        .as_ref()
        .and_then(|s| s.get("examples"))
        .and_then(|e| e.get(0))
        .cloned();
    // The subject comes from the same code the broker binds it with, so the
    // header always names the person the call asks about.
    let subject = params::parse_query(Some(&query), &service.query)
        .ok()
        .and_then(|values| service.subjects_of(&values, body.as_ref()).ok())
        .and_then(|found| match found.bound {
            Some(bound) => bound.into_iter().next(),
            None => found.ids.into_iter().next(),
        });
    let query = if query.is_empty() {
        query
    } else {
        format!("?{query}")
    };
    (query, body, subject)
}

/// The manifest of a sandbox whose broker (or load balancer) is `broker`,
/// deciding by `rules`.
fn manifest(
    rules: &Rules,
    definition: &SandboxDefinition,
    endpoints: &[(String, String)],
    broker: ManifestBroker,
) -> Result<SandboxManifest> {
    let now = mconnect::exchange::unix_now();
    let mut tries = Vec::new();
    for grant in rules.policy.grants() {
        // A representation grant needs a consented power of attorney, which
        // `scenario_representation` makes step by step; a bare try cannot.
        if grant.status != mconnect::policy::GrantStatus::Active
            || !grant.in_date(now)
            || grant.representation.is_some()
        {
            continue;
        }
        for key in &grant.services {
            let Some((provider, code)) = key.split_once('/') else {
                continue;
            };
            let Some(service) = rules.catalog.service(provider, code) else {
                continue;
            };
            // The audit log is read on the admin API, never on the data plane.
            let admin_only = provider == mconnect::exchange::internal::PROVIDER
                && code == mconnect::exchange::internal::AUDIT_LOG;
            if !service.is_callable() || admin_only {
                continue;
            }
            let (query, body, subject) = sample_call(service);
            tries.push(ManifestTry {
                client: grant.consumer.clone(),
                service: key.clone(),
                method: service.method.to_string(),
                path: format!("/r1/{provider}/{code}{query}"),
                body,
                basis: grant
                    .legal_bases
                    .first()
                    .map(|b| b.id.clone())
                    .unwrap_or_default(),
                reason: grant
                    .purposes
                    .first()
                    .map(|p| p.code.clone())
                    .unwrap_or_default(),
                subject,
                calling_user: None,
            });
        }
    }
    // One entry per service first (apl-cahul's where it has one), then the
    // rest, so the printed head of the list covers the whole catalog.
    tries.sort_by_key(|t| (t.client != "apl-cahul", t.service.clone()));
    let mut seen = std::collections::BTreeSet::new();
    let (first, rest): (Vec<_>, Vec<_>) = tries
        .into_iter()
        .partition(|t| seen.insert(t.service.clone()));
    let tries: Vec<ManifestTry> = first.into_iter().chain(rest).collect();
    let participants = definition
        .participants
        .iter()
        .map(|p| ManifestParticipant {
            id: p.id.clone(),
            roles: p.roles.clone(),
            key: format!("pki/{}.key.pem", p.id),
            cert: format!("pki/{}.cert.pem", p.id),
            alg: match KeyType::parse(&p.key) {
                Some(KeyType::Ed25519) => "ed25519".into(),
                Some(KeyType::EcdsaP256) => "ecdsa-p256-sha256".into(),
                _ if p.key == "rsa-v1_5-sha256" => "rsa-v1_5-sha256".into(),
                _ => "rsa-pss-sha512".into(),
            },
            endpoint: endpoints
                .iter()
                .find(|(id, _)| *id == p.id)
                .map(|(_, url)| url.clone()),
        })
        .collect();
    let auditor = definition
        .participants
        .iter()
        .find(|p| p.roles.contains(&Role::Auditor))
        .map(|p| ManifestAuditor {
            id: p.id.clone(),
            basis: "md-law-133-2011-art-27".into(),
            reason: "supervision-of-personal-data-processing".into(),
        })
        .context("the sandbox definition names no auditor")?;
    Ok(SandboxManifest {
        broker,
        ca: "pki/ca.cert.pem".into(),
        participants,
        tries,
        auditor,
        portal: None,
        cluster: None,
    })
}

fn print_welcome(sandbox: &RunningSandbox) {
    print!(
        "{}",
        banner::welcome(
            &sandbox.manifest,
            &sandbox.dir,
            &sandbox.broker.broker.rules()
        )
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn definition(officials: serde_json::Value) -> SandboxDefinition {
        serde_json::from_value(serde_json::json!({
            "participants": [
                {"id": "apl-cahul", "organisation": {"idno": "1003603000063", "name": "Primăria municipiului Cahul"}, "roles": ["consumer"], "key": "ed25519"},
                {"id": "asp-rsp", "organisation": {"idno": "1003601000036", "name": "Agenția Servicii Publice"}, "roles": ["provider"], "key": "ed25519", "serves": "population"}
            ],
            "officials": officials
        }))
        .unwrap()
    }

    fn official(idnp: &str, participant: &str) -> serde_json::Value {
        serde_json::json!({"idnp": idnp, "name": "N", "organisation": "O", "participant": participant, "roles": ["official"]})
    }

    #[test]
    fn officials_must_be_people_of_organisations_their_roles_fit_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let refused = [
            ("a bad IDNP", vec![official("2000000000016", "apl-cahul")]),
            (
                "an unknown organisation",
                vec![official("2000000000015", "apl-nowhere")],
            ),
            (
                "a provider, which looks nothing up",
                vec![official("2000000000015", "asp-rsp")],
            ),
            (
                "an unknown portal role",
                vec![
                    serde_json::json!({"idnp": "2000000000015", "name": "N", "organisation": "O", "participant": "apl-cahul", "roles": ["mayor"]}),
                ],
            ),
            (
                "a provider's confirmation for a consumer",
                vec![
                    serde_json::json!({"idnp": "2000000000015", "name": "N", "organisation": "O", "participant": "apl-cahul", "roles": ["provider"]}),
                ],
            ),
            (
                "the same person twice",
                vec![
                    official("2000000000015", "apl-cahul"),
                    official("2000000000015", "apl-cahul"),
                ],
            ),
        ];
        for (what, officials) in refused.into_iter().chain([
            (
                "an official only, of an organisation not on the bus",
                vec![official("2000000000015", "apl-copceac")],
            ),
            (
                "an administrator who is an official too, of an organisation not on the bus",
                vec![
                    serde_json::json!({"idnp": "2000000000015", "name": "N", "organisation": "O", "participant": "apl-copceac", "roles": ["official", "administrator"]}),
                ],
            ),
        ]) {
            let d = definition(serde_json::Value::Array(officials));
            assert!(write_officials(dir.path(), &d).is_err(), "{what}");
        }
        let d = definition(serde_json::json!([
            official("2000000000015", "apl-cahul"),
            {"idnp": "2000000000026", "name": "N", "organisation": "O", "participant": "asp-rsp", "roles": ["provider"]},
            // An administrator of an authority not yet on the bus applies to join.
            {"idnp": "2000000000093", "name": "N", "organisation": "Primăria satului Copceac", "participant": "apl-copceac", "roles": ["administrator"]}
        ]));
        let path = write_officials(dir.path(), &d).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(written["officials"][0]["participant"], "apl-cahul");
        // Unknown members of an official are refused when the definition is read.
        let bad = serde_json::from_value::<SandboxDefinition>(serde_json::json!({
            "participants": [],
            "officials": [{"idnp": "2000000000015", "name": "N", "organisation": "O", "participant": "apl-cahul", "roles": [], "password": "x"}]
        }));
        assert!(bad.is_err());
    }
}
