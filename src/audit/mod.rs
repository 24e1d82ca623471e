//! The audit log: every exchange leaves exactly one record here before the
//! consumer gets an answer (PROTOCOL.md section 7).
//!
//! The log is a directory:
//!
//! ```text
//! {dir}/segments/00000000000000000000.seg   append-only record frames (see `segment`)
//! {dir}/segments/00000000000000000000.pruned  kept leaf hashes of a segment pruned
//!                                           under retention (see `retention`)
//! {dir}/bodies/{seq:020}.{request|response} opt-in encrypted bodies (see `bodies`)
//! {dir}/index.redb                          query indexes, derived, rebuilt when missing
//! {dir}/tree-heads.jsonl                    published signed tree heads, one JSON per line
//! {dir}/LOCK                                held while a process has the log open
//! ```
//!
//! Architecture invariants:
//!
//! - **Only the writer task writes segments.** Callers of [`AuditLog::append`]
//!   serialise and hash their record, queue it, and wait; the writer drains the
//!   queue into a batch and writes it, and the sync thread makes every batch
//!   written meanwhile durable with one `sync_data` and only then answers, while
//!   the writer already writes the next batch (see `writer`). An `Ok(seq)`
//!   therefore means the record is on disk ("group commit").
//! - **Fail closed.** If a write or fsync fails, that batch's callers get
//!   [`AuditError::Unavailable`] and so does every later append until the log is
//!   reopened; a failed fsync is never retried. The broker answers 503
//!   `audit.unavailable` to any error from `append`.
//! - **Nothing acknowledged is lost or silently dropped.** Recovery at open only
//!   truncates a torn tail of the last segment (frames that were never
//!   acknowledged); damage anywhere else is an error.
//! - **Leaf bytes are served as hashed.** A record's canonical bytes (see
//!   [`AuditRecord`]) are stored verbatim; leaf index = sequence number = the
//!   receipt's `MConnect-Audit-Seq`.
//! - **Readers never see an undurable record:** the published tree size is raised
//!   after the fsync and before the callers are answered.
//! - The Merkle tree (RFC 9162 2.1) is in memory; indexes in redb follow the log
//!   and may lag it by a moment.
//! - **A full disk is survived, not waited out.** Below the free-space
//!   watermark work records are refused before they are written while
//!   management records use the reserve; a log that failed closed reopens
//!   in place once space is back, after its tail checks out (`space`).
//! - **Retention never breaks the tree.** Records are pruned only in whole
//!   sealed segments whose leaf hashes are kept (`retention`); bodies are
//!   outside the tree altogether (`bodies`), committed to by the records'
//!   digests, and written only after their record is durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub mod auditor;
pub mod bodies;
pub mod index;
pub mod merkle;
mod posting;
pub mod record;
pub mod retention;
mod segment;
pub mod ship;
pub mod space;
#[cfg(fuzzing)]
#[doc(hidden)]
pub use segment::fuzz_recover_and_read;
pub mod verify;
mod writer;

pub use bodies::{BodyKind, BodyRead, ExchangeBodies};
pub use index::{AuditEntry, AuditPage, AuditQuery};
pub use merkle::{Hash, ProofError, verify_consistency, verify_inclusion};
pub use record::{AuditRecord, Decision, format_timestamp, parse_timestamp};
pub use retention::RetentionReport;
pub use space::SpaceStatus;
pub use verify::{
    VerifyProblem, VerifyReport, certificate_verifier, verify_dir, verify_dir_with_progress,
};

use index::{Index, IndexKeys, IndexMsg};
use merkle::{MerkleTree, leaf_hash};
use segment::Layout;
use writer::{Command, Pending, Writer};

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default largest group-commit batch.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// Name of the file that holds published tree heads.
pub const TREE_HEADS_FILE: &str = "tree-heads.jsonl";
/// Default record retention: 730 days (two years).
pub const DEFAULT_RECORD_RETENTION: Duration = Duration::from_secs(730 * 24 * 3600);
/// Domain separation prefix of the signed tree head message (16 bytes).
pub const TREE_HEAD_CONTEXT: &[u8; 16] = b"MConnect-STH-v1\0";

/// How the log is set up.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Directory of the log; created when missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it would grow past this
    /// (4 KiB to 1 GiB). Recovery and verification read a segment whole.
    pub segment_bytes: u64,
    /// Largest number of records in one batch (one fsync).
    pub max_batch: usize,
    /// Publish a signed tree head to `tree-heads.jsonl` this often when the tree
    /// grew (needs a tokio runtime at open); `None` publishes only on
    /// [`AuditLog::publish_tree_head`] and at close.
    pub tree_head_interval: Option<Duration>,
    /// How long records are kept before a retention pass may prune their
    /// segment (whole sealed segments only; the leaf hashes stay).
    pub record_retention: Duration,
    /// Key file for opt-in body storage (32 raw bytes, created with mode 0600
    /// when missing); `None` stores no bodies.
    pub body_key_file: Option<PathBuf>,
    /// Run a retention pass (see [`AuditLog::retention_pass`]) right after
    /// open and then this often (needs a tokio runtime at open); `None` runs
    /// one only when asked.
    pub retention_interval: Option<Duration>,
    /// Free bytes the audit filesystem must keep for work records (exchanges)
    /// to be taken; below it only management records are written. `None`:
    /// 5 % of the filesystem, at most 256 MiB; `Some(0)`: only a real
    /// write failure stops appends.
    pub min_free_bytes: Option<u64>,
}

impl AuditConfig {
    /// A configuration with the defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            tree_head_interval: None,
            record_retention: DEFAULT_RECORD_RETENTION,
            body_key_file: None,
            retention_interval: None,
            min_free_bytes: None,
        }
    }

    fn validate(&self) -> Result<(), AuditError> {
        if !(4096..=1 << 30).contains(&self.segment_bytes) {
            return Err(AuditError::Config(
                "segment_bytes must be between 4096 and 1073741824".to_string(),
            ));
        }
        if !(1..=65536).contains(&self.max_batch) {
            return Err(AuditError::Config(
                "max_batch must be between 1 and 65536".to_string(),
            ));
        }
        if self.record_retention.is_zero() {
            return Err(AuditError::Config(
                "record_retention must be positive".to_string(),
            ));
        }
        if self.retention_interval.is_some_and(|d| d.is_zero()) {
            return Err(AuditError::Config(
                "retention_interval must be positive".to_string(),
            ));
        }
        if self.tree_head_interval.is_some_and(|d| d.is_zero()) {
            return Err(AuditError::Config(
                "tree_head_interval must be positive".to_string(),
            ));
        }
        Ok(())
    }
}

/// Everything that can go wrong with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record cannot be made durable (or the log has failed or is closed):
    /// refuse the exchange with 503 `audit.unavailable`.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// A file operation failed.
    #[error("audit log i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The log's files are damaged where damage cannot be a torn write.
    #[error(
        "audit log corrupt in {} at offset {offset} (record {seq}): {reason}; \
         restore the segment from a backup or run `mconnect audit verify`",
        segment.display()
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged frame or header.
        offset: u64,
        /// Sequence number of the record expected there.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the log open.
    #[error("audit log directory {} is in use by another process", .0.display())]
    InUse(PathBuf),
    /// The configuration is invalid.
    #[error("invalid audit configuration: {0}")]
    Config(String),
    /// The record cannot be logged as given (a bug in the caller).
    #[error("invalid audit record: {0}")]
    InvalidRecord(String),
    /// The query cannot be run as given.
    #[error("invalid audit query: {0}")]
    InvalidQuery(String),
    /// A proof or tree head was asked for beyond the current tree.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// No record with this sequence number.
    #[error("no audit record {0}")]
    NotFound(u64),
    /// The record's segment was pruned under retention; only its leaf hash is
    /// kept (proofs still work, the record's content is gone).
    #[error("audit record {0} was pruned under retention; only its leaf hash is kept")]
    Pruned(u64),
    /// The stored body was dropped under its service's retention.
    #[error("the {kind} body of audit record {seq} expired under retention")]
    BodyExpired {
        /// The record.
        seq: u64,
        /// Which body.
        kind: BodyKind,
    },
    /// No body is stored for this record (the service did not opt in, body
    /// storage is off, or storing it failed after the record was made).
    #[error("no {kind} body is stored for audit record {seq}")]
    BodyNotStored {
        /// The record.
        seq: u64,
        /// Which body.
        kind: BodyKind,
    },
    /// The stored body decrypted but does not match the record's digest.
    #[error("the stored {kind} body of audit record {seq} does not match the record's digest")]
    BodyMismatch {
        /// The record.
        seq: u64,
        /// Which body.
        kind: BodyKind,
    },
    /// The redb index failed (queries only; appends do not depend on it).
    #[error("audit index error: {0}")]
    Index(String),
    /// The tree head signer failed.
    #[error("signing the tree head failed: {0}")]
    Signer(String),
    /// A signed tree head did not verify.
    #[error("tree head does not verify: {0}")]
    BadTreeHead(String),
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True for the fail-closed refusal of an append (503 `audit.unavailable`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuditError::Unavailable(_))
    }
}

impl From<ProofError> for AuditError {
    fn from(e: ProofError) -> AuditError {
        AuditError::OutOfRange(e.to_string())
    }
}

/// What recovery found and repaired when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records in the log after recovery (the tree size).
    pub records: u64,
    /// Segment files after recovery.
    pub segments: usize,
    /// The torn tail that was cut off, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Records pruned under retention (below this seq only hashes are kept).
    pub pruned: u64,
}

/// A torn tail found at open: bytes of an interrupted write, never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment.
    pub segment: PathBuf,
    /// Where it was truncated (0 with the whole file removed when even its header
    /// was torn).
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes_dropped: u64,
}

/// Signs tree heads with the broker key.
pub trait TreeHeadSigner: Send + Sync {
    /// The key id published with the signature (the broker certificate's
    /// SHA-256 fingerprint, lowercase hex).
    fn keyid(&self) -> String;
    /// Signs `message` (see [`tree_head_message`]).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// A signed tree head. Its JSON form is the `GET /v1/audit/tree-head` answer:
/// `root_hash` and `signature` in standard base64, `timestamp` in milliseconds
/// since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTreeHead {
    /// Number of leaves.
    pub tree_size: u64,
    /// MTH of the first `tree_size` leaves.
    #[serde(with = "b64_hash")]
    pub root_hash: Hash,
    /// When it was signed, ms since the Unix epoch.
    pub timestamp: u64,
    /// Key id of the signer.
    pub keyid: String,
    /// Signature over [`SignedTreeHead::message`].
    #[serde(with = "b64_bytes")]
    pub signature: Vec<u8>,
}

impl SignedTreeHead {
    /// The exact bytes that were signed.
    pub fn message(&self) -> [u8; 64] {
        tree_head_message(self.tree_size, self.timestamp, &self.root_hash)
    }
}

/// The signed tree head message, 64 bytes, fixed layout:
///
/// ```text
/// "MConnect-STH-v1\0"  16 bytes, domain separation
/// tree_size            u64 big-endian
/// timestamp            u64 big-endian, ms since the Unix epoch
/// root_hash            32 bytes
/// ```
pub fn tree_head_message(tree_size: u64, timestamp: u64, root_hash: &Hash) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..16].copy_from_slice(TREE_HEAD_CONTEXT);
    out[16..24].copy_from_slice(&tree_size.to_be_bytes());
    out[24..32].copy_from_slice(&timestamp.to_be_bytes());
    out[32..].copy_from_slice(root_hash);
    out
}

/// Checks a tree head's signature with `verify(keyid, message, signature)`,
/// which the caller implements with the broker's certificate.
pub fn verify_tree_head<F>(sth: &SignedTreeHead, verify: F) -> Result<(), AuditError>
where
    F: FnOnce(&str, &[u8], &[u8]) -> Result<(), String>,
{
    verify(&sth.keyid, &sth.message(), &sth.signature).map_err(AuditError::BadTreeHead)
}

/// State shared by the handles, the writer and the indexer.
pub(crate) struct Shared {
    config: AuditConfig,
    tree: RwLock<MerkleTree>,
    /// Published tree size: records below it are durable and readable.
    size: AtomicU64,
    layout: RwLock<Layout>,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    signer: Arc<dyn TreeHeadSigner>,
    index: Index,
    /// Serialises appends to the tree heads file; holds the last published size.
    heads: Mutex<Option<u64>>,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lock: Mutex<Option<File>>,
    /// Records below this seq were pruned under retention.
    pruned_below: AtomicU64,
    /// The opt-in body store, when a body key is configured.
    bodies: Option<bodies::BodyStore>,
    /// Serialises retention passes.
    retention: Mutex<()>,
    /// Free space of the audit filesystem and its watermark.
    space: space::Space,
    /// How long each fdatasync of the sync thread took (`/metrics`).
    fsync_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Shipping to a cluster's shared copy, once started (`ship`).
    shipping: std::sync::OnceLock<Arc<ship::Shipping>>,
}

impl Shared {
    fn segments_dir(&self) -> PathBuf {
        self.config.dir.join("segments")
    }

    fn tree_read(&self) -> RwLockReadGuard<'_, MerkleTree> {
        // The writer mutates the tree in one step per leaf; a panic elsewhere
        // cannot leave it half-updated, so a poisoned lock is still usable.
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn tree_write(&self) -> RwLockWriteGuard<'_, MerkleTree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn layout_read(&self) -> RwLockReadGuard<'_, Layout> {
        self.layout.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn layout_write(&self) -> RwLockWriteGuard<'_, Layout> {
        self.layout.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_failure(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        self.failed.store(true, Ordering::Release);
    }

    /// Called by the writer only, after a reopen checked the tail.
    fn clear_failure(&self) {
        self.failed.store(false, Ordering::Release);
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A handle on the audit log; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
}

impl AuditLog {
    /// Opens (or creates) the log in `config.dir`: takes the directory lock,
    /// recovers the segments, rebuilds the tree, opens the index and starts the
    /// writer and indexer threads. With `tree_head_interval` set it also spawns
    /// a task on the current tokio runtime.
    pub fn open(
        config: AuditConfig,
        signer: Arc<dyn TreeHeadSigner>,
    ) -> Result<(AuditLog, RecoveryReport), AuditError> {
        config.validate()?;
        let dir = config.dir.clone();
        let segments_dir = dir.join("segments");
        create_dir_synced(&dir)?;
        create_dir_synced(&segments_dir)?;
        let lock = take_lock(&dir)?;
        let heads = read_tree_heads(&dir)?;
        let newest = heads.iter().max_by_key(|h| h.tree_size);
        let last_published = newest.map(|h| h.tree_size);
        let recovered = segment::recover(&segments_dir, last_published.unwrap_or(0))?;
        // Frame checksums (CRC-32C) catch accidental damage only: a record
        // rewritten with a fresh checksum passes them. The records the newest
        // published head covers must still hash to its root, or the log was
        // changed after it was published, and it is not opened.
        if let Some(head) = newest {
            let root = recovered
                .tree
                .root(head.tree_size)
                .map_err(|e| AuditError::Corrupt {
                    segment: segments_dir.clone(),
                    offset: 0,
                    seq: head.tree_size,
                    reason: format!("no root for the published tree size: {e}"),
                })?;
            if root != head.root_hash {
                return Err(AuditError::Corrupt {
                    segment: segments_dir.clone(),
                    offset: 0,
                    seq: head.tree_size,
                    reason: format!(
                        "the first {} records do not hash to the root of the tree head published at {}: the log was changed after it was published",
                        head.tree_size, head.timestamp
                    ),
                });
            }
        }
        let size = recovered.tree.len();
        let pruned_below = recovered.report.pruned;
        let index = Index::open(&index::index_path(&dir), size)?;
        let bodies = match &config.body_key_file {
            Some(key_file) => Some(bodies::BodyStore::open(&dir, key_file)?),
            None => None,
        };
        let space = space::Space::open(&dir, config.min_free_bytes)?;
        let shared = Arc::new(Shared {
            config,
            tree: RwLock::new(recovered.tree),
            size: AtomicU64::new(size),
            layout: RwLock::new(recovered.layout),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            signer,
            index,
            heads: Mutex::new(last_published),
            closed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            lock: Mutex::new(Some(lock)),
            pruned_below: AtomicU64::new(pruned_below),
            bodies,
            retention: Mutex::new(()),
            space,
            fsync_seconds: prometheus_client::metrics::histogram::Histogram::new(
                crate::metrics::SECONDS_BUCKETS,
            ),
            shipping: std::sync::OnceLock::new(),
        });
        // Bounded so that a stalled disk pushes back on callers instead of
        // queueing without limit.
        let (tx, rx) = mpsc::channel(shared.config.max_batch.saturating_mul(4));
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let writer = Writer::new(shared.clone(), rx, index_tx.clone(), recovered.last_len)?;
        // Catch up with records the index has not seen yet.
        let _ = index_tx.send(IndexMsg::CatchUp);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(|e| AuditError::Unavailable(format!("cannot start {name}: {e}")))
        };
        let writer_thread = spawn("audit-writer", Box::new(move || writer.run()))?;
        let indexer_shared = shared.clone();
        let indexer_thread = spawn(
            "audit-indexer",
            Box::new(move || index::run_indexer(indexer_shared, index_rx)),
        )?;
        let monitor_thread = space::spawn_monitor(Arc::downgrade(&shared), tx.downgrade())?;
        shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([writer_thread, indexer_thread, monitor_thread]);
        drop(index_tx);
        let log = AuditLog { shared, tx };
        if let Some(every) = log.shared.config.tree_head_interval {
            log.spawn_tree_head_task(every)?;
        }
        if let Some(every) = log.shared.config.retention_interval {
            retention::spawn_retention_task(&log.shared, every)?;
        }
        Ok((log, recovered.report))
    }

    /// Logs `record` and returns its leaf index once it is on disk. Any error
    /// means the record is not known to be durable: refuse the exchange (503
    /// `audit.unavailable`). Dropping the future after the record was queued does
    /// not take it back.
    pub async fn append(&self, record: AuditRecord) -> Result<u64, AuditError> {
        record.validate()?;
        let leaf = record.canonical_bytes()?;
        if leaf.len() > record::MAX_RECORD_BYTES {
            return Err(AuditError::InvalidRecord(format!(
                "record is {} bytes, more than the {} allowed",
                leaf.len(),
                record::MAX_RECORD_BYTES
            )));
        }
        if let Some(reason) = self.shared.failure() {
            return Err(AuditError::Unavailable(reason));
        }
        let reserve = record.is_management();
        if !reserve && self.shared.space.is_low() {
            return Err(AuditError::Unavailable(
                "the audit filesystem is below its free-space watermark; free space on it"
                    .to_string(),
            ));
        }
        let hash = leaf_hash(&leaf);
        // The index keys travel with the record, so the indexer never has to
        // parse the leaf back.
        let keys = IndexKeys::of(record);
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Append(Pending {
                leaf,
                hash,
                keys,
                reply,
                reserve,
            }))
            .await
            .map_err(|_| AuditError::Unavailable("the audit log is closed".to_string()))?;
        answer.await.map_err(|_| {
            AuditError::Unavailable("the audit writer stopped before answering".to_string())
        })?
    }

    /// Logs `record` like [`AuditLog::append`] and, once it is durable, stores
    /// the exchange's bodies encrypted under its seq. The record decides the
    /// answer: a body that cannot be stored is logged and left out (a read
    /// then answers [`AuditError::BodyNotStored`]), never a reason to lose,
    /// refuse or fake the record. Without a body store it is `append`.
    pub async fn append_with_bodies(
        &self,
        record: AuditRecord,
        bodies: ExchangeBodies,
    ) -> Result<u64, AuditError> {
        let seq = self.append(record).await?;
        if self.shared.bodies.is_none() {
            return Ok(seq);
        }
        let shared = self.shared.clone();
        let expires_at = bodies::millis(SystemTime::now().checked_add(bodies.retention).unwrap_or(
            // A retention too long to represent: keep the body "forever".
            UNIX_EPOCH + Duration::from_millis(u64::MAX),
        ));
        let stored = tokio::task::spawn_blocking(move || {
            let Some(store) = shared.bodies.as_ref() else {
                return Ok(());
            };
            store.put(seq, BodyKind::Request, &bodies.request, expires_at)?;
            store.put(seq, BodyKind::Response, &bodies.response, expires_at)
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(seq, error = %e, "audit body store: body not stored; the record stands");
            }
            Err(e) => {
                tracing::warn!(seq, error = %e, "audit body store: body task failed; the record stands");
            }
        }
        Ok(seq)
    }

    /// Stores one body of an already durable record `seq`, to expire at
    /// `expires_at` (used by [`AuditLog::append_with_bodies`] and by tests that
    /// need an injected clock). Refused for a seq beyond the tree, so a body
    /// never exists without its record.
    pub fn store_body(
        &self,
        seq: u64,
        kind: BodyKind,
        body: &[u8],
        expires_at: SystemTime,
    ) -> Result<(), AuditError> {
        let store = self
            .shared
            .bodies
            .as_ref()
            .ok_or(AuditError::BodyNotStored { seq, kind })?;
        if seq >= self.tree_size() {
            return Err(AuditError::NotFound(seq));
        }
        store.put(seq, kind, body, bodies::millis(expires_at))
    }

    /// The stored body of record `seq`, decrypted and checked against the
    /// record's digest. Errors say why there is none: the record was pruned,
    /// the body expired under retention, or it was never stored.
    pub fn body(&self, seq: u64, kind: BodyKind) -> Result<Vec<u8>, AuditError> {
        let (record, _) = self.record(seq)?.ok_or(AuditError::NotFound(seq))?;
        let store = self
            .shared
            .bodies
            .as_ref()
            .ok_or(AuditError::BodyNotStored { seq, kind })?;
        let digest = match kind {
            BodyKind::Request => record.request_sha256.as_deref(),
            BodyKind::Response => record.response_sha256.as_deref(),
        };
        match store.get(seq, kind)? {
            BodyRead::Plain(body) => {
                if digest != Some(hex::encode(crate::crypto::sha256(&body)).as_str()) {
                    return Err(AuditError::BodyMismatch { seq, kind });
                }
                Ok(body)
            }
            BodyRead::Expired { .. } => Err(AuditError::BodyExpired { seq, kind }),
            BodyRead::Missing => Err(AuditError::BodyNotStored { seq, kind }),
        }
    }

    /// Records below this seq were pruned under retention (0 when none were).
    pub fn pruned_below(&self) -> u64 {
        self.shared.pruned_below.load(Ordering::Acquire)
    }

    /// Runs one retention pass as of `now`: prunes the sealed segments whose
    /// records are all older than the record retention (keeping their leaf
    /// hashes) and drops the stored bodies past their service's retention.
    /// Blocking file I/O: call it from `spawn_blocking` on a runtime.
    pub fn retention_pass(&self, now: SystemTime) -> Result<RetentionReport, AuditError> {
        retention::run_pass(&self.shared, now)
    }

    /// Number of durable records (the current tree size).
    pub fn tree_size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// Signs the current tree head. Not stored: see [`AuditLog::publish_tree_head`].
    pub fn signed_tree_head(&self) -> Result<SignedTreeHead, AuditError> {
        sign_tree_head(&self.shared)
    }

    /// Signs the current tree head and appends it (fsynced) to
    /// `tree-heads.jsonl`, where `verify_dir` checks it against the segments.
    pub fn publish_tree_head(&self) -> Result<SignedTreeHead, AuditError> {
        publish(&self.shared)
    }

    /// The record at `seq` and its exact leaf bytes; `None` beyond the tree.
    pub fn record(&self, seq: u64) -> Result<Option<(AuditRecord, Vec<u8>)>, AuditError> {
        if seq >= self.tree_size() {
            return Ok(None);
        }
        if seq < self.pruned_below() {
            return Err(AuditError::Pruned(seq));
        }
        let mut leaf = Vec::new();
        let read = segment::read_range(&self.shared.layout, seq, seq + 1, |_, bytes| {
            leaf = bytes.to_vec();
            Ok(())
        });
        // A retention pass may have pruned the segment while it was being read.
        if let Err(e) = read {
            return Err(if seq < self.pruned_below() {
                AuditError::Pruned(seq)
            } else {
                e
            });
        }
        // The stored bytes must still hash to the tree's leaf: a record damaged
        // on disk since it was written is reported, never served.
        if self.shared.tree_read().leaf(seq) != Some(leaf_hash(&leaf)) {
            return Err(AuditError::Corrupt {
                segment: self.shared.segments_dir(),
                offset: 0,
                seq,
                reason: "record bytes no longer match the tree".to_string(),
            });
        }
        let record = AuditRecord::from_canonical_bytes(&leaf)?;
        Ok(Some((record, leaf)))
    }

    /// The audit path of leaf `seq` in the tree of `tree_size` leaves.
    pub fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(tree_size)?;
        Ok(self.shared.tree_read().inclusion_proof(seq, tree_size)?)
    }

    /// The consistency proof between tree sizes `first` and `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(second)?;
        Ok(self.shared.tree_read().consistency_proof(first, second)?)
    }

    /// The root hash of the tree of `tree_size` leaves.
    pub fn root_hash(&self, tree_size: u64) -> Result<Hash, AuditError> {
        self.check_size(tree_size)?;
        Ok(self.shared.tree_read().root(tree_size)?)
    }

    /// Searches the log through the indexes, newest first, one page at a time.
    pub fn query(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        self.shared.index.query(query, &self.shared)
    }

    /// Brings the index up to the current tree size now, instead of waiting for
    /// the indexer thread (useful before a query that must see a fresh append).
    pub fn sync_index(&self) -> Result<(), AuditError> {
        index::catch_up(&self.shared).map(|_| ())
    }

    /// Why appends are refused, if the log has failed closed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// Free space of the audit filesystem against its watermark (as last seen,
    /// at most 250 ms ago or at the last batch written).
    pub fn space(&self) -> SpaceStatus {
        self.shared.space.status()
    }

    /// Appends queued for the writer and not yet taken into a batch: the
    /// group commit's backlog (`/metrics`).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity().saturating_sub(self.tx.capacity())
    }

    /// The durations of the sync thread's fdatasyncs, one observation per
    /// group commit (a shared handle, registered by `/metrics`).
    pub fn fsync_seconds(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.shared.fsync_seconds
    }

    /// Whether new work (an exchange) can be taken now: the log has not failed
    /// closed and its filesystem is above the watermark. Cheap: two atomics.
    pub fn accepts_work(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire) && !self.shared.space.is_low()
    }

    /// Finishes every queued append, stops the writer and the indexer, publishes
    /// a final tree head if the tree grew since the last one, and releases the
    /// directory. Appends through other handles fail with `Unavailable` after this.
    pub async fn close(self) -> Result<(), AuditError> {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Command::Close(done)).await.is_ok() {
            let _ = stopped.await;
        }
        self.shared.closed.store(true, Ordering::Release);
        let threads: Vec<JoinHandle<()>> = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("audit log: could not wait for the writer threads");
        }
        let result = if self.shared.failure().is_none() && self.tree_size() > 0 {
            publish_if_grown(&self.shared).map(|_| ())
        } else {
            Ok(())
        };
        // Release the directory even if the final tree head failed.
        drop(
            self.shared
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        result
    }

    fn check_size(&self, tree_size: u64) -> Result<(), AuditError> {
        let size = self.tree_size();
        if tree_size > size {
            return Err(AuditError::OutOfRange(format!(
                "tree size {tree_size} is beyond the log's {size}"
            )));
        }
        Ok(())
    }

    fn spawn_tree_head_task(&self, every: Duration) -> Result<(), AuditError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            AuditError::Config("tree_head_interval needs a tokio runtime".to_string())
        })?;
        // The task holds neither a strong reference nor a sender, so it never
        // keeps the log alive.
        let weak = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                if shared.closed.load(Ordering::Acquire) {
                    break;
                }
                let published =
                    tokio::task::spawn_blocking(move || publish_if_grown(&shared)).await;
                if let Ok(Err(e)) = published {
                    tracing::warn!(error = %e, "audit log: periodic tree head failed");
                }
            }
        });
        Ok(())
    }
}

/// Signs the tree head of the current published size.
fn sign_tree_head(shared: &Shared) -> Result<SignedTreeHead, AuditError> {
    let (tree_size, root_hash) = {
        let tree = shared.tree_read();
        let size = shared.size.load(Ordering::Acquire).min(tree.len());
        (size, tree.root(size)?)
    };
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let message = tree_head_message(tree_size, timestamp, &root_hash);
    let signature = shared.signer.sign(&message).map_err(AuditError::Signer)?;
    Ok(SignedTreeHead {
        tree_size,
        root_hash,
        timestamp,
        keyid: shared.signer.keyid(),
        signature,
    })
}

/// Publishes a tree head unless the last published one already covers the tree.
fn publish_if_grown(shared: &Shared) -> Result<Option<SignedTreeHead>, AuditError> {
    let size = shared.size.load(Ordering::Acquire);
    let last = *shared.heads.lock().unwrap_or_else(PoisonError::into_inner);
    if size == 0 || last.is_some_and(|n| n >= size) {
        return Ok(None);
    }
    publish(shared).map(Some)
}

/// Signs the current tree head and appends it, fsynced, to the tree heads file.
fn publish(shared: &Shared) -> Result<SignedTreeHead, AuditError> {
    let mut last = shared.heads.lock().unwrap_or_else(PoisonError::into_inner);
    let sth = sign_tree_head(shared)?;
    let path = shared.config.dir.join(TREE_HEADS_FILE);
    let existed = path.exists();
    let mut line = serde_json::to_vec(&sth).map_err(|e| AuditError::Signer(e.to_string()))?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| AuditError::io(&path, e))?;
    file.write_all(&line)
        .map_err(|e| AuditError::io(&path, e))?;
    file.sync_data().map_err(|e| AuditError::io(&path, e))?;
    if !existed {
        segment::sync_dir(&shared.config.dir)?;
    }
    *last = Some(sth.tree_size);
    Ok(sth)
}

/// Reads the published tree heads of a log directory (none if the file is absent).
pub fn read_tree_heads(dir: &Path) -> Result<Vec<SignedTreeHead>, AuditError> {
    let path = dir.join(TREE_HEADS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let mut heads = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sth = serde_json::from_str(line).map_err(|e| {
            AuditError::BadTreeHead(format!("{} line {}: {e}", path.display(), n + 1))
        })?;
        heads.push(sth);
    }
    Ok(heads)
}

fn create_dir_synced(dir: &Path) -> Result<(), AuditError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
    // Make the new directory entry itself durable.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        segment::sync_dir(parent)?;
    }
    Ok(())
}

fn take_lock(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::InUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::io(&path, e)),
    }
}

/// Serde for a 32-byte hash as standard base64.
mod b64_hash {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(D::Error::custom)?;
        <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| D::Error::custom("hash is not 32 bytes"))
    }
}

/// Serde for bytes as standard base64.
mod b64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests;
