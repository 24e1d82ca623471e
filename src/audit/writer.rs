//! The writer: the one place that appends to segment files, with group commit
//! pipelined over two threads.
//!
//! ```text
//!  callers ──(bounded queue)──► writer thread ──(sync_channel(2))──► sync thread
//!                               drain ≤ max_batch,                  drain every written batch,
//!                               frame, write(2)                     one fdatasync, publish, answer
//! ```
//!
//! The writer frames and writes batch N+1 while the sync thread waits for the
//! fdatasync that makes batch N (and everything written before it) durable:
//! one fsync is in flight at any time and the writing of the next batch hides
//! behind it. The channel between them holds two batches, so the page cache
//! never runs far ahead of the disk.
//!
//! Invariants:
//! - only the writer thread writes to or truncates segment files;
//! - a caller is answered `Ok(seq)` only after an fdatasync that started after
//!   its frame was written returned success, and the tree, the layout and the
//!   published size are raised before that answer;
//! - a full segment is made durable (all its pending batches synced, through a
//!   barrier) before the next segment is created, so only the last segment can
//!   ever hold a torn tail;
//! - after a failed write or fsync nothing more is acknowledged: the failed
//!   batch and every later one are answered `Unavailable` (a failed fsync may
//!   have dropped dirty pages: retrying it could report success for data that
//!   is gone) until the log is reopened, which re-reads what is really on disk.
//!   The writer cuts unsynced frames off the file when it learns of the failure
//!   (best effort: frames that survive over-report at reopen, never lose);
//! - a failed log is reopened in place only on [`Command::Reopen`] (sent by the
//!   space monitor once free space is back): the sync thread is restarted and
//!   the last segment's tail is checked against the tree (`space::check_tail`)
//!   before anything more is written;
//! - below the free-space watermark, work records (not `reserve`) are refused
//!   before they are written; the writer reads the free space once per batch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::index::{IndexKeys, IndexMsg};
use super::merkle::Hash;
use super::segment::{
    CHECKPOINT_STRIDE, FRAME_HEADER, HEADER_LEN, SegmentInfo, encode_frame, encode_header,
    segment_name, sync_dir,
};
use super::{AuditError, Shared};

/// Batches written but not yet synced that the writer may run ahead by.
const PIPELINE_DEPTH: usize = 2;

/// One record on its way to disk, prepared by the caller (serialised, hashed
/// and its index keys taken outside the writer, so that work spreads over the
/// runtime's threads).
pub(crate) struct Pending {
    pub leaf: Vec<u8>,
    pub hash: Hash,
    pub keys: IndexKeys,
    pub reply: oneshot::Sender<Result<u64, AuditError>>,
    /// A management record (admin change, transition, reload, audit read),
    /// which may use the space below the watermark.
    pub reserve: bool,
}

/// What the writer is asked to do.
// Nearly every command is an append and `Close` comes once: boxing the
// append would cost an allocation per record to save bytes on the one close.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Append(Pending),
    /// Finish what was queued before, then stop and say so.
    Close(oneshot::Sender<()>),
    /// If the log has failed closed: check the tail, clear the failure and
    /// resume; answers the tree size or why the log stays failed.
    Reopen(oneshot::Sender<Result<u64, AuditError>>),
}

/// A written record waiting for its fsync: the leaf bytes are gone, the hash,
/// the index keys and the caller stay.
struct Written {
    hash: Hash,
    keys: IndexKeys,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

/// What the writer hands the sync thread.
enum SyncWork {
    /// Frames written to `file` up to `end_len`, records `first_seq..`.
    Batch {
        file: Arc<File>,
        end_len: u64,
        first_seq: u64,
        records: Vec<Written>,
        /// (seq, offset) of the checkpoint records in the batch.
        checkpoints: Vec<(u64, u64)>,
    },
    /// Answer once everything sent before is synced (or refused).
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The writer's own state; lives on its thread.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    file: Option<Arc<File>>,
    segment_path: PathBuf,
    /// Bytes written to the current segment (synced or not).
    segment_len: u64,
    /// Bytes of the current segment known durable, kept by the sync thread.
    synced_len: Arc<AtomicU64>,
    next_seq: u64,
    buf: Vec<u8>,
    sync_tx: Option<SyncSender<SyncWork>>,
    sync_thread: Option<JoinHandle<()>>,
    /// Kept to start a new sync thread when a failed log is reopened.
    index_tx: std::sync::mpsc::Sender<IndexMsg>,
    /// Set once the unsynced tail was cut after a failure.
    cut: bool,
}

impl Writer {
    /// Opens the last segment for appending (or creates the first one) and
    /// starts the sync thread, which tells `index_tx` about every durable batch.
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        index_tx: std::sync::mpsc::Sender<IndexMsg>,
        last_len: u64,
    ) -> Result<Writer, AuditError> {
        let next_seq = shared.size.load(Ordering::Acquire);
        let last = shared.layout_read().segments.last().cloned();
        let synced_len = Arc::new(AtomicU64::new(last_len));
        let mut writer = Writer {
            shared,
            rx,
            file: None,
            segment_path: PathBuf::new(),
            segment_len: 0,
            synced_len,
            next_seq,
            buf: Vec::new(),
            sync_tx: None,
            sync_thread: None,
            index_tx,
            cut: false,
        };
        writer.start_syncer()?;
        match last {
            Some(seg) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| AuditError::io(&seg.path, e))?;
                writer.file = Some(Arc::new(file));
                writer.segment_path = seg.path;
                writer.segment_len = last_len;
            }
            None => writer.roll()?,
        }
        Ok(writer)
    }

    /// The writer loop: take what is queued (up to `max_batch`), frame it,
    /// write it, hand it to the sync thread. Runs until closed or every handle
    /// is dropped; then lets the sync thread finish.
    pub(crate) fn run(mut self) {
        let max_batch = self.shared.config.max_batch.max(1);
        let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
        let mut closing: Option<oneshot::Sender<()>> = None;
        loop {
            match self.rx.blocking_recv() {
                Some(Command::Append(p)) => batch.push(p),
                Some(Command::Close(done)) => closing = Some(done),
                Some(Command::Reopen(reply)) => {
                    let _ = reply.send(self.reopen());
                    continue;
                }
                None => break,
            }
            // Group commit: whatever queued up while the last batch was written
            // goes in this batch.
            while closing.is_none() && batch.len() < max_batch {
                match self.rx.try_recv() {
                    Ok(Command::Append(p)) => batch.push(p),
                    Ok(Command::Close(done)) => closing = Some(done),
                    Ok(Command::Reopen(reply)) => {
                        // Appends queued before the reopen go first (refused
                        // while the log is failed), so order is kept.
                        if !batch.is_empty() {
                            self.write(&mut batch);
                        }
                        let _ = reply.send(self.reopen());
                    }
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            if let Some(done) = closing.take() {
                // Appends that raced with close are refused, never half-done.
                self.rx.close();
                while let Ok(cmd) = self.rx.try_recv() {
                    match cmd {
                        Command::Append(p) => {
                            let _ = p.reply.send(Err(AuditError::Unavailable(
                                "the audit log is closed".to_string(),
                            )));
                        }
                        Command::Reopen(reply) => {
                            let _ = reply.send(Err(AuditError::Unavailable(
                                "the audit log is closed".to_string(),
                            )));
                        }
                        Command::Close(_) => {}
                    }
                }
                self.finish();
                let _ = done.send(());
                return;
            }
        }
        self.finish();
    }

    /// Waits until the sync thread has answered everything, then stops it.
    fn finish(&mut self) {
        self.barrier();
        self.cut_unsynced_tail();
        drop(self.sync_tx.take());
        if let Some(thread) = self.sync_thread.take() {
            let _ = thread.join();
        }
        self.file = None;
    }

    /// Frames and writes one batch, rolling segments as they fill, and hands
    /// the written records to the sync thread. Refuses the batch if the log
    /// has failed.
    fn write(&mut self, batch: &mut Vec<Pending>) {
        if let Some(reason) = self.shared.failure() {
            self.cut_unsynced_tail();
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(AuditError::Unavailable(reason.clone())));
            }
            return;
        }
        self.hold_watermark(batch);
        if batch.is_empty() {
            return;
        }
        let segment_bytes = self.shared.config.segment_bytes;
        let mut pending = batch.drain(..).peekable();
        let mut records: Vec<Written> = Vec::new();
        let mut checkpoints = Vec::new();
        let mut first_seq = self.next_seq;
        self.buf.clear();
        let result: Result<(), AuditError> = loop {
            let Some(p) = pending.next() else {
                break self.hand_over(first_seq, &mut records, &mut checkpoints);
            };
            let frame_len = (FRAME_HEADER + p.leaf.len()) as u64;
            let used = self.segment_len + self.buf.len() as u64;
            if used + frame_len > segment_bytes && used > HEADER_LEN {
                // The segment is full: write what it gets, let the sync thread
                // make it durable, and only then start the next one.
                if let Err(e) = self.hand_over(first_seq, &mut records, &mut checkpoints) {
                    records.push(Written {
                        hash: p.hash,
                        keys: p.keys,
                        reply: p.reply,
                    });
                    break Err(e);
                }
                self.barrier();
                if let Some(reason) = self.shared.failure() {
                    records.push(Written {
                        hash: p.hash,
                        keys: p.keys,
                        reply: p.reply,
                    });
                    break Err(AuditError::Unavailable(reason));
                }
                if let Err(e) = self.roll() {
                    records.push(Written {
                        hash: p.hash,
                        keys: p.keys,
                        reply: p.reply,
                    });
                    break Err(e);
                }
                first_seq = self.next_seq;
            }
            let seq = self.next_seq;
            if seq.is_multiple_of(CHECKPOINT_STRIDE) {
                checkpoints.push((seq, self.segment_len + self.buf.len() as u64));
            }
            encode_frame(&mut self.buf, seq, &p.leaf);
            self.next_seq += 1;
            records.push(Written {
                hash: p.hash,
                keys: p.keys,
                reply: p.reply,
            });
        };
        if let Err(e) = result {
            let reason = format!("audit log write failed: {e}");
            tracing::error!(error = %e, "audit log: write failed; refusing appends until reopened");
            self.shared.set_failure(reason.clone());
            self.cut_unsynced_tail();
            let refusal = format!("the audit record could not be made durable: {e}");
            for w in records.into_iter() {
                let _ = w.reply.send(Err(AuditError::Unavailable(refusal.clone())));
            }
            for p in pending {
                let _ = p.reply.send(Err(AuditError::Unavailable(refusal.clone())));
            }
        }
    }

    /// Refuses the work records of `batch` that would take the filesystem
    /// below its free-space watermark (one statvfs per batch; management
    /// records may use the reserve and are kept).
    fn hold_watermark(&mut self, batch: &mut Vec<Pending>) {
        if batch.iter().all(|p| p.reserve) {
            return;
        }
        let space = &self.shared.space;
        let free = space.refresh(&self.shared.config.dir);
        let mut used = 0u64;
        let mut kept = Vec::with_capacity(batch.len());
        for p in batch.drain(..) {
            let bytes = (FRAME_HEADER + p.leaf.len()) as u64;
            if p.reserve || space.admits(free, used, bytes) {
                used += bytes;
                kept.push(p);
            } else {
                let _ = p.reply.send(Err(AuditError::Unavailable(format!(
                    "the audit filesystem is below its free-space watermark ({free} bytes free, {} kept free); free space on it",
                    space.status().watermark_bytes
                ))));
            }
        }
        *batch = kept;
    }

    /// Starts the sync thread (at open, and again when a failed log reopens:
    /// a sync thread that saw a failed fsync refuses everything for good).
    fn start_syncer(&mut self) -> Result<(), AuditError> {
        let (sync_tx, sync_rx) = sync_channel(PIPELINE_DEPTH);
        let syncer = Syncer {
            shared: self.shared.clone(),
            index_tx: self.index_tx.clone(),
            synced_len: self.synced_len.clone(),
            broken: None,
        };
        let sync_thread = std::thread::Builder::new()
            .name("audit-sync".to_string())
            .spawn(move || syncer.run(sync_rx))
            .map_err(|e| AuditError::Unavailable(format!("cannot start audit-sync: {e}")))?;
        self.sync_tx = Some(sync_tx);
        self.sync_thread = Some(sync_thread);
        Ok(())
    }

    /// Reopens a failed log in place: lets the old sync thread answer what it
    /// holds and stops it, checks the last segment's tail against the tree
    /// (cutting frames that were never acknowledged), reopens the segment and
    /// a new sync thread, and only then clears the failure. A log that has
    /// not failed is left alone.
    fn reopen(&mut self) -> Result<u64, AuditError> {
        if self.shared.failure().is_none() {
            return Ok(self.shared.size.load(Ordering::Acquire));
        }
        self.barrier();
        drop(self.sync_tx.take());
        if let Some(thread) = self.sync_thread.take() {
            let _ = thread.join();
        }
        self.file = None;
        // Read only now: batches synced before the failure may have been
        // published while the old sync thread drained.
        let size = self.shared.size.load(Ordering::Acquire);
        let (path, len) = super::space::check_tail(&self.shared, size)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        self.file = Some(Arc::new(file));
        self.segment_path = path;
        self.segment_len = len;
        self.synced_len.store(len, Ordering::Release);
        self.next_seq = size;
        self.start_syncer()?;
        self.cut = false;
        self.shared.clear_failure();
        Ok(size)
    }

    /// Writes the buffer (holding `records`) to the current segment and sends
    /// it to the sync thread. On a write error the records stay in `records`
    /// for the caller to refuse.
    fn hand_over(
        &mut self,
        first_seq: u64,
        records: &mut Vec<Written>,
        checkpoints: &mut Vec<(u64, u64)>,
    ) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.clone() else {
            return Err(AuditError::Unavailable("no open segment".to_string()));
        };
        let path = &self.segment_path;
        (&*file)
            .write_all(&self.buf)
            .map_err(|e| AuditError::io(path, e))?;
        self.segment_len += self.buf.len() as u64;
        self.buf.clear();
        let work = SyncWork::Batch {
            file,
            end_len: self.segment_len,
            first_seq,
            records: std::mem::take(records),
            checkpoints: std::mem::take(checkpoints),
        };
        if let Some(tx) = &self.sync_tx
            && let Err(std::sync::mpsc::SendError(work)) = tx.send(work)
        {
            // The sync thread is gone (it only ends when told to): nothing
            // can become durable any more.
            if let SyncWork::Batch { records: lost, .. } = work {
                *records = lost;
            }
            return Err(AuditError::Unavailable(
                "the audit sync thread stopped".to_string(),
            ));
        }
        Ok(())
    }

    /// Blocks until every batch sent so far was synced and answered.
    fn barrier(&mut self) {
        let Some(tx) = &self.sync_tx else { return };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if tx.send(SyncWork::Barrier(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// After a failure: cut frames that were written but never synced off the
    /// file, so a reopen does not find records whose callers were refused.
    fn cut_unsynced_tail(&mut self) {
        if self.cut || self.shared.failure().is_none() {
            return;
        }
        self.barrier();
        self.cut = true;
        let synced = self.synced_len.load(Ordering::Acquire);
        if let Some(file) = self.file.take()
            && synced < self.segment_len
        {
            let _ = file.set_len(synced);
            let _ = file.sync_data();
            self.segment_len = synced;
        }
    }

    /// Starts a new segment at `next_seq`: create, header, fsync file and dir.
    fn roll(&mut self) -> Result<(), AuditError> {
        let dir = self.shared.segments_dir();
        let path = dir.join(segment_name(self.next_seq));
        let mut file = create_segment(&path, self.next_seq)?;
        sync_dir(&dir)?;
        file.flush().map_err(|e| AuditError::io(&path, e))?;
        self.shared.layout_write().segments.push(SegmentInfo {
            base: self.next_seq,
            path: path.clone(),
        });
        self.file = Some(Arc::new(file));
        self.segment_path = path;
        self.segment_len = HEADER_LEN;
        self.synced_len.store(HEADER_LEN, Ordering::Release);
        Ok(())
    }
}

/// The sync thread's state.
struct Syncer {
    shared: Arc<Shared>,
    index_tx: std::sync::mpsc::Sender<IndexMsg>,
    synced_len: Arc<AtomicU64>,
    /// Why nothing more is acknowledged, once an fsync failed.
    broken: Option<String>,
}

impl Syncer {
    fn run(mut self, rx: Receiver<SyncWork>) {
        let mut group: Vec<SyncWork> = Vec::new();
        while let Ok(first) = rx.recv() {
            group.push(first);
            // Everything written meanwhile shares this fsync.
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            let mut batches = Vec::new();
            for work in group.drain(..) {
                match work {
                    SyncWork::Batch { .. } => batches.push(work),
                    SyncWork::Barrier(done) => {
                        self.sync_and_answer(&mut batches);
                        let _ = done.send(());
                    }
                }
            }
            self.sync_and_answer(&mut batches);
        }
    }

    /// One fdatasync per file for the batches (in order), then publish and
    /// answer; or refuse them all if the log is broken.
    fn sync_and_answer(&mut self, batches: &mut Vec<SyncWork>) {
        if batches.is_empty() {
            return;
        }
        // Batches between barriers share one segment (a roll waits on a
        // barrier); the last one's file and length cover them all.
        let last = batches.iter().rev().find_map(|w| match w {
            SyncWork::Batch { file, end_len, .. } => Some((file.clone(), *end_len)),
            SyncWork::Barrier(_) => None,
        });
        if self.broken.is_none()
            && let Some((file, end_len)) = last
        {
            let started = std::time::Instant::now();
            let synced = file.sync_data();
            self.shared
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            match synced {
                Ok(()) => self.synced_len.store(end_len, Ordering::Release),
                Err(e) => {
                    let reason = format!("audit log fsync failed: {e}");
                    tracing::error!(error = %e, "audit log: fsync failed; refusing appends until reopened");
                    self.shared.set_failure(reason.clone());
                    self.broken = Some(reason);
                }
            }
        }
        if let Some(reason) = self.broken.clone() {
            for work in batches.drain(..) {
                if let SyncWork::Batch { records, .. } = work {
                    for w in records {
                        let _ = w.reply.send(Err(AuditError::Unavailable(format!(
                            "the audit record could not be made durable: {reason}"
                        ))));
                    }
                }
            }
            return;
        }
        // Durable: raise the tree, the layout and the size, then answer.
        let mut answers = Vec::new();
        let mut keys = Vec::new();
        let mut first = None;
        {
            let mut tree = self.shared.tree_write();
            let mut layout_checkpoints = Vec::new();
            for work in batches.iter_mut() {
                if let SyncWork::Batch {
                    first_seq,
                    records,
                    checkpoints,
                    ..
                } = work
                {
                    first.get_or_insert(*first_seq);
                    for (i, w) in records.drain(..).enumerate() {
                        tree.push(w.hash);
                        keys.push(w.keys);
                        answers.push((*first_seq + i as u64, w.reply));
                    }
                    layout_checkpoints.append(checkpoints);
                }
            }
            let size = tree.len();
            drop(tree);
            self.shared
                .layout_write()
                .checkpoints
                .extend(layout_checkpoints.into_iter().map(|(_, offset)| offset));
            self.shared.size.store(size, Ordering::Release);
        }
        batches.clear();
        if let Some(first_seq) = first {
            let _ = self.index_tx.send(IndexMsg::Durable { first_seq, keys });
        }
        for (seq, reply) in answers {
            let _ = reply.send(Ok(seq));
        }
    }
}

/// Creates a segment file with its header, synced.
fn create_segment(path: &Path, base: u64) -> Result<File, AuditError> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    file.write_all(&encode_header(base))
        .map_err(|e| AuditError::io(path, e))?;
    file.sync_all().map_err(|e| AuditError::io(path, e))?;
    Ok(file)
}
