//! Refusals at a bounded audit cost: each client certificate gets a budget of
//! individually audited refusals; the rest are counted, one aggregate record
//! per (client certificate, problem code, second).
//!
//! One client sending thousands of unsigned requests a second once wrote an
//! fsynced record for each (megabytes a second) until the audit disk filled.
//! Now:
//!
//! - a refusal within its client's budget (a governor GCRA limiter keyed by the
//!   certificate fingerprint; `audit.refusals_per_second`, burst
//!   `audit.refusals_burst`) is audited on its own, as before;
//! - a refusal over the budget is still answered with its signed problem+json,
//!   but carries **no** `MConnect-Audit-Seq`: it has no record of its own. It
//!   is counted in the aggregate of its (certificate, code, second), written as
//!   one record (event `exchange.refusals`, `refusal_count` = the count) once
//!   the second is over; so is an exchange refused because the audit
//!   filesystem is below its watermark (code `audit.unavailable`);
//! - the count is never lost: an aggregate the log cannot take now (it has
//!   failed closed or is below the watermark) stays in memory and is retried,
//!   merged with later seconds of the same certificate and code into one
//!   record whose `received_at` is its first second; what is pending at
//!   shutdown is written then.
//!
//! Invariants: accepted exchanges are never aggregated; the memory held is
//! bounded by (client certificates) × (problem codes) × 2 (the current second
//! and one backlog entry), and client certificates must chain to the bus CA to
//! get this far.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::Peer;
use crate::audit::{AuditLog, AuditRecord, Decision};
use crate::registry::Registry;

/// Individually audited refusals per client certificate and second, by default.
pub const DEFAULT_REFUSALS_PER_SECOND: u32 = 20;
/// Burst of individually audited refusals per client certificate, by default.
pub const DEFAULT_REFUSALS_BURST: u32 = 50;
/// The event of an aggregate record.
pub const AGGREGATE_EVENT: &str = "exchange.refusals";

/// The refusal budget and the counts of refusals over it.
pub struct Refusals {
    budget: DefaultKeyedRateLimiter<String>,
    pending: Mutex<HashMap<Key, Bucket>>,
}

/// (client certificate, problem code, first second).
type Key = (String, &'static str, i64);

/// Refusals of one client and code not yet written.
struct Bucket {
    /// The participant of the certificate, or `cert:{fingerprint}` for a
    /// certificate no participant owns.
    consumer: String,
    consumer_idno: Option<String>,
    status: u16,
    last_sec: i64,
    count: u64,
}

impl Refusals {
    /// A budget of `per_second` individually audited refusals per client
    /// certificate, bursting to `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Refusals {
        Refusals {
            budget: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refusal of `peer` must go without its own record: `true` when
    /// the client's budget is spent, in which case it was counted.
    pub fn over_budget(
        &self,
        peer: &Peer,
        registry: &Registry,
        code: &'static str,
        status: u16,
    ) -> bool {
        if self.budget.check_key(&client_key(peer)).is_ok() {
            return false;
        }
        self.count(peer, registry, code, status);
        true
    }

    /// Counts one refusal of `peer` into its aggregate (no budget asked).
    pub fn count(&self, peer: &Peer, registry: &Registry, code: &'static str, status: u16) {
        let client = client_key(peer);
        let now = unix_seconds(SystemTime::now());
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = pending.get_mut(&(client.clone(), code, now)) {
            bucket.count += 1;
            return;
        }
        let snapshot = registry.snapshot();
        let owner = peer
            .fingerprint
            .as_deref()
            .and_then(|fp| snapshot.by_fingerprint(fp));
        let (consumer, consumer_idno) = match owner {
            Some(entry) => (
                entry.participant.id.clone(),
                Some(entry.participant.organisation.idno.clone()),
            ),
            None => (format!("cert:{client}"), None),
        };
        pending.insert(
            (client, code, now),
            Bucket {
                consumer,
                consumer_idno,
                status,
                last_sec: now,
                count: 1,
            },
        );
    }

    /// Writes one record per aggregate whose last second is before `before`
    /// (every aggregate with `None`, at shutdown). What the log refuses goes
    /// back, merged into one backlog entry per client and code.
    pub async fn flush(&self, audit: &AuditLog, before: Option<i64>) {
        let due: Vec<(Key, Bucket)> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<Key> = pending
                .iter()
                .filter(|(_, b)| before.is_none_or(|t| b.last_sec < t))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| pending.remove(&k).map(|b| (k, b)))
                .collect()
        };
        let mut failed = Vec::new();
        for (key, bucket) in due {
            if let Err(e) = audit.append(aggregate_record(&key, &bucket)).await {
                tracing::warn!(error = %e, count = bucket.count, "refusal aggregate not written yet; kept and retried");
                failed.push((key, bucket));
            }
        }
        if failed.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for ((client, code, first), bucket) in failed {
            // One backlog entry per (client, code): the oldest first second.
            let backlog = pending
                .keys()
                .find(|(c, k, s)| c == &client && *k == code && *s < first)
                .cloned();
            match backlog.and_then(|k| pending.get_mut(&k)) {
                Some(older) => {
                    older.count += bucket.count;
                    older.last_sec = older.last_sec.max(bucket.last_sec);
                }
                None => {
                    let key = (client, code, first);
                    match pending.get_mut(&key) {
                        Some(same) => same.count += bucket.count,
                        None => {
                            pending.insert(key, bucket);
                        }
                    }
                }
            }
        }
    }

    /// Forgets budget state of clients idle for a while (memory stays bounded).
    pub fn evict_idle(&self) {
        self.budget.retain_recent();
        self.budget.shrink_to_fit();
    }

    /// Refusals counted and not yet written (for tests and metrics).
    pub fn pending_count(&self) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|b| b.count)
            .sum()
    }
}

/// The budget key: the client certificate's fingerprint (behind the TLS edge
/// there always is one), else the remote address.
fn client_key(peer: &Peer) -> String {
    match &peer.fingerprint {
        Some(fp) => fp.clone(),
        None => peer.addr.ip().to_string(),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The aggregate record of `count` refusals of one client and code from the
/// second `first` to the second `last_sec`.
fn aggregate_record(key: &Key, bucket: &Bucket) -> AuditRecord {
    let (_, code, first) = key;
    let received = UNIX_EPOCH + Duration::from_secs(u64::try_from(*first).unwrap_or(0));
    AuditRecord {
        consumer: Some(bucket.consumer.clone()),
        consumer_idno: bucket.consumer_idno.clone(),
        service: None,
        decision: Decision::Refused,
        problem_code: Some((*code).to_string()),
        http_status: bucket.status,
        refusal_count: Some(bucket.count),
        ..AuditRecord::management(AGGREGATE_EVENT, String::new(), received, Instant::now())
    }
}

/// Flushes the aggregates every second until `stopped` turns true, then once
/// more for everything pending. Also evicts idle budget keys once a minute.
pub async fn run_flusher(
    broker: std::sync::Arc<super::Broker>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            _ = ticks.tick() => {
                let now = unix_seconds(SystemTime::now());
                broker.refusals().flush(broker.audit(), Some(now)).await;
                n = n.wrapping_add(1);
                if n.is_multiple_of(60) {
                    broker.refusals().evict_idle();
                }
            }
        }
    }
    broker.refusals().flush(broker.audit(), None).await;
}
