//! Query indexes over the log (by subject, consumer, provider, service and time)
//! in redb, and the indexer thread that keeps them up to date.
//!
//! Invariants: the indexes are derived data. The segments are the truth; the
//! index records how many records it covers (`meta.next`) in the same transaction
//! as their rows, so after a crash it is behind, never wrong, and the indexer
//! catches up by reading the segments. An unreadable index file or one that
//! claims more records than the log holds is deleted and rebuilt. Index commits
//! are not fsynced one by one (only about once a second): that keeps the index off
//! the durable path of appends, which is the segments' fsync alone.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use time::OffsetDateTime;

use super::posting;
use super::record::{AuditRecord, micros_of};
use super::segment::read_range;
use super::{AuditError, Shared};

/// Index layout version; a different one in the file means rebuild.
/// 3: the `by_*` tables are keyed, and `entries` holds the values, as
/// [`key_hash`]es (2 had only the keys hashed). 4: consumer, provider,
/// service and time are filed in posting blocks ([`posting`]). 5: the
/// subject index is a set of sorted runs ([`SUBJECT_RUNS`]).
const VERSION: u64 = 5;
/// Records indexed per transaction while catching up. Large, because each
/// transaction rewrites every B-tree page it touched, and a record's subject
/// row lands on a page of its own: with 4,096 records per transaction a
/// rebuild wrote about one page per record and ran at 113k records/s; with
/// 65,536 at 186k/s (growth bench, issue 17). About 15 MB of keys in memory.
const CHUNK: u64 = 65_536;
/// The indexer gathers durable batches for this long before one transaction.
/// A redb commit costs about as much as indexing tens of records, and group
/// commit hands over batches of a few records each under load, so this cuts
/// the indexer's CPU without touching the append path; queries that must see
/// a fresh append call `sync_index` and catch up themselves.
const GATHER: Duration = Duration::from_millis(20);
/// Index rows examined for one page before returning a partial page with a cursor,
/// so a filter that rarely matches cannot hold a reader for long.
const SCAN_BUDGET: usize = 100_000;
/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when the query gives none.
pub const DEFAULT_LIMIT: usize = 50;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// seq -> (received µs, and the [`key_hash`]es of the event, consumer,
/// provider and service key): what a query's other filters are checked on
/// while scanning, before the record itself is read. Fixed-width, like the
/// keys below, so that the indexer copies no strings.
type EntryValue = (u64, u64, u64, u64, u64);
const ENTRIES: TableDefinition<u64, EntryValue> = TableDefinition::new("entries");
/// (key_hash(value), received µs, seq): one record filed under one value.
/// Keys are fixed-width so that redb compares them as three integers
/// instead of decoding a variable-length tuple on every step down the tree.
/// Two values may share a hash; a query narrows by the hashes in `entries`,
/// then checks every record it reads against the query (`record_matches`)
/// and drops those of another value.
type ByKey = (u64, u64, u64);
/// The subject index: sorted runs of (key_hash(person), received µs, seq)
/// triples, a log-structured merge tree kept in two tables. A person is in
/// few records of a batch, so one row per (person, record) in one B-tree
/// put each row on a random leaf of a tree of millions, and the
/// copy-on-write tree rewrote a 4 KiB leaf per row: ≈ 3.5 µs per record at
/// 9M records and growing (issue 17). Instead each index transaction writes
/// its triples as a new run (sorted, appended after every other run's keys,
/// so no leaf is rewritten), and runs of one size tier are merged into one
/// once there are [`RUN_FANOUT`] of them: a triple is rewritten once per
/// tier, and a subject query seeks once per run. (Tier, run id) -> (triples,
/// oldest and newest received µs); the run id is the first seq of its batch,
/// or the largest id of the runs merged into it. A query skips runs outside
/// its time window.
const SUBJECT_RUNS: TableDefinition<(u64, u64), (u64, u64, u64)> =
    TableDefinition::new("subject_runs");
/// (run id, last triple of the block) -> up to [`posting::RUN_BLOCK`]
/// triples of that run, in order.
type RunKey = (u64, u64, u64, u64);
const SUBJECT_BLOCKS: TableDefinition<RunKey, &[u8]> = TableDefinition::new("subject_blocks");
/// Runs of one tier merged at once.
const RUN_FANOUT: usize = 8;
/// A run of n triples is of tier floor(log8 n), and runs of this tier are
/// never merged: merging is done in memory inside an index transaction, so
/// the largest merge (8 runs of tier 5, under 2.1M triples, 50 MB) bounds
/// the transaction; a subject query seeks once per run of this tier (one
/// per 262k-2.1M triples). Lower in tests, so that they reach it.
const RUN_FINAL_TIER: u64 = if cfg!(test) { 2 } else { 6 };
/// The values that many records of one batch share are filed in posting
/// blocks: the row's key is the block's newest (hash, received µs, seq), its
/// value the block's (received µs, seq) pairs (see [`posting`]). One
/// insert per value and batch instead of one per record: the indexer's cost
/// per record was mostly its row inserts, about 1 µs each (issue 17).
type BlockTable = TableDefinition<'static, ByKey, &'static [u8]>;
const BY_CONSUMER: BlockTable = TableDefinition::new("by_consumer");
const BY_PROVIDER: BlockTable = TableDefinition::new("by_provider");
const BY_SERVICE: BlockTable = TableDefinition::new("by_service");
/// Every record under the hash of the empty key: the index for queries by
/// time alone.
const BY_TIME: BlockTable = TableDefinition::new("by_time");
/// (consumer, single-use id) -> received µs of the latest record that used it
/// up (see [`AuditRecord::replay_ids`]); the durable half of the broker's
/// replay check (`exchange::replay_store`).
const REPLAY: TableDefinition<(&str, &str), u64> = TableDefinition::new("replay");
/// (received µs, consumer, id) -> (): the same rows by age, so that rows
/// past [`REPLAY_KEEP`] are dropped oldest first.
const REPLAY_BY_TIME: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("replay_by_time");
/// How long used-up ids are kept: the protocol's 24 hours plus a margin for
/// clock steps, so a lookup never misses an id that is still in force.
pub(crate) const REPLAY_KEEP: Duration = Duration::from_secs(25 * 3600);
/// Expired replay rows dropped per index transaction, so a backlog never
/// makes one transaction long.
const REPLAY_PURGE_BATCH: usize = 1024;

/// A search of the log. Every given filter must match; newest first (by
/// `received_at`, then seq).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// IDNP/IDNO the data was about.
    pub subject: Option<String>,
    /// Consumer participant id (the `client` query parameter).
    pub consumer: Option<String>,
    /// Provider participant id.
    pub provider: Option<String>,
    /// Service as `provider/code`.
    pub service: Option<String>,
    /// Event type, e.g. `exchange`.
    pub event: Option<String>,
    /// Earliest `received_at`, inclusive.
    pub from: Option<OffsetDateTime>,
    /// Latest `received_at`, exclusive.
    pub to: Option<OffsetDateTime>,
    /// Page size; 0 means [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of query results.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// Matching records, newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` to get the next page; `None` when there is no more.
    pub next_cursor: Option<String>,
    /// How many records (from seq 0) the index covered when queried; records
    /// appended since then are not yet searchable.
    pub indexed: u64,
}

/// A record found by a query.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Leaf index of the record.
    pub seq: u64,
    /// The record.
    pub record: AuditRecord,
    /// Its exact leaf bytes.
    pub leaf: Vec<u8>,
    /// The broker whose log holds it, when the search ran over a cluster's
    /// shared copy (`ship`); `None` for this broker's own index.
    pub broker: Option<String>,
}

/// The keys one record is indexed under, taken from the record by the caller
/// of `append` (which has it in hand) so that the indexer never parses leaves
/// on the hot path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IndexKeys {
    /// `received_at` in microseconds since the Unix epoch.
    pub time: u64,
    pub event: String,
    /// Every person the record is about, each once (each is filed in the
    /// subject index).
    pub subjects: Vec<String>,
    pub consumer: Option<String>,
    pub provider: Option<String>,
    /// `provider/code`, whichever form the record carries the service in.
    pub service: Option<String>,
    /// The single-use ids the record used up (indexed under its consumer).
    pub replay_ids: Vec<String>,
}

impl IndexKeys {
    /// Takes the keys out of a record (moving its strings, allocating only to
    /// join a bare service code with its provider).
    pub(crate) fn of(record: AuditRecord) -> IndexKeys {
        let time = record.received_micros();
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let provider = nonempty(record.provider);
        let service = match (nonempty(record.service), provider.as_deref()) {
            (Some(s), Some(p)) if !s.contains('/') => Some(format!("{p}/{s}")),
            (service, _) => service,
        };
        IndexKeys {
            time,
            event: record.event,
            subjects: {
                let mut subjects: Vec<String> = nonempty(record.subject).into_iter().collect();
                for s in record.subjects {
                    if !s.is_empty() && !subjects.contains(&s) {
                        subjects.push(s);
                    }
                }
                subjects
            },
            consumer: nonempty(record.consumer),
            provider,
            service,
            replay_ids: record.replay_ids,
        }
    }
}

/// What the indexer thread is told.
pub(crate) enum IndexMsg {
    /// Catch up from the segments (at open).
    CatchUp,
    /// Records `first_seq..` became durable, with their keys.
    Durable {
        first_seq: u64,
        keys: Vec<IndexKeys>,
    },
}

/// The redb file with the indexes.
pub(crate) struct Index {
    db: Database,
    /// Held from reading `meta.next` to committing the rows that follow it.
    /// The indexer thread and a query's `sync_index` (one runs at every
    /// broker start) may both catch up at once; without it both would read,
    /// parse and insert the same records, and a rebuild would take twice as
    /// long (issue 17).
    updating: std::sync::Mutex<()>,
}

fn ix(e: impl std::fmt::Display) -> AuditError {
    AuditError::Index(e.to_string())
}

impl Index {
    /// Opens the index, or deletes and recreates it when it cannot be used
    /// (unreadable, another layout version, or ahead of a log of `log_size`).
    pub(crate) fn open(path: &Path, log_size: u64) -> Result<Index, AuditError> {
        match Index::try_open(path) {
            Ok(index) => match index.indexed() {
                Ok(n) if n <= log_size && index.version()? == VERSION => return Ok(index),
                Ok(n) => tracing::warn!(
                    indexed = n,
                    log_size,
                    "audit index does not match the log; rebuilding it"
                ),
                Err(e) => tracing::warn!(error = %e, "audit index unreadable; rebuilding it"),
            },
            Err(e) => tracing::warn!(error = %e, "audit index cannot be used; rebuilding it"),
        }
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| AuditError::io(path, e))?;
        }
        Index::try_open(path)
    }

    fn try_open(path: &Path) -> Result<Index, AuditError> {
        let db = Database::create(path).map_err(ix)?;
        let txn = db.begin_write().map_err(ix)?;
        {
            let mut meta = txn.open_table(META).map_err(ix)?;
            let version = meta.get("version").map_err(ix)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("version", VERSION).map_err(ix)?;
                    meta.insert("next", 0).map_err(ix)?;
                }
                // Said before opening the tables, whose types may differ in
                // another layout (an error that would not say why).
                Some(version) if version != VERSION => {
                    return Err(AuditError::Index(format!(
                        "the index has layout {version}, this build writes {VERSION}"
                    )));
                }
                Some(_) => {}
            }
            // Create every table so read transactions never meet a missing one.
            txn.open_table(ENTRIES).map_err(ix)?;
            txn.open_table(SUBJECT_RUNS).map_err(ix)?;
            txn.open_table(SUBJECT_BLOCKS).map_err(ix)?;
            for table in [BY_CONSUMER, BY_PROVIDER, BY_SERVICE, BY_TIME] {
                txn.open_table(table).map_err(ix)?;
            }
            txn.open_table(REPLAY).map_err(ix)?;
            txn.open_table(REPLAY_BY_TIME).map_err(ix)?;
        }
        txn.commit().map_err(ix)?;
        Ok(Index {
            db,
            updating: std::sync::Mutex::new(()),
        })
    }

    fn meta(&self, key: &str) -> Result<u64, AuditError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let meta = txn.open_table(META).map_err(ix)?;
        Ok(meta.get(key).map_err(ix)?.map_or(0, |v| v.value()))
    }

    fn version(&self) -> Result<u64, AuditError> {
        self.meta("version")
    }

    /// How many records (from seq 0) the index covers.
    pub(crate) fn indexed(&self) -> Result<u64, AuditError> {
        self.meta("next")
    }

    /// The right to add rows after `meta.next` (see `updating`). A holder
    /// that panicked left nothing half-done (rows and `next` commit
    /// together), so a poisoned lock is taken over.
    fn lock_updates(&self) -> std::sync::MutexGuard<'_, ()> {
        self.updating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the rows of the records `first..first + keys.len()` and raises
    /// `next` to cover them, in one transaction that is not fsynced on its own.
    /// Records the index already covers are skipped: a posting block filed
    /// twice would list its records twice. `next` never moves back, and
    /// never over a record not filed: keys starting beyond `next` are
    /// refused (callers apply from `next` under the update lock; a gap
    /// would leave records no query finds).
    fn apply(&self, first: u64, keys: &[IndexKeys]) -> Result<(), AuditError> {
        let mut txn = self.db.begin_write().map_err(ix)?;
        txn.set_durability(Durability::None).map_err(ix)?;
        {
            let mut meta = txn.open_table(META).map_err(ix)?;
            let current = meta.get("next").map_err(ix)?.map_or(0, |v| v.value());
            if first > current {
                return Err(AuditError::Index(format!(
                    "the index covers records below {current}; filing records from {first} would leave {current}..{first} unindexed"
                )));
            }
            let skip = usize::try_from(current.saturating_sub(first)).unwrap_or(usize::MAX);
            let Some(keys) = keys.get(skip..).filter(|keys| !keys.is_empty()) else {
                return Ok(());
            };
            let first = first + skip as u64;
            let mut entries = txn.open_table(ENTRIES).map_err(ix)?;
            let mut by_consumer = txn.open_table(BY_CONSUMER).map_err(ix)?;
            let mut by_provider = txn.open_table(BY_PROVIDER).map_err(ix)?;
            let mut by_service = txn.open_table(BY_SERVICE).map_err(ix)?;
            let mut by_time = txn.open_table(BY_TIME).map_err(ix)?;
            // Rows for each table are gathered and inserted in key order, so
            // that consecutive inserts walk neighbouring leaves; all but the
            // subjects' go in as posting blocks.
            let mut rows: [Vec<ByKey>; 5] = Default::default();
            for (seq, k) in (first..).zip(keys) {
                let time = k.time;
                let consumer = k.consumer.as_deref().unwrap_or("");
                let provider = k.provider.as_deref().unwrap_or("");
                let service = k.service.as_deref().unwrap_or("");
                let entry = (
                    time,
                    key_hash(&k.event),
                    key_hash(consumer),
                    key_hash(provider),
                    key_hash(service),
                );
                entries.insert(seq, entry).map_err(ix)?;
                for person in &k.subjects {
                    rows[0].push((key_hash(person), time, seq));
                }
                for (table, key) in [consumer, provider, service].into_iter().enumerate() {
                    if !key.is_empty() {
                        rows[table + 1].push((key_hash(key), time, seq));
                    }
                }
                rows[4].push((key_hash(""), time, seq));
            }
            let [subjects, blocks @ ..] = rows;
            add_subject_run(&txn, first, subjects)?;
            let tables = [
                &mut by_consumer,
                &mut by_provider,
                &mut by_service,
                &mut by_time,
            ];
            for (table, mut rows) in tables.into_iter().zip(blocks) {
                posting::build(&mut rows, |key, bytes| {
                    table.insert(key, bytes).map(drop).map_err(ix)
                })?;
            }
            apply_replay(&txn, keys)?;
            meta.insert("next", first + keys.len() as u64).map_err(ix)?;
        }
        txn.commit().map_err(ix)
    }

    /// Files `seq` under `value` in the subject and consumer indexes and
    /// gives its `entries` row `value` as consumer, as a hash
    /// collision would: for tests of the check that drops such rows.
    #[cfg(test)]
    pub(super) fn file_row_for_test(&self, value: &str, time: u64, seq: u64) {
        let txn = self.db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        {
            add_subject_run(&txn, u64::MAX - seq, vec![(key_hash(value), time, seq)])
                .unwrap_or_else(|e| panic!("{e}"));
            let mut table = txn
                .open_table(BY_CONSUMER)
                .unwrap_or_else(|e| panic!("{e}"));
            posting::build(&mut [(key_hash(value), time, seq)], |key, bytes| {
                table.insert(key, bytes).map(drop)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
        {
            let mut entries = txn.open_table(ENTRIES).unwrap_or_else(|e| panic!("{e}"));
            let (t, event, _, provider, service) = entries
                .get(seq)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("no entry {seq}"))
                .value();
            entries
                .insert(seq, (t, event, key_hash(value), provider, service))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        txn.commit().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The latest time (received µs) a record used up any of `ids` for
    /// `consumer`, and how many records the index covered when it looked.
    fn replay_seen(&self, consumer: &str, ids: &[&str]) -> Result<ReplaySeen, AuditError> {
        let txn = self.db.begin_read().map_err(ix)?;
        let indexed = txn
            .open_table(META)
            .map_err(ix)?
            .get("next")
            .map_err(ix)?
            .map_or(0, |v| v.value());
        let table = txn.open_table(REPLAY).map_err(ix)?;
        let mut latest = None;
        for id in ids {
            if let Some(at) = table.get((consumer, *id)).map_err(ix)? {
                latest = latest.max(Some(at.value()));
            }
        }
        Ok(ReplaySeen { indexed, latest })
    }

    /// Makes every earlier non-durable commit durable.
    fn persist(&self) -> Result<(), AuditError> {
        let mut txn = self.db.begin_write().map_err(ix)?;
        txn.set_durability(Durability::Immediate).map_err(ix)?;
        txn.commit().map_err(ix)
    }

    /// Runs a query; the records themselves are read from the segments.
    pub(crate) fn query(
        &self,
        query: &AuditQuery,
        shared: &Shared,
    ) -> Result<AuditPage, AuditError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let lo_time = query.from.map_or(0, micros_of);
        // The upper bound is the smaller of `to` (exclusive) and the cursor
        // (exclusive), as an inclusive (time, seq) pair.
        let mut hi = match query.to {
            Some(to) => match micros_of(to).checked_sub(1) {
                Some(t) => Some((t, u64::MAX)),
                None => return Ok(empty_page(self.indexed()?)),
            },
            None => Some((u64::MAX, u64::MAX)),
        };
        if let Some(cursor) = &query.cursor {
            let (t, s) = parse_cursor(cursor)?;
            let before = match (t, s) {
                (t, s) if s > 0 => Some((t, s - 1)),
                (t, _) if t > 0 => Some((t - 1, u64::MAX)),
                _ => None,
            };
            hi = match (hi, before) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        let txn = self.db.begin_read().map_err(ix)?;
        let indexed = txn
            .open_table(META)
            .map_err(ix)?
            .get("next")
            .map_err(ix)?
            .map_or(0, |v| v.value());
        let Some((hi_time, hi_seq)) = hi.filter(|(t, _)| *t >= lo_time) else {
            return Ok(empty_page(indexed));
        };
        // Drive the scan from the most selective filter; check the rest per row.
        let (table, key) = if let Some(s) = &query.subject {
            (None, s.as_str())
        } else if let Some(c) = &query.consumer {
            (Some(BY_CONSUMER), c.as_str())
        } else if let Some(s) = &query.service {
            (Some(BY_SERVICE), s.as_str())
        } else if let Some(p) = &query.provider {
            (Some(BY_PROVIDER), p.as_str())
        } else {
            (Some(BY_TIME), "")
        };
        let entries = txn.open_table(ENTRIES).map_err(ix)?;
        let mut found: Vec<(u64, u64)> = Vec::new();
        let mut scanned = 0usize;
        let mut next_cursor = None;
        let wanted = WantedHashes::of(query);
        let visit = |(time, seq): posting::Pair| -> Result<ControlFlow<()>, AuditError> {
            scanned += 1;
            let Some(entry) = entries.get(seq).map_err(ix)? else {
                return Ok(ControlFlow::Continue(()));
            };
            if wanted.match_entry(&entry.value()) {
                found.push((time, seq));
                if found.len() == limit {
                    next_cursor = Some(format!("{time}-{seq}"));
                    return Ok(ControlFlow::Break(()));
                }
            }
            if scanned >= SCAN_BUDGET {
                next_cursor = Some(format!("{time}-{seq}"));
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        };
        let key = key_hash(key);
        match table {
            None => scan_subject_runs(&txn, key, lo_time, (hi_time, hi_seq), visit)?,
            Some(table) => {
                let table = txn.open_table(table).map_err(ix)?;
                scan_blocks(&table, key, lo_time, (hi_time, hi_seq), visit)?;
            }
        }
        drop(entries);
        drop(txn);
        let mut items = Vec::with_capacity(found.len());
        for (_, seq) in found {
            // Pruned under retention: the index still names it, the bytes are gone.
            if seq < shared.pruned_below.load(Ordering::Acquire) {
                continue;
            }
            let mut leaf = Vec::new();
            read_range(&shared.layout, seq, seq + 1, |_, bytes| {
                leaf = bytes.to_vec();
                Ok(())
            })?;
            let record = AuditRecord::from_canonical_bytes(&leaf)?;
            // The scan compared hashes: the record's own values decide, which
            // drops a row of another value whose hash is the same.
            if !record_matches(query, &record) {
                continue;
            }
            items.push(AuditEntry {
                seq,
                record,
                leaf,
                broker: None,
            });
        }
        Ok(AuditPage {
            items,
            next_cursor,
            indexed,
        })
    }
}

/// Calls `visit` with the pairs filed under `key` in a block table, with
/// received time at least `lo_time` and at most `hi`, newest first, until it
/// breaks (see [`posting`] for why the range reaches [`posting::SPAN`] past
/// `hi`).
fn scan_blocks(
    table: &redb::ReadOnlyTable<ByKey, &'static [u8]>,
    key: u64,
    lo_time: u64,
    hi: posting::Pair,
    mut visit: impl FnMut(posting::Pair) -> Result<ControlFlow<()>, AuditError>,
) -> Result<(), AuditError> {
    let upper = (key, hi.0.saturating_add(posting::SPAN), u64::MAX);
    let mut blocks = table.range((key, lo_time, 0u64)..=upper).map_err(ix)?.rev();
    let mut merge = posting::Merge::new(lo_time, hi);
    let mut waiting = blocks.next().transpose().map_err(ix)?;
    loop {
        while let Some((k, v)) = &waiting {
            let (_, time, seq) = k.value();
            if !merge.wants((time, seq)) {
                break;
            }
            merge.open((time, seq), v.value()).map_err(ix)?;
            waiting = blocks.next().transpose().map_err(ix)?;
        }
        match merge.pop() {
            Some(pair) if visit(pair)?.is_continue() => {}
            _ => return Ok(()),
        }
    }
}

/// The tier of a run of `triples` (see [`RUN_FINAL_TIER`]).
fn run_tier(triples: u64) -> u64 {
    let mut tier = 0;
    let mut n = triples / 8;
    while n > 0 && tier < RUN_FINAL_TIER {
        tier += 1;
        n /= 8;
    }
    tier
}

/// Writes `triples` (sorted, without repeats) as run `id`, filed under the
/// tier its size gives.
fn write_run(
    runs: &mut redb::Table<(u64, u64), (u64, u64, u64)>,
    blocks: &mut redb::Table<RunKey, &[u8]>,
    id: u64,
    triples: &[posting::Triple],
) -> Result<(), AuditError> {
    posting::run_blocks(triples, |(hash, time, seq), bytes| {
        blocks.insert((id, hash, time, seq), bytes).map(drop)
    })
    .map_err(ix)?;
    let oldest = triples.iter().map(|t| t.1).min().unwrap_or(0);
    let newest = triples.iter().map(|t| t.1).max().unwrap_or(0);
    let count = triples.len() as u64;
    runs.insert((run_tier(count), id), (count, oldest, newest))
        .map_err(ix)?;
    Ok(())
}

/// Files a batch's subject triples as a new run `id` (larger than every
/// run id in the index: the batch's first seq), then merges the runs of the
/// lowest tier below [`RUN_FINAL_TIER`] that has [`RUN_FANOUT`] of them,
/// again until none has. A merge of 8 runs of tier t has at least 8^(t+1)
/// triples, so every merge moves its triples up a tier: each triple is
/// rewritten at most once per tier. All in the caller's transaction, so a
/// crash leaves the runs as they were before the batch.
fn add_subject_run(
    txn: &redb::WriteTransaction,
    id: u64,
    mut triples: Vec<posting::Triple>,
) -> Result<(), AuditError> {
    if triples.is_empty() {
        return Ok(());
    }
    triples.sort_unstable();
    triples.dedup();
    let mut runs = txn.open_table(SUBJECT_RUNS).map_err(ix)?;
    let mut blocks = txn.open_table(SUBJECT_BLOCKS).map_err(ix)?;
    write_run(&mut runs, &mut blocks, id, &triples)?;
    loop {
        let mut group: Vec<(u64, u64)> = Vec::new();
        for tier in 0..RUN_FINAL_TIER {
            group.clear();
            for row in runs.range((tier, 0)..=(tier, u64::MAX)).map_err(ix)? {
                let (key, value) = row.map_err(ix)?;
                group.push((key.value().1, value.value().0));
            }
            if group.len() >= RUN_FANOUT {
                break;
            }
        }
        if group.len() < RUN_FANOUT {
            return Ok(());
        }
        let total = group.iter().map(|&(_, n)| n).sum::<u64>();
        let mut merged = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for &(run, count) in &group {
            let whole = (run, 0, 0, 0)..=(run, u64::MAX, u64::MAX, u64::MAX);
            for row in blocks.range(whole.clone()).map_err(ix)? {
                let (_, bytes) = row.map_err(ix)?;
                merged.extend(posting::run_block_triples(bytes.value()).map_err(ix)?);
            }
            blocks.retain_in(whole, |_, _| false).map_err(ix)?;
            runs.remove((run_tier(count), run)).map_err(ix)?;
        }
        merged.sort_unstable();
        merged.dedup();
        let id = group.iter().map(|&(run, _)| run).max().unwrap_or(id);
        write_run(&mut runs, &mut blocks, id, &merged)?;
    }
}

/// Calls `visit` with the (received µs, seq) pairs of the subject `key`,
/// received at `lo_time` or later and at most `hi`, newest first, until it
/// breaks: each run in the window is searched on its own and the runs'
/// answers merged.
fn scan_subject_runs(
    txn: &redb::ReadTransaction,
    key: u64,
    lo_time: u64,
    hi: posting::Pair,
    mut visit: impl FnMut(posting::Pair) -> Result<ControlFlow<()>, AuditError>,
) -> Result<(), AuditError> {
    let runs = txn.open_table(SUBJECT_RUNS).map_err(ix)?;
    let blocks = txn.open_table(SUBJECT_BLOCKS).map_err(ix)?;
    let mut streams = Vec::new();
    for row in runs.iter().map_err(ix)? {
        let (run, value) = row.map_err(ix)?;
        let (_, oldest, newest) = value.value();
        if newest < lo_time || oldest > hi.0 {
            continue;
        }
        streams.push(run_stream(&blocks, run.value().1, key, lo_time, hi)?);
    }
    let mut merge = posting::MergeStreams::new(streams)?;
    while let Some(pair) = merge.pop()? {
        if visit(pair)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// A subject's pairs in one run, newest first: read lazily, a block at a
/// time, from the last block that can hold one at or below `hi` back to the
/// first that can hold one at or above `lo_time`.
type RunStream<'a> = Box<dyn FnMut() -> Result<Option<posting::Pair>, AuditError> + 'a>;

fn run_stream<'a>(
    blocks: &'a redb::ReadOnlyTable<RunKey, &'static [u8]>,
    run: u64,
    hash: u64,
    lo_time: u64,
    hi: posting::Pair,
) -> Result<RunStream<'a>, AuditError> {
    let lower = (run, hash, lo_time, 0);
    // The first block whose last triple is at or above (hash, hi) holds the
    // newest triples wanted; the blocks after it hold only larger ones.
    let upper = match blocks
        .range((run, hash, hi.0, hi.1)..=(run, u64::MAX, u64::MAX, u64::MAX))
        .map_err(ix)?
        .next()
    {
        Some(row) => row.map_err(ix)?.0.value(),
        None => (run, u64::MAX, u64::MAX, u64::MAX),
    };
    if upper < lower {
        return Ok(Box::new(|| Ok(None)));
    }
    let mut range = blocks.range(lower..=upper).map_err(ix)?.rev();
    let mut pending: Vec<posting::Pair> = Vec::new();
    Ok(Box::new(move || {
        loop {
            if let Some(pair) = pending.pop() {
                return Ok(Some(pair));
            }
            let Some(row) = range.next() else {
                return Ok(None);
            };
            let (_, bytes) = row.map_err(ix)?;
            pending = posting::run_block_pairs(bytes.value(), hash, lo_time, hi).map_err(ix)?;
        }
    }))
}

/// Records the used-up ids of a batch (keeping the latest time of an id, so
/// that applying an old record again never shortens its ban) and drops rows
/// older than [`REPLAY_KEEP`], a bounded number per transaction.
fn apply_replay(txn: &redb::WriteTransaction, keys: &[IndexKeys]) -> Result<(), AuditError> {
    let mut replay = txn.open_table(REPLAY).map_err(ix)?;
    let mut by_time = txn.open_table(REPLAY_BY_TIME).map_err(ix)?;
    for k in keys {
        let Some(consumer) = k.consumer.as_deref() else {
            continue;
        };
        for id in &k.replay_ids {
            let before = replay
                .get((consumer, id.as_str()))
                .map_err(ix)?
                .map(|v| v.value());
            if before.is_some_and(|t| t >= k.time) {
                continue;
            }
            if let Some(t) = before {
                by_time.remove((t, consumer, id.as_str())).map_err(ix)?;
            }
            replay.insert((consumer, id.as_str()), k.time).map_err(ix)?;
            by_time
                .insert((k.time, consumer, id.as_str()), ())
                .map_err(ix)?;
        }
    }
    let keep = u64::try_from(REPLAY_KEEP.as_micros()).unwrap_or(u64::MAX);
    let cutoff = micros_of(OffsetDateTime::now_utc()).saturating_sub(keep);
    let mut expired: Vec<(u64, String, String)> = Vec::new();
    for row in by_time.range(..(cutoff, "", "")).map_err(ix)? {
        let (key, _) = row.map_err(ix)?;
        let (t, consumer, id) = key.value();
        expired.push((t, consumer.to_string(), id.to_string()));
        if expired.len() >= REPLAY_PURGE_BATCH {
            break;
        }
    }
    for (t, consumer, id) in &expired {
        by_time
            .remove((*t, consumer.as_str(), id.as_str()))
            .map_err(ix)?;
        let current = replay
            .get((consumer.as_str(), id.as_str()))
            .map_err(ix)?
            .map(|v| v.value());
        if current == Some(*t) {
            replay
                .remove((consumer.as_str(), id.as_str()))
                .map_err(ix)?;
        }
    }
    Ok(())
}

/// What the index knows of a consumer's used-up ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySeen {
    /// How many records (from seq 0) the index covered when it looked.
    pub indexed: u64,
    /// The latest `received_at` (µs since the Unix epoch) of a record that
    /// used up one of the ids, if any did.
    pub latest: Option<u64>,
}

impl super::AuditLog {
    /// Looks up single-use ids of `consumer` in the index (see
    /// [`AuditRecord::replay_ids`]). Ids of records not yet indexed are not
    /// found: the caller holds those itself until [`AuditLog::indexed`] covers
    /// them.
    ///
    /// [`AuditLog::indexed`]: super::AuditLog::indexed
    pub fn replay_seen(&self, consumer: &str, ids: &[&str]) -> Result<ReplaySeen, AuditError> {
        self.shared.index.replay_seen(consumer, ids)
    }

    /// How many records (from seq 0) the index covers.
    pub fn indexed(&self) -> Result<u64, AuditError> {
        self.shared.index.indexed()
    }
}

fn empty_page(indexed: u64) -> AuditPage {
    AuditPage {
        items: Vec::new(),
        next_cursor: None,
        indexed,
    }
}

/// The [`key_hash`]es of a query's filters other than the subject, compared
/// with a record's row in `entries` while scanning.
struct WantedHashes {
    event: Option<u64>,
    consumer: Option<u64>,
    provider: Option<u64>,
    service: Option<u64>,
}

impl WantedHashes {
    fn of(query: &AuditQuery) -> WantedHashes {
        let hash = |value: &Option<String>| value.as_deref().map(key_hash);
        WantedHashes {
            event: hash(&query.event),
            consumer: hash(&query.consumer),
            provider: hash(&query.provider),
            service: hash(&query.service),
        }
    }

    /// Whether the row may match: equal hashes say "perhaps", different ones
    /// say "no"; [`record_matches`] decides on the record itself.
    fn match_entry(&self, entry: &EntryValue) -> bool {
        let (_, event, consumer, provider, service) = *entry;
        let ok = |want: Option<u64>, have: u64| want.is_none_or(|w| w == have);
        ok(self.event, event)
            && ok(self.consumer, consumer)
            && ok(self.provider, provider)
            && ok(self.service, service)
    }
}

/// Whether a record passes every filter of the query other than time, on its
/// own values, taken as [`IndexKeys::of`] takes them for its index rows (the
/// subject among all the persons it is about, the service as
/// `provider/code`).
fn record_matches(query: &AuditQuery, record: &AuditRecord) -> bool {
    let keys = IndexKeys::of(record.clone());
    let ok = |want: &Option<String>, have: Option<&str>| {
        want.as_deref()
            .is_none_or(|w| w == have.unwrap_or_default())
    };
    query
        .subject
        .as_ref()
        .is_none_or(|s| keys.subjects.contains(s))
        && ok(&query.event, Some(&keys.event))
        && ok(&query.consumer, keys.consumer.as_deref())
        && ok(&query.provider, keys.provider.as_deref())
        && ok(&query.service, keys.service.as_deref())
}

/// The 64-bit key an index row is filed under for a value (a subject,
/// consumer, provider or service). FNV-1a (a fixed, published function: the
/// rows must find the same key after any rebuild or upgrade, which a
/// library's unspecified default hasher would not promise) followed by
/// SplitMix64's finaliser to spread the bits. Not collision-resistant, and
/// need not be: every row found is checked against the record's values, so
/// a collision, chosen or by chance, costs a row read and nothing else.
pub(super) fn key_hash(value: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for byte in value.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn parse_cursor(cursor: &str) -> Result<(u64, u64), AuditError> {
    let bad = || AuditError::InvalidQuery(format!("cursor {cursor:?} is not one this log issued"));
    let (t, s) = cursor.split_once('-').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?))
}

/// The indexer thread: indexes each durable batch from the keys the sync
/// thread hands it; when a batch does not follow what is indexed (after a
/// failed update, or at open) it catches up by reading the segments. Ends
/// (after a final durable commit) when the sync thread drops its sender.
pub(crate) fn run_indexer(shared: Arc<Shared>, rx: Receiver<IndexMsg>) {
    let mut dirty = false;
    let mut last_persist = Instant::now();
    loop {
        let mut messages = Vec::new();
        let stop = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(msg) => {
                messages.push(msg);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // Several batches collapse into one transaction. The thread sleeps
        // through the gathering instead of waiting on the channel, so the
        // batches that arrive meanwhile (one per fsync: one per exchange at
        // low load) do not each wake it (issue 17); a closed channel is
        // seen at the next receive.
        if !stop && !messages.is_empty() {
            std::thread::sleep(GATHER);
            while let Ok(msg) = rx.try_recv() {
                messages.push(msg);
            }
        }
        match index_messages(&shared, messages) {
            Ok(n) => dirty |= n > 0,
            Err(e) => tracing::warn!(error = %e, "audit index update failed; will retry"),
        }
        if dirty && (stop || last_persist.elapsed() >= Duration::from_secs(1)) {
            match shared.index.persist() {
                Ok(()) => dirty = false,
                Err(e) => tracing::warn!(error = %e, "audit index commit failed; will retry"),
            }
            last_persist = Instant::now();
        }
        if stop {
            break;
        }
    }
}

/// Applies the contiguous run of keys that follows what is indexed, then
/// catches up from the segments if anything was left (a gap, a catch-up
/// request or an idle tick). Returns how many records were indexed.
fn index_messages(shared: &Shared, messages: Vec<IndexMsg>) -> Result<u64, AuditError> {
    let updating = shared.index.lock_updates();
    let indexed = shared.index.indexed()?;
    let mut run: Vec<IndexKeys> = Vec::new();
    let mut gap = messages.is_empty();
    for msg in messages {
        match msg {
            IndexMsg::CatchUp => gap = true,
            IndexMsg::Durable { first_seq, keys } => {
                let expected = indexed + run.len() as u64;
                let end = first_seq + keys.len() as u64;
                if end <= expected {
                    continue;
                }
                if first_seq > expected {
                    gap = true;
                    continue;
                }
                let skip = usize::try_from(expected - first_seq).unwrap_or(usize::MAX);
                run.extend(keys.into_iter().skip(skip));
            }
        }
    }
    let mut done = run.len() as u64;
    if !run.is_empty() {
        shared.index.apply(indexed, &run)?;
    }
    drop(updating);
    if gap {
        done += catch_up(shared)?;
    }
    Ok(done)
}

/// Indexes every published record not yet indexed, reading the segments;
/// returns how many.
pub(crate) fn catch_up(shared: &Shared) -> Result<u64, AuditError> {
    let mut done = 0;
    loop {
        // One chunk at a time, so that the indexer thread's batches and
        // another catch-up interleave with this one instead of waiting for
        // all of it, and none of them indexes a chunk another one did.
        let _updating = shared.index.lock_updates();
        let from = shared.index.indexed()?;
        let size = shared.size.load(Ordering::Acquire);
        if from >= size {
            return Ok(done);
        }
        let to = size.min(from + CHUNK);
        let mut keys = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
        // Records pruned under retention are indexed under no keys: their
        // bytes are gone, and the index must still follow the seq numbers.
        let pruned_below = shared.pruned_below.load(Ordering::Acquire);
        if from < pruned_below {
            let to = to.min(pruned_below);
            keys.resize_with(usize::try_from(to - from).unwrap_or(0), IndexKeys::default);
            shared.index.apply(from, &keys)?;
            done += to - from;
            continue;
        }
        read_range(&shared.layout, from, to, |seq, leaf| {
            // A leaf the writer wrote always parses; should one not, index it
            // under no keys rather than stall the index forever. The index is
            // derived data: a plain parse suffices (verify checks canonical form).
            match serde_json::from_slice::<AuditRecord>(leaf) {
                Ok(record) => keys.push(IndexKeys::of(record)),
                Err(_) => {
                    tracing::warn!(seq, "audit index: record does not parse; not indexed");
                    keys.push(IndexKeys::default());
                }
            }
            Ok(())
        })?;
        shared.index.apply(from, &keys)?;
        done += to - from;
    }
}

/// Path of the index file in a log directory.
pub(crate) fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.redb")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Many small batches, as a quiet bus indexes them, merge tier by tier:
    /// no tier below the last keeps [`RUN_FANOUT`] runs, every triple is in
    /// exactly one run, and a subject's records come back exactly, newest
    /// first, in any window, and the newest few when the caller stops.
    #[test]
    fn subject_runs_merge_by_tier_and_answer_exactly() {
        let tmp = ok(tempfile::tempdir());
        let index = ok(Index::open(&tmp.path().join("index.redb"), u64::MAX));
        let persons = [
            "2000000000001",
            "2000000000002",
            "2000000000003",
            "2000000000004",
        ];
        let mut all: Vec<(&str, u64, u64)> = Vec::new();
        let mut seq = 0u64;
        let mut state = 11u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % n
        };
        for batch in 0..700u64 {
            let size = 1 + next(5);
            let mut keys = Vec::new();
            for i in 0..size {
                // Mostly rising times; about one record in nine is late.
                let late = if next(9) == 0 { 5_000 } else { 0 };
                let time = 1_000_000 + (seq + i) * 100 - late;
                let mut subjects = vec![persons[next(3) as usize]];
                if batch % 3 == 0 {
                    subjects.push(persons[3]);
                }
                for person in &subjects {
                    all.push((person, time, seq + i));
                }
                keys.push(IndexKeys {
                    time,
                    event: "exchange".to_string(),
                    subjects: subjects.iter().map(|p| (*p).to_string()).collect(),
                    ..IndexKeys::default()
                });
            }
            ok(index.apply(seq, &keys));
            seq += size;
        }
        let txn = ok(index.db.begin_read());
        let runs = ok(txn.open_table(SUBJECT_RUNS));
        let mut per_tier = std::collections::BTreeMap::<u64, usize>::new();
        let mut triples = 0;
        for row in ok(runs.iter()) {
            let (key, value) = ok(row);
            let ((tier, _), (count, _, _)) = (key.value(), value.value());
            assert_eq!(tier, run_tier(count));
            *per_tier.entry(tier).or_default() += 1;
            triples += count;
        }
        assert_eq!(triples, all.len() as u64);
        assert!(
            per_tier.get(&RUN_FINAL_TIER).is_some_and(|&n| n > 1),
            "{per_tier:?}"
        );
        for tier in 0..RUN_FINAL_TIER {
            assert!(
                per_tier.get(&tier).is_none_or(|&n| n < RUN_FANOUT),
                "{per_tier:?}"
            );
        }
        let max_time = 1_000_000 + seq * 100;
        for person in persons {
            for (lo, hi) in [
                (0, (u64::MAX, u64::MAX)),
                (1_020_000, (1_050_000, 400)),
                (1_000_000 + seq * 50, (max_time, u64::MAX)),
                (2_000_000, (1_500_000, 0)),
            ] {
                let mut expected: Vec<(u64, u64)> = all
                    .iter()
                    .filter(|(p, t, s)| *p == person && *t >= lo && (*t, *s) <= hi)
                    .map(|&(_, t, s)| (t, s))
                    .collect();
                expected.sort_unstable_by(|a, b| b.cmp(a));
                let mut got = Vec::new();
                ok(scan_subject_runs(&txn, key_hash(person), lo, hi, |pair| {
                    got.push(pair);
                    Ok(ControlFlow::Continue(()))
                }));
                assert_eq!(got, expected, "{person} {lo} {hi:?}");
                let mut first = Vec::new();
                ok(scan_subject_runs(&txn, key_hash(person), lo, hi, |pair| {
                    first.push(pair);
                    Ok(if first.len() == 3 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                }));
                assert_eq!(first, expected.iter().take(3).copied().collect::<Vec<_>>());
            }
        }
    }

    /// The indexer and a query's catch-up each apply what follows `next`;
    /// should a batch reach `apply` again, its records must not be filed in
    /// a second posting block (they would be found twice); one that starts
    /// past `next` must not move it over records never filed.
    #[test]
    fn records_applied_again_are_filed_once() {
        let tmp = ok(tempfile::tempdir());
        let index = ok(Index::open(&tmp.path().join("index.redb"), u64::MAX));
        let keys: Vec<IndexKeys> = (0..20)
            .map(|i| IndexKeys {
                time: 1_000 + i,
                event: "exchange".to_string(),
                consumer: Some("apl-cahul".to_string()),
                ..IndexKeys::default()
            })
            .collect();
        // Keys beyond what is indexed would leave a gap: refused, unfiled.
        assert!(index.apply(3, &keys[3..]).is_err());
        assert_eq!(ok(index.indexed()), 0);
        ok(index.apply(0, &keys[..12]));
        ok(index.apply(5, &keys[5..]));
        ok(index.apply(0, &keys));
        assert_eq!(ok(index.indexed()), 20);
        let txn = ok(index.db.begin_read());
        for (table, value) in [(BY_CONSUMER, "apl-cahul"), (BY_TIME, "")] {
            let table = ok(txn.open_table(table));
            let mut seen = Vec::new();
            ok(scan_blocks(
                &table,
                key_hash(value),
                0,
                (u64::MAX, u64::MAX),
                |(_, seq)| {
                    seen.push(seq);
                    Ok(ControlFlow::Continue(()))
                },
            ));
            assert_eq!(seen, (0..20).rev().collect::<Vec<u64>>(), "{value:?}");
        }
    }
}
