//! Rate limits and quotas per (consumer, service) (429 `rate.limited`).
//!
//! The rate is a GCRA limiter from governor, one per (consumer, service) key,
//! built from the grant's [`RateLimit`](super::RateLimit). Quotas count
//! allowed calls per UTC calendar day and month.
//!
//! Invariants:
//! - Keys exist only for pairs that passed a policy decision, so the map is
//!   bounded by the number of grants × services; [`RateLimiter::evict_idle`]
//!   also drops keys whose state has become meaningless (bucket full again,
//!   quota window over), so removed grants and idle consumers free memory.
//! - Lookups take a read lock and allocate nothing; a write lock is taken
//!   only to add or evict keys. No lock is held across an `.await` (there are
//!   none here).
//! - A refused call does not count against the quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};

use super::Grant;

/// Keys idle for less than this are kept even when their bucket is full, so
/// a steady trickle of calls does not rebuild limiters over and over.
const MIN_IDLE: Duration = Duration::from_secs(60);

/// Per-(consumer, service) rate limits and quotas.
pub struct RateLimiter<C: Clock = DefaultClock> {
    clock: C,
    /// consumer → service key → slot; two levels so lookups by `&str` pairs
    /// need no joined key.
    slots: RwLock<Slots<C>>,
}

/// consumer → service key → slot.
type Slots<C> = HashMap<Box<str>, HashMap<Box<str>, Arc<Slot<C>>>>;

/// Why a call was rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} exceeded; retry after {} s", kind.as_str(), retry_after_secs(*retry_after))]
pub struct RateLimited {
    /// Which limit was hit.
    pub kind: LimitKind,
    /// When the call may succeed again, for `Retry-After`.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The stable machine code of PROTOCOL.md section 5.
    pub fn code(&self) -> &'static str {
        "rate.limited"
    }

    /// `Retry-After` in whole seconds, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

/// Which limit a call hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The grant's rate.
    Rate,
    /// The grant's daily quota.
    DailyQuota,
    /// The grant's monthly quota.
    MonthlyQuota,
}

impl LimitKind {
    /// Name for messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Rate => "rate limit",
            LimitKind::DailyQuota => "daily quota",
            LimitKind::MonthlyQuota => "monthly quota",
        }
    }
}

fn retry_after_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    secs.max(1)
}

type Limiter<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct Slot<C: Clock> {
    quota: governor::Quota,
    limiter: Limiter<C>,
    counts: Mutex<Counts<C::Instant>>,
}

struct Counts<I> {
    last_used: I,
    /// Day number (Unix days) the daily count belongs to.
    day: i64,
    day_count: u64,
    /// Month number (year × 12 + month index) the monthly count belongs to.
    month: i64,
    month_count: u64,
}

impl RateLimiter<DefaultClock> {
    /// A limiter on the real (monotonic, quanta) clock.
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl Default for RateLimiter<DefaultClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter on the given clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(clock: C) -> Self {
        RateLimiter {
            clock,
            slots: RwLock::new(HashMap::new()),
        }
    }

    /// Checks and counts one call of `service_key` under `grant` (after the
    /// policy allowed it). `now_unix` places the call in its UTC day and month
    /// for the quota; the rate uses the limiter's monotonic clock.
    pub fn check(
        &self,
        grant: &Grant,
        service_key: &str,
        now_unix: i64,
    ) -> Result<(), RateLimited> {
        let slot = self.slot(grant, service_key, 1);
        let (day, month) = windows(now_unix);
        let mut counts = slot.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.day != day {
            counts.day = day;
            counts.day_count = 0;
        }
        if counts.month != month {
            counts.month = month;
            counts.month_count = 0;
        }
        if let Some(quota) = &grant.quota {
            if quota.per_day.is_some_and(|limit| counts.day_count >= limit) {
                return Err(RateLimited {
                    kind: LimitKind::DailyQuota,
                    retry_after: secs_until(next_day_start(now_unix), now_unix),
                });
            }
            if quota
                .per_month
                .is_some_and(|limit| counts.month_count >= limit)
            {
                return Err(RateLimited {
                    kind: LimitKind::MonthlyQuota,
                    retry_after: secs_until(next_month_start(now_unix), now_unix),
                });
            }
        }
        // The rate is checked after the quotas so that a call refused by a
        // quota does not also use up a rate token.
        if let Err(not_until) = slot.limiter.check() {
            return Err(RateLimited {
                kind: LimitKind::Rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        // Only configured quotas count, so that a key without quotas holds
        // no state worth keeping once its bucket has refilled.
        let quota = grant.quota.unwrap_or(super::Quota {
            per_day: None,
            per_month: None,
        });
        if quota.per_day.is_some() {
            counts.day_count += 1;
        }
        if quota.per_month.is_some() {
            counts.month_count += 1;
        }
        counts.last_used = self.clock.now();
        Ok(())
    }

    /// Checks and counts one call against this broker's share of the
    /// grant's rate only: `share` brokers enforce it side by side, each
    /// `ceil(requests / share)` per period with bursts of
    /// `ceil(burst / share)`. Quotas are counted by the caller (the cluster's
    /// shared counts, `store::SharedState`), not here.
    pub fn check_rate(
        &self,
        grant: &Grant,
        service_key: &str,
        share: u32,
    ) -> Result<(), RateLimited> {
        let slot = self.slot(grant, service_key, share);
        let mut counts = slot.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(not_until) = slot.limiter.check() {
            return Err(RateLimited {
                kind: LimitKind::Rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        counts.last_used = self.clock.now();
        Ok(())
    }

    /// Drops keys whose state no longer matters: unused for at least the time
    /// their bucket takes to refill (and a minute), and whose quota counts
    /// belong to a day and month that are over. Call it periodically.
    pub fn evict_idle(&self, now_unix: i64) {
        let now = self.clock.now();
        let (day, month) = windows(now_unix);
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        for services in slots.values_mut() {
            services.retain(|_, slot| {
                let counts = slot.counts.lock().unwrap_or_else(PoisonError::into_inner);
                let idle: Duration = now.duration_since(counts.last_used).into();
                let refilled = idle >= slot.quota.burst_size_replenished_in().max(MIN_IDLE);
                let counts_over = (counts.day != day || counts.day_count == 0)
                    && (counts.month != month || counts.month_count == 0);
                !(refilled && counts_over)
            });
        }
        slots.retain(|_, services| !services.is_empty());
    }

    /// Number of (consumer, service) keys held, for metrics and tests.
    pub fn len(&self) -> usize {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.values().map(HashMap::len).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of (grant.consumer, service_key), created on first use, or
    /// rebuilt when the grant's rate changed (after a reload, or when another
    /// grant with a different rate is used for the same pair, or the number
    /// of brokers sharing it changed). Quota counts
    /// survive a rebuild: they count calls, whatever the rate.
    fn slot(&self, grant: &Grant, service_key: &str, share: u32) -> Arc<Slot<C>> {
        let quota = grant.rate_limit.shared_by(share).governor_quota();
        {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = slots
                .get(grant.consumer.as_str())
                .and_then(|s| s.get(service_key))
                && slot.quota == quota
            {
                return Arc::clone(slot);
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let services = slots.entry(grant.consumer.as_str().into()).or_default();
        if let Some(slot) = services.get(service_key)
            && slot.quota == quota
        {
            // Another thread built it between our two locks.
            return Arc::clone(slot);
        }
        let counts = match services.get(service_key) {
            Some(old) => {
                let old = old.counts.lock().unwrap_or_else(PoisonError::into_inner);
                Counts {
                    last_used: self.clock.now(),
                    day: old.day,
                    day_count: old.day_count,
                    month: old.month,
                    month_count: old.month_count,
                }
            }
            None => Counts {
                last_used: self.clock.now(),
                day: i64::MIN,
                day_count: 0,
                month: i64::MIN,
                month_count: 0,
            },
        };
        let slot = Arc::new(Slot {
            quota,
            limiter: governor::RateLimiter::direct_with_clock(quota, self.clock.clone()),
            counts: Mutex::new(counts),
        });
        services.insert(service_key.into(), Arc::clone(&slot));
        slot
    }
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

/// The UTC day and month that `now_unix` falls in: the unix day, and
/// year × 12 + month − 1.
pub fn windows(now_unix: i64) -> (i64, i64) {
    let day = now_unix.div_euclid(86_400);
    let month = time::OffsetDateTime::from_unix_timestamp(now_unix)
        .map(|t| i64::from(t.year()) * 12 + i64::from(u8::from(t.month())) - 1)
        // Outside time's range (year ±9999) the quota month is not
        // meaningful; a constant keeps the count rather than failing open.
        .unwrap_or(i64::MAX);
    (day, month)
}

/// The refusal of a call over its daily (`day`) or monthly quota at
/// `now_unix`, retried when the window is over: for quotas counted
/// elsewhere (the cluster's shared counts).
pub fn quota_reached(day: bool, now_unix: i64) -> RateLimited {
    if day {
        RateLimited {
            kind: LimitKind::DailyQuota,
            retry_after: secs_until(next_day_start(now_unix), now_unix),
        }
    } else {
        RateLimited {
            kind: LimitKind::MonthlyQuota,
            retry_after: secs_until(next_month_start(now_unix), now_unix),
        }
    }
}

fn next_day_start(now_unix: i64) -> i64 {
    (now_unix.div_euclid(86_400) + 1) * 86_400
}

fn next_month_start(now_unix: i64) -> i64 {
    let Ok(now) = time::OffsetDateTime::from_unix_timestamp(now_unix) else {
        return now_unix + 86_400;
    };
    let (year, month) = match now.month() {
        time::Month::December => (now.year() + 1, time::Month::January),
        other => (now.year(), other.next()),
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|date| date.midnight().assume_utc().unix_timestamp())
        .unwrap_or(now_unix + 86_400)
}

fn secs_until(then: i64, now: i64) -> Duration {
    Duration::from_secs(u64::try_from(then - now).unwrap_or(0))
}
