//! The broker's replay check: a (client, single-use id) pair is accepted once
//! in 24 hours, across broker restarts (PROTOCOL.md section 2).
//!
//! [`ReplayStore`] is the narrow interface the exchange uses; brokers side by
//! side would share one implementation of it (for example a PostgreSQL table
//! with a unique key on (client, id)). [`EmbeddedReplayStore`] is the one for
//! a single broker. It adds no write and no fsync of its own: the audit record
//! of every exchange that passed the check lists the ids it used up
//! (`AuditRecord::replay_ids`), that record is durable before the answer
//! leaves, and the audit index keeps a (consumer, id) table of those records
//! (`audit::index`). A small in-memory front holds each claimed id from the
//! check until the index covers its record.
//!
//! Invariants:
//! - a claim is refused while any of its ids is in the front or in the index
//!   within 24 hours, and the front is consulted first, then the index: an id
//!   leaves the front only after a read has seen the index cover its record,
//!   so there is no moment at which an id is in neither place;
//! - at start the index must cover every record that was durable when the
//!   broker opened the log (also those a crash left unindexed); until it does,
//!   claims are refused (fail closed), never let through;
//! - the front is bounded by `capacity`; when it is full of ids whose records
//!   are not indexed yet, claims are refused with 503 rather than any id
//!   forgotten;
//! - an id whose exchange ended without a durable record (the audit log
//!   failed, or the exchange was dropped) stays in the front for 24 hours.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::audit::AuditLog;

/// How long a used-up id is refused.
pub const REPLAY_WINDOW_SECS: i64 = 24 * 3600;

/// Why a claim was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// One of the ids was already used up by this client within 24 hours.
    Replayed,
    /// The store cannot answer now (index unreadable or catching up, memory
    /// full): the exchange is refused, never let through.
    Unavailable(String),
}

/// How an exchange that claimed ids ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Its audit record, listing the ids, is durable at this seq.
    Recorded(u64),
    /// It ended without a durable record.
    Unrecorded,
}

/// Single-use ids per client: the one interface the exchange uses.
pub trait ReplayStore: Send + Sync {
    /// Uses up `ids` (see [`replay_id_of_request`], [`replay_id_of_nonce`])
    /// for `client` at `now` (unix seconds), or says why not. All or none:
    /// a refused claim uses up nothing. Only called once the request's
    /// signature has verified.
    fn claim(&self, client: &str, ids: &[String], now: i64) -> Result<(), ReplayRefusal>;

    /// Tells the store how an exchange that claimed `ids` ended. A shared
    /// store that made the claim durable in `claim` has nothing to do here.
    fn settle(&self, client: &str, ids: &[String], outcome: Settled, now: i64);

    /// Takes back a granted claim before anything used its ids: the
    /// cluster's shared check (`store::SharedState`), asked after this one,
    /// refused them. The ids are free again here, as if never claimed.
    fn release(&self, client: &str, ids: &[String]) {
        let _ = (client, ids);
    }

    /// How many ids the store holds in memory now (`/metrics`), if it keeps
    /// any; a shared store whose ids live elsewhere answers `None`.
    fn held_in_memory(&self) -> Option<usize> {
        None
    }
}

/// The replay id of a request id, as audit records list it.
pub fn replay_id_of_request(request_id: &uuid::Uuid) -> String {
    request_id.to_string()
}

/// The replay id of a signature `nonce`: a digest, so any nonce costs the
/// same fixed size in memory, in the record and in the index.
pub fn replay_id_of_nonce(nonce: &str) -> String {
    let digest = crate::crypto::sha256(nonce.as_bytes());
    format!("nonce:{}", hex::encode(&digest[..16]))
}

/// The embedded store: an in-memory front over the audit index.
pub struct EmbeddedReplayStore {
    audit: AuditLog,
    front: Mutex<Front>,
    hasher: std::collections::hash_map::RandomState,
    capacity: usize,
    /// Records durable when the log was opened; the index must cover them
    /// before any claim is granted.
    must_cover: u64,
}

/// Ids in memory, keyed by hashes of (client, id).
#[derive(Default)]
struct Front {
    /// What is known of each id, and when (unix seconds) it was claimed.
    held: HashMap<(u64, u64), (Held, i64)>,
    /// Recorded ids by the seq of their record, to drop once indexed.
    recorded: BTreeMap<u64, Vec<(u64, u64)>>,
    /// Unrecorded ids with the unix second they may be dropped, oldest first.
    unrecorded: VecDeque<(i64, (u64, u64))>,
    /// How many records the index covered at the last lookup.
    indexed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Claimed; the exchange is running.
    Pending,
    /// In the durable record at this seq, not yet seen indexed.
    Recorded(u64),
    /// No durable record; kept in memory for the replay window.
    Unrecorded,
}

impl EmbeddedReplayStore {
    /// A store over `audit` holding at most `capacity` ids in memory. Call it
    /// right after opening the log, before any append: what the log holds
    /// then must be indexed before the first claim is granted
    /// ([`AuditLog::sync_index`] does that at start).
    pub fn new(audit: AuditLog, capacity: usize) -> EmbeddedReplayStore {
        let must_cover = audit.tree_size();
        EmbeddedReplayStore {
            audit,
            front: Mutex::new(Front::default()),
            hasher: std::collections::hash_map::RandomState::new(),
            capacity: capacity.max(1),
            must_cover,
        }
    }

    /// How many ids the front holds now.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Front> {
        // A panic while holding the lock leaves the maps consistent (every
        // update is a single insert or remove), so a poisoned lock is usable.
        self.front
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, client: &str, id: &str) -> (u64, u64) {
        (self.hasher.hash_one(client), self.hasher.hash_one(id))
    }

    /// Takes back the pending entries of a claim that was refused.
    fn release_keys(&self, keys: &[(u64, u64)]) {
        let mut front = self.lock();
        for key in keys {
            if front.held.get(key).map(|h| h.0) == Some(Held::Pending) {
                front.held.remove(key);
            }
        }
    }
}

impl Front {
    /// Drops what no longer needs memory: ids whose records the index
    /// covers, and unrecorded ids past the replay window.
    fn prune(&mut self, now: i64) {
        while let Some(entry) = self.recorded.first_entry() {
            if *entry.key() >= self.indexed {
                break;
            }
            let seq = *entry.key();
            for key in entry.remove() {
                if self.held.get(&key).map(|h| h.0) == Some(Held::Recorded(seq)) {
                    self.held.remove(&key);
                }
            }
        }
        while let Some(&(until, key)) = self.unrecorded.front() {
            if until > now {
                break;
            }
            self.unrecorded.pop_front();
            if self.held.get(&key).map(|h| h.0) == Some(Held::Unrecorded) {
                self.held.remove(&key);
            }
        }
    }
}

impl ReplayStore for EmbeddedReplayStore {
    fn held_in_memory(&self) -> Option<usize> {
        Some(self.held())
    }

    fn claim(&self, client: &str, ids: &[String], now: i64) -> Result<(), ReplayRefusal> {
        let keys: Vec<(u64, u64)> = ids.iter().map(|id| self.key(client, id)).collect();
        {
            let mut front = self.lock();
            front.prune(now);
            let recorded_hit = keys
                .iter()
                .any(|k| matches!(front.held.get(k), Some((Held::Recorded(_), _))));
            if recorded_hit && let Ok(indexed) = self.audit.indexed() {
                // The index may cover it by now: then the index, with the
                // record's time, decides (an id may be used again after 24 h).
                front.indexed = front.indexed.max(indexed);
                front.prune(now);
            }
            // An id claimed more than 24 hours ago is free again, in memory
            // as in the index.
            let window_start = now.saturating_sub(REPLAY_WINDOW_SECS);
            if keys
                .iter()
                .any(|k| front.held.get(k).is_some_and(|(_, at)| *at > window_start))
            {
                return Err(ReplayRefusal::Replayed);
            }
            if front.held.len() + keys.len() > self.capacity {
                // Full: the index may have moved since the last lookup.
                if let Ok(indexed) = self.audit.indexed() {
                    front.indexed = front.indexed.max(indexed);
                    front.prune(now);
                }
            }
            if front.held.len() + keys.len() > self.capacity {
                return Err(ReplayRefusal::Unavailable(format!(
                    "the replay check holds {} request ids whose audit records are not indexed yet",
                    front.held.len()
                )));
            }
            for key in &keys {
                front.held.insert(*key, (Held::Pending, now));
            }
        }
        // The index second: an id that left the front was already covered
        // by a committed index transaction this read sees.
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let seen = match self.audit.replay_seen(client, &refs) {
            Ok(seen) => seen,
            Err(e) => {
                self.release_keys(&keys);
                return Err(ReplayRefusal::Unavailable(format!(
                    "the replay index cannot be read: {e}"
                )));
            }
        };
        if seen.indexed < self.must_cover {
            self.release_keys(&keys);
            return Err(ReplayRefusal::Unavailable(format!(
                "the replay index is catching up with the audit log ({} of {} records)",
                seen.indexed, self.must_cover
            )));
        }
        {
            let mut front = self.lock();
            front.indexed = front.indexed.max(seen.indexed);
        }
        let window_start = (now - REPLAY_WINDOW_SECS).saturating_mul(1_000_000);
        if seen
            .latest
            .is_some_and(|at| i64::try_from(at).unwrap_or(i64::MAX) > window_start)
        {
            self.release_keys(&keys);
            return Err(ReplayRefusal::Replayed);
        }
        Ok(())
    }

    fn release(&self, client: &str, ids: &[String]) {
        let keys: Vec<(u64, u64)> = ids.iter().map(|id| self.key(client, id)).collect();
        self.release_keys(&keys);
    }

    fn settle(&self, client: &str, ids: &[String], outcome: Settled, now: i64) {
        let mut front = self.lock();
        for id in ids {
            let key = self.key(client, id);
            let Some((Held::Pending, at)) = front.held.get(&key).copied() else {
                continue;
            };
            match outcome {
                Settled::Recorded(seq) => {
                    front.held.insert(key, (Held::Recorded(seq), at));
                    front.recorded.entry(seq).or_default().push(key);
                }
                Settled::Unrecorded => {
                    front.held.insert(key, (Held::Unrecorded, at));
                    front
                        .unrecorded
                        .push_back((at.saturating_add(REPLAY_WINDOW_SECS), key));
                }
            }
        }
        front.prune(now);
    }
}

#[cfg(test)]
mod tests;
