//! `mconnect sandbox --cluster` (issue 15): the bus with two brokers on one
//! PostgreSQL database behind a load balancer, on loopback. It starts
//! PostgreSQL (Debian's package, `postgres::LocalPostgres`, data in
//! `{dir}/postgres/`, kept across starts), registers the participants in
//! it, starts the example registers and adapters, two brokers (`mconnect
//! serve` with `{dir}/broker-{a,b}.toml`: the same catalog, policies and
//! CA, each its own certificate and key, `pki/broker-{a,b}.*`, and its own
//! audit log, `audit-{a,b}/`), nginx in front of them (`nginx.rs`), and
//! the portal, and writes the `cluster` block of `sandbox.json`
//! (PROTOCOL.md section 9).
//!
//! Clients call the load balancer and sign `@target-uri` for its
//! authority, which both brokers have as `listen.public_data_url`; either
//! broker may answer, so `pki/broker.cert.pem` holds both certificates
//! (receipts of either verify, and the registers and adapters verify
//! forwarded requests of either), and `broker` in sandbox.json names the
//! load balancer (its `admin_url` and `ops_url`, broker a's).
//!
//! Supervision ([`Supervisor`], a thread of its own): every
//! [`PROBE_INTERVAL`] it asks each broker's operations listener for
//! `/readyz` (at most [`PROBE_TIMEOUT`]). A broker that fails one probe is
//! marked `down` in nginx's upstream and nginx is reloaded; it is put back
//! after [`UP_AFTER`] probes in a row succeed. A broker whose process
//! exited is started again (same configuration and ports) after a backoff
//! of [`RESTART_FIRST`] doubling to [`RESTART_MOST`], and sandbox.json is
//! rewritten with its new pid. X-Road's security servers are not restarted
//! by anything of X-Road's own; a sandbox that restarts its brokers shows
//! how a cluster heals, and the test measures the failover either way.
//!
//! Invariants: every process it starts ends with it, SIGKILL included
//! (brokers and nginx through `children::guard`, PostgreSQL through its
//! own lifeline, the rest as in the one-broker sandbox); nginx never marks
//! every broker down (then its own passive checks decide); a broker is in
//! the load balancer only while its process runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use mconnect::config::Config;
use mconnect::pki::KeyType;
use mconnect::registry::{Endpoint, Registry};
use mconnect::rules::Rules;

use super::nginx::{Nginx, Upstream};
use super::postgres::LocalPostgres;
use super::{
    ManifestBroker, ManifestCluster, ManifestClusterBroker, ManifestPortal, ManifestProcess,
    SandboxArgs, SandboxManifest, Spawned, children, fixtures,
};

/// Where the cluster's PostgreSQL keeps its data, in the sandbox directory.
pub const POSTGRES_DIR: &str = "postgres";

/// The database the brokers share.
const DATABASE: &str = "mconnect";

/// The brokers' names.
pub const BROKERS: [&str; 2] = ["a", "b"];

/// How often each broker's `/readyz` is asked.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How long a `/readyz` answer may take before the broker counts as not ready.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Probes in a row a broker out of the load balancer must pass to come back.
pub const UP_AFTER: u32 = 2;

/// The first wait before a broker whose process exited is started again.
pub const RESTART_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between restarts of a broker that keeps exiting.
pub const RESTART_MOST: Duration = Duration::from_secs(30);

/// A broker that ran this long is restarted after [`RESTART_FIRST`] again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// How long a broker may take to be ready at the sandbox's start.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a broker may take to stop by itself (it closes its audit log).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running cluster sandbox.
pub struct RunningCluster {
    /// What was written to sandbox.json at start (pids of restarted
    /// brokers are only in the file).
    pub manifest: SandboxManifest,
    /// The directory.
    pub dir: PathBuf,
    /// The child processes at start, as listed in sandbox.json.
    pub processes: Vec<ManifestProcess>,
    rules: Arc<Rules>,
    children: Vec<tokio::process::Child>,
    shared: Arc<Mutex<Supervised>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<()>>,
    postgres: Option<LocalPostgres>,
    _lock: std::fs::File,
}

/// `mconnect sandbox --cluster`.
pub async fn run(args: SandboxArgs) -> Result<ExitCode> {
    let cluster = start(&args).await?;
    print!(
        "{}",
        super::banner::welcome(&cluster.manifest, &cluster.dir, &cluster.rules)
    );
    if !args.no_wait {
        crate::cli::wait_for_shutdown().await;
        eprintln!("mconnect: stopping the sandbox");
    }
    cluster.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

impl RunningCluster {
    /// Stops the supervisor, the load balancer, the brokers (each closes
    /// its audit log), the registers, adapters and portal, and PostgreSQL,
    /// in that order, waiting until each has exited.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.supervisor.take() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.nginx.stop();
            for b in &mut s.brokers {
                b.signal_stop();
            }
            for b in &mut s.brokers {
                b.wait_stopped();
            }
        })
        .await;
        children::stop_all(&mut self.children).await;
        if let Some(pg) = self.postgres.take() {
            let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
        }
    }

    /// The rules the sandbox read at start (the catalog and the policies
    /// with the stored grants).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }
}

/// Starts the cluster sandbox and returns once the load balancer passes
/// calls to both brokers and sandbox.json is written.
pub async fn start(args: &SandboxArgs) -> Result<RunningCluster> {
    if !args.cluster {
        bail!("a one-broker sandbox is started with sandbox::start");
    }
    let setup = super::setup(args)?;
    let dir = std::fs::canonicalize(&setup.dir)?;
    let pki_dir = &setup.pki_dir;

    // Each broker its own key (Ed25519, as the one-broker sandbox's), and
    // pki/broker.cert.pem both certificates: whoever trusts "the broker"
    // trusts either.
    let mut bundle = String::new();
    for name in BROKERS {
        let id = format!("broker-{name}");
        if !pki_dir.join(format!("{id}.key.pem")).exists() {
            setup
                .ca
                .issue(&id, "Agenția de Guvernare Electronică", KeyType::Ed25519)?
                .write(pki_dir, &id)?;
        }
        let path = pki_dir.join(format!("{id}.cert.pem"));
        bundle.push_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    std::fs::write(pki_dir.join("broker.cert.pem"), bundle)?;

    // PostgreSQL: made on the first start, its data kept on later ones.
    let pg_dir = dir.join(POSTGRES_DIR);
    let postgres = tokio::task::spawn_blocking(move || -> Result<(LocalPostgres, String)> {
        let pg = LocalPostgres::start(&pg_dir)?;
        let url = match pg.create_database(DATABASE) {
            Ok(url) => url,
            Err(e) if format!("{e:#}").contains("already exists") => pg.url(DATABASE),
            Err(e) => return Err(e),
        };
        Ok((pg, url))
    })
    .await
    .context("starting PostgreSQL")??;
    let (pg, pg_url) = postgres;

    // Ports: the load balancer's as asked, the brokers' free ones.
    let lb_port = if args.data_port == 0 {
        free_port()?
    } else {
        args.data_port
    };
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], lb_port));
    let lb_url = format!("https://{lb_addr}");
    let mut brokers = Vec::new();
    for name in BROKERS {
        let broker = Broker::configure(&dir, &setup, name, &lb_url, pg.port())?;
        brokers.push(broker);
    }

    // The registry in the shared database: participants, then the
    // providers' endpoints once they listen. The brokers start on it.
    let config = Config::load(&brokers[0].config)?;
    let anchors = mconnect::trust::TrustAnchors::from_pem(setup.ca.cert_pem())?;
    let registry = Registry::open(mconnect::store::open(&config.state)?, anchors)?;
    super::register_participants(&registry, &setup)?;
    let Spawned {
        mut children,
        mut processes,
        endpoints,
    } = super::spawn_participants(&setup, &lb_url).await?;
    for (id, url) in &endpoints {
        registry.set_endpoints(
            id,
            vec![Endpoint {
                service: None,
                url: url.clone(),
            }],
        )?;
    }
    let rules = Arc::new(
        mconnect::rules::load(&setup.catalog_dir, &setup.policies_dir, &registry).map_err(
            |problems| {
                anyhow::anyhow!(
                    "the catalog and policies do not load: {}",
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            },
        )?,
    );
    drop(registry);

    // The brokers, one after the other (the first migrates the schema).
    for broker in &mut brokers {
        broker.start_and_wait(&setup.binaries.mconnect).await?;
    }
    let upstreams: Vec<Upstream> = brokers.iter().map(Broker::upstream).collect();
    let nginx_dir = dir.join("nginx");
    let nginx = tokio::task::spawn_blocking(move || Nginx::start(&nginx_dir, lb_addr, &upstreams))
        .await
        .context("starting nginx")??;

    // The portal looks up through the load balancer, administers on broker a.
    let (portal, portal_process, portal_url) =
        super::start_portal(&setup, &rules, &lb_url, &brokers[0].admin_url()).await?;
    processes.push(portal_process);
    children.push(portal);

    let first = &brokers[0];
    let broker_entry = ManifestBroker {
        data_url: lb_url.clone(),
        admin_url: first.admin_url(),
        ops_url: first.ops_url(),
        cert: "pki/broker.cert.pem".into(),
        keyid: first.keyid.clone(),
    };
    let mut manifest = super::manifest(&rules, &setup.definition, &endpoints, broker_entry)?;
    manifest.portal = Some(ManifestPortal {
        url: portal_url,
        officials: setup.definition.officials.clone(),
    });
    manifest.cluster = Some(ManifestCluster {
        data_url: lb_url.clone(),
        brokers: brokers.iter().map(Broker::manifest_entry).collect(),
        postgres: pg_url,
    });
    for b in &brokers {
        processes.push(ManifestProcess {
            participant: format!("broker-{}", b.name),
            pid: b.pid(),
            program: "mconnect".into(),
        });
    }
    processes.push(ManifestProcess {
        participant: "load-balancer".into(),
        pid: nginx.pid(),
        program: "nginx".into(),
    });
    if let Some(pid) = postmaster_pid(pg.dir()) {
        processes.push(ManifestProcess {
            participant: "postgres".into(),
            pid,
            program: "postgres".into(),
        });
    }
    // Every try entry's objects are made through the load balancer.
    fixtures::prepare(&mut manifest, &dir).await?;
    children::write_manifest(&dir, &manifest, &processes)?;

    let shared = Arc::new(Mutex::new(Supervised {
        dir: dir.clone(),
        binary: setup.binaries.mconnect.clone(),
        brokers,
        nginx,
        manifest: manifest.clone(),
        processes: processes.clone(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let supervisor = Supervisor {
        shared: shared.clone(),
        stop: stop.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("mconnect-cluster-supervisor".into())
        .spawn(move || supervisor.run())
        .context("starting the cluster's supervisor")?;
    Ok(RunningCluster {
        manifest,
        dir,
        processes,
        rules,
        children,
        shared,
        stop,
        supervisor: Some(handle),
        postgres: Some(pg),
        _lock: setup.lock,
    })
}

/// One broker of the cluster: its configuration, and its process while it runs.
struct Broker {
    name: &'static str,
    config: PathBuf,
    log: PathBuf,
    data: SocketAddr,
    admin: SocketAddr,
    ops: SocketAddr,
    keyid: String,
    process: Option<BrokerProcess>,
    /// In the load balancer (not marked down).
    ready: bool,
    /// Probes passed in a row while out of it.
    passed: u32,
    /// The wait before the next restart.
    backoff: Duration,
    /// When the exited process is to be started again.
    restart_at: Option<Instant>,
}

/// A broker's process and its guard.
struct BrokerProcess {
    child: Child,
    guard: Child,
    started: Instant,
}

impl Broker {
    /// Writes `{dir}/broker-{name}.toml` on free ports.
    fn configure(
        dir: &Path,
        setup: &super::Setup,
        name: &'static str,
        lb_url: &str,
        pg_port: u16,
    ) -> Result<Broker> {
        let (data, admin, ops) = (free_port()?, free_port()?, free_port()?);
        let config = dir.join(format!("broker-{name}.toml"));
        let text = format!(
            "# Written by `mconnect sandbox --cluster` on every start: broker {name} of the\n\
             # cluster (`mconnect serve --config` runs it); see examples/broker.toml.\n\
             [listen]\n\
             data = \"127.0.0.1:{data}\"\n\
             admin = \"127.0.0.1:{admin}\"\n\
             ops = \"127.0.0.1:{ops}\"\n\
             # The load balancer's URL: clients sign @target-uri for it.\n\
             public_data_url = \"{lb_url}\"\n\n\
             [tls]\n\
             ca = \"pki/ca.cert.pem\"\n\
             cert = \"pki/broker-{name}.cert.pem\"\n\
             key = \"pki/broker-{name}.key.pem\"\n\n\
             [storage]\n\
             audit_dir = \"audit-{name}\"\n\n\
             [state]\n\
             postgres = \"postgres://{user}@127.0.0.1:{pg_port}/{DATABASE}\"\n\
             password_file = \"{POSTGRES_DIR}/password\"\n\
             timeout_secs = 5\n\n\
             [catalog]\n\
             dir = {catalog:?}\n\n\
             [policies]\n\
             dir = {policies:?}\n",
            user = super::postgres::SUPERUSER,
            catalog = super::absolute(&setup.catalog_dir)?,
            policies = super::absolute(&setup.policies_dir)?,
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(Broker {
            name,
            config,
            log: logs.join(format!("broker-{name}.log")),
            data: SocketAddr::from(([127, 0, 0, 1], data)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            ops: SocketAddr::from(([127, 0, 0, 1], ops)),
            keyid: super::keyid_of(&setup.pki_dir.join(format!("broker-{name}.cert.pem")))?,
            process: None,
            ready: false,
            passed: 0,
            backoff: RESTART_FIRST,
            restart_at: None,
        })
    }

    fn admin_url(&self) -> String {
        format!("https://{}", self.admin)
    }

    fn ops_url(&self) -> String {
        format!("http://{}", self.ops)
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.child.id())
    }

    fn upstream(&self) -> Upstream {
        Upstream {
            name: self.name.to_string(),
            addr: self.data,
            down: !self.ready,
        }
    }

    fn manifest_entry(&self) -> ManifestClusterBroker {
        ManifestClusterBroker {
            id: self.name.to_string(),
            data_url: format!("https://{}", self.data),
            admin_url: self.admin_url(),
            ops_url: self.ops_url(),
            pid: self.pid(),
            cert: format!("pki/broker-{}.cert.pem", self.name),
            keyid: self.keyid.clone(),
        }
    }

    /// Starts `mconnect serve` on this broker's configuration, in a process
    /// group of its own with a guard, its output appended to its log.
    fn spawn(&mut self, mconnect: &Path) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut child = Command::new(mconnect)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--log-format")
            .arg(crate::cli::logging::format().as_str())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting broker {}", self.name))?;
        let guard = match children::guard(child.id()) {
            Ok(guard) => guard,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        self.process = Some(BrokerProcess {
            child,
            guard,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Starts the broker and waits until its `/readyz` answers 200.
    async fn start_and_wait(&mut self, mconnect: &Path) -> Result<()> {
        let log_start = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        self.spawn(mconnect)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "broker {} ({}) exited at start ({status}); its log, {}:\n{}",
                    self.name,
                    self.config.display(),
                    self.log.display(),
                    tail(&self.log, log_start)
                );
            }
            if probe(self.ops).await.is_ok() {
                self.ready = true;
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "broker {} was not ready within {START_TIMEOUT:?}; its log, {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, log_start)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process exited (reaped), and how; its guard is ended then.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let process = self.process.as_mut()?;
        match process.child.try_wait() {
            Ok(Some(status)) => {
                children::end_guard(&mut process.guard);
                self.process = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Asks the broker to stop (SIGTERM: it closes its audit log).
    fn signal_stop(&mut self) {
        if let Some(p) = self.process.as_mut() {
            children::end_guard(&mut p.guard);
            children::signal(p.child.id(), 15, false);
        }
    }

    /// Waits for the process to end after [`signal_stop`](Self::signal_stop);
    /// kills its process group after [`STOP_TIMEOUT`].
    fn wait_stopped(&mut self) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(p.child.try_wait(), Ok(None)) {
            eprintln!(
                "mconnect: broker {} did not stop within {STOP_TIMEOUT:?}; killing it",
                self.name
            );
        }
        children::signal(p.child.id(), 9, true);
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.signal_stop();
        self.wait_stopped();
    }
}

/// What the supervisor looks after.
struct Supervised {
    dir: PathBuf,
    binary: PathBuf,
    brokers: Vec<Broker>,
    nginx: Nginx,
    manifest: SandboxManifest,
    processes: Vec<ManifestProcess>,
}

impl Supervised {
    /// Rewrites sandbox.json with the brokers' and nginx's pids now.
    fn write_manifest(&mut self) {
        if let Some(cluster) = self.manifest.cluster.as_mut() {
            cluster.brokers = self.brokers.iter().map(Broker::manifest_entry).collect();
        }
        for b in &self.brokers {
            let participant = format!("broker-{}", b.name);
            if let Some(p) = self
                .processes
                .iter_mut()
                .find(|p| p.participant == participant)
            {
                p.pid = b.pid();
            }
        }
        let nginx_pid = self.nginx.pid();
        if let Some(p) = self
            .processes
            .iter_mut()
            .find(|p| p.participant == "load-balancer")
        {
            p.pid = nginx_pid;
        }
        if let Err(e) = children::write_manifest(&self.dir, &self.manifest, &self.processes) {
            eprintln!("mconnect: cluster: rewriting sandbox.json: {e:#}");
        }
    }

    /// Puts the brokers' readiness into nginx's upstream.
    fn apply(&mut self) {
        let upstreams: Vec<Upstream> = self.brokers.iter().map(Broker::upstream).collect();
        if let Err(e) = self.nginx.reload(&upstreams) {
            eprintln!("mconnect: cluster: reloading nginx: {e:#}");
        }
    }
}

/// The supervisor's loop: restarts, probes, and the load balancer's upstream.
struct Supervisor {
    shared: Arc<Mutex<Supervised>>,
    stop: Arc<AtomicBool>,
}

impl Supervisor {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("mconnect: cluster: the supervisor cannot start: {e}");
                return;
            }
        };
        while !self.stop.load(Ordering::Acquire) {
            let tick = Instant::now();
            let targets = self.processes();
            // The probes run side by side, each bounded by PROBE_TIMEOUT.
            let results = runtime.block_on(async {
                let probes: Vec<_> = targets
                    .iter()
                    .map(|(_, ops)| tokio::spawn(probe(*ops)))
                    .collect();
                let mut results = Vec::with_capacity(probes.len());
                for p in probes {
                    results.push(p.await.unwrap_or_else(|e| Err(e.to_string())));
                }
                results
            });
            self.readiness(&targets, results);
            let next = tick + PROBE_INTERVAL;
            while Instant::now() < next && !self.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10).min(next - Instant::now()));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Supervised> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reaps exited brokers (out of the load balancer at once), starts
    /// those whose backoff is over, restarts nginx if it died; returns the
    /// brokers to probe (index, operations address).
    fn processes(&self) -> Vec<(usize, SocketAddr)> {
        let mut s = self.lock();
        let mut changed = false;
        let binary = s.binary.clone();
        for b in &mut s.brokers {
            if let Some(started) = b.process.as_ref().map(|p| p.started)
                && let Some(status) = b.exited()
            {
                if started.elapsed() > STABLE_AFTER {
                    b.backoff = RESTART_FIRST;
                }
                eprintln!(
                    "mconnect: cluster: broker {} exited ({status}); out of the load balancer, restarting it in {:?}",
                    b.name, b.backoff
                );
                b.ready = false;
                b.passed = 0;
                b.restart_at = Some(Instant::now() + b.backoff);
                b.backoff = (b.backoff * 2).min(RESTART_MOST);
                changed = true;
            }
            if b.process.is_none() && b.restart_at.is_some_and(|at| Instant::now() >= at) {
                b.restart_at = None;
                match b.spawn(&binary) {
                    Ok(()) => {
                        eprintln!(
                            "mconnect: cluster: broker {} started again (pid {})",
                            b.name,
                            b.pid()
                        );
                        changed = true;
                    }
                    Err(e) => {
                        eprintln!(
                            "mconnect: cluster: broker {} could not be started again: {e:#}",
                            b.name
                        );
                        b.restart_at = Some(Instant::now() + b.backoff);
                        b.backoff = (b.backoff * 2).min(RESTART_MOST);
                    }
                }
            }
        }
        if !s.nginx.is_running() {
            eprintln!(
                "mconnect: cluster: nginx exited; starting it again (its log: {})",
                s.nginx.dir().join("error.log").display()
            );
            if let Err(e) = s.nginx.restart() {
                eprintln!("mconnect: cluster: nginx could not be started again: {e:#}");
            }
            changed = true;
        }
        if changed {
            s.apply();
            s.write_manifest();
        }
        s.brokers
            .iter()
            .enumerate()
            .filter(|(_, b)| b.process.is_some())
            .map(|(i, b)| (i, b.ops))
            .collect()
    }

    /// Takes the probes' answers into the brokers' readiness and the
    /// load balancer's upstream.
    fn readiness(&self, targets: &[(usize, SocketAddr)], results: Vec<Result<(), String>>) {
        let mut s = self.lock();
        let mut changed = false;
        for ((index, _), result) in targets.iter().zip(results) {
            let Some(b) = s.brokers.get_mut(*index) else {
                continue;
            };
            if b.process.is_none() {
                continue;
            }
            match result {
                Ok(()) if !b.ready => {
                    b.passed += 1;
                    if b.passed >= UP_AFTER {
                        eprintln!(
                            "mconnect: cluster: broker {} is ready; back in the load balancer",
                            b.name
                        );
                        b.ready = true;
                        b.passed = 0;
                        changed = true;
                    }
                }
                Ok(()) => {}
                Err(why) => {
                    b.passed = 0;
                    if b.ready {
                        eprintln!(
                            "mconnect: cluster: broker {} is not ready ({why}); out of the load balancer",
                            b.name
                        );
                        b.ready = false;
                        changed = true;
                    }
                }
            }
        }
        if changed {
            s.apply();
        }
    }
}

/// Asks `GET /readyz` on an operations listener: `Ok` for 200, otherwise
/// why not (refused, timed out, the status and the start of the answer).
async fn probe(ops: SocketAddr) -> Result<(), String> {
    let asked = async {
        let mut tcp = tokio::net::TcpStream::connect(ops)
            .await
            .map_err(|e| e.to_string())?;
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        (&mut tcp)
            .take(64 * 1024)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        let status = text.get(9..12).unwrap_or_default();
        if status == "200" {
            Ok(())
        } else {
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            Err(format!(
                "/readyz {status}: {}",
                body.chars().take(200).collect::<String>()
            ))
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Ok(result) => result,
        Err(_) => Err(format!("/readyz did not answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The postmaster's pid, from `postmaster.pid` in the cluster's data directory.
fn postmaster_pid(pg_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(pg_dir.join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A port of 127.0.0.1 free right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last 30 lines of `path` after `offset`.
fn tail(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
