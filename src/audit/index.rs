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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use time::OffsetDateTime;

use super::record::{AuditRecord, micros_of};
use super::segment::read_range;
use super::{AuditError, Shared};

/// Index layout version; a different one in the file means rebuild.
const VERSION: u64 = 1;
/// Records indexed per transaction while catching up.
const CHUNK: u64 = 4096;
/// Index rows examined for one page before returning a partial page with a cursor,
/// so a filter that rarely matches cannot hold a reader for long.
const SCAN_BUDGET: usize = 100_000;
/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when the query gives none.
pub const DEFAULT_LIMIT: usize = 50;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// seq -> (received µs, event, subject, consumer, provider, service key).
type EntryValue<'a> = (u64, &'a str, &'a str, &'a str, &'a str, &'a str);
const ENTRIES: TableDefinition<u64, (u64, &str, &str, &str, &str, &str)> =
    TableDefinition::new("entries");
/// (key, received µs, seq) -> (); newest first is a reverse range scan.
const BY_SUBJECT: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("by_subject");
const BY_CONSUMER: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("by_consumer");
const BY_PROVIDER: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("by_provider");
const BY_SERVICE: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("by_service");
/// Every record under the empty key: the index for queries by time alone.
const BY_TIME: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("by_time");

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
}

/// The redb file with the indexes.
pub(crate) struct Index {
    db: Database,
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
            Err(e) => tracing::warn!(error = %e, "audit index unreadable; rebuilding it"),
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
            if meta.get("version").map_err(ix)?.is_none() {
                meta.insert("version", VERSION).map_err(ix)?;
                meta.insert("next", 0).map_err(ix)?;
            }
            // Create every table so read transactions never meet a missing one.
            txn.open_table(ENTRIES).map_err(ix)?;
            for table in [BY_SUBJECT, BY_CONSUMER, BY_PROVIDER, BY_SERVICE, BY_TIME] {
                txn.open_table(table).map_err(ix)?;
            }
        }
        txn.commit().map_err(ix)?;
        Ok(Index { db })
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

    /// Adds the rows of `records` and sets `next` (the count of records now
    /// covered) in one transaction that is not fsynced on its own.
    fn apply(&self, records: &[(u64, AuditRecord)], next: u64) -> Result<(), AuditError> {
        let mut txn = self.db.begin_write().map_err(ix)?;
        txn.set_durability(Durability::None).map_err(ix)?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(ix)?;
            let mut by_subject = txn.open_table(BY_SUBJECT).map_err(ix)?;
            let mut by_consumer = txn.open_table(BY_CONSUMER).map_err(ix)?;
            let mut by_provider = txn.open_table(BY_PROVIDER).map_err(ix)?;
            let mut by_service = txn.open_table(BY_SERVICE).map_err(ix)?;
            let mut by_time = txn.open_table(BY_TIME).map_err(ix)?;
            for (seq, record) in records {
                let time = record.received_micros();
                let subject = record.subject.as_deref().unwrap_or("");
                let consumer = record.consumer.as_deref().unwrap_or("");
                let provider = record.provider.as_deref().unwrap_or("");
                let service = record.service_key().unwrap_or_default();
                entries
                    .insert(
                        *seq,
                        (
                            time,
                            record.event.as_str(),
                            subject,
                            consumer,
                            provider,
                            service.as_str(),
                        ),
                    )
                    .map_err(ix)?;
                let rows = [
                    (&mut by_subject, subject),
                    (&mut by_consumer, consumer),
                    (&mut by_provider, provider),
                    (&mut by_service, service.as_str()),
                ];
                for (table, key) in rows {
                    if !key.is_empty() {
                        table.insert((key, time, *seq), ()).map_err(ix)?;
                    }
                }
                by_time.insert(("", time, *seq), ()).map_err(ix)?;
            }
            let mut meta = txn.open_table(META).map_err(ix)?;
            meta.insert("next", next).map_err(ix)?;
        }
        txn.commit().map_err(ix)
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
            (BY_SUBJECT, s.as_str())
        } else if let Some(c) = &query.consumer {
            (BY_CONSUMER, c.as_str())
        } else if let Some(s) = &query.service {
            (BY_SERVICE, s.as_str())
        } else if let Some(p) = &query.provider {
            (BY_PROVIDER, p.as_str())
        } else {
            (BY_TIME, "")
        };
        let table = txn.open_table(table).map_err(ix)?;
        let entries = txn.open_table(ENTRIES).map_err(ix)?;
        let mut found: Vec<(u64, u64)> = Vec::new();
        let mut scanned = 0usize;
        let mut next_cursor = None;
        let range = table
            .range((key, lo_time, 0u64)..=(key, hi_time, hi_seq))
            .map_err(ix)?;
        for row in range.rev() {
            let (k, _) = row.map_err(ix)?;
            let (_, time, seq) = k.value();
            scanned += 1;
            let Some(entry) = entries.get(seq).map_err(ix)? else {
                continue;
            };
            if matches(query, &entry.value()) {
                found.push((time, seq));
                if found.len() == limit {
                    next_cursor = Some(format!("{time}-{seq}"));
                    break;
                }
            }
            if scanned >= SCAN_BUDGET {
                next_cursor = Some(format!("{time}-{seq}"));
                break;
            }
        }
        drop(entries);
        drop(table);
        drop(txn);
        let mut items = Vec::with_capacity(found.len());
        for (_, seq) in found {
            let mut leaf = Vec::new();
            read_range(&shared.layout, seq, seq + 1, |_, bytes| {
                leaf = bytes.to_vec();
                Ok(())
            })?;
            let record = AuditRecord::from_canonical_bytes(&leaf)?;
            items.push(AuditEntry { seq, record, leaf });
        }
        Ok(AuditPage {
            items,
            next_cursor,
            indexed,
        })
    }
}

fn empty_page(indexed: u64) -> AuditPage {
    AuditPage {
        items: Vec::new(),
        next_cursor: None,
        indexed,
    }
}

fn matches(query: &AuditQuery, entry: &EntryValue<'_>) -> bool {
    let (_, event, subject, consumer, provider, service) = *entry;
    let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    ok(&query.event, event)
        && ok(&query.subject, subject)
        && ok(&query.consumer, consumer)
        && ok(&query.provider, provider)
        && ok(&query.service, service)
}

fn parse_cursor(cursor: &str) -> Result<(u64, u64), AuditError> {
    let bad = || AuditError::InvalidQuery(format!("cursor {cursor:?} is not one this log issued"));
    let (t, s) = cursor.split_once('-').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?))
}

/// The indexer thread: follows the published tree size and indexes what it has
/// not indexed yet, reading the records back from the segments. Ends (after a
/// final durable commit) when the writer drops its sender.
pub(crate) fn run_indexer(shared: Arc<Shared>, rx: Receiver<u64>) {
    let mut dirty = false;
    let mut last_persist = Instant::now();
    loop {
        let stop = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(_) | Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        // Several notifications collapse into one catch-up to the newest size.
        while rx.try_recv().is_ok() {}
        match catch_up(&shared) {
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

/// Indexes every published record not yet indexed; returns how many.
pub(crate) fn catch_up(shared: &Shared) -> Result<u64, AuditError> {
    let mut done = 0;
    loop {
        let from = shared.index.indexed()?;
        let size = shared.size.load(Ordering::Acquire);
        if from >= size {
            return Ok(done);
        }
        let to = size.min(from + CHUNK);
        let mut records = Vec::with_capacity((to - from) as usize);
        read_range(&shared.layout, from, to, |seq, leaf| {
            // A leaf the writer wrote always parses; should one not, index it
            // under no keys rather than stall the index forever.
            let record = AuditRecord::from_canonical_bytes(leaf).ok();
            if let Some(record) = record {
                records.push((seq, record));
            } else {
                tracing::warn!(seq, "audit index: record does not parse; not indexed");
            }
            Ok(())
        })?;
        shared.index.apply(&records, to)?;
        done += to - from;
    }
}

/// Path of the index file in a log directory.
pub(crate) fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.redb")
}
