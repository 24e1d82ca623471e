//! Audit per broker, searchable together (issue 15): each broker of a
//! cluster keeps its own Merkle log and signing key and ships every record,
//! in order and exactly once, to PostgreSQL (`audit::ship`,
//! `store::postgres::audit_copy`); auditor searches and citizens' access
//! history on any broker find the records of all; the shipped copy is
//! checked against each broker's log (`audit::ship::verify_shipped`, what
//! `mconnect audit verify --shipped` runs).
//!
//! Real parts only: the sandbox's providers and PKI, a PostgreSQL server of
//! the test's own (`LocalPostgres`), brokers from broker.toml with `[state]
//! postgres` — in this process, and, where a broker must die by SIGKILL,
//! as a child process (this test executable run again as a broker).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::Full;
use mconnect::app::RunningBroker;
use mconnect::audit::ship::{AuditCopy, BROKER_ID_FILE, verify_shipped};
use mconnect::store::{PgAuditCopy, PgStore, PostgresSettings};
use mconnect_sdk::{CallOutcome, Consumer};
use support::postgres::{
    PUBLIC, PgPlace, PgSandbox, copy_policies, sandbox_broker_config, with_session,
};

const PERSON: &str = "2000000000015";
const PATH: &str = "/r1/asp-rsp/person-by-idnp?idnp=2000000000015";
const AUDITOR_BASIS: &str = "md-law-133-2011-art-27";
const AUDITOR_REASON: &str = "supervision-of-personal-data-processing";
/// Env of the child-process broker (see `broker_child`).
const CHILD_DIR: &str = "CLUSTER_AUDIT_CHILD_DIR";

/// The sandbox, a PostgreSQL server with the sandbox's participants, and
/// the directory the cluster's brokers live in.
struct Place {
    cluster: PgSandbox,
}

impl Place {
    async fn start() -> Place {
        let cluster = PgSandbox::start(|to| {
            // apl-cahul's rates and quotas out of reach.
            copy_policies(to, |grant| {
                if grant["consumer"] == "apl-cahul" {
                    grant["rate_limit"] =
                        serde_json::json!({"requests": 100000, "per": "second", "burst": 100000});
                    grant.as_object_mut().unwrap().remove("quota");
                }
            })
        })
        .await;
        let dir = cluster.dir.path();
        std::fs::write(
            dir.join("sandbox-dir"),
            cluster.bus.dir.path().display().to_string(),
        )
        .unwrap();
        std::fs::write(dir.join("pg-url"), &cluster.pg.url).unwrap();
        Place { cluster }
    }

    async fn broker(&self, name: &str) -> RunningBroker {
        self.cluster.broker(name, &broker_id(name)).await
    }

    fn audit_dir(&self, name: &str) -> PathBuf {
        self.cluster.dir.path().join(format!("audit-{name}"))
    }

    fn broker_id(&self, name: &str) -> String {
        std::fs::read_to_string(self.audit_dir(name).join(BROKER_ID_FILE))
            .unwrap()
            .trim()
            .to_string()
    }

    fn consumer(&self, participant: &str, data: std::net::SocketAddr) -> Consumer {
        self.cluster.consumer(participant, data)
    }

    /// Checks the copy against the log of broker `name` (read from its
    /// directory, as `mconnect audit verify --shipped` does).
    async fn verify(&self, name: &str) -> mconnect::audit::ship::ShippedReport {
        let settings = PostgresSettings::from_url(&self.cluster.pg.url).unwrap();
        let dir = self.audit_dir(name);
        let id = self.broker_id(name);
        tokio::task::spawn_blocking(move || {
            let copy = PgAuditCopy::open(&settings).unwrap();
            verify_shipped(&dir, &copy, &id).unwrap()
        })
        .await
        .unwrap()
    }

    async fn stop(self) {
        self.cluster.stop().await;
    }
}

/// The `[audit]` section of cluster broker `name`'s broker.toml.
fn broker_id(name: &str) -> String {
    format!("[audit]\nbroker_id = \"broker-{name}\"\n")
}

/// A request for `path` to the broker whose data plane is `data`, with
/// `headers` signed by `participant` for the public authority.
fn signed(
    place: &Place,
    participant: &str,
    mut headers: HeaderMap,
    path: &str,
    data: std::net::SocketAddr,
) -> http::Request<Full<Bytes>> {
    support::sign_as(
        &place.cluster.bus.pki(),
        participant,
        "GET",
        &format!("{PUBLIC}{path}"),
        &mut headers,
        mconnect::exchange::unix_now(),
        None,
    );
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = format!("https://{data}{path}").parse().unwrap();
    *request.headers_mut() = headers;
    request
}

/// apl-cahul's social-aid lookup of [`PERSON`], signed for the public
/// authority.
fn social_aid(place: &Place, data: std::net::SocketAddr) -> http::Request<Full<Bytes>> {
    let headers = support::social_aid_headers(uuid::Uuid::new_v4());
    signed(place, "apl-cahul", headers, PATH, data)
}

/// [`social_aid`], sent to `data`.
async fn call(place: &Place, consumer: &Consumer, data: std::net::SocketAddr) -> CallOutcome {
    consumer.send(social_aid(place, data)).await.unwrap()
}

/// A search on a broker's admin API as the sandbox auditor.
async fn audit_search(place: &Place, admin: &str, query: &str) -> serde_json::Value {
    let client = support::admin_client(place.cluster.bus.dir.path(), admin, "cnpdcp-audit");
    let mut request = client
        .plain(Method::GET, &format!("/v1/audit/records?{query}"), None)
        .unwrap();
    request
        .headers_mut()
        .insert("mconnect-call-basis", AUDITOR_BASIS.parse().unwrap());
    request
        .headers_mut()
        .insert("mconnect-call-reason", AUDITOR_REASON.parse().unwrap());
    let answer = tokio::time::timeout(Duration::from_secs(20), client.send_full(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// (rows, min seq, max seq, shipped_seq) of one broker in the copy.
async fn copy_of(url: &str, broker: &str) -> (i64, i64, i64, i64) {
    with_session(url, async |client| {
        let row = client
            .query_one(
                "SELECT count(*), coalesce(min(seq), -1), coalesce(max(seq), -1), \
                 (SELECT shipped_seq FROM audit_shipping WHERE broker_id = $1) \
                 FROM audit_records WHERE broker_id = $1",
                &[&broker],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    })
    .await
}

async fn execute(url: &str, sql: &str) -> u64 {
    with_session(url, async |client| client.execute(sql, &[]).await.unwrap()).await
}

/// Waits (at most `within`) until `broker` has shipped everything.
async fn wait_shipped(broker: &RunningBroker, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = broker.broker.audit().shipping_status().unwrap();
        if status.lag == 0 && status.error.is_none() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not shipped within {within:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The copy holds exactly the broker's records: seqs 0..n, once each.
async fn assert_complete(place: &Place, name: &str, tree_size: u64) {
    let id = place.broker_id(name);
    let (rows, min, max, shipped) = copy_of(&place.cluster.pg.url, &id).await;
    let n = i64::try_from(tree_size).unwrap();
    assert_eq!(
        (rows, min, max, shipped),
        (n, 0, n - 1, n),
        "broker {id}: rows, first and last seq, position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_brokers_ship_in_order_search_together_and_the_copy_verifies() {
    let mut place = Place::start().await;
    let a = place.broker("a").await;
    let b = place.broker("b").await;
    let to_a = place.consumer("apl-cahul", a.data_addr());
    let to_b = place.consumer("apl-cahul", b.data_addr());
    for _ in 0..10 {
        assert_eq!(call(&place, &to_a, a.data_addr()).await.status, 200);
        assert_eq!(call(&place, &to_b, b.data_addr()).await.status, 200);
    }
    let took = wait_shipped(&a, Duration::from_secs(10)).await;
    wait_shipped(&b, Duration::from_secs(10)).await;
    println!("MEASURED shipped within {took:?} after the last call");
    assert_complete(&place, "a", a.broker.audit().tree_size()).await;
    assert_complete(&place, "b", b.broker.audit().tree_size()).await;

    // An auditor on broker A finds the calls made through B, named by
    // broker and seq; B's own log holds each at that seq, byte for byte.
    let page = audit_search(
        &place,
        &format!("https://{}", a.admin_addr()),
        &format!("subject={PERSON}&event=exchange&limit=1000"),
    )
    .await;
    assert_eq!(page["scope"], "cluster");
    assert_eq!(page["broker"], "broker-a");
    let items = page["items"].as_array().unwrap();
    let from_b: Vec<_> = items.iter().filter(|i| i["broker"] == "broker-b").collect();
    let from_a = items.iter().filter(|i| i["broker"] == "broker-a").count();
    assert_eq!((from_a, from_b.len()), (10, 10), "{page}");
    for item in &from_b {
        let seq = item["seq"].as_u64().unwrap();
        let (_, leaf) = b.broker.audit().record(seq).unwrap().unwrap();
        use base64::Engine;
        let shown = base64::engine::general_purpose::STANDARD
            .decode(item["leaf"].as_str().unwrap())
            .unwrap();
        assert_eq!(shown, leaf, "record {seq} of broker-b");
    }
    // Newest first across both brokers, and pages that meet without loss.
    let mut cursor: Option<String> = None;
    let mut paged = Vec::new();
    for _ in 0..20 {
        let query = format!(
            "subject={PERSON}&event=exchange&limit=3{}",
            cursor
                .as_ref()
                .map(|c| format!("&cursor={c}"))
                .unwrap_or_default()
        );
        let page = audit_search(&place, &format!("https://{}", b.admin_addr()), &query).await;
        for item in page["items"].as_array().unwrap() {
            paged.push((
                item["broker"].as_str().unwrap().to_string(),
                item["seq"].as_u64().unwrap(),
            ));
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let all: Vec<_> = items
        .iter()
        .map(|i| {
            (
                i["broker"].as_str().unwrap().to_string(),
                i["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(paged, all, "pages of 3 from broker B = one page from A");
    // `scope=local` is this broker's own log only.
    let local = audit_search(
        &place,
        &format!("https://{}", a.admin_addr()),
        &format!("subject={PERSON}&event=exchange&limit=1000&scope=local"),
    )
    .await;
    assert_eq!(local["items"].as_array().unwrap().len(), 10);
    assert_eq!(local["scope"], "local");

    // A citizen's access history on broker A counts the calls through B.
    let portal = place.consumer("mconnect-portal", a.data_addr());
    let path = format!("/r1/mconnect/find-usage?personCode={PERSON}&limit=100");
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("mconnect-client", "mconnect-portal"),
        ("mconnect-calling-user", PERSON),
        ("mconnect-call-basis", "md-law-133-2011-art-13"),
        ("mconnect-call-reason", "citizen-access-history"),
        ("mconnect-subject", PERSON),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    headers.insert(
        "mconnect-request-id",
        uuid::Uuid::new_v4().to_string().parse().unwrap(),
    );
    let request = signed(&place, "mconnect-portal", headers, &path, a.data_addr());
    let usage = portal.send(request).await.unwrap();
    assert_eq!(
        usage.status,
        200,
        "{}",
        String::from_utf8_lossy(&usage.body)
    );
    let usage: serde_json::Value = serde_json::from_slice(&usage.body).unwrap();
    assert_eq!(usage["totalCount"], 20, "{usage}");

    // The copy verifies against both logs.
    for name in ["a", "b"] {
        let report = place.verify(name).await;
        assert!(report.is_ok(), "{name}: {:?}", report.problems);
        assert!(
            report.compared >= 10 && report.compared == report.position.shipped,
            "{report:?}"
        );
    }

    // PostgreSQL killed (SIGKILL) during calls: the calls are refused
    // (fail closed), their refusals recorded locally; shipping backs off,
    // then catches up once the server is back.
    tokio::task::block_in_place(|| place.cluster.pg.server.crash().unwrap());
    for _ in 0..5 {
        let out = call(&place, &to_a, a.data_addr()).await;
        assert_eq!(out.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let status = a.broker.audit().shipping_status().unwrap();
    assert!(status.lag >= 5, "{status:?}");
    tokio::task::block_in_place(|| place.cluster.pg.server.restart().unwrap());
    let restarted = Instant::now();
    let mut accepted = false;
    for _ in 0..50 {
        if call(&place, &to_a, a.data_addr()).await.status == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted);
    let caught_up = wait_shipped(&a, Duration::from_secs(30)).await;
    println!(
        "MEASURED caught up {:?} after the restart",
        restarted.elapsed()
    );
    let _ = caught_up;
    assert_complete(&place, "a", a.broker.audit().tree_size()).await;
    let report = place.verify("a").await;
    assert!(report.is_ok(), "{:?}", report.problems);

    // One shipped row changed behind the brokers' backs: the check names it.
    let changed = execute(
        &place.cluster.pg.url,
        "UPDATE audit_records SET record = overlay(record placing '\\x20'::bytea from 2 for 1) \
         WHERE broker_id = 'broker-b' AND seq = 3",
    )
    .await;
    assert_eq!(changed, 1);
    let report = place.verify("b").await;
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.starts_with("record 3:")),
        "{:?}",
        report.problems
    );
    // A deleted row is a gap.
    execute(
        &place.cluster.pg.url,
        "DELETE FROM audit_records WHERE broker_id = 'broker-a' AND seq = 5",
    )
    .await;
    let report = place.verify("a").await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p == "record 5: missing from the copy"),
        "{:?}",
        report.problems
    );

    a.shutdown().await;
    b.shutdown().await;
    place.stop().await;
}

/// A broker as a child process: this test executable run again with
/// [`CHILD_DIR`] set, so that it can be killed with SIGKILL.
struct ChildBroker {
    child: Option<Child>,
    data: std::net::SocketAddr,
    ops: std::net::SocketAddr,
}

impl ChildBroker {
    fn start(place: &Place, name: &str) -> ChildBroker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "broker_child", "--ignored", "--nocapture"])
            .env(CHILD_DIR, place.cluster.dir.path())
            .env("CLUSTER_AUDIT_CHILD_NAME", name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("BROKER ") {
                    let addrs: Vec<std::net::SocketAddr> =
                        rest.split(' ').map(|a| a.parse().unwrap()).collect();
                    let _ = tx.send(addrs);
                }
            }
        });
        let addrs = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child broker started");
        ChildBroker {
            child: Some(child),
            data: addrs[0],
            ops: addrs[1],
        }
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap();
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = support::plain_get(self.ops, "/metrics").await;
        assert_eq!(status, 200);
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Not a test: the body of a child-process broker (see [`ChildBroker`]).
#[test]
#[ignore = "run by the tests of this file as a child process"]
fn broker_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let name = std::env::var("CLUSTER_AUDIT_CHILD_NAME").unwrap();
    let sandbox = PathBuf::from(std::fs::read_to_string(dir.join("sandbox-dir")).unwrap());
    let url = std::fs::read_to_string(dir.join("pg-url")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let running = mconnect::app::start(sandbox_broker_config(
            &sandbox,
            &dir,
            &name,
            &url,
            &broker_id(&name),
        ))
        .await
        .unwrap();
        println!("BROKER {} {}", running.data_addr(), running.ops_addr());
        // Bounded: the parent kills it long before.
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_mid_load_resumes_shipping_without_gaps_or_duplicates() {
    let place = Arc::new(Place::start().await);
    let mut a = tokio::task::block_in_place(|| ChildBroker::start(&place, "a"));
    let consumer = Arc::new(place.consumer("apl-cahul", a.data));
    // Load from 8 callers; SIGKILL after 1.5 s, in the middle of it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (place, consumer, stop, data) = (place.clone(), consumer.clone(), stop.clone(), a.data);
        callers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for _ in 0..10_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let request = social_aid(&place, data);
                match tokio::time::timeout(Duration::from_secs(5), consumer.send(request)).await {
                    Ok(Ok(out)) if out.status == 200 => ok += 1,
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            ok
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shipped_before = copy_of(&place.cluster.pg.url, "broker-a").await.3;
    a.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for caller in callers {
        answered += caller.await.unwrap();
    }
    println!(
        "MEASURED {answered} calls answered before SIGKILL; {shipped_before} records shipped when it came"
    );
    assert!(answered > 0);

    // Restarted on its log: shipping resumes from the copy's position.
    let a = tokio::task::block_in_place(|| ChildBroker::start(&place, "a"));
    let consumer = place.consumer("apl-cahul", a.data);
    for _ in 0..3 {
        assert_eq!(call(&place, &consumer, a.data).await.status, 200);
    }
    let started = Instant::now();
    let tree_size = loop {
        let lag = a.metric("mconnect_audit_shipping_lag_records").await;
        if lag == Some(0.0) {
            break a.metric("mconnect_audit_tree_size").await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "shipping did not catch up: lag {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let tree_size = tree_size as u64;
    assert!(tree_size >= answered + 3, "{tree_size} < {answered} + 3");
    assert_complete(&place, "a", tree_size).await;
    drop(a);
    let report = place.verify("a").await;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.compared, tree_size);
    let place = Arc::into_inner(place).expect("no caller holds the place");
    place.stop().await;
}

#[test]
fn a_copy_that_holds_nothing_of_a_broker_fails_verification() {
    // Guards the checker itself against passing vacuously: an unknown
    // broker id is a problem, not an empty success.
    let pg = PgPlace::new("empty");
    let settings = PostgresSettings::from_url(&pg.url).unwrap();
    drop(PgStore::open(&settings).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let copy = PgAuditCopy::open(&settings).unwrap();
    assert_eq!(copy.position("nobody", false).unwrap(), None);
    std::fs::create_dir_all(dir.path().join("log/segments")).unwrap();
    let report = verify_shipped(&dir.path().join("log"), &copy, "nobody").unwrap();
    assert!(!report.is_ok());
}
