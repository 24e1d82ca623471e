//! Replay protection over a signature's `created` window, in bounded memory:
//! what a provider uses to serve each broker-signed `MConnect-Exchange-Id`
//! once (`crate::ExchangeIds`). (The broker's own check of request ids, which
//! must hold for 24 hours and across restarts, is `replay_store`.)
//!
//! A request is only accepted while its signature's `created` lies within the
//! skew window around the verifier's clock, so an id needs remembering only for
//! that window: anything older is refused as too old before it reaches this
//! cache. Ids are kept in one-minute buckets by `created` time;
//! buckets that fall out of the window are dropped whole.
//!
//! Invariant: memory is bounded by `capacity`. When the cache is full it drops
//! its oldest bucket and raises a floor under `created`: requests older than
//! the floor are refused as expired. Under pressure the broker thus narrows
//! the window it accepts instead of forgetting ids it still accepts, so no
//! replay ever slips through.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

/// What the cache says of a request id.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// First use: the id is now remembered.
    Fresh,
    /// Already used by this client within the window.
    Replayed,
    /// `created` is below the floor the cache raised under memory pressure.
    TooOld {
        /// The oldest `created` (unix seconds) currently accepted.
        floor: i64,
    },
}

/// Remembers (client, request id) pairs for the `created` window.
pub struct ReplayCache {
    inner: Mutex<Inner>,
    hasher: std::collections::hash_map::RandomState,
    capacity: usize,
    window_secs: i64,
}

const BUCKET_SECS: i64 = 60;

struct Inner {
    /// Buckets ordered by their start (created / BUCKET_SECS), oldest first.
    buckets: VecDeque<(i64, HashSet<(u64, u128)>)>,
    len: usize,
    floor: i64,
}

impl ReplayCache {
    /// A cache for a `created` skew of `skew_secs` either side of now, holding at most `capacity` ids.
    pub fn new(skew_secs: i64, capacity: usize) -> Self {
        ReplayCache {
            inner: Mutex::new(Inner {
                buckets: VecDeque::new(),
                len: 0,
                floor: i64::MIN,
            }),
            hasher: std::collections::hash_map::RandomState::new(),
            capacity: capacity.max(1),
            window_secs: skew_secs.max(1),
        }
    }

    /// Records the id if it is fresh. `created` and `now` are unix seconds;
    /// the caller has already refused a `created` outside the skew window.
    pub fn check_and_insert(
        &self,
        client: &str,
        request_id: uuid::Uuid,
        created: i64,
        now: i64,
    ) -> ReplayVerdict {
        let key = (self.client_hash(client), request_id.as_u128());
        let bucket = created.div_euclid(BUCKET_SECS);
        // A poisoned lock only means another request panicked while holding
        // it; the sets stay consistent, so carry on with them.
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.expire(now - self.window_secs);
        if created < inner.floor {
            return ReplayVerdict::TooOld { floor: inner.floor };
        }
        if inner.buckets.iter().any(|(_, set)| set.contains(&key)) {
            return ReplayVerdict::Replayed;
        }
        while inner.len >= self.capacity {
            match inner.buckets.pop_front() {
                Some((start, set)) => {
                    inner.len -= set.len();
                    inner.floor = (start + 1) * BUCKET_SECS;
                }
                None => break,
            }
        }
        if created < inner.floor {
            return ReplayVerdict::TooOld { floor: inner.floor };
        }
        let pos = inner.buckets.partition_point(|(start, _)| *start < bucket);
        match inner.buckets.get_mut(pos) {
            Some((start, set)) if *start == bucket => {
                set.insert(key);
            }
            _ => {
                let mut set = HashSet::new();
                set.insert(key);
                inner.buckets.insert(pos, (bucket, set));
            }
        }
        inner.len += 1;
        ReplayVerdict::Fresh
    }

    /// Refuses every `created` below `floor` from now on (a process that
    /// starts with an empty cache refuses what an earlier one may have seen).
    pub fn raise_floor(&self, floor: i64) {
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.floor = inner.floor.max(floor);
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        match self.inner.lock() {
            Ok(g) => g.len,
            Err(p) => p.into_inner().len,
        }
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn client_hash(&self, client: &str) -> u64 {
        self.hasher.hash_one(client)
    }
}

impl Inner {
    fn expire(&mut self, oldest_created: i64) {
        let oldest_bucket = oldest_created.div_euclid(BUCKET_SECS);
        while let Some((start, _)) = self.buckets.front() {
            if *start >= oldest_bucket {
                break;
            }
            if let Some((_, set)) = self.buckets.pop_front() {
                self.len -= set.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[test]
    fn detects_replay_per_client() {
        let cache = ReplayCache::new(300, 100);
        assert_eq!(
            cache.check_and_insert("a", id(1), 1000, 1000),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache.check_and_insert("a", id(1), 1000, 1001),
            ReplayVerdict::Replayed
        );
        // Same id, other created time: still a replay (ids are unique per client).
        assert_eq!(
            cache.check_and_insert("a", id(1), 1100, 1101),
            ReplayVerdict::Replayed
        );
        assert_eq!(
            cache.check_and_insert("b", id(1), 1000, 1001),
            ReplayVerdict::Fresh
        );
    }

    #[test]
    fn forgets_outside_window() {
        let cache = ReplayCache::new(300, 100);
        cache.check_and_insert("a", id(1), 1000, 1000);
        assert_eq!(cache.len(), 1);
        cache.check_and_insert("a", id(2), 2000, 2000);
        assert_eq!(
            cache.len(),
            1,
            "the 1000 bucket is out of the window at 2000"
        );
    }

    #[test]
    fn full_cache_raises_floor_instead_of_forgetting() {
        let cache = ReplayCache::new(3600, 3);
        for (n, created) in [(1, 1000), (2, 1070), (3, 1140)] {
            assert_eq!(
                cache.check_and_insert("a", id(n), created, 1200),
                ReplayVerdict::Fresh
            );
        }
        // Full: the oldest bucket (960..1020) is dropped and the floor rises to 1020.
        assert_eq!(
            cache.check_and_insert("a", id(4), 1150, 1200),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache.check_and_insert("a", id(1), 1000, 1200),
            ReplayVerdict::TooOld { floor: 1020 }
        );
        assert!(cache.len() <= 3);
    }
}
