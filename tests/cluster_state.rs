//! Brokers on one PostgreSQL database follow each other (issue 15): what one
//! commits, the others have in force within a second — participants,
//! certificates, connection-request approvals and suspensions, reloads of
//! the rule files — through the store's change feed (LISTEN/NOTIFY); a
//! notification lost while a broker's listener was away is made good by the
//! resync on reconnection; and a broker that loses PostgreSQL keeps its last
//! registry and rules, refuses changes and exchanges alike (503
//! `state.unavailable`: the cluster-wide request-id check fails closed) and
//! says so on `/readyz`, until the server is back.
//!
//! Real parts only: a PostgreSQL server of the test's own (Debian's package,
//! `mconnect_cli::sandbox::postgres`), two brokers started from broker.toml
//! in this process on their own ports, mutual TLS on every call.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use mconnect::app::RunningBroker;
use mconnect::connect::client::AdminClient;
use mconnect::store::{ChangeFeed, Changes, Collection, PgStore, StateStore};
use serde_json::{Value, json};
use support::postgres::{PgBroker, PgPlace, block_on};

/// How soon a change must be in force on the other broker.
const WITHIN: Duration = Duration::from_secs(1);

/// How long a store waits for PostgreSQL.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Ends every broker's listening session (as a network failure would).
fn cut_listeners(place: &PgPlace) {
    place.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mconnect-feed'",
    );
}

/// The next changes of `feed`, or `None` after `within`.
fn next(feed: &ChangeFeed, within: Duration) -> Option<Changes> {
    block_on(async { tokio::time::timeout(within, feed.next()).await.ok() })
}

#[test]
fn the_feed_announces_what_others_commit_and_resyncs_what_it_missed() {
    let mut place = PgPlace::new("mconnect");
    let writer = PgStore::open(&place.settings(TIMEOUT)).unwrap();
    let follower = PgStore::open(&place.settings(TIMEOUT)).unwrap();
    let feed = follower.subscribe().expect("PostgreSQL has a change feed");
    assert_eq!(feed.health(), Ok(()));

    // Another store's commit arrives, marked by collection.
    let started = Instant::now();
    writer
        .put(Collection::Participants, "apl-cahul", b"{}")
        .unwrap();
    let changes = next(&feed, Duration::from_secs(5)).expect("announced");
    let took = started.elapsed();
    println!("MEASURED notification after commit: {took:?}");
    assert!(changes.participants && !changes.grants, "{changes:?}");
    assert!(took < WITHIN, "{took:?}");
    feed.applied(Ok(()));

    // Several commits in a burst are taken together.
    for i in 0..20 {
        writer
            .put(Collection::Grants, &format!("g-{i}"), b"{}")
            .unwrap();
    }
    writer
        .put(Collection::ConnectionRequests, "cr-1", b"{}")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let changes = next(&feed, Duration::from_secs(5)).unwrap();
    assert!(changes.grants && changes.connection_requests, "{changes:?}");
    feed.applied(Ok(()));
    assert_eq!(next(&feed, Duration::from_millis(300)), None, "one take");

    // Its own writes are not announced back to it; a rules reload is.
    follower.put(Collection::Grants, "own", b"{}").unwrap();
    assert_eq!(next(&feed, Duration::from_millis(500)), None);
    writer.announce_rules_reload().unwrap();
    let changes = next(&feed, Duration::from_secs(5)).unwrap();
    assert!(changes.rules_files && !changes.grants, "{changes:?}");
    feed.applied(Ok(()));

    // A commit whose notification is lost (triggers off for that session, as
    // if the listener had been away), then the listener's connection cut:
    // the reconnection asks for everything, and the scan finds the row.
    place.execute(
        "SET session_replication_role = replica; INSERT INTO grants (key, document) VALUES ('unannounced', '\\x7b7d')",
    );
    assert_eq!(
        next(&feed, Duration::from_millis(500)),
        None,
        "not announced"
    );
    cut_listeners(&place);
    let changes = next(&feed, Duration::from_secs(10)).expect("a resync after reconnecting");
    assert!(changes.resync, "{changes:?}");
    // Until the resync is applied, the broker must not take changes.
    assert!(feed.health().is_err());
    assert!(
        follower
            .scan(Collection::Grants)
            .unwrap()
            .iter()
            .any(|(k, _)| k == "unannounced")
    );
    feed.applied(Ok(()));
    assert_eq!(feed.health(), Ok(()));

    // The server gone: the feed says so; back: a resync, and it is healthy.
    place.server.crash().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while feed.health().is_ok() {
        assert!(Instant::now() < deadline, "the loss was not noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lost = feed.health().unwrap_err();
    assert!(lost.contains("out of reach"), "{lost}");
    place.server.restart().unwrap();
    let changes = next(&feed, Duration::from_secs(15)).expect("a resync after the restart");
    assert!(changes.resync, "{changes:?}");
    feed.applied(Ok(()));
    assert_eq!(feed.health(), Ok(()));
    // Announcements flow again.
    writer
        .delete(Collection::Participants, "apl-cahul")
        .unwrap();
    let changes = next(&feed, Duration::from_secs(5)).unwrap();
    assert!(changes.participants, "{changes:?}");
}

/// The test bus: a development PKI, a catalog with SFS's tax debts and the
/// broker's own services, one policy file (MCabinet's access history), and
/// three participants stored before the brokers start.
struct Cluster {
    dir: tempfile::TempDir,
    place: PgPlace,
}

const OPERATOR: (&str, &str, &str, &str) = (
    "age-operator",
    "1003600000017",
    "Agenția de Guvernare Electronică",
    "operator",
);
const MCABINET: (&str, &str, &str, &str) = (
    "mcabinet",
    "1003600000017",
    "Agenția de Guvernare Electronică",
    "consumer",
);
const SFS: (&str, &str, &str, &str) = (
    "sfs",
    "1013600000041",
    "Serviciul Fiscal de Stat",
    "provider",
);

impl Cluster {
    fn new() -> Cluster {
        let place = PgPlace::new("mconnect");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pki = root.join("pki");
        let ca = support::dev_pki(&pki, "cluster test CA");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(root.join("catalog")).unwrap();
        for file in ["tax-debts.json", "mconnect.json"] {
            std::fs::copy(
                repo.join("catalog").join(file),
                root.join("catalog").join(file),
            )
            .unwrap();
        }
        let schema = root.join("catalog/schema");
        std::fs::create_dir_all(&schema).unwrap();
        for entry in std::fs::read_dir(repo.join("catalog/schema")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), schema.join(entry.file_name())).unwrap();
        }
        std::fs::create_dir_all(root.join("policies")).unwrap();
        let policies: Value =
            serde_json::from_slice(&std::fs::read(repo.join("policies/mcabinet.json")).unwrap())
                .unwrap();
        let history: Vec<Value> = policies["grants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["id"] == "mcabinet-access-history")
            .cloned()
            .collect();
        assert_eq!(history.len(), 1);
        std::fs::write(
            root.join("policies/mcabinet.json"),
            serde_json::to_vec_pretty(&json!({ "grants": history })).unwrap(),
        )
        .unwrap();

        // The participants, stored before any broker starts (the policy
        // file names MCabinet).
        let cas = mconnect::tls::load_certificates(&pki.join("ca.cert.pem")).unwrap();
        let anchors = mconnect::trust::TrustAnchors::new(&cas).unwrap();
        let store: Arc<dyn StateStore> = Arc::new(PgStore::open(&place.settings(TIMEOUT)).unwrap());
        let registry = mconnect::registry::Registry::open(store, anchors).unwrap();
        for (id, idno, name, role) in [OPERATOR, MCABINET, SFS] {
            let issued = ca.issue(id, name, mconnect::pki::KeyType::Ed25519).unwrap();
            issued.write(&pki, id).unwrap();
            registry
                .upsert(participant(id, idno, name, role, &issued.cert_pem))
                .unwrap();
        }
        Cluster { dir, place }
    }

    fn config(&self, name: &str) -> mconnect::config::Config {
        PgBroker::new(&self.place.url, &format!("audit-{name}")).config(self.dir.path())
    }

    fn admin(&self, broker: &RunningBroker, who: &str) -> AdminClient {
        let pki = self.dir.path().join("pki");
        let credentials = mconnect_sdk::Credentials::from_pki_dir(&pki, who, "").unwrap();
        AdminClient::new(credentials, &format!("https://{}", broker.admin_addr())).unwrap()
    }

    fn consumer(&self, broker: &RunningBroker, who: &str) -> mconnect_sdk::Consumer {
        let pki = self.dir.path().join("pki");
        let credentials = mconnect_sdk::Credentials::from_pki_dir(&pki, who, "").unwrap();
        let broker_pem = std::fs::read_to_string(pki.join("broker.cert.pem")).unwrap();
        mconnect_sdk::Consumer::new(
            credentials,
            &format!("https://{}", broker.data_addr()),
            mconnect_sdk::TrustedKeys::from_pem(&broker_pem).unwrap(),
        )
        .unwrap()
    }
}

fn participant(
    id: &str,
    idno: &str,
    name: &str,
    role: &str,
    pem: &str,
) -> mconnect::registry::Participant {
    serde_json::from_value(json!({
        "id": id,
        "organisation": { "idno": idno, "name": name },
        "roles": [role],
        "certificates": [mconnect::registry::registered_certificate(pem).unwrap()],
    }))
    .unwrap()
}

async fn send(
    client: &AdminClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = client.plain(method, path, body.as_ref()).unwrap();
    client.send(request).await.unwrap()
}

/// Polls `seen` every 5 ms until it holds; how long that took since
/// `started` (taken before the change was sent, so an upper bound on the
/// time from its commit). Fails after 10 s.
async fn until(what: &str, started: Instant, mut seen: impl FnMut() -> bool) -> Duration {
    while !seen() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not seen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!("MEASURED {what}: {took:?}");
    took
}

/// The status of MCabinet's grant from connection request `id` in the
/// rules `broker` is deciding by, if any.
fn grant_status(broker: &RunningBroker, id: &str) -> Option<String> {
    let rules = broker.broker.rules();
    let now = mconnect::exchange::unix_now();
    rules
        .policy
        .grants_of("mcabinet")
        .map(|g| mconnect::policy::view::to_view(g, now))
        .find(|v| v["origin"]["request_id"] == id)
        .map(|v| v["status"].as_str().unwrap_or_default().to_string())
}

/// `/readyz` of the operations listener: status and JSON body.
async fn readyz(broker: &RunningBroker) -> (u16, Value) {
    let (status, body) = support::plain_get(broker.ops_addr(), "/readyz").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// MCabinet's access-history call, answered by the broker itself.
async fn access_history(cluster: &Cluster, broker: &RunningBroker) -> mconnect_sdk::CallOutcome {
    cluster
        .consumer(broker, "mcabinet")
        .call(&mconnect_sdk::Call {
            method: Method::GET,
            path: "/r1/mconnect/access-history?subject=2000000000015".into(),
            body: None,
            calling_user: "2000000000015".into(),
            basis: "md-law-133-2011-art-13".into(),
            reason: "citizen-access-history".into(),
            subject: Some("2000000000015".into()),
            represented_party: None,
            request_id: None,
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_on_one_database_follow_each_other_and_survive_its_loss() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::new).await.unwrap();
    let a = mconnect::app::start(cluster.config("a")).await.unwrap();
    let b = mconnect::app::start(cluster.config("b")).await.unwrap();
    let operator_a = cluster.admin(&a, "age-operator");
    let mut measured = Vec::new();

    // A participant registered on A is on B within a second.
    let newcomer = {
        let pki = cluster.dir.path().join("pki");
        let ca = mconnect::pki::DevCa::load(&pki).unwrap();
        let issued = ca
            .issue(
                "apl-cahul",
                "Primăria Cahul",
                mconnect::pki::KeyType::Ed25519,
            )
            .unwrap();
        issued.write(&pki, "apl-cahul").unwrap();
        participant(
            "apl-cahul",
            "1003600000017",
            "Primăria Cahul",
            "consumer",
            &issued.cert_pem,
        )
    };
    let sent = Instant::now();
    let (status, body) = send(
        &operator_a,
        Method::PUT,
        "/v1/participants/apl-cahul",
        Some(serde_json::to_value(&newcomer).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let registry_b = b.broker.registry().clone();
    measured.push(
        until("participant registered on A, on B", sent, || {
            registry_b.snapshot().get("apl-cahul").is_some()
        })
        .await,
    );

    // A certificate added on A signs on B within a second.
    let rotated = {
        let ca = mconnect::pki::DevCa::load(&cluster.dir.path().join("pki")).unwrap();
        ca.issue(
            "mcabinet",
            "Agenția de Guvernare Electronică",
            mconnect::pki::KeyType::Ed25519,
        )
        .unwrap()
    };
    let mcabinet_a = cluster.admin(&a, "mcabinet");
    let sent = Instant::now();
    let (status, body) = send(
        &mcabinet_a,
        Method::POST,
        "/v1/participants/mcabinet/certificates",
        Some(json!({ "pem": rotated.cert_pem })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let fingerprint = body["fingerprint"].as_str().unwrap().to_string();
    measured.push(
        until("certificate added on A, on B", sent, || {
            registry_b.snapshot().by_fingerprint(&fingerprint).is_some()
        })
        .await,
    );

    // A connection request approved and confirmed on A is a grant in force
    // on B within a second; suspended on A, suspended on B.
    let application: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/connect/mcabinet-tax-debts.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let submission = mcabinet_a
        .signed(
            Method::POST,
            "/v1/connection-requests",
            bytes::Bytes::from(serde_json::to_vec(&application).unwrap()),
            "2000000000015",
        )
        .unwrap();
    let (status, body) = mcabinet_a.send(submission).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    for action in ["review", "approve"] {
        let (status, body) = send(
            &operator_a,
            Method::POST,
            &format!("/v1/connection-requests/{id}/{action}"),
            Some(json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
    }
    let sfs_a = cluster.admin(&a, "sfs");
    let sent = Instant::now();
    let (status, body) = send(
        &sfs_a,
        Method::POST,
        &format!("/v1/connection-requests/{id}/confirm"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(grant_status(&a, &id).as_deref(), Some("active"));
    measured.push(
        until("grant confirmed on A, active on B", sent, || {
            grant_status(&b, &id).as_deref() == Some("active")
        })
        .await,
    );
    let sent = Instant::now();
    let (status, body) = send(
        &operator_a,
        Method::POST,
        &format!("/v1/connection-requests/{id}/suspend"),
        Some(json!({ "reason": "audit finding" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    measured.push(
        until("grant suspended on A, suspended on B", sent, || {
            grant_status(&b, &id).as_deref() == Some("suspended")
        })
        .await,
    );

    // A reload of the rule files on A is followed by B (same files).
    let version_b = b.broker.live_rules().version();
    let sent = Instant::now();
    let (status, body) = send(&operator_a, Method::POST, "/v1/reload", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let live_b = &b.broker;
    measured.push(
        until("rules reloaded on A, reloaded on B", sent, || {
            live_b.live_rules().version() > version_b
        })
        .await,
    );
    for took in &measured {
        assert!(*took <= WITHIN, "{measured:?}");
    }
    let (status, body) = readyz(&b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shared_state"], true, "{body}");

    // PostgreSQL stops. B says so on /readyz, refuses changes, serves calls.
    let outage = Instant::now();
    tokio::task::block_in_place(|| cluster.place.server.stop()).unwrap();
    let registry_b = b.broker.registry().clone();
    until("B notices the loss", outage, || {
        registry_b.feed().unwrap().health().is_err()
    })
    .await;
    let (status, body) = readyz(&b).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["shared_state"], false, "{body}");
    let detail = body["probes"]["shared_state"]["detail"].as_str().unwrap();
    assert!(detail.contains("out of reach"), "{detail}");
    let operator_b = cluster.admin(&b, "age-operator");
    let (status, body) = send(
        &operator_b,
        Method::PUT,
        "/v1/participants/apl-cahul/endpoints",
        Some(json!([])),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("state.unavailable")),
        "{body}"
    );
    // The exchange is identified, its signature verified and its grant
    // found in B's last snapshot and rules; it is then refused by the one
    // check brokers make together that cannot be made without PostgreSQL:
    // the cluster-wide request-id claim, which fails closed (issue 15,
    // deliverable 3) — 503 `state.unavailable` about the request id, never
    // a refusal from a registry or rules gone missing.
    let answered = access_history(&cluster, &b).await;
    assert!(answered.receipt.is_ok(), "{:?}", answered.receipt);
    let text = String::from_utf8_lossy(&answered.body).into_owned();
    let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(answered.status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(problem["code"], "state.unavailable", "{text}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("request id")),
        "{text}"
    );
    // The suspension B learnt before the outage still holds.
    assert_eq!(grant_status(&b, &id).as_deref(), Some("suspended"));

    // PostgreSQL back: B recovers by itself, and changes flow again.
    tokio::task::block_in_place(|| cluster.place.server.restart()).unwrap();
    let recovered = Instant::now();
    let mut ready = false;
    while recovered.elapsed() < Duration::from_secs(20) {
        // A lost the server too; both must be back before A takes a change.
        if readyz(&b).await.0 == 200 && readyz(&a).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "A or B not ready 20 s after PostgreSQL came back");
    println!(
        "MEASURED A and B ready after PostgreSQL restarted: {:?} (outage {:?})",
        recovered.elapsed(),
        recovered - outage
    );
    let sent = Instant::now();
    let (status, body) = send(
        &operator_a,
        Method::POST,
        &format!("/v1/connection-requests/{id}/resume"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let took = until(
        "grant resumed on A after the outage, active on B",
        sent,
        || grant_status(&b, &id).as_deref() == Some("active"),
    )
    .await;
    assert!(took <= WITHIN, "{took:?}");
    // And B takes changes again, which A follows.
    let sent = Instant::now();
    let (status, body) = send(
        &operator_b,
        Method::DELETE,
        &format!("/v1/participants/mcabinet/certificates/{fingerprint}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let registry_a = a.broker.registry().clone();
    let took = until("certificate removed on B, gone on A", sent, || {
        registry_a.snapshot().by_fingerprint(&fingerprint).is_none()
    })
    .await;
    assert!(took <= WITHIN, "{took:?}");

    a.shutdown().await;
    b.shutdown().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
