//! The checks brokers of one cluster make together in PostgreSQL (issue 15):
//! single-use ids accepted by any broker (PROTOCOL.md section 2), quota
//! counts, and the brokers alive now, whose number divides each grant's rate.
//! The schema is `migrations/postgres/V3__shared_checks.sql`.
//!
//! ## Replay ids: a group commit
//!
//! [`SharedState::claim`] hands the claim to a batcher on the driver thread
//! (the same design as [`super::PgStore`]: a current-thread runtime of its
//! own) and waits for its answer. The batcher is a group commit without a
//! timer: it sends whatever claims are waiting (up to
//! [`SharedTuning::max_batch`]) as soon as fewer than
//! [`SharedTuning::max_in_flight`] statements are in flight, and while that
//! many are, claims gather in its queue until one returns. At low load a
//! claim goes out alone at once (no added wait); under load a batch holds
//! what arrived during one round trip. Each batch is one statement, `INSERT .. SELECT unnest(..) ON CONFLICT
//! (client, id) DO UPDATE .. WHERE seen_at <= now - 24 h RETURNING`, in
//! autocommit: a row comes back only for an id no broker accepted in the
//! last 24 hours, and the answer arrives after its commit is durable
//! (`synchronous_commit` on; `PgStore::open` refused a server without it).
//! So under load the check costs one round trip per batch, not per exchange.
//!
//! Invariants:
//! - a claim is granted only when every one of its ids came back from the
//!   INSERT; any error, timeout or loss of the driver refuses it
//!   ([`ClaimRefusal::Unavailable`]): fail closed, never let through;
//! - a claim is answered within about twice the timeout: at most the
//!   timeout waiting for a statement slot (older claims are refused unsent),
//!   then its statement, bounded by the timeout;
//! - all or none: when some of a claim's ids were free and others not (a
//!   fresh request id with a used nonce), the ones it inserted are deleted
//!   again. That delete is best effort: if it fails, those ids stay used,
//!   which refuses more, never less;
//! - two claims of one batch naming the same (client, id) are decided in the
//!   batch: the first goes to the database, the second is refused;
//! - rows older than 24 hours and [`EXPIRY_MARGIN_SECS`] are deleted by every
//!   broker every [`EXPIRY_EVERY`], at most [`EXPIRY_BATCH`] rows per
//!   statement and [`EXPIRY_BATCHES_PER_PASS`] statements per pass; a row
//!   past 24 hours that is still there is taken over by a new claim.
//!
//! ## Quotas: leased blocks, never over the limit
//!
//! Every (consumer, service) with a quota has its day and month counts in
//! `quota_counts`. A broker takes counts in leases (`mconnect_quota_lease`,
//! one round trip that locks both rows and grants at most what both limits
//! leave) and spends them locally, so the cluster hands out at most the
//! quota, whatever the number of brokers. The price is the other way: counts
//! leased by one broker and not spent yet are not available to another, so
//! a call may be refused (429) while the cluster as a whole has used less
//! than the quota. A lease is at most `min(MAX_LEASE, remaining / (2 ×
//! live brokers))` counts and at least 1 (remaining: what the limits left
//! at this broker's last lease of the key), so counts unused at any moment
//! are at most `live brokers × (L − 1)`, L that lease size: none at all
//! while fewer than `4 × live brokers` calls remain (every lease is then 1,
//! taken for a call in hand). A broker that stops loses its unspent leases
//! (they stay counted). Counts of windows over for two days (two months)
//! are deleted by the expiry pass. A lease that cannot be taken (PostgreSQL unreachable)
//! refuses the call (fail closed); calls within a lease in hand need no
//! round trip.
//!
//! ## Live brokers, for the rate
//!
//! Every broker upserts its row in `brokers` every [`HEARTBEAT_EVERY`] and
//! counts rows seen (by the database's clock) within [`LIVE_FOR`]; the rate
//! limiter divides each grant's rate and burst by that number (rounded up).
//! When the heartbeat fails, the last count stays in force.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot, watch};

use super::{PostgresSettings, build_pool, chain, close_driver, driver_thread};
use crate::store::StoreError;

/// How long an accepted id is refused (PROTOCOL.md section 2).
pub const REPLAY_WINDOW_SECS: i64 = 24 * 3600;
/// Rows are kept this much longer than the window before expiry deletes
/// them, for brokers whose clocks run behind.
pub const EXPIRY_MARGIN_SECS: i64 = 3600;
/// How often each broker deletes expired replay rows.
pub const EXPIRY_EVERY: Duration = Duration::from_secs(60);
/// Rows one expiry statement deletes at most.
pub const EXPIRY_BATCH: i64 = 10_000;
/// Expiry statements in one pass at most.
pub const EXPIRY_BATCHES_PER_PASS: usize = 100;
/// How often each broker says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A broker not seen for this long no longer counts as live.
pub const LIVE_FOR: Duration = Duration::from_secs(10);
/// The largest quota lease.
pub const MAX_LEASE: u64 = 64;
/// Claims waiting for the batcher at most; past it claims are refused.
const QUEUE: usize = 65_536;

/// One batch of claims: the ids no broker accepted in the last 24 hours come
/// back (a row older than that is taken over).
const CLAIM: &str = "INSERT INTO replay_ids (client, id, seen_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
     ON CONFLICT (client, id) DO UPDATE SET seen_at = EXCLUDED.seen_at \
     WHERE replay_ids.seen_at <= EXCLUDED.seen_at - 86400 \
     RETURNING client, id";
/// Takes back ids of claims that were refused as a whole.
const UNCLAIM: &str = "DELETE FROM replay_ids r USING unnest($1::text[], $2::text[], $3::int8[]) AS u(client, id, seen_at) \
     WHERE r.client = u.client AND r.id = u.id AND r.seen_at = u.seen_at";
const EXPIRE: &str = "DELETE FROM replay_ids WHERE ctid IN \
     (SELECT ctid FROM replay_ids WHERE seen_at < $1 LIMIT $2)";
const LEASE: &str =
    "SELECT granted, day_used, month_used FROM mconnect_quota_lease($1, $2, $3, $4, $5, $6, $7)";
const HEARTBEAT: &str =
    "INSERT INTO brokers (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET seen_at = now()";
const LIVE: &str = "SELECT count(*) FROM brokers WHERE seen_at > now() - make_interval(secs => $1)";
const FORGET_BROKER: &str = "DELETE FROM brokers WHERE id = $1";
const FORGET_GONE: &str = "DELETE FROM brokers WHERE seen_at < now() - interval '1 day'";
/// Quota counts of windows over for more than a day or a month (bounded).
const FORGET_COUNTS: &str = "DELETE FROM quota_counts WHERE ctid IN \
     (SELECT ctid FROM quota_counts WHERE (period = 'day' AND window_no < $1) \
      OR (period = 'month' AND window_no < $2) LIMIT $3)";

/// Why a claim was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// A broker of the cluster accepted one of the ids within 24 hours.
    Replayed,
    /// The shared check could not be made (unreachable, timeout, overload).
    Unavailable(String),
}

/// Why a quota count was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// The day's (`day: true`) or the month's quota is used up.
    Exhausted {
        /// Whether the daily limit is the one reached.
        day: bool,
    },
    /// No lease could be taken.
    Unavailable(String),
}

/// A quota as counted here: limits per UTC day and month, and the windows
/// the call falls in (unix day; year × 12 + month − 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindow {
    /// Calls per day, if limited.
    pub per_day: Option<u64>,
    /// Calls per month, if limited.
    pub per_month: Option<u64>,
    /// The unix day.
    pub day: i64,
    /// The month number.
    pub month: i64,
}

/// How claims are batched (tests and benches change it).
#[derive(Debug, Clone, Copy)]
pub struct SharedTuning {
    /// Statements of claims in flight at once at most (each holds one
    /// connection of the pool).
    pub max_in_flight: usize,
    /// Claims in one statement at most.
    pub max_batch: usize,
}

impl Default for SharedTuning {
    fn default() -> Self {
        SharedTuning {
            max_in_flight: 4,
            max_batch: 512,
        }
    }
}

/// The labels of the shared checks' outcome counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted`, `replayed` or `unavailable` (claims); `granted`,
    /// `exhausted` or `unavailable` (leases).
    pub outcome: &'static str,
}

/// What `/metrics` reports of the shared checks.
#[derive(Clone, Debug)]
pub struct SharedMetrics {
    /// Statements of claims sent (one round trip each).
    pub claim_batches: Counter,
    /// Claims per statement.
    pub claim_batch_size: Histogram,
    /// Claims by outcome.
    pub claims: Family<OutcomeLabels, Counter>,
    /// Quota leases by outcome.
    pub leases: Family<OutcomeLabels, Counter>,
    /// Live brokers at the last heartbeat.
    pub brokers: Gauge,
}

impl Default for SharedMetrics {
    fn default() -> Self {
        SharedMetrics {
            claim_batches: Counter::default(),
            claim_batch_size: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
            claims: Family::default(),
            leases: Family::default(),
            brokers: Gauge::default(),
        }
    }
}

impl SharedMetrics {
    /// Registers the metrics (names in ARCHITECTURE.md, `src/ops.rs`).
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "mconnect_replay_shared_batches",
            "Statements that claimed single-use ids in the cluster's shared table (one round trip each)",
            self.claim_batches.clone(),
        );
        registry.register(
            "mconnect_replay_shared_batch_claims",
            "Claims of single-use ids decided by one shared statement",
            self.claim_batch_size.clone(),
        );
        registry.register(
            "mconnect_replay_shared_claims",
            "Claims of single-use ids in the cluster's shared table, by outcome (accepted, replayed, unavailable)",
            self.claims.clone(),
        );
        registry.register(
            "mconnect_quota_leases",
            "Quota leases asked of the cluster's shared counts, by outcome (granted, exhausted, unavailable)",
            self.leases.clone(),
        );
        registry.register(
            "mconnect_cluster_brokers",
            "Brokers of the cluster alive at this broker's last heartbeat (each grant's rate is shared among them)",
            self.brokers.clone(),
        );
    }

    fn claim(&self, outcome: &'static str) {
        self.claims.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    fn lease(&self, outcome: &'static str) {
        self.leases.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// The shared checks of one broker: a pool of its own on a driver thread of
/// its own, the claim batcher, the heartbeat and the expiry of replay rows.
pub struct SharedState {
    inner: Arc<Inner>,
    claims: mpsc::Sender<ClaimJob>,
    driver: tokio::runtime::Handle,
    /// Stops the background tasks (heartbeat, expiry).
    tasks: Option<watch::Sender<bool>>,
    /// Dropping or sending ends the driver thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    pool: Pool,
    timeout: Duration,
    metrics: SharedMetrics,
    broker_id: String,
    live_brokers: AtomicU32,
    allowances: Mutex<Allowances>,
}

/// This broker's leases by (consumer, service); each behind an async lock
/// held while a new lease is taken.
type Allowances = HashMap<(Box<str>, Box<str>), Arc<tokio::sync::Mutex<Allowance>>>;

/// Counts leased by this broker for one (consumer, service).
#[derive(Default)]
struct Allowance {
    day: i64,
    month: i64,
    /// Leased and not spent.
    left: u64,
    /// What the limits left at the last lease (`None` before the first).
    remaining: Option<u64>,
    /// The last lease that failed: calls that waited for it are refused
    /// with it rather than each waiting out a timeout of its own.
    failed: Option<(std::time::Instant, String)>,
}

struct ClaimJob {
    client: String,
    ids: Vec<String>,
    now: i64,
    /// When it was queued: a claim that waited longer than the timeout for
    /// a statement slot is refused without being sent.
    queued: std::time::Instant,
    answer: oneshot::Sender<Result<(), ClaimRefusal>>,
}

impl SharedState {
    /// Connects to the database (whose schema `PgStore::open` brought up to
    /// date), registers this broker and starts the batcher, heartbeat and
    /// expiry. Blocks until done or the settings' timeout ran out.
    pub fn open(
        settings: &PostgresSettings,
        tuning: SharedTuning,
        metrics: SharedMetrics,
    ) -> Result<SharedState, StoreError> {
        let name = settings.describe();
        let open_err = |reason: String| StoreError::Open {
            path: name.clone(),
            reason,
        };
        let timeout = settings.timeout();
        let pool = build_pool(settings.session_config(), settings.pool_size(), timeout)
            .map_err(open_err)?;
        let (driver, stop, thread) = driver_thread().map_err(open_err)?;
        let inner = Arc::new(Inner {
            pool,
            timeout,
            metrics,
            broker_id: uuid::Uuid::now_v7().to_string(),
            live_brokers: AtomicU32::new(1),
            allowances: Mutex::new(HashMap::new()),
        });
        let (claims, queue) = mpsc::channel(QUEUE);
        let (tasks, stopped) = watch::channel(false);
        let state = SharedState {
            inner: Arc::clone(&inner),
            claims,
            driver: driver.clone(),
            tasks: Some(tasks),
            stop: Some(stop),
            thread: Some(thread),
        };
        // The first heartbeat at open: the tables exist, and the broker
        // counts itself among the live ones before its first exchange.
        let first = Arc::clone(&inner);
        let (answer, wait) = std::sync::mpsc::sync_channel(1);
        driver.spawn(async move {
            let _ = answer.send(first.heartbeat().await);
        });
        wait.recv()
            .unwrap_or_else(|_| Err("the PostgreSQL thread has stopped".into()))
            .map_err(|reason| {
                open_err(format!(
                    "the shared checks' tables are not usable (is the schema migrated?): {reason}"
                ))
            })?;
        driver.spawn(batcher(Arc::clone(&inner), queue, tuning));
        driver.spawn(background(Arc::clone(&inner), stopped));
        tracing::info!(database = %name, broker = %inner.broker_id, brokers = inner.live_brokers.load(Ordering::Relaxed), "shared checks open on PostgreSQL");
        Ok(state)
    }

    /// This broker's id in the `brokers` table.
    pub fn broker_id(&self) -> &str {
        &self.inner.broker_id
    }

    /// Live brokers at the last heartbeat (at least 1).
    pub fn live_brokers(&self) -> u32 {
        self.inner.live_brokers.load(Ordering::Relaxed).max(1)
    }

    /// The metrics handles.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.inner.metrics
    }

    /// Uses up `ids` for `client` in the cluster at `now` (the broker's
    /// clock, unix seconds), or says why not; all or none.
    pub async fn claim(&self, client: &str, ids: &[String], now: i64) -> Result<(), ClaimRefusal> {
        let (answer, wait) = oneshot::channel();
        let job = ClaimJob {
            client: client.to_owned(),
            ids: ids.to_vec(),
            now,
            queued: std::time::Instant::now(),
            answer,
        };
        if self.claims.try_send(job).is_err() {
            self.inner.metrics.claim("unavailable");
            return Err(ClaimRefusal::Unavailable(
                "too many claims are waiting for the shared check".into(),
            ));
        }
        // The batcher answers every job, within the timeout; a dropped
        // sender means the driver stopped.
        wait.await.unwrap_or_else(|_| {
            Err(ClaimRefusal::Unavailable(
                "the PostgreSQL thread has stopped".into(),
            ))
        })
    }

    /// Takes one count of (consumer, service) under `quota`: from this
    /// broker's lease, or from a new lease (one round trip).
    pub async fn take_quota(
        &self,
        consumer: &str,
        service: &str,
        quota: QuotaWindow,
    ) -> Result<(), QuotaRefusal> {
        let cell = {
            let mut allowances = self
                .inner
                .allowances
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                allowances
                    .entry((consumer.into(), service.into()))
                    .or_default(),
            )
        };
        // Held across the lease: one lease at a time per key on this broker.
        let asked = std::time::Instant::now();
        let mut allowance = cell.lock().await;
        if allowance.day != quota.day || allowance.month != quota.month {
            *allowance = Allowance {
                day: quota.day,
                month: quota.month,
                ..Allowance::default()
            };
        }
        if allowance.left > 0 {
            allowance.left -= 1;
            return Ok(());
        }
        if let Some((at, why)) = &allowance.failed
            && *at >= asked
        {
            self.inner.metrics.lease("unavailable");
            return Err(QuotaRefusal::Unavailable(why.clone()));
        }
        let brokers = u64::from(self.live_brokers());
        let want = match allowance.remaining {
            None => 1,
            Some(remaining) => (remaining / (2 * brokers)).clamp(1, MAX_LEASE),
        };
        let inner = Arc::clone(&self.inner);
        let (consumer_owned, service_owned) = (consumer.to_owned(), service.to_owned());
        let leased = self
            .on_driver(move |pool| async move {
                let client = pool.get().await.map_err(|e| chain(&e))?;
                let statement = client.prepare_cached(LEASE).await.map_err(|e| chain(&e))?;
                let as_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                let row = client
                    .query_one(
                        &statement,
                        &[
                            &consumer_owned,
                            &service_owned,
                            &quota.day,
                            &as_i64(quota.per_day),
                            &quota.month,
                            &as_i64(quota.per_month),
                            &i64::try_from(want).unwrap_or(1),
                        ],
                    )
                    .await
                    .map_err(|e| chain(&e))?;
                let get = |i: usize| -> Result<u64, String> {
                    row.try_get::<_, i64>(i)
                        .map(|v| u64::try_from(v).unwrap_or(0))
                        .map_err(|e| chain(&e))
                };
                Ok((get(0)?, get(1)?, get(2)?))
            })
            .await;
        let (granted, day_used, month_used) = match leased {
            Ok(leased) => leased,
            Err(reason) => {
                inner.metrics.lease("unavailable");
                allowance.failed = Some((std::time::Instant::now(), reason.clone()));
                return Err(QuotaRefusal::Unavailable(reason));
            }
        };
        allowance.failed = None;
        let room =
            |limit: Option<u64>, used: u64| limit.map_or(u64::MAX, |l| l.saturating_sub(used));
        allowance.remaining =
            Some(room(quota.per_day, day_used).min(room(quota.per_month, month_used)));
        if granted == 0 {
            inner.metrics.lease("exhausted");
            return Err(QuotaRefusal::Exhausted {
                day: quota.per_day.is_some_and(|l| day_used >= l),
            });
        }
        inner.metrics.lease("granted");
        allowance.left = granted - 1;
        Ok(())
    }

    /// Gives back a count taken by [`SharedState::take_quota`] for a call
    /// that was then refused (by the rate): it stays leased to this broker.
    pub fn return_quota(&self, consumer: &str, service: &str, quota: QuotaWindow) {
        let cell = {
            let allowances = self
                .inner
                .allowances
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            allowances
                .get(&(Box::<str>::from(consumer), Box::<str>::from(service)))
                .cloned()
        };
        // Only when no lease is being taken for the key: a count is at worst
        // lost (counted, not spent), never made up.
        if let Some(cell) = cell
            && let Ok(mut allowance) = cell.try_lock()
            && allowance.day == quota.day
            && allowance.month == quota.month
        {
            allowance.left += 1;
        }
    }

    /// Runs `work` on the driver thread, bounded by the timeout.
    async fn on_driver<T, F>(
        &self,
        work: impl FnOnce(Pool) -> F + Send + 'static,
    ) -> Result<T, String>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, String>> + Send + 'static,
    {
        let pool = self.inner.pool.clone();
        let timeout = self.inner.timeout;
        let handle = self.driver.spawn(async move {
            tokio::time::timeout(timeout, work(pool))
                .await
                .unwrap_or_else(|_| Err(format!("no answer from PostgreSQL within {timeout:?}")))
        });
        handle
            .await
            .unwrap_or_else(|_| Err("the PostgreSQL thread has stopped".into()))
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        if let Some(tasks) = self.tasks.take() {
            let _ = tasks.send(true);
        }
        // Leave the cluster at once rather than after LIVE_FOR, so the
        // others take back this broker's share of every rate.
        let inner = Arc::clone(&self.inner);
        let (answer, wait) = std::sync::mpsc::sync_channel(1);
        self.driver.spawn(async move {
            let forget = async {
                let client = inner.pool.get().await.ok()?;
                client
                    .execute(FORGET_BROKER, &[&inner.broker_id])
                    .await
                    .ok()
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), forget).await;
            let _ = answer.send(());
        });
        let _ = wait.recv();
        close_driver(&self.inner.pool, &mut self.stop, &mut self.thread);
    }
}

impl Inner {
    /// Upserts this broker's row and counts the live ones.
    async fn heartbeat(&self) -> Result<(), String> {
        let work = async {
            let client = self.pool.get().await.map_err(|e| chain(&e))?;
            client
                .execute(HEARTBEAT, &[&self.broker_id])
                .await
                .map_err(|e| chain(&e))?;
            let live: i64 = client
                .query_one(LIVE, &[&LIVE_FOR.as_secs_f64()])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| chain(&e))?;
            // Our own row is committed, so at least 1.
            let live = u32::try_from(live.max(1)).unwrap_or(u32::MAX);
            self.live_brokers.store(live, Ordering::Relaxed);
            self.metrics.brokers.set(i64::from(live));
            Ok(())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }

    /// One expiry pass: bounded batches of rows past the window and margin.
    async fn expire(&self) -> Result<u64, String> {
        let cutoff = mconnect_sdk::protocol::unix_now() - REPLAY_WINDOW_SECS - EXPIRY_MARGIN_SECS;
        let mut deleted = 0;
        for _ in 0..EXPIRY_BATCHES_PER_PASS {
            let client = self.pool.get().await.map_err(|e| chain(&e))?;
            let n = tokio::time::timeout(
                self.timeout,
                client.execute(EXPIRE, &[&cutoff, &EXPIRY_BATCH]),
            )
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| chain(&e))?;
            deleted += n;
            if n < EXPIRY_BATCH as u64 {
                break;
            }
        }
        Ok(deleted)
    }

    /// Drops leases of days that are over.
    fn prune_allowances(&self) {
        let today = mconnect_sdk::protocol::unix_now().div_euclid(86_400);
        let mut allowances = self
            .allowances
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        allowances.retain(|_, cell| cell.try_lock().map_or(true, |a| a.day >= today - 1));
    }
}

/// Heartbeat, expiry of replay rows and of gone brokers, until stopped.
async fn background(inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expiry = tokio::time::interval(EXPIRY_EVERY);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            _ = heartbeat.tick() => {
                if let Err(e) = inner.heartbeat().await {
                    tracing::warn!(error = %e, "cluster heartbeat failed; the last count of live brokers stays in force");
                }
                inner.prune_allowances();
            }
            _ = expiry.tick() => {
                match inner.expire().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "expired shared replay ids"),
                    Err(e) => tracing::warn!(error = %e, "expiry of shared replay ids failed; retried next pass"),
                }
                if let Ok(client) = inner.pool.get().await {
                    let _ = tokio::time::timeout(inner.timeout, client.execute(FORGET_GONE, &[])).await;
                    let (day, month) = crate::policy::quota_windows(mconnect_sdk::protocol::unix_now());
                    let _ = tokio::time::timeout(
                        inner.timeout,
                        client.execute(FORGET_COUNTS, &[&(day - 2), &(month - 2), &EXPIRY_BATCH]),
                    )
                    .await;
                }
            }
        }
    }
}

/// Gathers claims into batches (see the module docs) until the queue closes.
async fn batcher(inner: Arc<Inner>, mut queue: mpsc::Receiver<ClaimJob>, tuning: SharedTuning) {
    let max = tuning.max_batch.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(tuning.max_in_flight.max(1)));
    while let Some(first) = queue.recv().await {
        // While every slot is taken, claims wait in the queue: the group.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Claims that waited out the timeout behind statements that hang
        // are refused now, so no exchange waits more than twice the
        // timeout (queue, then its own statement).
        let (stale, batch): (Vec<ClaimJob>, Vec<ClaimJob>) = batch
            .into_iter()
            .partition(|job| job.queued.elapsed() > inner.timeout);
        for job in stale {
            inner.metrics.claim("unavailable");
            let _ = job.answer.send(Err(ClaimRefusal::Unavailable(format!(
                "waited more than {:?} for the shared check",
                inner.timeout
            ))));
        }
        if batch.is_empty() {
            continue;
        }
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            decide(inner, batch).await;
            drop(slot);
        });
    }
}

/// Decides one batch with one statement and answers every claim in it.
async fn decide(inner: Arc<Inner>, batch: Vec<ClaimJob>) {
    // Claims naming a (client, id) an earlier claim of the batch names are
    // refused here: one statement may not touch a row twice.
    let mut named: HashSet<(&str, &str)> = HashSet::new();
    let mut sent = Vec::with_capacity(batch.len());
    let mut duplicate = Vec::new();
    for (i, job) in batch.iter().enumerate() {
        if job
            .ids
            .iter()
            .any(|id| named.contains(&(job.client.as_str(), id.as_str())))
        {
            duplicate.push(i);
        } else {
            named.extend(job.ids.iter().map(|id| (job.client.as_str(), id.as_str())));
            sent.push(i);
        }
    }
    let (mut clients, mut ids, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &sent {
        for id in &batch[i].ids {
            clients.push(batch[i].client.clone());
            ids.push(id.clone());
            seen.push(batch[i].now);
        }
    }
    inner.metrics.claim_batches.inc();
    inner.metrics.claim_batch_size.observe(sent.len() as f64);
    let work = async {
        let client = inner.pool.get().await.map_err(|e| chain(&e))?;
        let statement = client.prepare_cached(CLAIM).await.map_err(|e| chain(&e))?;
        let rows = client
            .query(&statement, &[&clients, &ids, &seen])
            .await
            .map_err(|e| chain(&e))?;
        rows.iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
            .collect::<Result<HashSet<(String, String)>, tokio_postgres::Error>>()
            .map_err(|e| chain(&e))
    };
    let outcome = tokio::time::timeout(inner.timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from PostgreSQL within {:?} (the ids may or may not be recorded)",
                inner.timeout
            ))
        });
    let mut answers: Vec<Option<Result<(), ClaimRefusal>>> = vec![None; batch.len()];
    for i in duplicate {
        answers[i] = Some(Err(ClaimRefusal::Replayed));
    }
    let mut take_back = (Vec::new(), Vec::new(), Vec::new());
    match outcome {
        Ok(inserted) => {
            for &i in &sent {
                let job = &batch[i];
                let mine: Vec<&String> = job
                    .ids
                    .iter()
                    .filter(|id| inserted.contains(&(job.client.clone(), (*id).clone())))
                    .collect();
                answers[i] = Some(if mine.len() == job.ids.len() {
                    Ok(())
                } else {
                    for id in mine {
                        take_back.0.push(job.client.clone());
                        take_back.1.push(id.clone());
                        take_back.2.push(job.now);
                    }
                    Err(ClaimRefusal::Replayed)
                });
            }
        }
        Err(reason) => {
            tracing::warn!(reason = %reason, claims = sent.len(), "shared replay check failed; refusing its claims");
            for &i in &sent {
                answers[i] = Some(Err(ClaimRefusal::Unavailable(reason.clone())));
            }
        }
    }
    for (job, answer) in batch.into_iter().zip(answers) {
        let answer = answer.unwrap_or(Err(ClaimRefusal::Unavailable("not decided".into())));
        inner.metrics.claim(match &answer {
            Ok(()) => "accepted",
            Err(ClaimRefusal::Replayed) => "replayed",
            Err(ClaimRefusal::Unavailable(_)) => "unavailable",
        });
        let _ = job.answer.send(answer);
    }
    if !take_back.0.is_empty() {
        let (clients, ids, seen) = take_back;
        let undo = async {
            let client = inner.pool.get().await.map_err(|e| chain(&e))?;
            client
                .execute(UNCLAIM, &[&clients, &ids, &seen])
                .await
                .map_err(|e| chain(&e))
        };
        match tokio::time::timeout(inner.timeout, undo).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "ids of refused claims stay used"),
            Err(_) => tracing::warn!("ids of refused claims stay used (timeout)"),
        }
    }
}
