//! Brokers side by side on one PostgreSQL database (issue 15): a request id
//! accepted by one is refused by the other (PROTOCOL.md section 2), batched
//! so many exchanges share a round trip; without PostgreSQL the exchange is
//! refused (503 `state.unavailable`, fail closed) and accepted again once it
//! is back; a day's quota holds across both brokers; each enforces its share
//! of a grant's rate.
//!
//! Real parts only: the sandbox (example registers as child processes, real
//! TLS) provides the providers and the PKI; two more brokers run from a
//! broker.toml with `[state] postgres` on a PostgreSQL server the test
//! starts (Debian's package, `LocalPostgres`), both behind one public
//! authority, as behind a load balancer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use mconnect::app::RunningBroker;
use mconnect::store::PgStore;
use mconnect_sdk::{CallOutcome, Consumer};
use support::postgres::{PUBLIC, PgPlace, PgSandbox, block_on, copy_policies, with_session};
use support::{assert_ok, assert_refused};

const PATH: &str = "/r1/asp-rsp/person-by-idnp?idnp=2000000000015";
/// The day quota of `apl-cahul-residence` in the cluster's policies.
const DAY_QUOTA: u64 = 9;

/// The sandbox, a PostgreSQL server, and two brokers on one database.
struct Cluster {
    place: PgSandbox,
    a: Option<RunningBroker>,
    b: Option<RunningBroker>,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(|_| {}).await
    }

    /// A cluster whose policies `change` changed further, grant by grant.
    async fn start_with(change: fn(&mut serde_json::Value)) -> Cluster {
        let place = PgSandbox::start(|to| write_policies(to, change)).await;
        let mut cluster = Cluster {
            place,
            a: None,
            b: None,
        };
        cluster.a = Some(cluster.start_broker("a").await);
        cluster.b = Some(cluster.start_broker("b").await);
        cluster
    }

    async fn start_broker(&self, name: &str) -> RunningBroker {
        self.place.broker(name, "").await
    }

    fn a(&self) -> &RunningBroker {
        self.a.as_ref().unwrap()
    }

    fn b(&self) -> &RunningBroker {
        self.b.as_ref().unwrap()
    }

    /// apl-cahul's connection to one broker (receipts by the sandbox's
    /// broker certificate, which both use).
    fn consumer(&self, broker: &RunningBroker) -> Consumer {
        self.place.consumer("apl-cahul", broker.data_addr())
    }

    /// Waits until both brokers count each other as live.
    async fn wait_for_two_live(&self) {
        for _ in 0..100 {
            let live = |r: &RunningBroker| r.broker.shared_state().unwrap().live_brokers();
            if live(self.a()) == 2 && live(self.b()) == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the brokers do not see each other");
    }

    async fn stop(mut self) {
        if let Some(a) = self.a.take() {
            a.shutdown().await;
        }
        if let Some(b) = self.b.take() {
            b.shutdown().await;
        }
        self.place.stop().await;
    }
}

/// The repository's policies, with apl-cahul's grants for
/// asp-rsp/person-by-idnp changed for the tests: social aid with a rate and
/// quota no test reaches, residence with a day quota of [`DAY_QUOTA`].
fn write_policies(to: &Path, change: fn(&mut serde_json::Value)) {
    copy_policies(to, |grant| {
        match grant["id"].as_str().unwrap() {
            "apl-cahul-social-aid" => {
                grant["rate_limit"] =
                    serde_json::json!({"requests": 100000, "per": "second", "burst": 100000});
                grant["quota"] = serde_json::json!({"per_day": 1000000, "per_month": 10000000});
            }
            "apl-cahul-residence" => {
                grant["rate_limit"] =
                    serde_json::json!({"requests": 100000, "per": "second", "burst": 100000});
                grant["quota"] = serde_json::json!({"per_day": DAY_QUOTA});
            }
            _ => {}
        }
        change(grant);
    });
}

/// A request of apl-cahul signed for the public authority; kept as parts so
/// the exact bytes can go to either broker.
#[derive(Clone)]
struct Signed {
    headers: HeaderMap,
}

impl Signed {
    fn new(pki: &Path, reason: &str, basis: &str, nonce: Option<&str>) -> Signed {
        let mut headers = support::social_aid_headers(uuid::Uuid::new_v4());
        headers.insert("mconnect-call-reason", reason.parse().unwrap());
        headers.insert("mconnect-call-basis", basis.parse().unwrap());
        support::sign_as(
            pki,
            "apl-cahul",
            "GET",
            &format!("{PUBLIC}{PATH}"),
            &mut headers,
            mconnect::exchange::unix_now(),
            nonce,
        );
        Signed { headers }
    }

    fn social_aid(pki: &Path) -> Signed {
        Signed::new(pki, "social-aid-eligibility", "md-law-133-2008-art-8", None)
    }

    fn residence(pki: &Path) -> Signed {
        Signed::new(
            pki,
            "residence-verification",
            "md-law-436-2006-art-29",
            None,
        )
    }

    async fn send(&self, consumer: &Consumer, to: &RunningBroker) -> CallOutcome {
        self.send_to(consumer, to.data_addr()).await
    }

    async fn send_to(&self, consumer: &Consumer, to: std::net::SocketAddr) -> CallOutcome {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = format!("https://{to}{PATH}").parse().unwrap();
        *request.headers_mut() = self.headers.clone();
        consumer.send(request).await.unwrap()
    }
}

/// A counter of one broker's `/metrics` (sum over its label sets).
async fn metric(broker: &RunningBroker, name: &str, labels: &str) -> f64 {
    let (status, body) = support::plain_get(broker.ops_addr(), "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_accepted_by_one_broker_is_refused_by_the_other() {
    let cluster = Cluster::start().await;
    let pki = cluster.place.bus.pki();
    let (to_a, to_b) = (cluster.consumer(cluster.a()), cluster.consumer(cluster.b()));

    let signed = Signed::social_aid(&pki);
    assert_ok(&signed.send(&to_a, cluster.a()).await);
    // Byte for byte, within the signature's window, to the other broker:
    // its own replay check has never seen the id; the shared one has.
    let replayed = signed.send(&to_b, cluster.b()).await;
    assert_refused(&replayed, 409, "request.replayed");
    // And back to the first, from the other side.
    let other = Signed::social_aid(&pki);
    assert_ok(&other.send(&to_b, cluster.b()).await);
    assert_refused(
        &other.send(&to_a, cluster.a()).await,
        409,
        "request.replayed",
    );
    // A signature nonce is a single-use id in the cluster too.
    let nonce = format!("nonce-{}", uuid::Uuid::new_v4());
    let first = Signed::new(
        &pki,
        "social-aid-eligibility",
        "md-law-133-2008-art-8",
        Some(&nonce),
    );
    assert_ok(&first.send(&to_a, cluster.a()).await);
    let same_nonce = Signed::new(
        &pki,
        "social-aid-eligibility",
        "md-law-133-2008-art-8",
        Some(&nonce),
    );
    assert_refused(
        &same_nonce.send(&to_b, cluster.b()).await,
        409,
        "request.replayed",
    );
    // All or none: that refused claim did not use up its fresh request id.
    let rows = query(
        &cluster.place.pg.url,
        &format!(
            "SELECT count(*) FROM replay_ids WHERE client = 'apl-cahul' AND id = '{}'",
            same_nonce.headers["mconnect-request-id"].to_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rows, 0, "the refused claim's request id was taken back");
    assert_eq!(
        metric(
            cluster.b(),
            "mconnect_replay_shared_claims_total",
            "outcome=\"replayed\""
        )
        .await,
        2.0
    );

    // The same two requests raced at both brokers at once: one is accepted.
    for _ in 0..5 {
        let signed = Signed::social_aid(&pki);
        let (x, y) = tokio::join!(
            signed.send(&to_a, cluster.a()),
            signed.send(&to_b, cluster.b())
        );
        let mut statuses = [x.status.as_u16(), y.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "exactly one of two is accepted");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_postgres_exchanges_are_refused_and_accepted_again_after_its_restart() {
    let mut cluster = Cluster::start().await;
    let pki = cluster.place.bus.pki();
    let to_a = cluster.consumer(cluster.a());
    assert_ok(&Signed::social_aid(&pki).send(&to_a, cluster.a()).await);

    tokio::task::block_in_place(|| cluster.place.pg.server.stop().unwrap());
    let started = std::time::Instant::now();
    let during = Signed::social_aid(&pki);
    for _ in 0..3 {
        let refused = during.send(&to_a, cluster.a()).await;
        assert_refused(&refused, 503, "state.unavailable");
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "refused within the timeout, not hung: {:?}",
        started.elapsed()
    );
    assert!(
        metric(
            cluster.a(),
            "mconnect_replay_shared_claims_total",
            "outcome=\"unavailable\""
        )
        .await
            >= 3.0
    );

    tokio::task::block_in_place(|| cluster.place.pg.server.restart().unwrap());
    // New requests go through again, on both brokers; the request id that
    // was refused with 503 was not used up, so its retry is accepted too.
    let to_b = cluster.consumer(cluster.b());
    let mut accepted = false;
    for _ in 0..50 {
        let fresh = Signed::social_aid(&pki);
        if fresh.send(&to_a, cluster.a()).await.status == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted, "accepted again after PostgreSQL is back");
    assert_ok(&Signed::social_aid(&pki).send(&to_b, cluster.b()).await);
    assert_ok(&during.send(&to_a, cluster.a()).await);
    assert_refused(
        &during.send(&to_b, cluster.b()).await,
        409,
        "request.replayed",
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_share_round_trips() {
    let cluster = Cluster::start().await;
    let pki = cluster.place.bus.pki();
    let to_a = Arc::new(cluster.consumer(cluster.a()));
    // Warm up the connections.
    assert_ok(&Signed::social_aid(&pki).send(&to_a, cluster.a()).await);
    let batches_before = metric(cluster.a(), "mconnect_replay_shared_batches_total", "").await;
    let claims_before = metric(cluster.a(), "mconnect_replay_shared_claims_total", "").await;

    const CALLS: usize = 200;
    let requests: Vec<Signed> = (0..CALLS).map(|_| Signed::social_aid(&pki)).collect();
    let addr = cluster.a().data_addr();
    let mut calls = tokio::task::JoinSet::new();
    for signed in requests {
        let to_a = Arc::clone(&to_a);
        calls.spawn(async move { signed.send_to(&to_a, addr).await });
    }
    while let Some(outcome) = calls.join_next().await {
        assert_ok(&outcome.unwrap());
    }
    let batches =
        metric(cluster.a(), "mconnect_replay_shared_batches_total", "").await - batches_before;
    let claims =
        metric(cluster.a(), "mconnect_replay_shared_claims_total", "").await - claims_before;
    assert_eq!(claims, CALLS as f64);
    assert!(
        batches < claims / 2.0,
        "{CALLS} concurrent claims took {batches} statements"
    );
    eprintln!("{CALLS} concurrent claims: {batches} shared statements");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_quota_holds_across_both_brokers() {
    let cluster = Cluster::start().await;
    cluster.wait_for_two_live().await;
    let pki = cluster.place.bus.pki();
    let (to_a, to_b) = (cluster.consumer(cluster.a()), cluster.consumer(cluster.b()));
    // Alternating between the brokers, more calls than the quota.
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..(DAY_QUOTA * 2) {
        let signed = Signed::residence(&pki);
        let outcome = if i % 2 == 0 {
            signed.send(&to_a, cluster.a()).await
        } else {
            signed.send(&to_b, cluster.b()).await
        };
        match outcome.status.as_u16() {
            200 => accepted += 1,
            429 => {
                assert_refused(&outcome, 429, "rate.limited");
                limited += 1;
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&outcome.body)),
        }
    }
    // The documented margin: never over the quota; with fewer than
    // 4 × brokers calls left every lease is one call in hand, so exact.
    assert_eq!(
        accepted, DAY_QUOTA,
        "accepted {accepted}, limited {limited}"
    );
    let used = query(
        &cluster.place.pg.url,
        "SELECT coalesce(sum(used), 0)::bigint FROM quota_counts WHERE consumer = 'apl-cahul' AND service = 'asp-rsp/person-by-idnp' AND period = 'day'",
    )
    .await;
    assert_eq!(used, DAY_QUOTA as i64);
    cluster.stop().await;
}

/// One number from `sql` on the database.
async fn query(url: &str, sql: &str) -> i64 {
    with_session(url, async |client| {
        client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_broker_enforces_its_share_of_a_grants_rate() {
    // 4 calls a minute, bursts of 4: with two brokers, 2 each.
    let cluster = Cluster::start_with(|grant| {
        if grant["id"] == "apl-cahul-social-aid" {
            grant["rate_limit"] = serde_json::json!({"requests": 4, "per": "minute", "burst": 4});
        }
    })
    .await;
    cluster.wait_for_two_live().await;
    let pki = cluster.place.bus.pki();
    let (to_a, to_b) = (cluster.consumer(cluster.a()), cluster.consumer(cluster.b()));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            Signed::social_aid(&pki)
                .send(&to_a, cluster.a())
                .await
                .status
                .as_u16(),
        );
    }
    for _ in 0..3 {
        statuses.push(
            Signed::social_aid(&pki)
                .send(&to_b, cluster.b())
                .await
                .status
                .as_u16(),
        );
    }
    // Within the first 30 s (one token back per broker), the cluster
    // allows the grant's burst and no more.
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
    assert_eq!(
        metric(cluster.a(), "mconnect_cluster_brokers", "").await,
        2.0
    );
    cluster.stop().await;
}

/// The quota leases themselves, on two `SharedState`s (two brokers' shared
/// checks) on one database: the documented margin, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_leases_never_pass_the_quota_and_leave_at_most_one_lease_unspent() {
    use mconnect::store::{QuotaRefusal, QuotaWindow, SharedMetrics, SharedState, SharedTuning};
    const QUOTA: u64 = 1000;
    let pg = PgPlace::start("leases").await;
    let url = pg.url.clone();
    let settings = pg.settings(Duration::from_secs(5));
    let old_url = url.clone();
    let (a, b, metrics_a, metrics_b) = tokio::task::spawn_blocking(move || {
        drop(PgStore::open(&settings).unwrap());
        // Counts of a day long over, which the expiry pass at open deletes.
        block_on(execute(
            &old_url,
            "INSERT INTO quota_counts (consumer, service, period, window_no, used) VALUES ('apl-cahul', 'old', 'day', 1, 5)",
        ));
        let (ma, mb) = (SharedMetrics::default(), SharedMetrics::default());
        let a = SharedState::open(&settings, SharedTuning::default(), ma.clone()).unwrap();
        let b = SharedState::open(&settings, SharedTuning::default(), mb.clone()).unwrap();
        (a, b, ma, mb)
    })
    .await
    .unwrap();
    // Both count each other once their heartbeats ran (every 2 s).
    for _ in 0..50 {
        if a.live_brokers() == 2 && b.live_brokers() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((a.live_brokers(), b.live_brokers()), (2, 2));
    let window = QuotaWindow {
        per_day: Some(QUOTA),
        per_month: Some(10 * QUOTA),
        day: now_windows().0,
        month: now_windows().1,
    };
    async fn take(s: &SharedState, window: QuotaWindow) -> Result<(), QuotaRefusal> {
        s.take_quota("apl-cahul", "asp-rsp/person-by-idnp", window)
            .await
    }
    // Alternately until one broker is refused: the other may still hold an
    // unspent lease, which is the margin.
    let (mut spent_a, mut spent_b) = (0u64, 0u64);
    let first_refused_is_a = loop {
        match take(&a, window).await {
            Ok(()) => spent_a += 1,
            Err(QuotaRefusal::Exhausted { day }) => {
                assert!(day);
                break true;
            }
            Err(e) => panic!("{e:?}"),
        }
        match take(&b, window).await {
            Ok(()) => spent_b += 1,
            Err(QuotaRefusal::Exhausted { .. }) => break false,
            Err(e) => panic!("{e:?}"),
        }
        assert!(spent_a + spent_b <= QUOTA, "never over the quota");
    };
    let refused_at = spent_a + spent_b;
    assert!(refused_at <= QUOTA);
    // At that moment remaining < 4 × 2 brokers is not guaranteed: the other
    // broker's lease is at most min(64, remaining / 4) and one count of it
    // was spent, so at most 63 stand unspent.
    assert!(
        QUOTA - refused_at <= 63,
        "refused with {} counts unspent",
        QUOTA - refused_at
    );
    // The other broker spends what it holds, then is refused too: every
    // count handed out was spent, none twice.
    let other = if first_refused_is_a { &b } else { &a };
    let mut drained = 0;
    while take(other, window).await.is_ok() {
        drained += 1;
        assert!(drained <= QUOTA);
    }
    assert_eq!(refused_at + drained, QUOTA);
    assert_eq!(
        query(
            &url,
            "SELECT used FROM quota_counts WHERE period = 'day' AND service <> 'old'"
        )
        .await,
        QUOTA as i64
    );
    assert_eq!(
        query(
            &url,
            "SELECT count(*) FROM quota_counts WHERE service = 'old'"
        )
        .await,
        0,
        "counts of windows long over are deleted"
    );
    // A fraction of a round trip per call: leases, not calls, go to the
    // database.
    let leases = metrics_a
        .leases
        .get_or_create(&mconnect::store::OutcomeLabels { outcome: "granted" })
        .get()
        + metrics_b
            .leases
            .get_or_create(&mconnect::store::OutcomeLabels { outcome: "granted" })
            .get();
    eprintln!(
        "{QUOTA} calls through two brokers took {leases} leases; the first refusal came with {} counts leased and unspent",
        QUOTA - refused_at
    );
    assert!(leases < QUOTA / 4, "{leases} leases for {QUOTA} calls");
    tokio::task::spawn_blocking(move || {
        drop(a);
        drop(b);
        drop(pg);
    })
    .await
    .unwrap();
}

/// The UTC day and month of now, as quotas count them.
fn now_windows() -> (i64, i64) {
    mconnect::policy::quota_windows(mconnect::exchange::unix_now())
}

/// Runs one statement on the database.
async fn execute(url: &str, sql: &str) {
    with_session(url, async |client| {
        client.execute(sql, &[]).await.unwrap();
    })
    .await
}
