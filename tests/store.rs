//! The state store on PostgreSQL: the store suite every backend passes
//! (`src/store/suite.rs`, which runs on redb in the library's unit tests),
//! then what only a shared database has — migrations recorded once while
//! brokers open it together, two stores on one database, a crash and restart
//! of the server under a store that stays open, a server that is gone, a
//! schema from a newer broker — and a broker started on it from broker.toml.
//!
//! Each test starts its own server (`mconnect_cli::sandbox::postgres`:
//! Debian's package, `initdb` in a temporary directory, a child process on
//! loopback, run as the postgres user when the tests run as root), stopped
//! when the test ends, whether it passes or panics.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mconnect::store::{Collection, PgStore, StateStore, Write};
use mconnect_cli::sandbox::postgres::LocalPostgres;
use support::postgres::{PgBroker, PgPlace};

/// `suite.rs` names the store's items as `crate::store::...`.
mod store {
    pub use mconnect::store::*;
}

#[macro_use]
#[path = "../src/store/suite.rs"]
mod suite;

use suite::Place;

/// How long a store waits for PostgreSQL.
const TIMEOUT: Duration = Duration::from_secs(5);

impl Place for PgPlace {
    fn open(&self) -> Arc<dyn StateStore> {
        Arc::new(PgStore::open(&self.settings(TIMEOUT)).unwrap())
    }
}

mod on_postgres {
    use super::PgPlace;
    use crate::suite::Place;

    store_suite!(crate::suite, PgPlace::new("mconnect"));
}

#[test]
fn brokers_opening_one_database_together_migrate_it_once_and_share_it() {
    let place = PgPlace::new("mconnect");
    let settings = place.settings(TIMEOUT);
    let stores: Vec<PgStore> = (0..3)
        .map(|_| {
            let settings = settings.clone();
            std::thread::spawn(move || PgStore::open(&settings).unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let history = place.query("SELECT version, name FROM schema_migrations ORDER BY version");
    let history: Vec<(i32, String)> = history.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Each migration of migrations/postgres once, in order.
    let mut shipped: Vec<(i32, String)> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres"))
            .unwrap()
            .map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let (version, rest) = name
                    .strip_prefix('V')
                    .and_then(|n| n.split_once("__"))
                    .unwrap();
                (
                    version.parse().unwrap(),
                    rest.trim_end_matches(".sql").to_string(),
                )
            })
            .collect();
    shipped.sort();
    assert_eq!(history, shipped);
    assert_eq!(
        history[..2],
        [(1, "state".into()), (2, "change_feed".into())]
    );

    // What one writes, the others read at once, in either direction.
    stores[0]
        .apply(&[
            Write::Put(Collection::Participants, "apl-cahul", b"{\"v\":1}"),
            Write::Put(Collection::Grants, "g-1", b"{}"),
        ])
        .unwrap();
    assert_eq!(
        stores[1]
            .get(Collection::Participants, "apl-cahul")
            .unwrap(),
        Some(b"{\"v\":1}".to_vec())
    );
    stores[2].delete(Collection::Grants, "g-1").unwrap();
    assert!(stores[0].scan(Collection::Grants).unwrap().is_empty());
    // The documents are the bytes written, readable as JSON in SQL.
    let rows = place.query(
        "SELECT convert_from(document, 'UTF8')::jsonb ->> 'v' FROM participants WHERE key = 'apl-cahul'",
    );
    assert_eq!(rows[0].get::<_, String>(0), "1");
}

#[test]
fn committed_writes_survive_a_crash_of_the_server_and_the_store_reconnects_by_itself() {
    let mut place = PgPlace::new("mconnect");
    let store = PgStore::open(&place.settings(TIMEOUT)).unwrap();
    store
        .apply(&[
            Write::Put(
                Collection::ConnectionRequests,
                "MC-2026-0001",
                b"{\"state\":\"approved\"}",
            ),
            Write::Put(Collection::Grants, "MC-2026-0001/1", b"{\"grant\":1}"),
        ])
        .unwrap();
    // An immediate shutdown: no checkpoint, the restart replays the WAL.
    place.server.crash().unwrap();

    // With the server gone, calls fail (bounded), and nothing hangs.
    let started = Instant::now();
    let err = store
        .get(Collection::ConnectionRequests, "MC-2026-0001")
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(7), "{err}");
    assert!(
        store
            .put(Collection::Participants, "during-outage", b"1")
            .is_err()
    );

    place.server.restart().unwrap();
    // The same store, not reopened: broken connections are replaced.
    assert_eq!(
        store
            .get(Collection::ConnectionRequests, "MC-2026-0001")
            .unwrap(),
        Some(b"{\"state\":\"approved\"}".to_vec())
    );
    assert_eq!(
        store.scan(Collection::Grants).unwrap(),
        vec![("MC-2026-0001/1".to_string(), b"{\"grant\":1}".to_vec())]
    );
    assert_eq!(
        store
            .get(Collection::Participants, "during-outage")
            .unwrap(),
        None
    );
    store.put(Collection::Participants, "after", b"1").unwrap();
    drop(store);
    let reopened = PgStore::open(&place.settings(TIMEOUT)).unwrap();
    assert_eq!(
        reopened.get(Collection::Participants, "after").unwrap(),
        Some(b"1".to_vec())
    );
}

#[test]
fn a_server_that_is_not_there_fails_the_open_within_the_timeout() {
    let mut place = PgPlace::new("mconnect");
    let settings = place.settings(Duration::from_secs(2));
    place.server.stop().unwrap();
    let started = Instant::now();
    let err = PgStore::open(&settings).err().unwrap().to_string();
    assert!(started.elapsed() < Duration::from_secs(4), "{err}");
    assert!(
        err.contains("cannot open state store postgres://mconnect@127.0.0.1:"),
        "{err}"
    );
    // The password is in the URL the store was given, never in its errors.
    assert!(!err.contains(place.server.password()), "{err}");
}

#[test]
fn a_schema_from_a_newer_broker_is_refused() {
    let place = PgPlace::new("mconnect");
    drop(PgStore::open(&place.settings(TIMEOUT)).unwrap());
    place.query(
        "INSERT INTO schema_migrations (version, name, applied_on, checksum) VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
    );
    let err = PgStore::open(&place.settings(TIMEOUT))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("migrat"), "{err}");
}

#[test]
fn a_wrong_password_is_refused_at_open() {
    let place = PgPlace::new("mconnect");
    let settings = place.settings(TIMEOUT).with_password(b"not-the-password");
    let err = PgStore::open(&settings).err().unwrap().to_string();
    assert!(
        err.contains("password") || err.contains("authentication"),
        "{err}"
    );
}

/// Set for the copy of this test binary that
/// `the_server_stops_when_its_owner_is_killed` starts and kills.
const OWNER_DIR: &str = "MCONNECT_TEST_POSTGRES_OWNER_DIR";

#[test]
fn the_server_stops_when_its_owner_is_killed() {
    if let Some(dir) = std::env::var_os(OWNER_DIR) {
        // The owner: start a server, say its process id, wait to be killed.
        let server = LocalPostgres::start(Path::new(&dir)).unwrap();
        let pid = std::fs::read_to_string(server.dir().join("data/postmaster.pid")).unwrap();
        println!("POSTMASTER {}", pid.lines().next().unwrap());
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut owner = Owner(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_server_stops_when_its_owner_is_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(OWNER_DIR, dir.path().join("pg"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(owner.0.stdout.take().unwrap()));
    let pid: u32 = lines
        .find_map(|l| Some(l.ok()?.split_once("POSTMASTER ")?.1.to_string()))
        .expect("the owner printed no postmaster pid")
        .parse()
        .unwrap();
    assert!(alive(pid));
    // SIGKILL: no Drop runs in the owner.
    owner.0.kill().unwrap();
    owner.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "postgres {pid} outlived its killed owner by 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The owner process, killed however the test ends.
struct Owner(std::process::Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a process runs (a zombie left for a reaper does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_configured_for_postgres_keeps_its_registry_there() {
    let place = PgPlace::start("mconnect").await;
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(dir.path(), &place.url);
    assert!(matches!(
        config.state,
        mconnect::store::Backend::Postgres(_)
    ));
    let ca = mconnect::pki::DevCa::load(&dir.path().join("pki")).unwrap();
    let issued = ca
        .issue(
            "apl-cahul",
            "Primăria Cahul",
            mconnect::pki::KeyType::Ed25519,
        )
        .unwrap();

    let running = mconnect::app::start(config.clone()).await.unwrap();
    let registry = running.broker.registry().clone();
    let pem = issued.cert_pem.clone();
    tokio::task::spawn_blocking(move || {
        registry.upsert(mconnect::registry::Participant {
            id: "apl-cahul".into(),
            organisation: mconnect::registry::Organisation {
                idno: "1003600000017".into(),
                name: "Primăria Cahul".into(),
            },
            roles: vec![mconnect::registry::Role::Consumer],
            certificates: vec![mconnect::registry::registered_certificate(&pem).unwrap()],
            endpoints: Vec::new(),
            confidential: false,
        })
    })
    .await
    .unwrap()
    .unwrap();
    let (status, body) = support::plain_get(running.ops_addr(), "/readyz").await;
    assert_eq!(status, 200, "{body}");
    running.shutdown().await;

    // In PostgreSQL, where a second broker (or this one, restarted) finds it.
    let settings = place.settings(TIMEOUT);
    let stored = tokio::task::spawn_blocking(move || {
        PgStore::open(&settings)
            .unwrap()
            .get(Collection::Participants, "apl-cahul")
            .unwrap()
    })
    .await
    .unwrap();
    assert!(stored.is_some());
    let running = mconnect::app::start(config).await.unwrap();
    assert!(
        running
            .broker
            .registry()
            .snapshot()
            .get("apl-cahul")
            .is_some()
    );
    running.shutdown().await;
    place.stop().await;
}

/// A broker.toml with a development PKI, an empty catalog and policies, and
/// `[state] postgres`.
fn broker_config(dir: &Path, url: &str) -> mconnect::config::Config {
    support::dev_pki(&dir.join("pki"), "store test CA");
    for d in ["catalog", "policies"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    PgBroker {
        timeout_secs: 5,
        ..PgBroker::new(url, "audit")
    }
    .config(dir)
}
