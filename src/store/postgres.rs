//! The state store on PostgreSQL, for brokers that share their state.
//!
//! ## Schema and migrations
//!
//! One table per collection (`participants`, `connection_requests`,
//! `grants`), each a map from `key text COLLATE "C"` (so that the primary
//! key's order is byte order, the order redb scans in) to `document bytea`:
//! the exact bytes the broker wrote, since connection requests carry signed
//! evidence that must re-verify, which `jsonb` would reformat. The schema is
//! `migrations/postgres/V{n}__{name}.sql`, embedded at compile time and
//! applied by refinery when the store opens, each migration in one
//! transaction with its row in the `schema_migrations` history table. Opening
//! takes a PostgreSQL advisory lock around the migrations, so brokers that
//! start together migrate once; a database that holds a migration this broker
//! does not know (a newer broker's), or one whose text differs from ours, is
//! refused rather than used.
//!
//! ## A synchronous interface over an async driver
//!
//! [`StateStore`] is synchronous. Its callers — the registry's stage and
//! commit, connection requests, `rules::load` (under the rules' writers'
//! lock, also inside `spawn_blocking` for reloads), the readiness probe,
//! start-up and the sandbox — are synchronous code, reached from async
//! handlers through `spawn_blocking` or `block_in_place`, and, on
//! current-thread runtimes (tests, embedders), inline. Making the trait async
//! would turn the registry, the rules loader and the connection-request code
//! async down to their roots for what is one round trip per call, so this
//! store keeps the trait as it is and runs the driver on a thread of its own:
//! [`PgStore`] owns one thread with a current-thread Tokio runtime that holds
//! the tokio-postgres connections and the deadpool pool; each call hands its
//! work to that runtime and waits on a channel. The caller's thread blocks
//! for the round trip, as it blocks for redb's fsync, but no runtime is ever
//! entered from inside another (`Handle::block_on` would panic there), and
//! nothing depends on the caller's runtime, which may be current-thread
//! (where `block_in_place` is not allowed) or shutting down. One thread is
//! enough: the work on it is waiting for the server, and many calls proceed
//! at once on it over up to `pool_size` connections.
//!
//! ## Durability and failure
//!
//! A write returns once PostgreSQL acknowledged its COMMIT, which under
//! `synchronous_commit = on` (the default) means its WAL is flushed; opening
//! refuses a database where `fsync` or `synchronous_commit` is off. Every
//! call is bounded by the configured timeout (pool wait, connect, and
//! `statement_timeout` on the server). When a COMMIT's answer is lost (the
//! connection broke, or the timeout ran out while committing), the error says
//! so: the batch may or may not have been applied. Connections broken by a
//! restart of PostgreSQL are replaced on the next call.
//!
//! No TLS: the broker reaches PostgreSQL on a loopback address or a Unix
//! socket ([`PostgresSettings::from_url`] refuses any other host), so it
//! connects with `NoTls` and no second TLS stack (ring or OpenSSL) enters
//! the build.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode};

use super::{Collection, StateStore, StoreError, Write, key_problem};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

// The change feed (issue 15): LISTEN on a connection of its own.
mod listen;

// The checks brokers of a cluster make together (issue 15): replay ids,
// quota leases, live brokers; a pool of its own (`shared.rs`).
pub mod shared;

// Every broker's audit records, shipped for cluster-wide search (issue 15);
// a pool of its own (`audit_copy.rs`).
pub mod audit_copy;

/// The migrations' history table.
const MIGRATION_TABLE: &str = "schema_migrations";

/// The advisory lock held while migrating ("mconnect" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d63_6f6e_6e65_6374;

/// How the broker reaches its PostgreSQL database (`[state]` in broker.toml).
#[derive(Clone)]
pub struct PostgresSettings {
    config: tokio_postgres::Config,
    pool_size: usize,
    timeout: Duration,
}

impl PostgresSettings {
    /// Connections in the pool unless configured.
    pub const DEFAULT_POOL_SIZE: usize = 8;
    /// The bound on one call unless configured.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Parses a connection string (`postgres://user[:password]@host[:port]/db`,
    /// or libpq's `key=value` form). The host must be a loopback address,
    /// `localhost` or a Unix socket directory (the connection has no TLS),
    /// and the database must be named.
    pub fn from_url(url: &str) -> Result<PostgresSettings, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("is not a PostgreSQL connection string: {e}"))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(
                "names no host: give 127.0.0.1, localhost or the server's socket directory".into(),
            );
        }
        let remote = |what: &str| {
            format!(
                "names host `{what}`, which is not this machine: the broker speaks to PostgreSQL without TLS, so only a loopback address, localhost or a Unix socket directory will do"
            )
        };
        for host in config.get_hosts() {
            if let Host::Tcp(name) = host
                && name != "localhost"
                && !name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            {
                return Err(remote(name));
            }
        }
        if let Some(addr) = config.get_hostaddrs().iter().find(|a| !a.is_loopback()) {
            return Err(remote(&addr.to_string()));
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err(
                "asks for sslmode=require, but the broker speaks to PostgreSQL without TLS (on loopback or a Unix socket): drop sslmode".into(),
            );
        }
        if config.get_dbname().is_none() {
            return Err("names no database: end it with /{database}".into());
        }
        config.ssl_mode(SslMode::Disable);
        Ok(PostgresSettings {
            config,
            pool_size: PostgresSettings::DEFAULT_POOL_SIZE,
            timeout: PostgresSettings::DEFAULT_TIMEOUT,
        })
    }

    /// Sets the password (for one kept apart from the connection string).
    pub fn with_password(mut self, password: &[u8]) -> PostgresSettings {
        self.config.password(password);
        self
    }

    /// Sets the most connections the pool opens.
    pub fn with_pool_size(mut self, pool_size: usize) -> PostgresSettings {
        self.pool_size = pool_size.max(1);
        self
    }

    /// Sets the bound on one call (waiting for a connection, connecting,
    /// and each statement).
    pub fn with_timeout(mut self, timeout: Duration) -> PostgresSettings {
        self.timeout = timeout;
        self
    }

    /// The most connections the pool opens.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The bound on one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `postgres://user@host:port/database`, without the password: for
    /// messages and logs.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(dir) => dir.display().to_string(),
            })
            .chain(self.config.get_hostaddrs().iter().map(IpAddr::to_string))
            .collect();
        let ports: Vec<String> = self.config.get_ports().iter().map(u16::to_string).collect();
        format!(
            "postgres://{}@{}:{}/{}",
            self.config.get_user().unwrap_or("(os user)"),
            hosts.join(","),
            if ports.is_empty() {
                "5432".to_string()
            } else {
                ports.join(",")
            },
            self.config.get_dbname().unwrap_or_default(),
        )
    }

    /// The driver's configuration with the broker's session settings: every
    /// statement and idle transaction bounded by the timeout on the server
    /// too, and a name in `pg_stat_activity`.
    fn session_config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        let ms = self.timeout.as_millis().max(1);
        let ours = format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}");
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("mconnect");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.timeout);
        }
        config
    }
}

impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("database", &self.describe())
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL store: a pool on a thread of its own (see the module docs).
pub struct PgStore {
    pool: Pool,
    driver: tokio::runtime::Handle,
    timeout: Duration,
    /// Dropping or sending ends the driver thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The change feed's listener and its subscribers (`listen.rs`).
    listener: listen::Listener,
}

/// The statements of one collection's table.
struct Statements {
    get: &'static str,
    scan: &'static str,
    put: &'static str,
    delete: &'static str,
}

macro_rules! statements {
    ($table:literal) => {
        Statements {
            get: concat!("SELECT document FROM ", $table, " WHERE key = $1"),
            scan: concat!("SELECT key, document FROM ", $table, " ORDER BY key"),
            put: concat!(
                "INSERT INTO ",
                $table,
                " (key, document) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET document = EXCLUDED.document, updated_at = now()"
            ),
            delete: concat!("DELETE FROM ", $table, " WHERE key = $1"),
        }
    };
}

const PARTICIPANTS: Statements = statements!("participants");
const CONNECTION_REQUESTS: Statements = statements!("connection_requests");
const GRANTS: Statements = statements!("grants");

fn statements(collection: Collection) -> &'static Statements {
    match collection {
        Collection::Participants => &PARTICIPANTS,
        Collection::ConnectionRequests => &CONNECTION_REQUESTS,
        Collection::Grants => &GRANTS,
    }
}

/// A write of a batch, owned so it can travel to the driver thread.
enum OwnedWrite {
    Put(Collection, String, Vec<u8>),
    Delete(Collection, String),
}

impl PgStore {
    /// Connects, checks the server (UTF-8, durable commits), brings the
    /// schema up to date and starts the pool. Blocks until done or the
    /// timeout ran out.
    pub fn open(settings: &PostgresSettings) -> Result<PgStore, StoreError> {
        let name = settings.describe();
        let open_err = |reason: String| StoreError::Open {
            path: name.clone(),
            reason,
        };
        let mut config = settings.session_config();
        let listener = listen::Listener::new();
        listener.tag(&mut config);
        let timeout = settings.timeout;
        let pool = build_pool(config.clone(), settings.pool_size, timeout).map_err(open_err)?;
        let (driver, stop, thread) = driver_thread().map_err(open_err)?;
        // From here on, dropping `store` stops the thread.
        let store = PgStore {
            pool,
            driver,
            timeout,
            stop: Some(stop),
            thread: Some(thread),
            listener,
        };
        let config_for_listener = listen::Listener::session(&config);
        store
            .run("open", None, move |pool| prepare(config, pool))
            .map_err(|e| match e {
                StoreError::Operation { reason, .. } => open_err(reason),
                other => other,
            })?;
        // Listening before anyone reads through this store, so that every
        // commit after the reads is announced.
        store
            .listener
            .start(config_for_listener, timeout, &store.driver)
            .map_err(open_err)?;
        tracing::info!(database = %name, "state store open on PostgreSQL");
        Ok(store)
    }

    /// Hands `work` to the driver thread and waits for its answer, at most
    /// the timeout. `committing`, when given, is set by the work once it has
    /// sent COMMIT: a timeout after that leaves the outcome unknown.
    fn run<T, F>(
        &self,
        operation: &'static str,
        committing: Option<Arc<AtomicBool>>,
        work: impl FnOnce(Pool) -> F + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let timeout = self.timeout;
        let outcome = run_on_driver(&self.driver, &self.pool, timeout, work, move || {
            if committing.is_some_and(|c| c.load(Ordering::SeqCst)) {
                format!(
                    "PostgreSQL did not confirm the commit within {timeout:?}: the batch may or may not have been applied"
                )
            } else {
                format!("no answer from PostgreSQL within {timeout:?} (nothing was written)")
            }
        })
        .unwrap_or_else(|| {
            Err("the PostgreSQL thread has stopped (the store is closing)".to_string())
        });
        outcome.map_err(|reason| StoreError::Operation { operation, reason })
    }
}

/// Hands `work` on `pool` to the driver thread and waits for its answer, at
/// most `timeout`; after that, the error is what `timed_out` says then.
/// `None`: the driver thread has stopped.
fn run_on_driver<T, F>(
    driver: &tokio::runtime::Handle,
    pool: &Pool,
    timeout: Duration,
    work: impl FnOnce(Pool) -> F + Send + 'static,
    timed_out: impl FnOnce() -> String + Send + 'static,
) -> Option<Result<T, String>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, String>> + Send + 'static,
{
    let (answer, wait) = std::sync::mpsc::sync_channel(1);
    let pool = pool.clone();
    driver.spawn(async move {
        let outcome = tokio::time::timeout(timeout, work(pool))
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        // The caller may be gone only if its thread died; nothing to tell.
        let _ = answer.send(outcome);
    });
    wait.recv().ok()
}

/// Closes `pool`, then ends the driver thread ([`driver_thread`]) and waits
/// for it.
fn close_driver(
    pool: &Pool,
    stop: &mut Option<tokio::sync::oneshot::Sender<()>>,
    thread: &mut Option<std::thread::JoinHandle<()>>,
) {
    pool.close();
    if let Some(stop) = stop.take() {
        let _ = stop.send(());
    }
    if let Some(thread) = thread.take() {
        let _ = thread.join();
    }
}

/// A pool of at most `max_size` sessions of `config`, each wait of it (for
/// a free session, a new connection, a recycling check) bounded by
/// `timeout`.
fn build_pool(
    config: tokio_postgres::Config,
    max_size: usize,
    timeout: Duration,
) -> Result<Pool, String> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| chain(&e))
}

/// The thread that runs the driver: a current-thread runtime driven until
/// `stop` is sent or dropped. The runtime is built and dropped on that
/// thread, never inside the caller's.
fn driver_thread() -> Result<
    (
        tokio::runtime::Handle,
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ),
    String,
> {
    driver_thread_io().map_err(|e| format!("cannot start the PostgreSQL thread: {e}"))
}

/// [`driver_thread`], failing with the I/O error.
fn driver_thread_io() -> std::io::Result<(
    tokio::runtime::Handle,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    let (ready, started) = std::sync::mpsc::sync_channel(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mconnect-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(runtime.handle().clone()));
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    let driver = started
        .recv()
        .map_err(|_| std::io::Error::other("the thread ended before its runtime started"))??;
    Ok((driver, stop, thread))
}

/// On the driver thread, at open: checks the server and migrates on a
/// connection of its own (which holds the advisory lock), then takes one
/// connection from the pool so that a broken pool fails at start.
async fn prepare(config: tokio_postgres::Config, pool: Pool) -> Result<(), String> {
    let (mut client, connection) = config.connect(NoTls).await.map_err(|e| chain(&e))?;
    let connection = tokio::spawn(connection);
    let migrated = migrate(&mut client).await;
    // Ends the session (and releases its advisory lock).
    drop(client);
    let _ = connection.await;
    migrated?;
    let client = pool.get().await.map_err(|e| chain(&e))?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| chain(&e))?;
    Ok(())
}

async fn setting(client: &tokio_postgres::Client, name: &str) -> Result<String, String> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .map_err(|e| chain(&e))?;
    row.try_get::<_, String>(0).map_err(|e| chain(&e))
}

async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), String> {
    let encoding = setting(client, "server_encoding").await?;
    if encoding != "UTF8" {
        return Err(format!(
            "the database's encoding is {encoding}: create it with ENCODING 'UTF8'"
        ));
    }
    for name in ["fsync", "synchronous_commit"] {
        if setting(client, name).await? == "off" {
            return Err(format!(
                "{name} is off on the server, so a commit would not be durable when it returns: turn it on"
            ));
        }
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| chain(&e))?;
    let report = embedded::migrations::runner()
        .set_migration_table_name(MIGRATION_TABLE)
        .run_async(client)
        .await
        .map_err(|e| format!("migrating the schema: {}", chain(&e)))?;
    for applied in report.applied_migrations() {
        tracing::info!(migration = %applied, "state schema migrated");
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| chain(&e))?;
    Ok(())
}

/// An error with its causes (tokio-postgres shows the server's message
/// only as the source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl StateStore for PgStore {
    fn get(&self, collection: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // A key no backend can store is never present.
        if key_problem(key).is_some() {
            return Ok(None);
        }
        let key = key.to_owned();
        self.run("read", None, move |pool| async move {
            let client = pool.get().await.map_err(|e| chain(&e))?;
            let statement = client
                .prepare_cached(statements(collection).get)
                .await
                .map_err(|e| chain(&e))?;
            let row = client
                .query_opt(&statement, &[&key])
                .await
                .map_err(|e| chain(&e))?;
            row.map(|r| r.try_get::<_, Vec<u8>>(0))
                .transpose()
                .map_err(|e| chain(&e))
        })
    }

    fn scan(&self, collection: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.run("scan", None, move |pool| async move {
            let client = pool.get().await.map_err(|e| chain(&e))?;
            let statement = client
                .prepare_cached(statements(collection).scan)
                .await
                .map_err(|e| chain(&e))?;
            // One statement: one consistent snapshot of the table.
            let rows = client.query(&statement, &[]).await.map_err(|e| chain(&e))?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| chain(&e))
        })
    }

    fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let owned: Vec<OwnedWrite> = writes
            .iter()
            .map(|w| match w {
                Write::Put(c, k, v) => OwnedWrite::Put(*c, (*k).to_owned(), v.to_vec()),
                Write::Delete(c, k) => OwnedWrite::Delete(*c, (*k).to_owned()),
            })
            .collect();
        let committing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&committing);
        let uncertain = Arc::clone(&committing);
        let result = self.run("write", Some(committing), move |pool| async move {
            let mut client = pool.get().await.map_err(|e| chain(&e))?;
            // Returning early drops `transaction`, which rolls it back:
            // nothing of the batch is kept.
            let transaction = client.transaction().await.map_err(|e| chain(&e))?;
            for write in &owned {
                let (key, sql) = match write {
                    OwnedWrite::Put(c, k, _) => (k, statements(*c).put),
                    OwnedWrite::Delete(c, k) => (k, statements(*c).delete),
                };
                if let Some(problem) = key_problem(key) {
                    return Err(format!("{problem}; nothing of the batch was written"));
                }
                let statement = transaction
                    .prepare_cached(sql)
                    .await
                    .map_err(|e| chain(&e))?;
                let done = match write {
                    OwnedWrite::Put(_, k, v) => transaction.execute(&statement, &[k, v]).await,
                    OwnedWrite::Delete(_, k) => transaction.execute(&statement, &[k]).await,
                };
                done.map_err(|e| format!("{}; nothing of the batch was written", chain(&e)))?;
            }
            flag.store(true, Ordering::SeqCst);
            transaction.commit().await.map_err(|e| {
                if e.as_db_error().is_some() {
                    format!(
                        "COMMIT refused, nothing of the batch was written: {}",
                        chain(&e)
                    )
                } else {
                    format!(
                        "no answer to COMMIT ({}): the batch may or may not have been applied",
                        chain(&e)
                    )
                }
            })
        });
        // Reached COMMIT and failed: refused (nothing applied; a reload is
        // harmless) or unanswered (maybe applied: only a reload finds out).
        if result.is_err() && uncertain.load(Ordering::SeqCst) {
            self.listener.resync_after_uncertain_commit();
        }
        result
    }

    // The change feed (`listen.rs`).

    fn subscribe(&self) -> Option<super::ChangeFeed> {
        Some(self.listener.subscribe())
    }

    fn announce_rules_reload(&self) -> Result<(), StoreError> {
        let payload = self.listener.rules_payload();
        self.run("announce", None, move |pool| {
            listen::announce(pool, payload)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        close_driver(&self.pool, &mut self.stop, &mut self.thread);
    }
}
