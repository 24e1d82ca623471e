//! PostgreSQL for the tests of brokers that share one: a server of the
//! test's own (Debian's package, `mconnect_cli::sandbox::postgres`) with one
//! database, sessions of the test's own on it, broker.toml for brokers on
//! it, and the sandbox with its participants stored there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mconnect::app::RunningBroker;
use mconnect::config::Config;
use mconnect::store::{Collection, PgStore, PostgresSettings, StateStore, Write};
use mconnect_cli::sandbox::postgres::LocalPostgres;
use mconnect_sdk::{Consumer, TrustedKeys};

use super::Bus;

/// The authority the brokers of a [`PgSandbox`] answer for, as behind a
/// load balancer.
pub const PUBLIC: &str = "https://bus.mconnect.test";

/// A server of its own and one database on it; the server stops when this
/// is dropped.
pub struct PgPlace {
    pub server: LocalPostgres,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl PgPlace {
    /// Starts the server and creates `database` (blocks: from async code,
    /// [`PgPlace::start`]).
    pub fn new(database: &str) -> PgPlace {
        // Under the system's temporary directory, which the postgres user
        // can reach.
        let dir = tempfile::tempdir().unwrap();
        let server = LocalPostgres::start(&dir.path().join("pg")).unwrap();
        let url = server.create_database(database).unwrap();
        PgPlace {
            server,
            url,
            _dir: dir,
        }
    }

    /// [`PgPlace::new`] on a blocking thread.
    pub async fn start(database: &str) -> PgPlace {
        let database = database.to_string();
        tokio::task::spawn_blocking(move || PgPlace::new(&database))
            .await
            .unwrap()
    }

    /// Stops the server on a blocking thread.
    pub async fn stop(self) {
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .unwrap();
    }

    pub fn settings(&self, timeout: Duration) -> PostgresSettings {
        PostgresSettings::from_url(&self.url)
            .unwrap()
            .with_timeout(timeout)
    }

    /// Runs `sql` (several statements allowed) on a session of the test's
    /// own (blocks).
    pub fn execute(&self, sql: &str) {
        block_on(with_session(&self.url, async |client| {
            client.batch_execute(sql).await.unwrap();
        }))
    }

    /// Runs the query `sql` on a session of the test's own (blocks).
    pub fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        block_on(with_session(&self.url, async |client| {
            client.query(sql, &[]).await.unwrap()
        }))
    }
}

/// Runs `f` on a session of the test's own on the database at `url`, then
/// ends the session.
pub async fn with_session<T>(url: &str, f: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let out = f(&client).await;
    drop(client);
    let _ = connection.await;
    out
}

/// Runs `future` to its end on a runtime of its own (from blocking code).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// broker.toml of a broker on the PostgreSQL database at `url`, every
/// listener on a free loopback port. Paths are relative to the directory
/// the configuration is loaded in, or absolute.
pub struct PgBroker {
    pub url: String,
    pub timeout_secs: u64,
    pub audit_dir: String,
    /// Where the CA's certificate and the broker's certificate and key are.
    pub pki: PathBuf,
    pub catalog: PathBuf,
    pub policies: PathBuf,
    /// The authority the broker answers for, when not its own address.
    pub public_data_url: Option<String>,
    /// More TOML, after the other sections.
    pub more: String,
}

impl PgBroker {
    /// `pki/`, `catalog/` and `policies/` in the configuration's directory,
    /// the audit log in `audit_dir`, a timeout of 3 s.
    pub fn new(url: &str, audit_dir: &str) -> PgBroker {
        PgBroker {
            url: url.to_string(),
            timeout_secs: 3,
            audit_dir: audit_dir.to_string(),
            pki: PathBuf::from("pki"),
            catalog: PathBuf::from("catalog"),
            policies: PathBuf::from("policies"),
            public_data_url: None,
            more: String::new(),
        }
    }

    pub fn toml(&self) -> String {
        let public = self
            .public_data_url
            .as_ref()
            .map(|url| format!("public_data_url = \"{url}\"\n"))
            .unwrap_or_default();
        format!(
            r#"
[listen]
data = "127.0.0.1:0"
admin = "127.0.0.1:0"
ops = "127.0.0.1:0"
{public}[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[storage]
audit_dir = "{audit_dir}"
[state]
postgres = "{url}"
timeout_secs = {timeout_secs}
[catalog]
dir = "{catalog}"
[policies]
dir = "{policies}"
{more}"#,
            ca = self.pki.join("ca.cert.pem").display(),
            cert = self.pki.join("broker.cert.pem").display(),
            key = self.pki.join("broker.key.pem").display(),
            audit_dir = self.audit_dir,
            url = self.url,
            timeout_secs = self.timeout_secs,
            catalog = self.catalog.display(),
            policies = self.policies.display(),
            more = self.more,
        )
    }

    /// The configuration, loaded in `dir`.
    pub fn config(&self, dir: &Path) -> Config {
        Config::from_toml(&self.toml(), dir).unwrap()
    }
}

/// broker.toml of cluster broker `name`, loaded in `dir`, on the database
/// at `url`: the PKI of the sandbox in `sandbox`, the repository's catalog,
/// the policies in `dir/policies`, an audit log of its own
/// (`dir/audit-{name}`), answering for [`PUBLIC`]; then `more` TOML.
pub fn sandbox_broker_config(
    sandbox: &Path,
    dir: &Path,
    name: &str,
    url: &str,
    more: &str,
) -> Config {
    PgBroker {
        pki: sandbox.join("pki"),
        catalog: super::repo().join("catalog"),
        policies: dir.join("policies"),
        public_data_url: Some(PUBLIC.to_string()),
        more: more.to_string(),
        ..PgBroker::new(url, &format!("audit-{name}"))
    }
    .config(dir)
}

/// The sandbox (its providers and PKI), a PostgreSQL server whose database
/// holds the sandbox's participants, and the directory the cluster's
/// brokers live in.
pub struct PgSandbox {
    pub bus: Bus,
    pub pg: PgPlace,
    pub dir: tempfile::TempDir,
}

impl PgSandbox {
    /// Starts both; `write_policies` writes the cluster's policies into the
    /// directory it is given (`dir/policies`). The sandbox's participants,
    /// with their providers' endpoints, go into the shared database (exact
    /// bytes) before any broker starts.
    pub async fn start(write_policies: impl FnOnce(&Path)) -> PgSandbox {
        let bus = Bus::start().await;
        let dir = tempfile::tempdir().unwrap();
        let pg = PgPlace::start("cluster").await;
        write_policies(&dir.path().join("policies"));
        let participants = bus
            .sandbox
            .broker
            .broker
            .registry()
            .store()
            .scan(Collection::Participants)
            .unwrap();
        let settings = PostgresSettings::from_url(&pg.url).unwrap();
        tokio::task::spawn_blocking(move || {
            let store = PgStore::open(&settings).unwrap();
            let writes: Vec<Write<'_>> = participants
                .iter()
                .map(|(k, v)| Write::Put(Collection::Participants, k, v))
                .collect();
            store.apply(&writes).unwrap();
        })
        .await
        .unwrap();
        PgSandbox { bus, pg, dir }
    }

    /// [`sandbox_broker_config`] of broker `name` in this place.
    pub fn broker_config(&self, name: &str, more: &str) -> Config {
        sandbox_broker_config(
            self.bus.dir.path(),
            self.dir.path(),
            name,
            &self.pg.url,
            more,
        )
    }

    /// Starts broker `name` ([`PgSandbox::broker_config`]).
    pub async fn broker(&self, name: &str, more: &str) -> RunningBroker {
        mconnect::app::start(self.broker_config(name, more))
            .await
            .unwrap()
    }

    /// `participant`'s connection to the broker whose data plane is `data`
    /// (receipts by the sandbox's broker certificate, which all use).
    pub fn consumer(&self, participant: &str, data: SocketAddr) -> Consumer {
        let dir = self.bus.dir.path();
        let manifest = &self.bus.sandbox.manifest;
        let pem = std::fs::read_to_string(dir.join(&manifest.broker.cert)).unwrap();
        Consumer::new(
            manifest.credentials(dir, participant).unwrap(),
            &format!("https://{data}"),
            TrustedKeys::from_pem(&pem).unwrap(),
        )
        .unwrap()
    }

    /// Stops the server, then the sandbox.
    pub async fn stop(self) {
        self.pg.stop().await;
        self.bus.stop().await;
    }
}

/// The repository's policy files written into `to`, each grant first
/// changed by `change`, with the schema they name.
pub fn copy_policies(to: &Path, mut change: impl FnMut(&mut serde_json::Value)) {
    let from = super::repo().join("policies");
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for grant in doc["grants"].as_array_mut().unwrap() {
            change(grant);
        }
        std::fs::write(
            to.join(entry.file_name()),
            serde_json::to_vec_pretty(&doc).unwrap(),
        )
        .unwrap();
    }
    // The schema the files name, relative to them.
    let schema = from.join("schema");
    if schema.is_dir() {
        let target = to.join("schema");
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&schema).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
    }
}
