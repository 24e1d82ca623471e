//! Shipping the log to the cluster's shared copy (issue 15): each broker of
//! a cluster keeps its own durable Merkle log and signing key (an answer
//! still waits for the local record's fsync, nothing else), and a shipper
//! thread copies every durable record, in order, to the table the cluster's
//! brokers share ([`AuditCopy`], on PostgreSQL `store::postgres::audit_copy`),
//! so that auditor searches and citizens' access history find the records
//! of every broker.
//!
//! Invariants:
//! - **exactly once, in order.** The copy's position (`shipped`, how many of
//!   this broker's records it holds) is read from the copy at start and
//!   after any failure, and advanced in the same transaction as the rows it
//!   covers; a batch is only ever the records that follow the position
//!   (`[shipped, shipped + n)`), so a crash of either side resumes where the
//!   last commit left off, with neither gaps nor duplicates. A row already
//!   present for a (broker, seq) must be byte for byte the record shipped,
//!   or the batch is refused and shipping stops with an alarm;
//! - **off the exchange path.** Appends never wait for shipping: the
//!   shipper reads only durable records (below the published tree size) on
//!   a thread of its own and backs off (100 ms doubling to 5 s) while the
//!   copy is unreachable; its lag is a metric and a line of `/readyz`'s
//!   audit probe, never a reason to refuse an exchange;
//! - **the log stays the evidence.** The copy is for search: proofs, tree
//!   heads and records by seq come from the broker that holds them, and
//!   `mconnect audit verify --shipped` checks the copy against the log
//!   ([`verify_shipped`]);
//! - **one log, one broker id.** The id is kept in the log directory
//!   ([`BROKER_ID_FILE`]), written once (from `audit.broker_id` or random),
//!   so it follows the log through restarts, key rotations and restores.
//!   A copy that holds more records of this id than the log, or different
//!   bytes, is an alarm (another broker with the same id, or a log restored
//!   from an older backup), never overwritten.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::index::IndexKeys;
use super::merkle::{Hash, leaf_hash};
use super::record::AuditRecord;
use super::retention::{decode_pruned, list_pruned};
use super::segment::{Decoded, HEADER_LEN, decode_frame, list_segments, read_range};
use super::{AuditError, AuditLog, AuditPage, AuditQuery, Shared};

/// The file in the log directory that names the broker whose log it is.
pub const BROKER_ID_FILE: &str = "broker-id";
/// Records shipped in one transaction at most.
pub const SHIP_BATCH: usize = 1024;
/// How long the shipper sleeps when it is caught up (a nudge wakes it).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Backoff while the copy is unreachable: from this, doubling...
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Wait after an alarm (the copy disagrees with the log) before looking again.
const ALARM_RETRY: Duration = Duration::from_secs(10);
/// How often the shipper removes its rows past the record retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a search waits for this broker's own records to be shipped.
const SEARCH_WAIT: Duration = Duration::from_secs(2);

/// Whether `id` can name a broker: 1 to 64 ASCII letters, digits, `.`,
/// `_` or `-`, starting with a letter or digit.
pub fn valid_broker_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The broker id of the log in `dir`: the one in [`BROKER_ID_FILE`], or,
/// the first time, `configured` (or a random `broker-{12 hex}`) written
/// there (fsynced). A configured id that differs from the file's is
/// refused: the records already shipped are under the file's.
pub fn broker_id(dir: &Path, configured: Option<&str>) -> Result<String, AuditError> {
    let path = dir.join(BROKER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if !valid_broker_id(id) {
                return Err(AuditError::Config(format!(
                    "{} does not hold a broker id",
                    path.display()
                )));
            }
            if let Some(wanted) = configured
                && wanted != id
            {
                return Err(AuditError::Config(format!(
                    "audit.broker_id is `{wanted}`, but this log was shipped as `{id}` ({}): a log keeps its broker id; remove audit.broker_id or set it to `{id}`",
                    path.display()
                )));
            }
            Ok(id.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = match configured {
                Some(id) if valid_broker_id(id) => id.to_string(),
                Some(id) => {
                    return Err(AuditError::Config(format!(
                        "audit.broker_id `{id}` is not 1 to 64 letters, digits, `.`, `_` or `-`"
                    )));
                }
                None => format!(
                    "broker-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                ),
            };
            let tmp = dir.join(format!("{BROKER_ID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut file, format!("{id}\n").as_bytes())?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| AuditError::io(&path, e))?;
            super::segment::sync_dir(dir)?;
            Ok(id)
        }
        Err(e) => Err(AuditError::io(&path, e)),
    }
}

/// Where a broker's shipped copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShipPosition {
    /// Records `[0, shipped)` of the broker's log were shipped.
    pub shipped: u64,
    /// Rows below this seq were removed under retention (or pruned from the
    /// log before they could be shipped).
    pub pruned_below: u64,
}

/// One record as the copy holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedRecord {
    /// Its seq in the broker's log.
    pub seq: u64,
    /// RFC 9162 leaf hash of `leaf`.
    pub leaf_hash: Hash,
    /// The exact leaf bytes.
    pub leaf: Vec<u8>,
    /// `received_at`, µs since the Unix epoch.
    pub received_us: u64,
    /// Event type.
    pub event: String,
    /// The record's exchange id.
    pub exchange_id: String,
    /// Consumer participant.
    pub consumer: Option<String>,
    /// Provider participant.
    pub provider: Option<String>,
    /// `provider/code`.
    pub service: Option<String>,
    /// Every person the record is about.
    pub subjects: Vec<String>,
}

impl ShippedRecord {
    /// The row of record `seq` with leaf bytes `leaf` (which the log's
    /// writer made canonical; a leaf that does not parse is shipped with
    /// its bytes and no search keys, as the index does).
    pub fn of(seq: u64, leaf: &[u8]) -> ShippedRecord {
        let (keys, exchange_id) = match serde_json::from_slice::<AuditRecord>(leaf) {
            Ok(record) => {
                let id = record.exchange_id.clone();
                (IndexKeys::of(record), id)
            }
            Err(_) => (IndexKeys::default(), String::new()),
        };
        ShippedRecord {
            seq,
            leaf_hash: leaf_hash(leaf),
            leaf: leaf.to_vec(),
            received_us: keys.time,
            event: keys.event,
            exchange_id,
            consumer: keys.consumer,
            provider: keys.provider,
            service: keys.service,
            subjects: keys.subjects,
        }
    }
}

/// A row of the copy as read back for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedRow {
    /// Its seq.
    pub seq: u64,
    /// The leaf hash column.
    pub leaf_hash: Vec<u8>,
    /// The record column (the leaf bytes).
    pub leaf: Vec<u8>,
}

/// Why the copy did not take a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipError {
    /// The copy cannot be reached or did not answer in time: retry later.
    #[error("the shared audit copy is unavailable: {0}")]
    Unavailable(String),
    /// The copy disagrees with the log (different bytes for a seq already
    /// shipped): stop and alarm, never overwrite.
    #[error("the shared audit copy disagrees with this log: {0}")]
    Conflict(String),
}

/// The cluster's shared copy of every broker's records. Calls block (the
/// PostgreSQL implementation runs on a driver thread of its own): call them
/// off the async workers.
pub trait AuditCopy: Send + Sync {
    /// Where `broker`'s copy stands; with `create`, a broker never seen
    /// before is entered at 0, otherwise it is `None`.
    fn position(&self, broker: &str, create: bool) -> Result<Option<ShipPosition>, ShipError>;
    /// Adds `records` (consecutive seqs from `from`) if the copy's position
    /// is `from`, and advances it past them, in one transaction. When the
    /// position is elsewhere nothing is written and the position is
    /// returned as it is; a row already present with other bytes is a
    /// [`ShipError::Conflict`] and nothing is written.
    fn ship(
        &self,
        broker: &str,
        from: u64,
        records: &[ShippedRecord],
    ) -> Result<ShipPosition, ShipError>;
    /// Moves the position from `from` to `to` without rows: records the log
    /// pruned under retention before they could be shipped (they would be
    /// past the copy's retention too).
    fn skip_pruned(&self, broker: &str, from: u64, to: u64) -> Result<ShipPosition, ShipError>;
    /// Removes `broker`'s rows received before `cutoff_us` (a prefix by seq,
    /// in bounded batches); returns how many went.
    fn prune(&self, broker: &str, cutoff_us: u64) -> Result<u64, ShipError>;
    /// Searches every broker's records, newest first (`received_at`, then
    /// seq, then broker id), one page at a time; entries name their broker.
    fn search(&self, query: &AuditQuery) -> Result<AuditPage, AuditError>;
    /// `broker`'s rows from seq `from` on, in seq order, at most `limit`.
    fn rows(&self, broker: &str, from: u64, limit: usize) -> Result<Vec<ShippedRow>, ShipError>;
}

/// The shipping of one log: the copy, the broker id and what the shipper
/// last saw (shared with `/metrics`, `/readyz` and searches).
pub struct Shipping {
    copy: Arc<dyn AuditCopy>,
    broker_id: String,
    /// Records of this log the copy holds (as last confirmed).
    shipped: AtomicU64,
    /// Whether `shipped` was confirmed since the last failure.
    confirmed: AtomicBool,
    shipped_total: AtomicU64,
    /// The copy disagrees with the log: shipping stopped.
    alarm: Mutex<Option<String>>,
    /// The last failure to reach the copy, while it lasts.
    error: Mutex<Option<String>>,
    nudge: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

/// What `/metrics` and `/readyz` show of the shipping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingStatus {
    /// This log's broker id.
    pub broker_id: String,
    /// Records of this log the copy holds, as last confirmed.
    pub shipped: u64,
    /// Durable records not yet shipped.
    pub lag: u64,
    /// Records shipped since start.
    pub shipped_total: u64,
    /// Why shipping stopped (the copy disagrees with the log), if it did.
    pub alarm: Option<String>,
    /// Why the copy cannot be reached now, if it cannot.
    pub error: Option<String>,
}

impl Shipping {
    /// This log's broker id.
    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    /// The shared copy.
    pub fn copy(&self) -> &Arc<dyn AuditCopy> {
        &self.copy
    }

    /// Records of this log the copy holds, as last confirmed.
    pub fn shipped(&self) -> u64 {
        self.shipped.load(Ordering::Acquire)
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        if let Some(tx) = Self::lock(&self.nudge).as_ref() {
            let _ = tx.send(());
        }
    }

    /// Waits (blocking, at most `timeout`) until the copy holds the first
    /// `target` records; true when it does.
    pub fn wait_shipped(&self, target: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.wake();
        loop {
            if self.shipped() >= target {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl AuditLog {
    /// Starts shipping this log to `copy` as `broker_id` (see the module):
    /// a thread of its own that ends when the log closes. Once only.
    pub fn start_shipping(
        &self,
        copy: Arc<dyn AuditCopy>,
        broker_id: String,
    ) -> Result<Arc<Shipping>, AuditError> {
        if !valid_broker_id(&broker_id) {
            return Err(AuditError::Config(format!(
                "`{broker_id}` is not a broker id"
            )));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let shipping = Arc::new(Shipping {
            copy,
            broker_id,
            shipped: AtomicU64::new(0),
            confirmed: AtomicBool::new(false),
            shipped_total: AtomicU64::new(0),
            alarm: Mutex::new(None),
            error: Mutex::new(None),
            nudge: Mutex::new(Some(tx)),
        });
        self.shared
            .shipping
            .set(Arc::clone(&shipping))
            .map_err(|_| AuditError::Config("the log is shipped already".to_string()))?;
        let weak = Arc::downgrade(&self.shared);
        let ship = Arc::clone(&shipping);
        std::thread::Builder::new()
            .name("audit-shipper".to_string())
            .spawn(move || run_shipper(&weak, &ship, &rx))
            .map_err(|e| AuditError::Unavailable(format!("cannot start audit-shipper: {e}")))?;
        Ok(shipping)
    }

    /// The shipping of this log, when it is shipped to a cluster's copy.
    pub fn shipping(&self) -> Option<&Arc<Shipping>> {
        self.shared.shipping.get()
    }

    /// Where the shipping stands, when the log is shipped.
    pub fn shipping_status(&self) -> Option<ShippingStatus> {
        let s = self.shared.shipping.get()?;
        let shipped = s.shipped();
        Some(ShippingStatus {
            broker_id: s.broker_id.clone(),
            shipped,
            lag: self.tree_size().saturating_sub(shipped),
            shipped_total: s.shipped_total.load(Ordering::Relaxed),
            alarm: Shipping::lock(&s.alarm).clone(),
            error: Shipping::lock(&s.error).clone(),
        })
    }

    /// Searches the records an auditor or a citizen may look for: on a
    /// shipped log, every broker's in the cluster's copy (after waiting up
    /// to 2 s for this log's own records up to now, so a search sees what
    /// this broker just recorded; `indexed` is then how many of this log's
    /// records the copy holds), otherwise this log's own index
    /// ([`AuditLog::query`]). Blocking.
    pub fn search(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let Some(shipping) = self.shared.shipping.get() else {
            if let Err(e) = self.sync_index() {
                tracing::warn!(error = %e, "audit index catch-up failed; search may lag");
            }
            return self.query(query);
        };
        if !shipping.wait_shipped(self.tree_size(), SEARCH_WAIT) {
            tracing::warn!(
                lag = self.tree_size().saturating_sub(shipping.shipped()),
                "audit search: this broker's latest records are not shipped yet"
            );
        }
        let mut page = shipping.copy.search(query)?;
        page.indexed = shipping.shipped();
        Ok(page)
    }
}

/// The shipper thread: ships what follows the copy's position, in batches,
/// until the log closes.
fn run_shipper(weak: &Weak<Shared>, ship: &Shipping, nudges: &std::sync::mpsc::Receiver<()>) {
    let mut backoff = BACKOFF_MIN;
    let mut next_prune = Instant::now();
    loop {
        let Some(shared) = weak.upgrade() else { break };
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        let pause = match step(&shared, ship, &mut next_prune) {
            Ok(true) => {
                backoff = BACKOFF_MIN;
                *Shipping::lock(&ship.error) = None;
                Duration::ZERO
            }
            Ok(false) => {
                backoff = BACKOFF_MIN;
                *Shipping::lock(&ship.error) = None;
                IDLE_POLL
            }
            Err(ShipError::Unavailable(reason)) => {
                ship.confirmed.store(false, Ordering::Release);
                let first = Shipping::lock(&ship.error)
                    .replace(reason.clone())
                    .is_none();
                if first {
                    tracing::warn!(error = %reason, "audit shipping: the shared copy is unavailable; retrying with backoff");
                }
                let pause = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                pause
            }
            Err(ShipError::Conflict(reason)) => {
                ship.confirmed.store(false, Ordering::Release);
                let first = Shipping::lock(&ship.alarm)
                    .replace(reason.clone())
                    .is_none();
                if first {
                    tracing::error!(broker = %ship.broker_id, alarm = %reason, "audit shipping stopped: the shared copy disagrees with this log");
                }
                ALARM_RETRY
            }
        };
        drop(shared);
        if pause.is_zero() {
            continue;
        }
        match nudges.recv_timeout(pause) {
            // A nudge cuts the idle wait short, never a backoff's.
            Ok(()) if pause == IDLE_POLL => {}
            Ok(()) => std::thread::sleep(pause.saturating_sub(Duration::from_millis(1))),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// One step: confirm the position if needed, then ship one batch. Ok(true)
/// when it shipped something (go on at once), Ok(false) when caught up.
fn step(shared: &Shared, ship: &Shipping, next_prune: &mut Instant) -> Result<bool, ShipError> {
    let broker = ship.broker_id.as_str();
    if !ship.confirmed.load(Ordering::Acquire) {
        let position = ship
            .copy
            .position(broker, true)?
            .ok_or_else(|| ShipError::Unavailable("no position row".to_string()))?;
        ship.shipped.store(position.shipped, Ordering::Release);
        ship.confirmed.store(true, Ordering::Release);
    }
    let size = shared.size.load(Ordering::Acquire);
    let shipped = ship.shipped();
    if shipped > size {
        return Err(ShipError::Conflict(format!(
            "the copy holds {shipped} records of broker `{broker}`, but its log only {size}: \
             another broker ships under the same id, or this log was restored from an older \
             backup; give each log its own broker id"
        )));
    }
    // Past the alarm: the copy agrees again (someone repaired it).
    if Shipping::lock(&ship.alarm).take().is_some() {
        tracing::info!(broker, "audit shipping resumed");
    }
    let pruned_below = shared.pruned_below.load(Ordering::Acquire);
    if shipped < pruned_below {
        tracing::warn!(
            broker,
            from = shipped,
            to = pruned_below,
            "audit shipping: records were pruned under retention before they were shipped; skipping them"
        );
        let position = ship.copy.skip_pruned(broker, shipped, pruned_below)?;
        ship.shipped.store(position.shipped, Ordering::Release);
        return Ok(true);
    }
    if shipped == size {
        if Instant::now() >= *next_prune {
            let retention = shared.config.record_retention;
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0));
            let removed = ship.copy.prune(broker, cutoff)?;
            if removed > 0 {
                tracing::info!(
                    broker,
                    removed,
                    "audit shipping: removed shipped records past the retention"
                );
            }
            *next_prune = Instant::now() + PRUNE_EVERY;
        }
        return Ok(false);
    }
    let to = size.min(shipped + SHIP_BATCH as u64);
    let mut records = Vec::with_capacity(usize::try_from(to - shipped).unwrap_or(0));
    let read = read_range(&shared.layout, shipped, to, |seq, leaf| {
        records.push(ShippedRecord::of(seq, leaf));
        Ok(())
    });
    if let Err(e) = read {
        // Pruned while being read: the next step skips it.
        if shipped < shared.pruned_below.load(Ordering::Acquire) {
            return Ok(true);
        }
        return Err(ShipError::Unavailable(format!(
            "reading the log to ship it: {e}"
        )));
    }
    // The local tree is the truth: a record whose bytes no longer hash to
    // its leaf is not shipped (the log's own checks report it).
    {
        let tree = shared.tree_read();
        if let Some(bad) = records
            .iter()
            .find(|r| tree.leaf(r.seq) != Some(r.leaf_hash))
        {
            return Err(ShipError::Conflict(format!(
                "record {} on disk no longer matches the tree; run `mconnect audit verify`",
                bad.seq
            )));
        }
    }
    let position = ship.copy.ship(broker, shipped, &records)?;
    let moved = position.shipped.saturating_sub(shipped);
    ship.shipped.store(position.shipped, Ordering::Release);
    ship.shipped_total.fetch_add(
        if position.shipped == to { moved } else { 0 },
        Ordering::Relaxed,
    );
    Ok(true)
}

/// The outcome of [`verify_shipped`].
#[derive(Debug, Clone, Default)]
pub struct ShippedReport {
    /// The broker id checked.
    pub broker_id: String,
    /// Where the copy stands for it.
    pub position: ShipPosition,
    /// Records of the log (the tree size as read from the directory).
    pub local_records: u64,
    /// Shipped rows compared with the log.
    pub compared: u64,
    /// Everything wrong, in seq order; empty when the copy matches.
    pub problems: Vec<String>,
}

impl ShippedReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads `copy`'s rows of one broker in seq order, a page at a time.
struct Rows<'a> {
    copy: &'a dyn AuditCopy,
    broker: &'a str,
    page: std::collections::VecDeque<ShippedRow>,
    next: u64,
    done: bool,
}

impl Rows<'_> {
    fn peek(&mut self) -> Result<Option<&ShippedRow>, ShipError> {
        if self.page.is_empty() && !self.done {
            let rows = self.copy.rows(self.broker, self.next, VERIFY_PAGE)?;
            self.done = rows.len() < VERIFY_PAGE;
            if let Some(last) = rows.last() {
                self.next = last.seq + 1;
            }
            self.page.extend(rows);
        }
        Ok(self.page.front())
    }

    fn pop(&mut self) {
        self.page.pop_front();
    }
}

/// Rows read from the copy per round trip while verifying.
const VERIFY_PAGE: usize = 1000;

/// Checks that `copy` holds exactly this log's records for `broker`: every
/// seq from its retention boundary to its position, none missing, none
/// extra, each row's leaf hash the log's and its bytes the log's (where the
/// log still has them) and hashing to that leaf. Reads the log directory
/// without opening it (as `verify_dir` does), so it may run beside a live
/// broker: records the broker appended after the copy's position was read
/// are not compared. Blocking.
pub fn verify_shipped(
    dir: &Path,
    copy: &dyn AuditCopy,
    broker: &str,
) -> Result<ShippedReport, AuditError> {
    let shipped_err = |e: ShipError| AuditError::Unavailable(e.to_string());
    let mut report = ShippedReport {
        broker_id: broker.to_string(),
        ..ShippedReport::default()
    };
    let Some(position) = copy.position(broker, false).map_err(shipped_err)? else {
        report
            .problems
            .push(format!("the copy holds nothing of broker `{broker}`"));
        return Ok(report);
    };
    report.position = position;
    let mut rows = Rows {
        copy,
        broker,
        page: std::collections::VecDeque::new(),
        next: 0,
        done: false,
    };
    let mut problems = Vec::new();
    let mut compared = 0u64;
    let mut seq = 0u64;
    let want = position.pruned_below..position.shipped;
    // Compares local record `seq` (hash, and bytes when kept) with the copy.
    let mut compare = |seq: u64,
                       hash: &Hash,
                       leaf: Option<&[u8]>,
                       rows: &mut Rows<'_>,
                       problems: &mut Vec<String>|
     -> Result<(), ShipError> {
        // Rows below the wanted seq: extra rows (below the retention
        // boundary, where there should be none).
        while let Some(row) = rows.peek()?
            && row.seq < seq
        {
            problems.push(format!(
                "record {}: the copy holds a row the log does not account for here",
                row.seq
            ));
            rows.pop();
        }
        if !want.contains(&seq) {
            return Ok(());
        }
        match rows.peek()? {
            Some(row) if row.seq == seq => {
                if row.leaf_hash.as_slice() != hash.as_slice() {
                    problems.push(format!(
                        "record {seq}: the shipped leaf hash differs from the log's"
                    ));
                } else if leaf_hash(&row.leaf) != *hash {
                    problems.push(format!(
                        "record {seq}: the shipped record bytes do not hash to the log's leaf (the row was changed)"
                    ));
                } else if leaf.is_some_and(|l| l != row.leaf.as_slice()) {
                    problems.push(format!(
                        "record {seq}: the shipped record bytes differ from the log's"
                    ));
                }
                compared += 1;
                rows.pop();
            }
            _ => problems.push(format!("record {seq}: missing from the copy")),
        }
        Ok(())
    };
    let segments_dir = dir.join("segments");
    for (base, path) in list_pruned(&segments_dir)? {
        let bytes = std::fs::read(&path).map_err(|e| AuditError::io(&path, e))?;
        let pruned = decode_pruned(&bytes).map_err(|reason| AuditError::Corrupt {
            segment: path.clone(),
            offset: 0,
            seq: base,
            reason: reason.to_string(),
        })?;
        for hash in &pruned.hashes {
            if seq >= position.shipped {
                break;
            }
            compare(seq, hash, None, &mut rows, &mut problems).map_err(shipped_err)?;
            seq += 1;
        }
    }
    'segments: for segment in list_segments(&segments_dir)? {
        if segment.base < seq {
            // Being pruned when it was listed: its hashes were counted.
            continue;
        }
        let bytes = std::fs::read(&segment.path).map_err(|e| AuditError::io(&segment.path, e))?;
        let mut offset = HEADER_LEN as usize;
        while offset < bytes.len() {
            if seq >= position.shipped {
                break 'segments;
            }
            match decode_frame(&bytes, offset) {
                Decoded::Frame { seq: s, leaf, next } if s == seq => {
                    let hash = leaf_hash(leaf);
                    compare(seq, &hash, Some(leaf), &mut rows, &mut problems)
                        .map_err(shipped_err)?;
                    seq += 1;
                    offset = next;
                }
                _ => {
                    problems.push(format!(
                        "record {seq}: the log cannot be read here ({}); run `mconnect audit verify` on it, the copy is compared no further",
                        segment.path.display()
                    ));
                    break 'segments;
                }
            }
        }
    }
    report.local_records = seq;
    if seq < position.shipped {
        problems.push(format!(
            "the copy says {} records of `{broker}` were shipped, but the log holds {seq}",
            position.shipped
        ));
    }
    // Whatever is left: rows the log does not hold, or past the position.
    while let Some(row) = rows.peek().map_err(shipped_err)? {
        problems.push(format!(
            "record {}: the copy holds a row beyond its shipped position {}",
            row.seq, position.shipped
        ));
        rows.pop();
        if problems.len() > 10_000 {
            problems.push("too many problems; stopped".to_string());
            break;
        }
    }
    report.compared = compared;
    report.problems = problems;
    Ok(report)
}
