//! The broker's state store behind a narrow key-value interface: named
//! collections of documents (JSON, kept as exact bytes) keyed by string.
//!
//! Two implementations of [`StateStore`]: the embedded default, redb
//! ([`RedbStore`], `redb.rs`: ACID, crash-safe, fsync on commit), and
//! PostgreSQL ([`PgStore`], `postgres.rs`) for brokers that run side by side
//! on one shared database. The interface is deliberately small — get, put,
//! delete, scan of one collection, and an atomic batch — so that both pass
//! one test suite (`suite.rs`, run for redb in `tests.rs` and for
//! PostgreSQL in `tests/store.rs`) and the rest of the broker cannot tell
//! them apart. [`open`] opens the one the configuration names.
//!
//! The methods are synchronous and may block (redb fsyncs, PostgreSQL is a
//! round trip away): async callers run them off the runtime's workers
//! (`spawn_blocking`, or `block_in_place` on a multi-thread runtime), as
//! they always had to for redb's fsync. Neither backend ever needs the
//! caller's runtime, so a call is safe from any thread; see `postgres.rs`
//! for why the PostgreSQL store runs its async driver on a thread of its own
//! rather than making this trait async.
//!
//! A store that several brokers share also tells each what the others
//! committed: [`StateStore::subscribe`] hands out a [`ChangeFeed`]
//! (`feed.rs`; PostgreSQL's is LISTEN/NOTIFY, `postgres/listen.rs`; redb
//! has none), which `rules::follow` applies to the broker's registry and
//! rules.
//!
//! Invariants: every successful write is durable when the call returns; a
//! batch that fails leaves nothing of itself; a scan is ordered by key,
//! byte by byte (Rust's `str` order), in both backends; both accept the
//! same keys ([`check_key`]), so state can move from one to the other.

use std::path::PathBuf;
use std::sync::Arc;

mod feed;
mod postgres;
mod redb;

pub use self::feed::{ChangeFeed, Changes, FeedStatus};
pub(crate) use self::feed::{FeedSender, channel as feed_channel};
pub use self::postgres::audit_copy::PgAuditCopy;
pub use self::postgres::shared::{
    ClaimRefusal, OutcomeLabels, QuotaRefusal, QuotaWindow, SharedMetrics, SharedState,
    SharedTuning,
};
pub use self::postgres::{PgStore, PostgresSettings};
// `self::`: the crate `redb` has the same name as this module.
pub use self::redb::RedbStore;

#[cfg(test)]
#[macro_use]
mod suite;
#[cfg(test)]
mod tests;

/// The collections the broker keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    /// Registered participants (with their certificates and endpoints), by
    /// participant id.
    Participants,
    /// Connection requests (with their signed evidence), by application id.
    ConnectionRequests,
    /// Grants created from approved connection requests, by grant id.
    Grants,
}

impl Collection {
    /// Every collection.
    pub const ALL: [Collection; 3] = [
        Collection::Participants,
        Collection::ConnectionRequests,
        Collection::Grants,
    ];

    /// The collection's name: the redb table's and the PostgreSQL table's.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Participants => "participants",
            Collection::ConnectionRequests => "connection_requests",
            Collection::Grants => "grants",
        }
    }
}

/// The longest key either backend takes, in bytes (PostgreSQL's B-tree
/// holds keys of up to about 2700 bytes; ids are far shorter).
pub const MAX_KEY_BYTES: usize = 1024;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened (locked by another broker, unreadable,
    /// corrupt, unreachable, or its schema could not be brought up to date).
    #[error("cannot open state store {path}: {reason}")]
    Open {
        /// The file, or the database (without its password).
        path: String,
        /// What the backend reported.
        reason: String,
    },
    /// A read or write failed.
    #[error("state store {operation} failed: {reason}")]
    Operation {
        /// What was attempted.
        operation: &'static str,
        /// What the backend reported.
        reason: String,
    },
}

/// One write in an atomic batch.
#[derive(Debug)]
pub enum Write<'a> {
    /// Insert or replace a document.
    Put(Collection, &'a str, &'a [u8]),
    /// Remove a document (absent is fine).
    Delete(Collection, &'a str),
}

/// The narrow interface every state backend implements.
pub trait StateStore: Send + Sync {
    /// One document.
    fn get(&self, collection: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every document of a collection, ordered by key.
    fn scan(&self, collection: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies the writes atomically and durably, in order (a later write to
    /// the same key wins).
    fn apply(&self, writes: &[Write<'_>]) -> Result<(), StoreError>;
    /// Inserts or replaces one document.
    fn put(&self, collection: Collection, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.apply(&[Write::Put(collection, key, value)])
    }
    /// Removes one document.
    fn delete(&self, collection: Collection, key: &str) -> Result<(), StoreError> {
        self.apply(&[Write::Delete(collection, key)])
    }
    /// Subscribes to what other writers of this store commit (`feed.rs`).
    /// `None` where nobody else writes (redb, the default): there is nothing
    /// to follow. Subscribe before reading what the feed keeps current, so
    /// that no commit falls between the read and the subscription.
    fn subscribe(&self) -> Option<ChangeFeed> {
        None
    }
    /// Tells every other broker on this store to reload its catalog and
    /// policy files (after this one reloaded its own). Nothing to tell where
    /// nobody else reads the store.
    fn announce_rules_reload(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Where the broker keeps its state: `[storage] state` (the embedded default)
/// or `[state] postgres` in broker.toml.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded redb file.
    Embedded(PathBuf),
    /// A PostgreSQL database, which several brokers may share.
    Postgres(Box<PostgresSettings>),
}

/// Opens the configured store (for PostgreSQL: connects, and brings the
/// schema up to date). Blocks; see the module docs.
pub fn open(backend: &Backend) -> Result<Arc<dyn StateStore>, StoreError> {
    Ok(match backend {
        Backend::Embedded(path) => Arc::new(RedbStore::open(path)?),
        Backend::Postgres(settings) => Arc::new(PgStore::open(settings)?),
    })
}

/// The keys both backends accept: 1 to [`MAX_KEY_BYTES`] bytes of UTF-8
/// without NUL (PostgreSQL's text cannot hold NUL). Checked write by write
/// inside the batch's transaction, so a bad key aborts a batch part-way and
/// nothing of it is kept.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    match key_problem(key) {
        None => Ok(()),
        Some(reason) => Err(StoreError::Operation {
            operation: "write",
            reason: reason.into(),
        }),
    }
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("the key is empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("the key is longer than 1024 bytes")
    } else if key.contains('\0') {
        Some("the key contains NUL")
    } else {
        None
    }
}
