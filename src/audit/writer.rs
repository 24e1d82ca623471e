//! The writer task: the one place that appends to segment files, with group commit.
//!
//! Invariants: only this thread writes segments. A caller is answered `Ok(seq)`
//! only after `sync_data` returned for the segment holding its frame, and the
//! tree and published size are raised before the answer. After any failed write
//! or fsync the writer never writes again (a failed fsync may have dropped dirty
//! pages: retrying it could report success for data that is gone); it answers
//! every later append with `Unavailable` until the log is reopened, which re-reads
//! what is really on disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::merkle::Hash;
use super::segment::{
    CHECKPOINT_STRIDE, FRAME_HEADER, HEADER_LEN, SegmentInfo, encode_frame, encode_header,
    segment_name, sync_dir,
};
use super::{AuditError, Shared};

/// One record on its way to disk, prepared by the caller (serialised and hashed
/// outside the writer so that work spreads over the runtime's threads).
pub(crate) struct Pending {
    pub leaf: Vec<u8>,
    pub hash: Hash,
    pub reply: oneshot::Sender<Result<u64, AuditError>>,
}

/// What the writer is asked to do.
pub(crate) enum Command {
    Append(Pending),
    /// Finish what was queued before, then stop and say so.
    Close(oneshot::Sender<()>),
}

/// The writer's own state; lives on its thread.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    /// Told the new size after every batch; the indexer follows it.
    index_tx: std::sync::mpsc::Sender<u64>,
    file: Option<File>,
    segment_path: PathBuf,
    segment_len: u64,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Writer {
    /// Opens the last segment for appending, or creates the first one.
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Command>,
        index_tx: std::sync::mpsc::Sender<u64>,
        last_len: u64,
    ) -> Result<Writer, AuditError> {
        let next_seq = shared.size.load(Ordering::Acquire);
        let last = shared.layout_read().segments.last().cloned();
        let mut writer = Writer {
            shared,
            rx,
            index_tx,
            file: None,
            segment_path: PathBuf::new(),
            segment_len: 0,
            next_seq,
            buf: Vec::new(),
        };
        match last {
            Some(seg) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| AuditError::io(&seg.path, e))?;
                writer.file = Some(file);
                writer.segment_path = seg.path;
                writer.segment_len = last_len;
            }
            None => writer.roll()?,
        }
        Ok(writer)
    }

    /// The writer loop: take what is queued (up to `max_batch`), write it, one
    /// `sync_data`, answer. Runs until closed or every handle is dropped.
    pub(crate) fn run(mut self) {
        let max_batch = self.shared.config.max_batch.max(1);
        let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
        let mut closing: Option<oneshot::Sender<()>> = None;
        loop {
            match self.rx.blocking_recv() {
                Some(Command::Append(p)) => batch.push(p),
                Some(Command::Close(done)) => closing = Some(done),
                None => break,
            }
            // Group commit: whatever queued up while the last fsync ran goes in
            // this batch, so the fsync cost is shared under load.
            while closing.is_none() && batch.len() < max_batch {
                match self.rx.try_recv() {
                    Ok(Command::Append(p)) => batch.push(p),
                    Ok(Command::Close(done)) => closing = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            if let Some(done) = closing.take() {
                // Appends that raced with close are refused, never half-done.
                self.rx.close();
                while let Ok(cmd) = self.rx.try_recv() {
                    if let Command::Append(p) = cmd {
                        let _ = p.reply.send(Err(AuditError::Unavailable(
                            "the audit log is closed".to_string(),
                        )));
                    }
                }
                let _ = done.send(());
                break;
            }
        }
        if let Some(file) = self.file.take() {
            drop(file);
        }
    }

    /// Writes and syncs one batch, then publishes and answers.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if let Some(reason) = self.shared.failure() {
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(AuditError::Unavailable(reason.clone())));
            }
            return;
        }
        let first_seq = self.next_seq;
        let mut checkpoints = Vec::new();
        let mut durable = 0usize;
        let result = self.write_batch(batch, &mut checkpoints, &mut durable);
        // Publish what is durable, even if a later part of the batch failed: those
        // frames are on disk and will be found at the next open.
        if durable > 0 {
            let mut tree = self.shared.tree_write();
            for p in &batch[..durable] {
                tree.push(p.hash);
            }
            let size = tree.len();
            drop(tree);
            {
                let mut layout = self.shared.layout_write();
                layout.checkpoints.extend(
                    checkpoints
                        .iter()
                        .filter(|(s, _)| *s < size)
                        .map(|(_, o)| *o),
                );
            }
            self.shared.size.store(size, Ordering::Release);
            let _ = self.index_tx.send(size);
        }
        if let Err(e) = &result {
            let reason = format!("audit log write failed: {e}");
            tracing::error!(error = %e, "audit log: write or fsync failed; refusing appends until reopened");
            self.shared.set_failure(reason);
            // Best effort: take the unsynced frames back off the file so a reopen
            // does not find records whose callers were refused. If this fails too
            // they may reappear at reopen, which over-reports and loses nothing.
            if let Some(file) = &self.file {
                let _ = file.set_len(self.segment_len);
            }
            self.file = None;
        }
        for (i, p) in batch.drain(..).enumerate() {
            let answer = if i < durable {
                Ok(first_seq + i as u64)
            } else {
                Err(AuditError::Unavailable(match &result {
                    Err(e) => format!("the audit record could not be made durable: {e}"),
                    Ok(()) => "the audit record could not be made durable".to_string(),
                }))
            };
            let _ = p.reply.send(answer);
        }
    }

    /// Frames the batch into the buffer, rolling segments as they fill, and syncs.
    /// `durable` counts the batch entries known to be on disk.
    fn write_batch(
        &mut self,
        batch: &[Pending],
        checkpoints: &mut Vec<(u64, u64)>,
        durable: &mut usize,
    ) -> Result<(), AuditError> {
        let segment_bytes = self.shared.config.segment_bytes;
        let first_seq = self.next_seq;
        self.buf.clear();
        let mut buffered_from = 0usize;
        for (i, p) in batch.iter().enumerate() {
            let frame_len = (FRAME_HEADER + p.leaf.len()) as u64;
            let used = self.segment_len + self.buf.len() as u64;
            // A full segment is synced and closed before the next one starts, so
            // only the last segment can ever hold a torn tail.
            if used + frame_len > segment_bytes && used > HEADER_LEN {
                self.flush(i - buffered_from)?;
                *durable = i;
                buffered_from = i;
                self.roll()?;
            }
            let seq = first_seq + i as u64;
            if seq.is_multiple_of(CHECKPOINT_STRIDE) {
                checkpoints.push((seq, self.segment_len + self.buf.len() as u64));
            }
            encode_frame(&mut self.buf, seq, &p.leaf);
        }
        self.flush(batch.len() - buffered_from)?;
        *durable = batch.len();
        Ok(())
    }

    /// Writes the buffer (holding `frames` frames) to the current segment and
    /// syncs it; only then does the durable length advance.
    fn flush(&mut self, frames: usize) -> Result<(), AuditError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(AuditError::Unavailable("no open segment".to_string()));
        };
        let path = &self.segment_path;
        file.write_all(&self.buf)
            .map_err(|e| AuditError::io(path, e))?;
        file.sync_data().map_err(|e| AuditError::io(path, e))?;
        self.segment_len += self.buf.len() as u64;
        self.next_seq += frames as u64;
        self.buf.clear();
        Ok(())
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
        self.file = Some(file);
        self.segment_path = path;
        self.segment_len = HEADER_LEN;
        Ok(())
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
