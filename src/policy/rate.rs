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
//!
//! Why the map looks the way it does (issue 17, `benches/policy.rs`): with
//! calls spread over 100k grants every check misses the caches, so its cost
//! is the number of dependent memory loads. The slots live inline in one
//! open-addressing table hashed with foldhash on the (consumer, service)
//! pair, each slot holding its key's bytes inside itself when they fit (they
//! do for every shipped id and key): a check reads the table's control
//! bytes and the slot, instead of two SipHash maps with a boxed key each and
//! an `Arc`ed slot. The check runs under the read lock, so no reference
//! count is touched. The quota month is computed only when the day changes.

use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::{Grant, RateLimit};

/// Keys idle for less than this are kept even when their bucket is full, so
/// a steady trickle of calls does not rebuild limiters over and over.
const MIN_IDLE: Duration = Duration::from_secs(60);

/// Per-(consumer, service) rate limits and quotas.
pub struct RateLimiter<C: Clock = DefaultClock> {
    clock: C,
    /// Hashes (consumer, service) pairs for `slots`.
    hasher: foldhash::fast::RandomState,
    /// One slot per (consumer, service), found by the pair's hash and
    /// compared on its bytes ([`Slot::is`]).
    slots: RwLock<HashTable<Slot<C>>>,
}

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
    /// The consumer id, then the service key.
    key: Key,
    /// Where the consumer id ends in `key`.
    split: usize,
    /// The rate this slot's limiter was built for (the grant's, shared).
    rate: RateLimit,
    /// The limiter's quota, built from `rate`.
    quota: governor::Quota,
    limiter: Limiter<C>,
    counts: Mutex<Counts<C::Instant>>,
}

impl<C: Clock> Slot<C> {
    /// Whether this is the slot of (consumer, service).
    fn is(&self, consumer: &str, service: &str) -> bool {
        let key = self.key.as_bytes();
        self.split == consumer.len()
            && key.len() == consumer.len() + service.len()
            && key[..self.split] == *consumer.as_bytes()
            && key[self.split..] == *service.as_bytes()
    }

    /// The consumer id and the service key, as [`RateLimiter::hash`] takes
    /// them.
    fn pair(&self) -> (&[u8], &[u8]) {
        self.key.as_bytes().split_at(self.split)
    }

    /// Whether this slot's limiter enforces `rate`: the same rate, or one
    /// that makes the same governor quota (checked only when the rates
    /// differ, so the common case builds no quota).
    fn enforces(&self, rate: RateLimit) -> bool {
        self.rate == rate || self.quota == rate.governor_quota()
    }
}

/// Bytes of a key kept inside its slot, so that comparing it touches no
/// other memory; longer keys go to the heap. Participant ids and service keys
/// are short: `apl-cahul` and `asp-rsp/person-by-idnp` make 31 bytes.
const INLINE_KEY: usize = 46;

/// A slot's key: the consumer id, then the service key.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(consumer: &str, service: &str) -> Key {
        let len = consumer.len() + service.len();
        match u8::try_from(len) {
            Ok(short) if len <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..consumer.len()].copy_from_slice(consumer.as_bytes());
                bytes[consumer.len()..len].copy_from_slice(service.as_bytes());
                Key::Inline { len: short, bytes }
            }
            _ => Key::Heap([consumer.as_bytes(), service.as_bytes()].concat().into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Key::Heap(bytes) => bytes,
        }
    }
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
            hasher: foldhash::fast::RandomState::default(),
            slots: RwLock::new(HashTable::new()),
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
        self.with_slot(grant, service_key, 1, |slot| {
            self.check_slot(slot, grant, now_unix)
        })
    }

    fn check_slot(&self, slot: &Slot<C>, grant: &Grant, now_unix: i64) -> Result<(), RateLimited> {
        let day = now_unix.div_euclid(86_400);
        let mut counts = slot.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.day != day {
            counts.day = day;
            counts.day_count = 0;
            // The month is a function of the day, and both are set together
            // here, so it can only change when the day does.
            let (_, month) = windows(now_unix);
            if counts.month != month {
                counts.month = month;
                counts.month_count = 0;
            }
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
        self.with_slot(grant, service_key, share, |slot| {
            let mut counts = slot.counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(not_until) = slot.limiter.check() {
                return Err(RateLimited {
                    kind: LimitKind::Rate,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
            counts.last_used = self.clock.now();
            Ok(())
        })
    }

    /// Drops keys whose state no longer matters: unused for at least the time
    /// their bucket takes to refill (and a minute), and whose quota counts
    /// belong to a day and month that are over. Call it periodically.
    pub fn evict_idle(&self, now_unix: i64) {
        let now = self.clock.now();
        let (day, month) = windows(now_unix);
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|slot| {
            let counts = slot
                .counts
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            let idle: Duration = now.duration_since(counts.last_used).into();
            let refilled = idle >= slot.quota.burst_size_replenished_in().max(MIN_IDLE);
            let counts_over = (counts.day != day || counts.day_count == 0)
                && (counts.month != month || counts.month_count == 0);
            !(refilled && counts_over)
        });
    }

    /// Number of (consumer, service) keys held, for metrics and tests.
    pub fn len(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash of a (consumer, service) pair in `slots`.
    fn hash(&self, pair: (&[u8], &[u8])) -> u64 {
        self.hasher.hash_one(pair)
    }

    /// Runs `f` on the slot of (grant.consumer, service_key), created on
    /// first use, or rebuilt when the grant's rate changed (after a reload,
    /// or when another grant with a different rate is used for the same
    /// pair, or the number of brokers sharing it changed). Quota counts
    /// survive a rebuild: they count calls, whatever the rate. `f` runs
    /// under the map's lock (read, or write when the slot was made).
    fn with_slot<R>(
        &self,
        grant: &Grant,
        service_key: &str,
        share: u32,
        f: impl FnOnce(&Slot<C>) -> R,
    ) -> R {
        let consumer = grant.consumer.as_str();
        let rate = grant.rate_limit.shared_by(share);
        let hash = self.hash((consumer.as_bytes(), service_key.as_bytes()));
        {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = slots.find(hash, |slot| slot.is(consumer, service_key))
                && slot.enforces(rate)
            {
                return f(slot);
            }
        }
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        let entry = slots.entry(
            hash,
            |slot| slot.is(consumer, service_key),
            |slot| self.hash(slot.pair()),
        );
        match entry {
            // Another thread may have built it between our two locks.
            Entry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                if !slot.enforces(rate) {
                    let quota = rate.governor_quota();
                    let counts = slot
                        .counts
                        .get_mut()
                        .unwrap_or_else(PoisonError::into_inner);
                    counts.last_used = self.clock.now();
                    slot.rate = rate;
                    slot.quota = quota;
                    slot.limiter =
                        governor::RateLimiter::direct_with_clock(quota, self.clock.clone());
                }
                f(occupied.get())
            }
            Entry::Vacant(vacant) => {
                let quota = rate.governor_quota();
                let slot = Slot {
                    key: Key::new(consumer, service_key),
                    split: consumer.len(),
                    rate,
                    quota,
                    limiter: governor::RateLimiter::direct_with_clock(quota, self.clock.clone()),
                    counts: Mutex::new(Counts {
                        last_used: self.clock.now(),
                        day: i64::MIN,
                        day_count: 0,
                        month: i64::MIN,
                        month_count: 0,
                    }),
                };
                f(vacant.insert(slot).get())
            }
        }
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
